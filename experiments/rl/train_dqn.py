"""DQN on the fast-user sequential env (Discrete: one slot per step), evaluated on the LLM persona env.

python -m experiments.rl.train_dqn --total-timesteps 20000 --dataset ml-100k
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gymnasium as gym
import pandas as pd
from stable_baselines3 import DQN

import simenv  # noqa: F401  (registers the env ids)
from experiments.config import DEFAULTS
from experiments.rl.common import parse_args, train_and_evaluate


@dataclass(frozen=True)
class Args:
    """DQN on simenv/FastRecSeq-v0."""

    seed: int = DEFAULTS.run.seed
    total_timesteps: int = DEFAULTS.rl.timesteps
    dataset: str = DEFAULTS.data.dataset
    n_users: int | None = None
    buffer_size: int = 20_000
    learning_starts: int = 500
    batch_size: int = 64
    learning_rate: float = 1e-4
    exploration_fraction: float = 0.3
    eval_users: int = 100
    compare: tuple[str, ...] = ("random", "pop")
    llm_backend: str = "mock"
    torch_threads: int = 1  # a small MLP trains faster on one thread than on two contended ones
    out_dir: str = "runs/rl/dqn"


def main(args: Args) -> pd.DataFrame:
    def build(env: gym.Env) -> DQN:
        return DQN(
            "MultiInputPolicy",
            env,
            buffer_size=args.buffer_size,
            learning_starts=args.learning_starts,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            exploration_fraction=args.exploration_fraction,
            seed=args.seed,
            device="cpu",
            verbose=0,
        )

    return train_and_evaluate(args, "simenv/FastRecSeq-v0", "dqn", "sequential", build)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(parse_args(Args))
