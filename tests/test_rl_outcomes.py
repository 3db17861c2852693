"""Issue 15: what a training run and the evaluation measure, not just that they run.

- A tiny seeded PPO run (the default ranking policy) re-ranking Pop's candidates earns more return per session than
  uniformly random pages on the same held-out personas and episode seeds (two measured means compared; no threshold).
- `evaluate-rl` scores a hand-made page policy whose real held-out hits are known by construction: every page
  holds one liked TEST item, one TEST item rated <= 3 and two items the persona never rated, so its real hit is
  exactly 1/2, real like 1/4 and held-out hit 1/2 for every persona, however long the session lasts.
Real SB3 PPO and the real evaluation on the synthetic dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.build import World, build_world, train_recommender
from experiments.config import load_config
from experiments.evaluate_rl import evaluate_rl
from experiments.rl.checkpoint import Checkpoint, with_personas
from experiments.train_rl import make_training_env, train_rl
from simenv import defaults, kernel
from simenv.records import Page, PageFeedback, Recommendation

pytestmark = pytest.mark.slow


def _config(root: Path, cache: Path, name: str, **rl: object):
    return load_config(
        None,
        {
            "data": {"dataset": "synthetic", "cache_dir": str(cache)},
            "run": {"out_dir": str(root / "runs"), "name": name},
            "rl": {"base": "pop", **rl},
        },
    )


def _returns(
    config, world: World, act: Callable[[dict], np.ndarray], n: int, root: Path, mode: str = "slate"
) -> np.ndarray:
    """Returns of the first `n` sessions of the training env (action `mode`) over `world`'s personas, seeded the
    same way (same personas and candidate sets whatever the mode)."""
    base = train_recommender(config, world, config.rl.base)[0]
    env, _ = make_training_env(config, world, base, mode, root / "monitor.csv")
    env.seed(123)
    obs = env.reset()
    done_returns: list[float] = []
    running = np.zeros(env.num_envs)
    while len(done_returns) < n:
        obs, rewards, dones, _ = env.step(act(obs))
        running += rewards
        for i in np.flatnonzero(dones):
            done_returns.append(float(running[i]))
            running[i] = 0.0
    env.close()
    return np.array(done_returns[:n])


def test_a_tiny_ppo_run_earns_more_than_random_pages_on_held_out_personas(tmp_path: Path, worker_cache: Path) -> None:
    config = _config(tmp_path, worker_cache, "ppo", timesteps=1024, eval_personas=40)
    checkpoint = train_rl(config)
    model = checkpoint.load_model()
    held_out = with_personas(build_world(config), checkpoint.eval_users)
    space = kernel.action_space("slate", defaults.PAGE_SIZE, checkpoint.env["n_candidates"])
    space.seed(7)
    # the default: the item-wise ranking policy, pages of candidate indices
    assert (checkpoint.config["rl"]["action"], checkpoint.action_mode) == ("ranking", "slate")
    trained = _returns(config, held_out, lambda obs: model.predict(obs, deterministic=True)[0], 400, tmp_path)
    random = _returns(config, held_out, lambda obs: np.stack([space.sample() for _ in range(len(obs["session"]))]),
                      400, tmp_path)  # fmt: skip
    assert trained.mean() > random.mean(), (trained.mean(), random.mean())


class KnownHits:
    """Per page: a liked TEST item, a never-rated item, a TEST item rated <= 3, another never-rated item."""

    def __init__(self, world: World, name: str) -> None:
        self.name = name
        test = world.split.test
        self.liked = {int(u): g["item_id"].tolist() for u, g in test[test["rating"] >= 4].groupby("user_id")}
        self.unliked = {int(u): g["item_id"].tolist() for u, g in test[test["rating"] < 4].groupby("user_id")}
        rated = pd.concat([world.split.train, world.split.valid, test]).groupby("user_id")["item_id"].agg(set)
        items = range(world.dataset.n_items)
        self.never = {int(u): [i for i in items if i not in rated[u]] for u in world.personas}

    def recommend(
        self, user_id: int, k: int, exclude: Collection[int], rng: np.random.Generator, history: Sequence[int] = ()
    ) -> Recommendation:
        assert k == 4

        def fresh(pool: list[int], n: int) -> list[int]:
            return [i for i in pool if i not in exclude][:n]

        liked, unliked = fresh(self.liked[user_id], 1), fresh(self.unliked[user_id], 1)
        never = fresh(self.never[user_id], 2)
        return Recommendation((liked[0], never[0], unliked[0], never[1]))

    def observe(self, user_id: int, page: Page, feedback: PageFeedback) -> None:
        return None


def test_evaluate_rl_on_a_hand_made_policy_with_known_real_hits(tmp_path: Path, worker_cache: Path) -> None:
    config = _config(tmp_path, worker_cache, "known")
    world = build_world(config)
    test = world.split.test
    counts = test.assign(liked=test["rating"] >= 4).groupby("user_id")["liked"].agg(["sum", "count"])
    enough = counts[(counts["sum"] >= defaults.MAX_PAGES) & (counts["count"] - counts["sum"] >= defaults.MAX_PAGES)]
    eval_users = sorted(int(u) for u in enough.index[:8])
    assert len(eval_users) == 8
    directory = tmp_path / "runs" / "known"
    directory.mkdir(parents=True)
    Checkpoint(
        algo="ppo",
        base="pop",
        user="fitted",
        train_users=tuple(sorted(set(world.population) - set(eval_users))),
        eval_users=tuple(eval_users),
        env={
            "page_size": defaults.PAGE_SIZE,
            "max_pages": defaults.MAX_PAGES,
            "n_candidates": kernel.default_n_candidates(defaults.PAGE_SIZE, defaults.MAX_PAGES),
            "explore_fraction": defaults.EXPLORE_FRACTION,
            "history_len": defaults.HISTORY_LEN,
        },
        config=config.model_dump(mode="json"),
    ).save(directory)

    result = evaluate_rl(directory, n_boot=50, policy=lambda w, base: KnownHits(w, "ppo"))

    real = result["policies"]["ppo"]["real"]
    assert (real["real_hit"], real["real_like"], real["heldout_hit"]) == (0.5, 0.25, 0.5)
    assert real["shown"] % 4 == 0 and real["shown"] >= 8 * 4
    pop_hit = result["policies"]["pop"]["real"]["real_hit"]
    diff = result["comparisons"]["real"]["real_hit_difference_vs_base"]
    assert diff["difference"] == pytest.approx(0.5 - pop_hit)
    events = pd.read_parquet(directory / "evaluate" / "train_sim" / "ppo" / "events")
    assert sorted(events["user"].unique()) == eval_users
