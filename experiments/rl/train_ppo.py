"""PPO on the fast-user slate env (MultiDiscrete pages), evaluated on the LLM persona env against recommenders.

python -m experiments.rl.train_ppo --total-timesteps 20000 --dataset ml-100k [--vec native|dummy --n-envs 8]

`--vec native` (default) trains on `n_envs` sessions stepped together in numpy (`simenv.sb3_vec`); `dummy` on
SB3's `DummyVecEnv` of `n_envs` single envs (same user model, slower). `n_steps` is per env: a rollout is
`n_envs * n_steps` steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gymnasium as gym
import pandas as pd
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv

import simenv  # noqa: F401  (registers the env ids)
from experiments.config import DEFAULTS
from experiments.rl.common import parse_args, train_and_evaluate


@dataclass(frozen=True)
class Args:
    """PPO on simenv/FastRec-v0."""

    seed: int = DEFAULTS.run.seed
    total_timesteps: int = DEFAULTS.rl.timesteps
    dataset: str = DEFAULTS.data.dataset
    n_users: int | None = None
    vec: str = "native"  # native | dummy
    n_envs: int = 8
    n_steps: int = 32  # per env: 8 x 32 = 256 steps per rollout
    batch_size: int = 64
    n_epochs: int = 10
    learning_rate: float = 3e-4
    eval_users: int = 100
    compare: tuple[str, ...] = ("random", "pop")
    llm_backend: str = "mock"
    torch_threads: int = 1  # a small MLP trains faster on one thread than on two contended ones
    out_dir: str = "runs/rl/ppo"

    def __post_init__(self) -> None:
        if self.vec not in ("native", "dummy"):
            raise ValueError(f"vec={self.vec!r}: expected 'native' or 'dummy'")
        if self.n_envs < 1:
            raise ValueError(f"n_envs={self.n_envs} must be >= 1")


def main(args: Args) -> pd.DataFrame:
    def build(env: gym.Env | VecEnv) -> PPO:
        return PPO(
            "MultiInputPolicy",
            env,
            n_steps=args.n_steps,
            batch_size=args.batch_size,
            n_epochs=args.n_epochs,
            learning_rate=args.learning_rate,
            seed=args.seed,
            device="cpu",
            verbose=0,
        )

    return train_and_evaluate(args, "simenv/FastRec-v0", "ppo", "slate", build, vec=args.vec, n_envs=args.n_envs)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(parse_args(Args))
