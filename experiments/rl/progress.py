"""What both RL scripts share: a dataclass -> argparse bridge, the training env, and the evaluation against the
recommenders."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TextIO, TypeVar

import gymnasium as gym
import numpy as np
import pandas as pd
import torch
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from simenv.policies import SB3Recommender
from simenv.protocols import PagePolicy
from simenv.sb3_vec import make_sb3_vec_env

log = logging.getLogger(__name__)
T = TypeVar("T")


def parse_args(cls: type[T], argv: list[str] | None = None) -> T:
    """`--field value` for every field of the dataclass `cls` (tuples take several values, bools true/false)."""
    parser = argparse.ArgumentParser(description=cls.__doc__)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        hint = hints[f.name]
        args = typing.get_args(hint)
        kind: Any = next((a for a in args if a is not type(None)), hint) if isinstance(hint, types.UnionType) else hint
        if typing.get_origin(kind) is tuple:
            parser.add_argument(f"--{f.name.replace('_', '-')}", nargs="*", default=f.default, type=str)
        elif kind is bool:
            parser.add_argument(f"--{f.name.replace('_', '-')}", default=f.default, type=lambda v: v.lower() == "true")
        else:
            parser.add_argument(f"--{f.name.replace('_', '-')}", default=f.default, type=kind)
    values = vars(parser.parse_args(argv))
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


VecKind = Literal["single", "native", "dummy"]
VEC_KINDS: tuple[str, ...] = typing.get_args(VecKind)


def make_train_env(
    env_id: str, dataset: str, n_users: int | None, rng: np.random.Generator, vec: VecKind = "single", n_envs: int = 1
) -> gym.Env | VecEnv:
    """The training env: one `gym.make` env ("single", SB3 wraps it), the native vector env behind SB3's VecEnv API
    ("native", `simenv.sb3_vec`: N sessions stepped together in numpy), or `DummyVecEnv` of N `gym.make` envs
    ("dummy"). Seeds come from `rng`; SB3's own `seed` re-seeds the env's first reset when given."""
    kwargs = {"dataset": dataset, "n_users": n_users}
    seed = int(rng.integers(2**31))
    if vec == "single":
        env = gym.make(env_id, **kwargs)
        env.reset(seed=seed)
        env.action_space.seed(int(rng.integers(2**31)))
        return env
    if n_envs < 1:
        raise ValueError(f"n_envs={n_envs} must be >= 1")
    if vec == "native":
        return make_sb3_vec_env(env_id, n_envs, seed=seed, **kwargs)
    if vec == "dummy":
        venv = DummyVecEnv([lambda: Monitor(gym.make(env_id, **kwargs)) for _ in range(n_envs)])
        venv.seed(seed)
        return venv
    raise ValueError(f"vec={vec!r}: expected one of {VEC_KINDS}")


def train_and_evaluate(
    args: Any,
    env_id: str,
    name: str,
    action_mode: str,
    build_model: Callable[[gym.Env | VecEnv], Any],
    vec: VecKind = "single",
    n_envs: int = 1,
) -> pd.DataFrame:
    """Seed, build the fast-user env (`make_train_env`), train `build_model(env)` for `args.total_timesteps`, save
    it, and evaluate it against `args.compare` on the persona env. `args` is a script's Args dataclass."""
    # Seeding: SB3 seeds its own torch/numpy state from `seed`; the env from `rng`.
    torch.set_num_threads(args.torch_threads)
    rng = np.random.default_rng(args.seed)
    env = make_train_env(env_id, args.dataset, args.n_users, rng, vec, n_envs)
    model = build_model(env)
    model.learn(total_timesteps=args.total_timesteps)
    model.save(f"{args.out_dir}/model")
    return evaluate(
        model,
        name,
        action_mode,
        args.dataset,
        args.n_users,
        args.eval_users,
        args.compare,
        args.llm_backend,
        args.out_dir,
        args.seed,
    )


class EvalProgress:
    """Progress of the persona-env evaluation on stderr: users done, rate and an estimate of the time left
    (over every policy), at most every `every_s` seconds and once at the end of each policy."""

    def __init__(self, n_policies: int, n_users: int, stream: TextIO | None = None, every_s: float = 2.0) -> None:
        self.total = n_policies * n_users
        self.n_users = n_users
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.start = time.perf_counter()
        self.finished = 0  # users of the policies already done
        self._last = -float("inf")
        self.lines = 0

    def __call__(self, name: str, done: int, final: bool = False) -> None:
        now = time.perf_counter()
        if not final and now - self._last < self.every_s:
            return
        self._last = now
        elapsed = max(now - self.start, 1e-9)
        overall = self.finished + done
        rate = overall / elapsed
        left = (self.total - overall) / rate if rate > 0 else float("nan")
        eta = f"~{left:.0f} s left" if np.isfinite(left) else "estimating"
        print(
            f"eval {name}: {done}/{self.n_users} users; all policies {overall}/{self.total} "
            f"({rate:.2f} users/s, {elapsed:.0f} s, {eta})",
            file=self.stream,
            flush=True,
        )
        self.lines += 1
        if final:
            self.finished += done


def evaluate(
    model: Any,
    name: str,
    train_mode: str,
    dataset: str,
    n_users: int | None,
    eval_users: int,
    compare: tuple[str, ...],
    llm_backend: str,
    out_dir: str,
    seed: int,
    progress: EvalProgress | None = None,
) -> pd.DataFrame:
    """The trained model and the named recommenders on the persona env (LLM user), same users, same seed.

    With the default grounded profile the decisions (and so every metric) do not depend on the LLM's words, so
    `llm_backend="mock"` evaluates the same decisions in seconds; a real backend only adds text. Progress
    (users done, rate, time left) goes to stderr."""
    from recommenders.registry import make
    from simenv.metrics import run_metrics
    from simenv.runner import run_sessions

    env = gym.make("simenv/PersonaRec-v0", dataset=dataset, n_users=n_users, llm={"backend": llm_backend})
    inner = env.unwrapped
    policies: dict[str, PagePolicy] = {name: SB3Recommender.from_env(model, env, name=name, action_mode=train_mode)}
    for rec_name in compare:
        policies[rec_name] = make(rec_name).fit(inner.train, inner.dataset.n_users, inner.dataset.n_items)
    users = sorted(inner.personas)[:eval_users] if eval_users else sorted(inner.personas)
    progress = progress or EvalProgress(len(policies), len(users))
    print(
        f"evaluating {len(policies)} policies x {len(users)} personas on the persona env (LLM backend {llm_backend})",
        file=progress.stream,
        flush=True,
    )
    tables = []
    for policy_name, rec in policies.items():
        run_dir = Path(out_dir) / "eval" / policy_name
        done = [0]

        def on_page(episodes: int, pages: int, policy: str = policy_name, done: list[int] = done) -> None:
            done[0] = episodes
            progress(policy, episodes)

        run_sessions(
            rec,
            inner.user_model,
            inner.personas,
            inner.dataset,
            inner.train,
            run_dir,
            n_pages=inner.max_pages,
            page_size=inner.page_size,
            seed=seed,
            policy_name=policy_name,
            users=users,
            reward=inner.reward_config,
            progress=on_page,
        )
        progress(policy_name, len(users), final=True)
        tables.append(run_metrics(run_dir, rng=np.random.default_rng(seed)))
    table = pd.concat(tables, ignore_index=True)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    table.to_csv(Path(out_dir) / "metrics.csv", index=False)
    for row in table.itertuples(index=False):
        log.info("%-8s %-7s %.3f [%.3f, %.3f]", row.policy, row.metric, row.mean, row.ci_low, row.ci_high)
    return table
