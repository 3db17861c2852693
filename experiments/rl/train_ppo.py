"""PPO on the fast-user slate env (MultiDiscrete pages), evaluated on the LLM persona env against recommenders.

python -m experiments.rl.train_ppo --total-timesteps 20000 --dataset ml-100k
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pandas as pd
import torch
from stable_baselines3 import PPO

import simenv  # noqa: F401  (registers the env ids)
from experiments.rl.common import evaluate, parse_args


@dataclass(frozen=True)
class Args:
    """PPO on simenv/FastRec-v0."""

    seed: int = 0
    total_timesteps: int = 20_000
    dataset: str = "ml-100k"
    n_users: int | None = None
    n_steps: int = 256
    batch_size: int = 64
    n_epochs: int = 10
    learning_rate: float = 3e-4
    eval_users: int = 100
    compare: tuple[str, ...] = ("random", "pop")
    llm_backend: str = "mock"
    torch_threads: int = 1  # a small MLP trains faster on one thread than on two contended ones
    out_dir: str = "runs/rl/ppo"


def main(args: Args) -> pd.DataFrame:
    # Seeding: SB3 seeds its own torch/numpy state from `seed`; the env from reset(seed=...).
    torch.set_num_threads(args.torch_threads)
    rng = np.random.default_rng(args.seed)
    env = gym.make("simenv/FastRec-v0", dataset=args.dataset, n_users=args.n_users)
    env.reset(seed=int(rng.integers(2**31)))
    env.action_space.seed(int(rng.integers(2**31)))

    model = PPO(
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
    model.learn(total_timesteps=args.total_timesteps)
    model.save(f"{args.out_dir}/model")

    return evaluate(
        model,
        "ppo",
        "slate",
        args.dataset,
        args.n_users,
        args.eval_users,
        args.compare,
        args.llm_backend,
        args.out_dir,
        args.seed,
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(parse_args(Args))
