"""Every registered id: both env checkers with the real fast user / LLM user (mock LLM), make_vec, defaults."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import simrec
from simenv.env import RecEnv

SMALL = {"dataset": "synthetic"}


@pytest.mark.parametrize("env_id", simrec.ENV_IDS)
def test_checkers_pass_on_every_id(env_id):
    kwargs = dict(SMALL)
    if env_id == "simrec/PersonaRecLive-v1":
        # The live id defaults to the embedded SmolLM2 (minutes per check on 2 cores); the plumbing is checked
        # here with the mock backend, the real model by the benchmark/CLI.
        kwargs["llm"] = {"backend": "mock"}
    env = gym.make(env_id, **kwargs)
    spec = gym.spec(env_id)
    assert spec.nondeterministic == (env_id == "simrec/PersonaRecLive-v1")
    inner = env.unwrapped
    assert isinstance(inner, RecEnv)
    steps = inner.max_pages * (inner.page_size if inner.action_mode == "sequential" else 1)
    assert spec.max_episode_steps == steps
    check_env(inner, skip_render_check=True)
    sb3_check_env(inner, warn=False)
    env.close()


def test_default_world_is_ml100k_agent4rec_split_with_the_validated_user():
    from agents.config import load_user
    from agents.silent_user import SilentUserModel

    env = gym.make("simrec/FastRec-v1")
    inner = env.unwrapped
    assert isinstance(inner.user_model, SilentUserModel)
    assert inner.user_model.decider.config == load_user("fitted").decision  # the user `simrec validate` scores
    assert inner.user_model.decider.response is not None
    assert inner.dataset.name.startswith("ml-100k")
    assert inner.dataset.n_items == 1682
    obs, info = env.reset(seed=0)
    persona = inner.personas[info["user_id"]]
    assert not set(info["candidate_ids"].tolist()) & set(persona.train_items)
    assert env.observation_space.contains(obs)


def test_persona_env_reproduces_episode_with_mock_llm():
    env = gym.make("simrec/PersonaRec-v1", **SMALL)

    def episode(seed):
        obs, info = env.reset(seed=seed)
        out = []
        done = False
        while not done:
            obs, r, term, trunc, info = env.step(np.flatnonzero(info["action_mask"])[:4])
            out.append((r, info["feedback"]))
            done = term or trunc
        return out

    a, b = episode(5), episode(5)
    assert a == b
    assert any(r.feeling for _, fb in a for r in fb.reactions)  # text reaches info, never the observation


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec(mode):
    # async workers are spawned: a forked child deadlocks in torch's thread pool once the parent has used it (the
    # rank columns score with SASRec/LightGCN), which other tests in this process may have done
    extra = {"vector_kwargs": {"context": "spawn"}} if mode == "async" else {}
    envs = gym.make_vec("simrec/FastRec-v1", num_envs=2, vectorization_mode=mode, **SMALL, **extra)
    obs, info = envs.reset(seed=[1, 2])
    assert obs["candidates"].shape[0] == 2
    rng = np.random.default_rng(0)
    total = 0.0
    for _ in range(12):
        actions = np.stack([rng.permutation(40)[:4] for _ in range(2)])
        obs, reward, term, trunc, info = envs.step(actions)
        total += float(reward.sum())
    envs.close()
    assert total > 0
