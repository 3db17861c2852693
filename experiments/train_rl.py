"""`simrec train-rl`: an SB3 policy that re-ranks a base recommender's candidates, trained on the fitted users.

The training env is the slate env (`simenv.env.RecEnv` semantics) whose candidate set is the `[rl] base`
recommender's top items plus an exploration sample, with the `[rl] user` model deciding by the `[users] profile`
(default *fitted*: the response model fitted to real VALID consumption): the fast user in the native vector env
(`simenv.vector_env`, 8 sessions stepped together), or the grounded persona user (mock LLM, one env, slow).
Training only sees the training personas of `experiments.rl.checkpoint.split_personas`; the held-out ones are
scored afterwards by `experiments.evaluate_rl` (in both user models and on the real held-out data).

Writes `runs/<name>/`: `model.zip`, `rl.json`, `monitor.csv` (episode returns), then `evaluate_rl.json`.
`[rl] time_budget` stops training cleanly (an SB3 callback) and the model trained so far is saved.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor

from experiments.build import UserModelFactory, World, build_llm, build_world, train_recommender
from experiments.config import ExperimentConfig
from experiments.rl.checkpoint import (
    ALGOS,
    MODEL_FILE,
    MONITOR_FILE,
    Checkpoint,
    decisions_only,
    split_personas,
    with_personas,
)
from simenv.protocols import Recommender

N_ENVS = 8  # fast user: sessions stepped together
# Hyperparameters per algorithm (those of experiments/rl/train_ppo.py and train_dqn.py; rollouts of 8 x 32 steps).
HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 32, "batch_size": 64, "n_epochs": 10, "learning_rate": 3e-4},
    "a2c": {"n_steps": 8, "learning_rate": 7e-4},
    "dqn": {"buffer_size": 20_000, "learning_starts": 500, "batch_size": 64, "learning_rate": 1e-4,
            "exploration_fraction": 0.3},
}  # fmt: skip


class TimeBudget(BaseCallback):
    """Stop `learn` cleanly once `seconds` have passed since training started (checked every step)."""

    def __init__(self, seconds: float | None) -> None:
        super().__init__()
        self.seconds = seconds
        self.start = 0.0
        self.stopped = False

    def _on_training_start(self) -> None:
        self.start = time.perf_counter()

    def _on_step(self) -> bool:
        if self.seconds is not None and time.perf_counter() - self.start > self.seconds:
            self.stopped = True
            return False
        return True


class TrainProgress(BaseCallback):
    """Steps done, rate and time left on stderr, at most every `every_s` seconds (a progress bar that also works
    in logs)."""

    def __init__(self, total: int, name: str, every_s: float = 5.0) -> None:
        super().__init__()
        self.total, self.name, self.every_s = total, name, every_s
        self.start = self.last = 0.0

    def _on_training_start(self) -> None:
        self.start = self.last = time.perf_counter()

    def _on_step(self) -> bool:
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            rate = self.num_timesteps / max(now - self.start, 1e-9)
            left = (self.total - self.num_timesteps) / rate if rate > 0 else float("nan")
            print(
                f"train {self.name}: {self.num_timesteps}/{self.total} steps ({rate:.0f} steps/s, ~{left:.0f} s left)",
                file=sys.stderr,
                flush=True,
            )
        return True


def env_settings(config: ExperimentConfig, action_mode: str) -> dict[str, Any]:
    """The page settings of the training env (the env defaults for candidates, exploration and history)."""
    return {"page_size": config.simulation.page_size, "max_pages": config.simulation.pages, "action_mode": action_mode}


def make_training_env(
    config: ExperimentConfig, world: World, base: Recommender, action_mode: str, monitor: Path
) -> tuple[VecEnv, dict[str, Any]]:
    """The SB3 env over the training personas and its page settings (to rebuild the same observation later)."""
    from simenv.sb3_vec import SB3VectorEnv

    settings = env_settings(config, action_mode)
    config = decisions_only(config)
    factory = UserModelFactory(config, world, build_llm(config) if config.rl.user == "grounded" else None)
    if config.rl.user == "fast":
        from simenv.vector_env import FastRecVectorEnv

        inner: Any = FastRecVectorEnv(
            N_ENVS, world.dataset, world.personas, factory(kind="fast"), world.split.train, base, **settings
        )
        venv: VecEnv = SB3VectorEnv(inner, info_keys=())
    else:
        from simenv.env import RecEnv

        inner = RecEnv(world.dataset, world.personas, factory(kind="llm"), world.split.train, base, **settings)
        venv = DummyVecEnv([lambda: inner])
    venv.seed(int(np.random.default_rng([config.run.seed, 16]).integers(2**31)))
    page = {k: getattr(inner, k) for k in ("page_size", "max_pages", "n_candidates", "history_len")}
    page["explore_fraction"] = inner.n_explore / inner.n_candidates
    return VecMonitor(venv, filename=str(monitor)), page


def build_model(algo: str, env: VecEnv, seed: int) -> Any:
    import stable_baselines3

    sb3_class = getattr(stable_baselines3, ALGOS[algo][0])
    return sb3_class("MultiInputPolicy", env, seed=seed, device="cpu", verbose=0, **HYPERPARAMETERS[algo])


def train_rl(config: ExperimentConfig, console: Console | None = None) -> Checkpoint:
    """Train `[rl] algo` for `[rl] timesteps` (or until `[rl] time_budget`) and save the checkpoint."""
    console = console or Console()
    section = config.rl
    start = time.perf_counter()
    out = Path(config.run.out_dir) / config.run.name
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # a small MLP trains faster on one thread than on two contended ones
    world = build_world(config)
    train_users, eval_users = split_personas(world.population, section.eval_personas, config.run.seed)
    world = with_personas(world, train_users)
    base, _ = train_recommender(config, world, section.base)
    action_mode = ALGOS[section.algo][1]
    env, page = make_training_env(config, world, base, action_mode, out / MONITOR_FILE)
    console.print(
        f"training {section.algo} for {section.timesteps} steps"
        + (f" (at most {section.time_budget:.0f} s)" if section.time_budget else "")
        + f": re-ranking {section.base}'s candidates for {len(train_users)} {world.dataset.name} personas, "
        f"{section.user} user, profile {config.users.profile}; {len(eval_users)} personas held out"
    )
    model = build_model(section.algo, env, config.run.seed)
    budget = TimeBudget(section.time_budget)
    t0 = time.perf_counter()
    model.learn(total_timesteps=section.timesteps, callback=[budget, TrainProgress(section.timesteps, section.algo)])
    train_seconds = time.perf_counter() - t0
    env.close()
    model.save(str(out / MODEL_FILE))
    checkpoint = Checkpoint(
        algo=section.algo,
        base=section.base,
        user=section.user,
        train_users=tuple(train_users),
        eval_users=tuple(eval_users),
        env=page,
        config=config.model_dump(mode="json"),
        timesteps=int(model.num_timesteps),
        stopped_by_budget=budget.stopped,
        train_seconds=round(train_seconds, 1),
        directory=str(out),
    )
    checkpoint.save(out)
    stop = " (time budget reached)" if budget.stopped else ""
    console.print(
        f"trained {checkpoint.timesteps} steps in {train_seconds:.0f} s{stop} "
        f"({time.perf_counter() - start:.0f} s with data and base); checkpoint: {out}"
    )
    return checkpoint


def run_train_rl(config: ExperimentConfig, console: Console | None = None) -> dict[str, Any]:
    """`simrec train-rl`: train, save, then score the policy with `simrec evaluate-rl`'s three scorings."""
    from experiments.evaluate_rl import evaluate_rl

    console = console or Console(width=None if sys.stdout.isatty() else 160)
    checkpoint = train_rl(config, console)
    return evaluate_rl(Path(checkpoint.directory), console)
