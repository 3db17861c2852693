"""`simrec.rl.evaluate(model, env_id, out)`: score an SB3 model a script trained with `gym.make` on real held-out data.

The script trains on `personas="train"`; this saves the model as a `simrec train-rl` checkpoint (the same
world, base recommender, page settings and persona split the env was built with) and runs `simrec evaluate-rl` on
it: the held-out personas' sessions in a response member the policy never trained against, in the LLM persona
user, and against their real TEST ratings, next to the base, the sim-greedy yardstick, Pop and Random.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
from rich.console import Console

from experiments.build import response_members
from experiments.evaluate_rl import evaluate_rl
from experiments.rl.checkpoint import ALGOS, MODEL_FILE, Checkpoint, split_personas
from simrec.envs import EVAL_PERSONAS, default_world, env_config

PAGE_KEYS = ("page_size", "max_pages", "n_candidates", "history_len")


def evaluate(
    model: Any,
    env_id: str,
    out: str | Path,
    *,
    eval_personas: int | None = None,
    eval_fold: int = 0,
    members: tuple[int, ...] | None = None,
    eval_member: int = 3,
    n_bootstrap: int = 1000,
    console: Console | None = None,
    **env_kwargs: Any,
) -> dict[str, Any]:
    """Evaluate `model` (SB3 PPO, A2C or DQN) trained in `gym.make(env_id, **env_kwargs)` on the personas that
    env's `personas="train"` leaves out; writes the checkpoint and `evaluate_rl.json` to `out` and returns it.

    `members` are the response members it was trained against (default: the env's `member=`, 0 unless given),
    so that `eval_member` is one it never saw. `env_kwargs` are the ones given to `gym.make` / `make_sb3_vec_env`."""
    algo = type(model).__name__.lower()
    if algo not in ALGOS or ALGOS[algo][0] == "d3rlpy":
        raise ValueError(f"{type(model).__name__}: simrec.rl.evaluate scores SB3 PPO, A2C or DQN models")
    kwargs = {**gym.spec(env_id).kwargs, **env_kwargs}
    if members is None:
        members = response_members(kwargs.get("member", 0))
    if eval_member in members:
        raise ValueError(f"eval_member={eval_member} is one of the members {members} the policy trained against")
    base = kwargs.get("recommender")
    if not isinstance(base, str):
        raise ValueError(f"{env_id}: evaluate needs a registry-named base recommender (recommender='mf'), got {base!r}")
    n_eval = eval_personas or EVAL_PERSONAS
    world_kwargs = {k: kwargs.get(k) for k in ("dataset", "seed", "n_users", "cache_dir") if kwargs.get(k) is not None}
    env = gym.make(env_id, personas="held_out", eval_personas=n_eval, eval_fold=eval_fold, **env_kwargs).unwrapped
    page = {k: getattr(env, k) for k in PAGE_KEYS}
    page["explore_fraction"] = env.n_explore / env.n_candidates
    config = env_config(**world_kwargs, user=kwargs.get("user"), users_file=kwargs.get("users_file"))
    config = config.model_copy(
        update={
            "rl": config.rl.model_copy(
                update={
                    "algo": algo,
                    "action": _action(model, env.action_mode),
                    "base": base,
                    "eval_personas": n_eval,
                    "eval_fold": eval_fold,
                    "members": members,
                    "eval_member": eval_member,
                }
            )
        }
    )
    world = default_world(**world_kwargs)
    train, held_out = split_personas(world.population, n_eval, config.run.seed, eval_fold)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out / MODEL_FILE))
    Checkpoint(
        algo=algo,
        base=base,
        user=config.users.kind,
        train_users=tuple(train),
        eval_users=tuple(held_out),
        env=page,
        config=config.model_dump(mode="json"),
        timesteps=int(model.num_timesteps),
        train_seconds=None,  # the script timed its own training, if it did
        action=env.action_mode,
        members=tuple(members),
        eval_member=eval_member,
    ).save(out)
    return evaluate_rl(out, console, n_boot=n_bootstrap)


def _action(model: Any, action_mode: str) -> str:
    """The `[rl] action` a script's model corresponds to: weights, ranking (the item-wise policy) or slate."""
    from experiments.rl.policy import CandidateScoringPolicy

    if action_mode == "slate" and isinstance(getattr(model, "policy", None), CandidateScoringPolicy):
        return "ranking"
    return action_mode if action_mode in ("weights", "slate") else "slate"
