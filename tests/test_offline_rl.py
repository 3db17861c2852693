"""Issue 15: offline RL from logged sessions. Behaviour policies' sessions go through the Minari export
(`experiments.rl.minari_export`) into a Minari dataset, back out as a d3rlpy `MDPDataset`, and train a real d3rlpy
algorithm (`experiments.rl.offline`); `simrec train-rl --rl.algo bc|cql|bcq` does all of it and is scored like PPO."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import simrec  # noqa: F401  (registers the ids)
from experiments.cli import app
from experiments.evaluate_rl import EVALUATE_FILE
from experiments.rl.checkpoint import Checkpoint
from experiments.rl.offline import (
    OFFLINE_MODEL_FILE,
    OfflinePolicy,
    behaviour_policies,
    export_behaviour,
    flatten,
    mdp_dataset,
    minari_root,
    train_offline,
)
from recommenders.popularity import PopRecommender

pytestmark = pytest.mark.slow
DATASET_ID = "simrec/test/behaviour-v0"


def _logged(tmp_path: Path, names: tuple[str, ...], n_episodes: int) -> tuple[Path, gym.Env]:
    env = gym.make("simrec/FastRecSeq-v1", dataset="synthetic")
    inner = env.unwrapped
    pop = PopRecommender().fit(inner.train, inner.dataset.n_users, inner.dataset.n_items)
    recs = {name: (None if name == "random" else pop) for name in names}
    return export_behaviour(env, behaviour_policies(recs, seed=0), tmp_path, DATASET_ID, n_episodes, seed=50), env


def test_minari_round_trip_feeds_the_offline_trainer(tmp_path: Path) -> None:
    directory, env = _logged(tmp_path, ("random", "pop"), n_episodes=15)
    with minari_root(tmp_path):
        data = minari.load_dataset(DATASET_ID)
    assert data.total_episodes == 30 and data.action_space == env.action_space
    episodes = list(data.iterate_episodes())
    # the two behaviour policies met the same personas (same episode seeds): the same first observations
    for a, b in zip(episodes[:15], episodes[15:], strict=True):
        assert np.array_equal(a.observations["persona"][0], b.observations["persona"][0])
    dataset = mdp_dataset(directory)
    assert dataset.transition_count == sum(len(ep.actions) for ep in episodes)  # every logged step, none lost
    assert len(dataset.episodes) == 30
    first, stored = dataset.episodes[0], episodes[0]
    n = len(stored.actions)
    assert np.array_equal(first.observations[:n], flatten({k: v[:n] for k, v in stored.observations.items()}))
    assert np.array_equal(first.actions.reshape(-1)[:n], stored.actions.reshape(-1))
    assert float(dataset.episodes[0].rewards.sum()) == pytest.approx(float(stored.rewards.sum()))
    assert [bool(ep.terminated) for ep in dataset.episodes] == [bool(ep.terminations[-1]) for ep in episodes]

    learner, run = train_offline("cql", dataset, tmp_path, steps=200, seed=0)
    assert (run.steps, run.n_transitions, run.stopped_by_budget) == (200, dataset.transition_count, False)
    policy = OfflinePolicy.load(tmp_path / OFFLINE_MODEL_FILE)
    obs, _ = env.reset(seed=1)
    action, _ = policy.predict(obs)
    assert 0 <= int(action) < env.action_space.n
    assert int(action) == int(learner.predict(flatten(obs)[None])[0])  # the saved model is the trained one


def test_behaviour_cloning_imitates_the_logged_policy(tmp_path: Path) -> None:
    directory, _ = _logged(tmp_path, ("pop",), n_episodes=40)
    dataset = mdp_dataset(directory)
    # the logged (state, action) pairs; a page-limit episode's last row is its final observation only
    states = np.concatenate([ep.observations[: ep.transition_count] for ep in dataset.episodes])
    logged = np.concatenate([ep.actions.reshape(-1)[: ep.transition_count] for ep in dataset.episodes])
    trained, _ = train_offline("bc", dataset, tmp_path / "trained", steps=300, seed=0)
    untrained, _ = train_offline("bc", dataset, tmp_path / "untrained", steps=1, seed=0)
    agree_trained = float((trained.predict(states) == logged).mean())
    agree_untrained = float((untrained.predict(states) == logged).mean())
    assert agree_trained > agree_untrained, (agree_trained, agree_untrained)


def test_train_rl_offline_cql_from_logged_sessions(
    tmp_path: Path, worker_cache: Path, capsys: pytest.CaptureFixture
) -> None:
    app(["train-rl", "--data.dataset", "synthetic", "--data.cache-dir", str(worker_cache),
         "--run.out-dir", str(tmp_path / "runs"), "--run.name", "cql", "--rl.algo", "cql", "--rl.base", "pop",
         "--rl.timesteps", "200", "--rl.offline-episodes", "10", "--rl.eval-personas", "4",
         "--rl.behaviour", "random", "--rl.behaviour", "pop"])  # fmt: skip
    out = capsys.readouterr().out
    assert "logged 20 sessions" in out.replace("\n", " ")
    directory = tmp_path / "runs" / "cql"
    checkpoint = Checkpoint.load(directory)
    assert (checkpoint.algo, checkpoint.action_mode, checkpoint.offline, checkpoint.timesteps) == (
        "cql", "sequential", True, 200
    )  # fmt: skip
    assert checkpoint.offline_data["behaviour"] == ["random", "pop"]
    assert checkpoint.offline_data["n_episodes"] == 20 and checkpoint.offline_data["n_transitions"] >= 20 * 4
    assert (directory / OFFLINE_MODEL_FILE).is_file()
    assert (Path(checkpoint.offline_data["minari_dataset"]) / "data").is_dir()
    events = EventAccumulator(str(directory / "d3rlpy" / "tensorboard")).Reload()
    assert "train/loss" in events.Tags()["scalars"]
    result = json.loads((directory / EVALUATE_FILE).read_text())
    assert set(result["policies"]) == {"cql", "sim-greedy", "pop", "random"} and result["personas_disjoint"] is True
    assert result["policies"]["cql"]["real"]["shown"] >= 4 * 4
    assert 0 <= result["policies"]["cql"]["real"]["real_hit"] <= 1
