"""`simrec train-rl`: SB3 PPO (slate) or DQN (slot by slot) on the fast-user env, evaluated on the persona env.

A thin bridge from the experiment config to the CleanRL-style scripts in `experiments/rl/`; the trained
policy is compared with the configured recommenders on the same personas and seed. The evaluation uses the
mock LLM unless `--rl.eval-text` (the grounded users' decisions do not depend on the model's words), and
prints its progress with an estimate of the time left.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
from rich.console import Console

from experiments.config import ExperimentConfig


def run_train_rl(config: ExperimentConfig, console: Console | None = None) -> pd.DataFrame:
    console = console or Console()
    if config.rl.algo == "ppo":
        from experiments.rl.train_ppo import Args, main
    else:
        from experiments.rl.train_dqn import Args, main
    args = replace(
        Args(),
        seed=config.run.seed,
        total_timesteps=config.rl.timesteps,
        dataset=config.data.dataset,
        n_users=config.data.split_users,
        eval_users=config.rl.eval_personas,
        compare=tuple(n for n in config.recommenders.names if n in ("random", "pop", "mf", "lightgcn", "multvae")),
        llm_backend=config.llm.backend if config.rl.eval_text else "mock",
        out_dir=str(Path(config.run.out_dir) / config.run.name),
    )
    console.print(
        f"training {config.rl.algo} for {args.total_timesteps} steps on {args.dataset}; then evaluating on "
        f"{args.eval_users} personas with the {args.llm_backend} LLM"
        + ("" if config.rl.eval_text else " (decisions only; --rl.eval-text for the configured model's words)")
    )
    table = main(args)
    wide = table.pivot(index="policy", columns="metric", values="mean")
    console.print(wide.to_string(float_format=lambda v: f"{v:.3f}"))
    console.print(f"written: {args.out_dir}/metrics.csv")
    return table
