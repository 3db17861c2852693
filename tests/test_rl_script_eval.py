"""A script's RL path (issue 24 §6): train on `personas="train"` with `make_sb3_vec_env` and SB3, then
`simrec.rl.evaluate` scores the model on the personas that env left out, as `simrec evaluate-rl` does (real SB3,
synthetic data, a few hundred steps)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3 import PPO

import simrec.rl
from experiments.evaluate_rl import EVALUATE_FILE
from experiments.rl.checkpoint import Checkpoint
from simrec.envs import default_world

pytestmark = pytest.mark.slow
ENV = "simrec/FastRecRank-v1"
RANKING_ENV, MF = "simrec/FastRec-v1", {"recommender": "mf"}
ENSEMBLE = {"member": (0, 1, 2)}  # the README's: one response member per episode, as `simrec train-rl`
SMALL = {"dataset": "synthetic", "eval_personas": 8}


def test_train_and_held_out_personas_partition_the_population() -> None:
    train = gym.make(ENV, personas="train", **SMALL).unwrapped
    held_out = gym.make(ENV, personas="held_out", **SMALL).unwrapped
    other_fold = gym.make(ENV, personas="held_out", eval_fold=1, **SMALL).unwrapped
    population = set(default_world("synthetic").population)
    assert len(held_out.personas) == 8 and not set(train.personas) & set(held_out.personas)
    assert set(train.personas) | set(held_out.personas) == population
    assert not set(other_fold.personas) & set(held_out.personas)
    with pytest.raises(ValueError, match="personas='test'"):
        gym.make(ENV, personas="test", **SMALL)


def test_a_script_trained_policy_is_scored_on_personas_it_never_met(tmp_path: Path) -> None:
    env = simrec.rl.make_sb3_vec_env(RANKING_ENV, n_envs=4, seed=0, personas="train", **SMALL, **MF, **ENSEMBLE)
    trained_on = set(env.get_attr("personas")[0])
    model = PPO(simrec.rl.CandidateScoringPolicy, env, n_steps=32, batch_size=64, seed=0)  # the README's path
    model.learn(256)
    result = simrec.rl.evaluate(model, RANKING_ENV, tmp_path / "mine", n_bootstrap=50, **SMALL, **MF, **ENSEMBLE)
    assert json.loads((tmp_path / "mine" / EVALUATE_FILE).read_text()) == json.loads(json.dumps(result))
    assert len(result["eval_personas"]) == 8 and not set(result["eval_personas"]) & trained_on
    assert set(result["policies"]) == {"ppo", "sim-greedy", "mf", "pop", "random"}
    assert result["comparisons"]["real"]["real_hit_difference_vs_base"]["n_personas"] == 8
    checkpoint = Checkpoint.load(tmp_path / "mine")
    assert (checkpoint.algo, checkpoint.action_mode, checkpoint.base, checkpoint.members) == (
        "ppo",
        "slate",
        "mf",
        (0, 1, 2),  # read from the env's member=, so member 3 scores a policy that never trained against it
    )
    assert checkpoint.config["rl"]["action"] == "ranking"
    assert checkpoint.train_seconds is None and result["train_seconds"] is None  # not timed here, not a made-up 0
    with pytest.raises(ValueError, match="eval_member=0"):
        simrec.rl.evaluate(model, RANKING_ENV, tmp_path / "again", eval_member=0, **SMALL, **MF)


def test_several_members_draw_one_response_member_per_episode() -> None:
    from agents.ensemble_user import EnsembleUserModel

    env = gym.make(RANKING_ENV, **SMALL, **MF, **ENSEMBLE).unwrapped
    check_env(env, skip_render_check=True)
    user = env.user_model
    assert isinstance(user, EnsembleUserModel) and len(user.members) == 3
    assert len({id(m.decider.response) for m in user.members}) == 3  # three fitted response models
    persona = next(iter(env.personas.values()))
    drawn = {user.start_session(persona, 0, np.random.default_rng(s)).model for s in range(24)}
    assert len(drawn) == 3
    assert not isinstance(gym.make(RANKING_ENV, member=1, **SMALL, **MF).unwrapped.user_model, EnsembleUserModel)
    with pytest.raises(ValueError, match="no-text user kind"):
        gym.make("simrec/PersonaRec-v1", user="persona", **SMALL, **ENSEMBLE)


def test_the_readme_example_compiles_and_calls_only_what_simrec_rl_exports() -> None:
    from benchmarks.bench_rl_script import readme_snippet

    code = readme_snippet()
    compile(code, "README.md", "exec")
    called = set(re.findall(r"simrec\.rl\.(\w+)", code))
    assert called == {"make_sb3_vec_env", "CandidateScoringPolicy", "evaluate"}
    assert called <= set(simrec.rl.__all__)
    assert 'personas="train"' in code  # trains on the personas `evaluate` holds out
