"""SB3 through `simrec train-rl`: A2C (feature weights, asked for: the default is the ranking policy) and DQN (slot
by slot) train a few hundred steps on the fast users, and the saved checkpoint's model serves pages through
`SB3Recommender` in the mode it was trained in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from experiments.build import build_world, train_recommender
from experiments.config import load_config
from experiments.rl.checkpoint import Checkpoint, with_personas
from experiments.rl.features import candidate_featurizer
from experiments.train_rl import train_rl
from simenv.policies import SB3Recommender

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("algo", "mode"), [("a2c", "weights"), ("dqn", "sequential")])
def test_train_rl_algorithms_save_a_model_that_serves_pages(
    tmp_path: Path, worker_cache: Path, algo: str, mode: str
) -> None:
    config = load_config(
        None,
        {
            "data": {"dataset": "synthetic", "cache_dir": str(worker_cache)},
            "run": {"out_dir": str(tmp_path / "runs"), "name": algo},
            "rl": {"algo": algo, "action": "weights", "timesteps": 300, "eval_personas": 4, "base": "pop"},
        },
    )
    checkpoint = Checkpoint.load(Path(train_rl(config).directory))
    assert (checkpoint.algo, checkpoint.action_mode, checkpoint.offline) == (algo, mode, False)
    assert checkpoint.timesteps >= 300
    world = with_personas(build_world(config), checkpoint.eval_users)
    base = train_recommender(config, world, "pop")[0]
    policy = SB3Recommender(
        checkpoint.load_model(),
        world.dataset,
        world.personas,
        world.split.train,
        action_mode=mode,
        n_candidates=checkpoint.env["n_candidates"],
        explore_fraction=checkpoint.env["explore_fraction"],
        candidate_recommender=base,
        name=algo,
        candidate_featurizer=candidate_featurizer(config, world, base),  # online checkpoints observe the features
    )
    user = checkpoint.eval_users[0]
    seen = set(world.split.train.loc[world.split.train["user_id"] == user, "item_id"].tolist())
    page = policy.recommend(user, 4, seen, np.random.default_rng(0)).item_ids
    assert len(set(page)) == 4 and not set(page) & seen
