"""`experiments.rl.sb3_vec.SB3VectorEnv`: SB3's VecEnv contract over the native vector env (and a Gymnasium
SyncVectorEnv).

- Shapes and dtypes of obs, rewards, dones and infos, as `DummyVecEnv` returns them.
- Same-step autoreset: per sub-env, the adapter's episodes (first obs, actions, rewards, final obs kept in
  `terminal_observation`, the next episode's first obs returned in its place) equal the episodes of the wrapped
  Gymnasium env stepped directly with next-step autoreset, same seed and same per-env actions; `dones` and
  `TimeLimit.truncated` equal `terminated | truncated` and `truncated & ~terminated`.
- Seeding through `seed()` and through SB3 (`PPO(seed=...)`); the minimal attribute/method API; a PPO run.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from stable_baselines3 import PPO
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecMonitor

import simrec  # noqa: F401  (registers the ids)
from experiments.rl.sb3_vec import SB3VectorEnv, make_sb3_vec_env
from simenv.vector_env import FastRecVectorEnv

SMALL = {"dataset": "synthetic"}


def _native(num_envs: int, **kwargs: Any) -> FastRecVectorEnv:
    return gym.make_vec("simrec/FastRec-v1", num_envs=num_envs, **{**SMALL, **kwargs})


def _sync(num_envs: int, **kwargs: Any) -> gym.vector.SyncVectorEnv:
    return gym.make_vec("simrec/FastRec-v1", num_envs=num_envs, vectorization_mode="sync", **{**SMALL, **kwargs})


def _policies(num_envs: int, seed: int) -> list[np.random.Generator]:
    """One action stream per sub-env, so both drivers give sub-env i the same j-th action whatever the others do."""
    return [np.random.default_rng([seed, i]) for i in range(num_envs)]


def _row(obs: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    return {k: v[i].copy() for k, v in obs.items()}


def _episodes_through_adapter(env: SB3VectorEnv, n_steps: int, k: int, c: int) -> list[list[list[Any]]]:
    """Per sub-env, its episodes: [first obs, (action, reward, done, time-limit flag, next or final obs), ...]."""
    n = env.num_envs
    streams = _policies(n, seed=7)
    obs = env.reset()
    episodes: list[list[list[Any]]] = [[[_row(obs, i)]] for i in range(n)]
    for _ in range(n_steps):
        actions = np.stack([s.integers(0, c, size=k) for s in streams])
        obs, rewards, dones, infos = env.step(actions)
        for i in range(n):
            last = infos[i]["terminal_observation"] if dones[i] else _row(obs, i)
            episodes[i][-1].append((actions[i], rewards[i], bool(dones[i]), infos[i]["TimeLimit.truncated"], last))
            if dones[i]:
                episodes[i].append([_row(obs, i)])
    return episodes


def _episodes_direct(venv: gym.vector.VectorEnv, seed: int, n_steps: int, k: int, c: int) -> list[list[list[Any]]]:
    """The same record from the Gymnasium env stepped directly: next-step autoreset, whose reset steps ignore the
    action (so the sub-env's own action stream does not advance) and return the new episode's first obs."""
    n = venv.num_envs
    streams = _policies(n, seed=7)
    obs, _ = venv.reset(seed=seed)
    episodes: list[list[list[Any]]] = [[[_row(obs, i)]] for i in range(n)]
    pending = np.zeros(n, dtype=bool)
    for _ in range(n_steps):
        actions = np.stack([np.arange(k) if pending[i] else s.integers(0, c, size=k) for i, s in enumerate(streams)])
        obs, rewards, term, trunc, _ = venv.step(actions)
        for i in range(n):
            if pending[i]:
                assert rewards[i] == 0.0 and not term[i] and not trunc[i]
                episodes[i].append([_row(obs, i)])
            else:
                done = bool(term[i] or trunc[i])
                flag = bool(trunc[i] and not term[i])
                episodes[i][-1].append((actions[i], np.float32(rewards[i]), done, flag, _row(obs, i)))
        pending = term | trunc
    return episodes


def _assert_same_episodes(got: list[list[list[Any]]], want: list[list[list[Any]]]) -> dict[str, int]:
    """Episode by episode per sub-env, over the episodes both drivers finished; returns counts of what was seen."""
    seen = {"episodes": 0, "terminated": 0, "truncated": 0}
    for env_got, env_want in zip(got, want, strict=True):
        finished = min(len(env_got), len(env_want)) - 1
        assert finished >= 2, "too few episodes to compare"
        for ep_got, ep_want in zip(env_got[:finished], env_want[:finished], strict=True):
            assert len(ep_got) == len(ep_want)
            for key in ep_want[0]:
                np.testing.assert_array_equal(ep_got[0][key], ep_want[0][key], err_msg=f"first obs {key}")
            for step_got, step_want in zip(ep_got[1:], ep_want[1:], strict=True):
                np.testing.assert_array_equal(step_got[0], step_want[0])
                assert step_got[1:4] == step_want[1:4]
                for key in step_want[4]:
                    np.testing.assert_array_equal(step_got[4][key], step_want[4][key], err_msg=f"obs {key}")
            seen["episodes"] += 1
            seen["truncated"] += ep_want[-1][3]
            seen["terminated"] += not ep_want[-1][3]
    return seen


def test_step_returns_sb3_shapes_dtypes_and_infos():
    env = SB3VectorEnv(_native(5))
    env.seed(0)
    obs = env.reset()
    space = env.observation_space
    assert set(obs) == set(space.spaces)
    for key, sub in space.spaces.items():
        assert obs[key].shape == (5, *sub.shape) and obs[key].dtype == sub.dtype
    assert all("candidate_ids" in info for info in env.reset_infos)
    rng = np.random.default_rng(0)
    finished = 0
    for _ in range(15):
        obs, rewards, dones, infos = env.step(rng.integers(0, 40, size=(5, 4)))
        assert all(space.contains(_row(obs, i)) for i in range(5))
        assert rewards.shape == (5,) and rewards.dtype == np.float32
        assert dones.shape == (5,) and dones.dtype == np.bool_
        assert isinstance(infos, list) and len(infos) == 5
        for i, info in enumerate(infos):
            assert isinstance(info["TimeLimit.truncated"], bool)
            assert ("terminal_observation" in info) == dones[i]
            assert info["page"] >= 1 and info["page_items"].shape == (4,)  # the sub-env's own entries
            if dones[i]:
                assert space.contains(info["terminal_observation"])
                assert not obs["session"][i].any()  # a fresh episode: no page shown yet
                np.testing.assert_array_equal(env.reset_infos[i]["action_mask"], np.ones(40, dtype=bool))
                finished += 1
    assert finished > 0
    env.close()


def test_episodes_equal_the_native_env_stepped_directly():
    """One sub-env: the native env draws its autoreset in the same random order as the adapter (see module doc)."""
    terminated = truncated = 0
    for seed in (11, 12, 13, 14):  # over a few seeds, so that both ways an episode ends are compared
        env = SB3VectorEnv(_native(1))
        env.seed(seed)
        seen = _assert_same_episodes(
            _episodes_through_adapter(env, 60, 4, 40), _episodes_direct(_native(1), seed, 60 + 20, 4, 40)
        )
        terminated, truncated = terminated + seen["terminated"], truncated + seen["truncated"]
        if terminated and truncated:
            break
    assert terminated and truncated, (terminated, truncated)


def test_episodes_equal_a_sync_vector_env_stepped_directly():
    """Independent single envs (their own generators), so autoresets in other sub-envs do not shift the draws."""
    env = SB3VectorEnv(_sync(3, max_pages=2))
    assert env.env_is_wrapped(gym.wrappers.TimeLimit) == [True] * 3
    env.seed(5)
    seen = _assert_same_episodes(
        _episodes_through_adapter(env, 30, 4, 40), _episodes_direct(_sync(3, max_pages=2), 5, 45, 4, 40)
    )
    assert seen["terminated"] and seen["truncated"], seen


def test_seed_reproduces_the_batch_and_only_the_next_reset():
    def run(seed: int | None, steps: int = 10) -> tuple[list[np.ndarray], np.ndarray]:
        env = SB3VectorEnv(_native(4))
        assert env.seed(seed) == [seed] * 4
        obs = [env.reset()["candidates"]]
        rng = np.random.default_rng(1)
        rewards = []
        for _ in range(steps):
            o, r, _, _ = env.step(rng.integers(0, 40, size=(4, 4)))
            obs.append(o["candidates"])
            rewards.append(r)
        return obs, np.stack(rewards)

    a, b, c = run(3), run(3), run(4)
    for x, y in zip(a[0], b[0], strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1]) or not all(np.array_equal(x, y) for x, y in zip(a[0], c[0], strict=True))
    env = SB3VectorEnv(_native(2))
    env.seed(3)
    first = env.reset()["candidates"]
    assert not np.array_equal(env.reset()["candidates"], first)  # the seed was used once


def test_attribute_api_acts_on_the_vector_env():
    venv = _native(3)
    env = SB3VectorEnv(venv, info_keys=())
    assert env.get_attr("page_size") == [4, 4, 4] and env.get_attr("max_pages", indices=[1]) == [5]
    assert env.has_attr("personas") and not env.has_attr("no_such_attribute")
    env.set_attr("interview", False)
    assert venv.interview is False
    with pytest.raises(ValueError, match="use all indices"):
        env.set_attr("interview", True, indices=[0])
    results = env.env_method("reset", seed=2, indices=[0, 2])
    assert len(results) == 2 and results[0][0]["candidates"].shape == (3, *env.observation_space["candidates"].shape)
    assert env.env_is_wrapped(Monitor) == [False] * 3
    env.reset()
    _, _, _, infos = env.step(np.tile(np.arange(4), (3, 1)))
    for info in infos:  # info_keys=(): only SB3's keys
        assert "TimeLimit.truncated" in info and set(info) <= {"TimeLimit.truncated", "terminal_observation"}
    env.set_options([{}, {"reset_mask": np.ones(3, dtype=bool)}, {}])
    with pytest.raises(ValueError, match="per-env options differ"):
        env.reset()
    with pytest.raises(RuntimeError, match="step_async"):
        env.step_wait()


def test_same_step_autoreset_envs_are_refused():
    venv = _sync(2)
    venv.metadata = {**venv.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}
    with pytest.raises(ValueError, match="SAME_STEP"):
        SB3VectorEnv(venv)


def test_ppo_trains_on_the_adapter_reproducibly_and_predicts():
    torch.set_num_threads(1)

    def train(seed: int) -> PPO:
        env = make_sb3_vec_env("simrec/FastRec-v1", n_envs=8, seed=None, **SMALL)
        assert isinstance(env, VecMonitor)
        model = PPO("MultiInputPolicy", env, n_steps=32, batch_size=64, n_epochs=2, seed=seed, device="cpu")
        return model.learn(total_timesteps=512)

    model, again = train(0), train(0)
    assert model.num_timesteps == 512
    assert len(model.ep_info_buffer) > 0 and all(e["l"] <= 5 for e in model.ep_info_buffer)
    for p, q in zip(model.policy.parameters(), again.policy.parameters(), strict=True):
        assert torch.equal(p, q)  # PPO(seed=...) reaches the env through SB3VectorEnv.seed
    obs = model.get_env().reset()
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (8, 4) and model.action_space.contains(actions[0].astype(np.int64))
    single, _ = model.predict(_row(obs, 0), deterministic=True)
    assert single.shape == (4,)
