"""Minari export round-trip and the recommender-driven env (policy adapter)."""

import gymnasium as gym
import minari
import numpy as np
import pytest

import simrec  # noqa: F401  (registers the ids)
from experiments.rl.minari_export import export_rollouts
from recommenders.popularity import PopRecommender
from simenv.policies import RandomPolicy, RecommenderPolicy, rollout


def test_minari_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    env = gym.make("simrec/FastRec-v1", dataset="synthetic")
    policy = RandomPolicy(np.random.default_rng(0))
    returns = rollout(env, RandomPolicy(np.random.default_rng(0)), 5, seed=100)
    export_rollouts(env, policy, "simenv/fastrec/random-v0", n_episodes=5, seed=100)
    data = minari.load_dataset("simenv/fastrec/random-v0")
    assert data.total_episodes == 5
    episodes = list(data.iterate_episodes())
    # Same seeds, same policy rng: the stored rewards are the rollout's returns, episode by episode.
    assert [float(ep.rewards.sum()) for ep in episodes] == pytest.approx(returns)
    first = episodes[0]
    assert first.observations["candidates"].shape[0] == len(first.actions) + 1
    assert first.actions.shape[1] == 4
    assert bool(first.terminations[-1] or first.truncations[-1])
    assert data.recover_environment().unwrapped.page_size == 4


def test_recommender_drives_env_in_both_modes():
    for env_id in ("simrec/FastRec-v1", "simrec/FastRecSeq-v1"):
        env = gym.make(env_id, dataset="synthetic")
        inner = env.unwrapped
        pop = PopRecommender().fit(inner.train, inner.dataset.n_users, inner.dataset.n_items)
        obs, info = env.reset(seed=3)
        policy = RecommenderPolicy(pop, np.random.default_rng(0))
        action = policy.act(inner, obs, info)
        # Pop ranks by train popularity; the env's candidates without a recommender are popularity-ordered too.
        expected = [0, 1, 2, 3]
        assert (np.asarray(action).tolist() == expected) if env_id.endswith("FastRec-v1") else action == 0
        returns = rollout(env, policy, 3, seed=0)
        assert len(returns) == 3
