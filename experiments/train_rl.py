"""`simrec train-rl`: a policy that re-ranks a base recommender's candidates, trained on the fitted users (SB3) or
on their logged sessions (offline, d3rlpy).

The training env is the slate env (`simenv.env.RecEnv` semantics) whose candidate set is the `[rl] base`
recommender's top items plus an exploration sample, with the `[users] kind` deciding (default *fitted*: the
response model fitted to real VALID consumption, the user `simrec validate` scores): a no-text kind in the native
vector env (`simenv.vector_env`, 8 sessions stepped together), an LLM persona kind in one env (mock LLM, slow).
Training only sees the training personas of `experiments.rl.checkpoint.split_personas`; the held-out ones are
scored afterwards by `experiments.evaluate_rl` (in both user models and on the real held-out data).

Offline algorithms (`[rl] algo` bc | cql | bcq) never interact while learning: the `[rl] behaviour` policies'
sessions of the training personas are logged as a Minari dataset and d3rlpy learns from it
(`experiments.rl.offline`); the result is scored the same way.

Writes `runs/<name>/`: `model.zip`, `rl.json`, `monitor.csv` (episode returns) and `tensorboard/` (SB3's
TensorBoard logs: `tensorboard --logdir runs/<name>/tensorboard`), then `evaluate_rl.json`; offline:
`model.d3`, `rl.json`, `minari/`, `d3rlpy/` (CSV + TensorBoard). `[rl] time_budget` stops training cleanly (an SB3
callback; between d3rlpy epochs) and the model trained so far is saved. Progress: SB3's progress bar on a
terminal, a line every 5 s otherwise (logs).
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
    TENSORBOARD_DIR,
    Checkpoint,
    decisions_only,
    split_personas,
    with_personas,
)
from experiments.rl.features import candidate_featurizer
from experiments.rl.offline import OfflineRun, behaviour_policies, export_behaviour, mdp_dataset, train_offline
from simenv.protocols import Recommender

N_ENVS = 8  # fast user: sessions stepped together
# Hyperparameters per SB3 algorithm (PPO: rollouts of 8 x 32 steps). Offline ones: experiments.rl.offline.
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
    from experiments.rl.sb3_vec import SB3VectorEnv

    settings = env_settings(config, action_mode)
    config = decisions_only(config)
    factory = UserModelFactory(config, world, build_llm(config) if config.users.writes_text else None)
    featurizer = candidate_featurizer(config, world, base)
    if not config.users.writes_text:
        from simenv.vector_env import FastRecVectorEnv

        user = factory(member=config.rl.members)  # one member drawn per episode when there are several
        inner: Any = FastRecVectorEnv(
            N_ENVS, world.dataset, world.personas, user, world.split.train, base, featurizer, **settings
        )
        venv: VecEnv = SB3VectorEnv(inner, info_keys=())
    else:
        from simenv.env import RecEnv

        user = factory(member=config.rl.members[0])
        inner = RecEnv(world.dataset, world.personas, user, world.split.train, base, featurizer, **settings)
        venv = DummyVecEnv([lambda: inner])
    venv.seed(int(np.random.default_rng([config.run.seed, 16]).integers(2**31)))
    page = {k: getattr(inner, k) for k in ("page_size", "max_pages", "n_candidates", "history_len")}
    page["explore_fraction"] = inner.n_explore / inner.n_candidates
    return VecMonitor(venv, filename=str(monitor)), page


def action_mode(config: ExperimentConfig) -> str:
    """The env action mode of `[rl] algo` and `[rl] action` (weights or slate for ppo / a2c; ranking is a slate)."""
    default = ALGOS[config.rl.algo][1]
    if default != "slate":
        return default
    return "slate" if config.rl.action == "ranking" else config.rl.action


def build_model(
    algo: str, env: VecEnv, seed: int, tensorboard_log: Path | None = None, mode: str = "slate", ranking: bool = False
) -> Any:
    """The SB3 model; in weights mode with the shared candidate scorer (`experiments.rl.policy.policy_kwargs`), with
    `ranking` the item-wise Plackett-Luce `experiments.rl.policy.CandidateScoringPolicy` (a slate-mode env)."""
    import stable_baselines3

    from experiments.rl.policy import CandidateScoringPolicy, policy_kwargs

    sb3_class = getattr(stable_baselines3, ALGOS[algo][0])
    log = str(tensorboard_log) if tensorboard_log else None
    extra = {"policy_kwargs": policy_kwargs()} if mode == "weights" else {}
    policy: Any = CandidateScoringPolicy if ranking else "MultiInputPolicy"
    return sb3_class(
        policy,
        env,
        seed=seed,
        device="cpu",
        verbose=0,
        tensorboard_log=log,
        **HYPERPARAMETERS[algo],
        **extra,
    )


def make_logging_env(config: ExperimentConfig, world: World, base: Recommender, action_mode: str) -> Any:
    """One `RecEnv` over the training personas (the `[users] kind`) in which the behaviour policies' sessions
    are logged for the offline algorithms."""
    from simenv.env import RecEnv

    config = decisions_only(config)
    factory = UserModelFactory(config, world, build_llm(config) if config.users.writes_text else None)
    user = factory()
    settings = env_settings(config, action_mode)
    return RecEnv(world.dataset, world.personas, user, world.split.train, base, **settings)


def train_offline_policy(
    config: ExperimentConfig, world: World, base: Recommender, out: Path, console: Console
) -> tuple[dict[str, Any], OfflineRun, dict[str, Any]]:
    """Log the behaviour policies' sessions (Minari), fit the d3rlpy algorithm on them; returns the page settings,
    what training did and a summary of the logged data."""
    section = config.rl
    env = make_logging_env(config, world, base, ALGOS[section.algo][1])
    recs: dict[str, Recommender | None] = {}
    for name in section.behaviour:
        recs[name] = (
            None if name == "random" else base if name == section.base else train_recommender(config, world, name)[0]
        )
    seed = int(np.random.default_rng([config.run.seed, 17]).integers(2**31))
    t0 = time.perf_counter()
    dataset_dir = export_behaviour(
        env, behaviour_policies(recs, config.run.seed), out / "minari", "simrec/sessions/behaviour-v0",
        section.offline_episodes, seed,
    )  # fmt: skip
    dataset = mdp_dataset(dataset_dir)
    log_seconds = time.perf_counter() - t0
    console.print(
        f"logged {len(dataset.episodes)} sessions ({dataset.transition_count} slot steps) of {', '.join(recs)} "
        f"in {log_seconds:.0f} s: {dataset_dir}"
    )
    _, run = train_offline(
        section.algo, dataset, out, section.timesteps, config.run.seed, section.time_budget, sys.stderr.isatty()
    )
    page = {k: getattr(env, k) for k in ("page_size", "max_pages", "n_candidates", "history_len")}
    page["explore_fraction"] = env.n_explore / env.n_candidates
    data = {
        "behaviour": list(recs),
        "episodes_per_policy": section.offline_episodes,
        "n_episodes": run.n_episodes,
        "n_transitions": run.n_transitions,
        "minari_dataset": str(dataset_dir),
        "log_seconds": round(log_seconds, 1),
    }
    return page, run, data


def train_online_policy(
    config: ExperimentConfig, world: World, base: Recommender, out: Path
) -> tuple[dict[str, Any], int, bool, float]:
    """SB3 `[rl] algo` trained in the env over `world`'s personas and saved to `out`; returns the env's page
    settings, the steps taken, whether the time budget stopped it and the training seconds."""
    section = config.rl
    mode = action_mode(config)
    env, page = make_training_env(config, world, base, mode, out / MONITOR_FILE)
    ranking = section.action == "ranking" and ALGOS[section.algo][1] == "slate"
    model = build_model(section.algo, env, config.run.seed, out / TENSORBOARD_DIR, mode, ranking)
    budget = TimeBudget(section.time_budget)
    bar = sys.stderr.isatty()  # SB3's progress bar on a terminal, progress lines in logs
    callbacks: list[BaseCallback] = [budget] if bar else [budget, TrainProgress(section.timesteps, section.algo)]
    t0 = time.perf_counter()
    model.learn(total_timesteps=section.timesteps, callback=callbacks, tb_log_name=section.algo, progress_bar=bar)
    train_seconds = round(time.perf_counter() - t0, 1)
    env.close()
    model.save(str(out / MODEL_FILE))
    return page, int(model.num_timesteps), budget.stopped, train_seconds


def train_rl(config: ExperimentConfig, console: Console | None = None) -> Checkpoint:
    """Train `[rl] algo` for `[rl] timesteps` (or until `[rl] time_budget`) and save the checkpoint."""
    console = console or Console()
    section = config.rl
    start = time.perf_counter()
    out = Path(config.run.out_dir) / config.run.name
    out.mkdir(parents=True, exist_ok=True)
    world = build_world(config)
    train_users, eval_users = split_personas(
        world.population, section.eval_personas, config.run.seed, section.eval_fold
    )
    world = with_personas(world, train_users)
    base, _ = train_recommender(config, world, section.base)
    offline = ALGOS[section.algo][0] == "d3rlpy"
    console.print(
        f"training {section.algo} for {section.timesteps} {'gradient steps' if offline else 'steps'}"
        + (f" (at most {section.time_budget:.0f} s)" if section.time_budget else "")
        + f": re-ranking {section.base}'s candidates for {len(train_users)} {world.dataset.name} personas, "
        f"{config.users.kind} users (response members {list(section.members)}); {len(eval_users)} personas held out"
        + (f"; offline, from the logged sessions of {', '.join(section.behaviour)}" if offline else "")
    )
    offline_data = None
    threads = torch.get_num_threads()
    # The policy's small network trains faster on one thread than on two contended ones. Only the policy: the world
    # and the recommenders above train with every thread (a cold cache's recommenders must not depend on whether
    # train-rl or another command built them).
    torch.set_num_threads(1)
    try:
        if offline:
            page, run, offline_data = train_offline_policy(config, world, base, out, console)
            timesteps, stopped, train_seconds = run.steps, run.stopped_by_budget, run.train_seconds
        else:
            page, timesteps, stopped, train_seconds = train_online_policy(config, world, base, out)
    finally:
        torch.set_num_threads(threads)
    checkpoint = Checkpoint(
        algo=section.algo,
        base=section.base,
        user=config.users.kind,
        train_users=tuple(train_users),
        eval_users=tuple(eval_users),
        env=page,
        config=config.model_dump(mode="json"),
        timesteps=timesteps,
        stopped_by_budget=stopped,
        train_seconds=train_seconds,
        offline_data=offline_data,
        action="" if offline else action_mode(config),
        members=tuple(section.members) if not offline else (0,),
        eval_member=section.eval_member if not offline else 0,
        directory=str(out),
    )
    checkpoint.save(out)
    stop = " (time budget reached)" if stopped else ""
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
