"""`simrec compare`: every recommender faces the same personas; prints the Agent4Rec table and writes a report.

Run directory layout: `experiment.json` (the full config), `reference.json` (real rating histogram),
`policies/<name>/` (one `simenv.runner` run each: events, pages, interviews, llm_calls, checkpoint),
`training.json`, `simulation.json` (LLM users on an endpoint: per policy the endpoint's busy share, the sum of
its calls' latencies / (concurrent requests x simulation wall time)), `report.md` + `report/*.png`. Each policy
starts with fresh user memories, as in Agent4Rec. LLM users on an endpoint run pipelined (`simenv.pipeline`): as
many sessions in flight as the endpoints take requests at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from experiments.build import (
    UserModelFactory,
    World,
    build_llm,
    build_world,
    train_recommender,
    worker_setup,
)
from experiments.config import ConfigError, ExperimentConfig, format_validation_error
from experiments.engine import AUTO_PROCESSES_SLOTS, PolicyRecipe, engine_name
from experiments.engine.shards import call_latency_s
from experiments.preflight import check_sizes, preflight
from experiments.recommender_specs import check_recommender_specs
from experiments.report import EXTERNAL_FILE, build_report, llm_summary, metrics_table, read_run
from experiments.training_log import TrainingLog, training_summary, warn_if_time_capped
from recommenders.external import ExternalRecommender
from recommenders.training import training_progress
from simenv.errors import FallbackShareExceeded, RunInterrupted
from simenv.llm import LLM, CallLogLLM
from simenv.llm.openai_backend import endpoint_urls
from simenv.llm.secrets import REDACTED, redact_urls
from simenv.metrics import METRICS
from simenv.protocols import Recommender, UserModel
from simenv.runner import rollback_to_checkpoint

log = logging.getLogger(__name__)
EXPERIMENT_FILE = "experiment.json"
TRAINING_FILE = "training.json"  # per policy: how its recommender's training stopped (flags time-capped models)
SIMULATION_FILE = "simulation.json"  # per policy: wall time and the endpoint's busy share (LLM users on an endpoint)
RUNNER_BATCH = 16  # personas stepped together; a crash redoes at most one batch of one policy
PIPELINE_CHUNK = 8  # a pipelined run's chunk (between checkpoints), in multiples of its sessions in flight
BUSY_HINT_BELOW = 0.8  # a local run keeping its endpoint less busy than this at >= 32 in flight gets `busy_hint`


def runner_slots(config: ExperimentConfig) -> int | None:
    """Sessions in flight when LLM users talk to an endpoint: every endpoint's concurrency, so the runner keeps
    them all busy (`simenv.pipeline`); None (page by page) for in-process backends and users that write no text."""
    if config.llm.backend != "openai" or not config.users.writes_text:
        return None
    return config.llm.concurrency * len(endpoint_urls(config.llm.base_url))


def compare_engine(config: ExperimentConfig, cpus: int | None = None) -> str:
    """The engine a compare runs on: `engine_name` with the LLM sessions it keeps in flight (`runner_slots`)."""
    return engine_name(config, runner_slots(config), cpus)


def runner_batch(config: ExperimentConfig) -> int:
    """Personas per chunk (checkpoint): `RUNNER_BATCH`; for pipelined LLM users on the local and processes engines
    `PIPELINE_CHUNK` x the sessions in flight (a chunk ends by draining its last sessions, ~1/16 of its time at
    part load, and a crash redoes at most one chunk; the processes engine keeps the local chunks, so its run
    directory is the local one's); for other runs against an endpoint, and on the ray engine (whose shards are made
    of chunks, so smaller chunks keep more workers busy), enough to fill the endpoints' concurrency (a page step
    sends one call per live persona and waits for the slowest)."""
    slots = runner_slots(config)
    if slots is not None and engine_name(config) in ("local", "processes"):
        return max(RUNNER_BATCH, PIPELINE_CHUNK * slots)
    if config.llm.backend != "openai":
        return RUNNER_BATCH
    return max(RUNNER_BATCH, config.llm.concurrency * len(endpoint_urls(config.llm.base_url)))


def policy_latency(config: ExperimentConfig, world: World, policy_dir: Path, first_seq: int) -> float:
    """Seconds of LLM call latency this process's run of a policy spent (cache hits excluded): on the local engine
    the policy's call log from `first_seq` on; on a sharded engine the sum over the shards it ran (each shard's
    call log from where that attempt began; shards finished before a resume are not counted)."""
    if engine_name(config) == "local":
        return call_latency_s(policy_dir / "llm_calls", first_seq)
    stats = getattr(world.engine, "last", None)
    return float(stats.llm_latency_s) if stats is not None else 0.0


def reference_stats(world: World, user_model: str) -> dict:
    """What the report compares against: the real train-split rating histogram (1..5 shares)."""
    ratings = np.rint(world.split.train["rating"].to_numpy()).astype(int)
    hist = np.bincount(ratings, minlength=6)[1:6].astype(float)
    return {
        "dataset": world.dataset.name,
        "user_model": user_model,
        "rating_hist": (hist / hist.sum()).round(4).tolist(),
        "n_personas": len(world.personas),
    }


def prepare_run_dir(config: ExperimentConfig, resume: bool) -> Path:
    """Create the run directory and write experiment.json atomically (temporary file, then rename). Called only
    after validation passed, so a bad config or data file leaves no directory behind."""
    run_dir = Path(config.run.out_dir) / config.run.name
    path = run_dir / EXPERIMENT_FILE
    dumped = redacted_config(config)
    if path.is_file():
        if not resume:
            raise ConfigError(
                f"{run_dir} already holds a run: `simrec resume {run_dir}` to continue it, or set --run.name"
            )
        if json.loads(path.read_text()) != dumped:
            raise ConfigError(f"{path}: the config differs from the run being resumed")
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{EXPERIMENT_FILE}.tmp")
    tmp.write_text(json.dumps(dumped, indent=2))
    os.replace(tmp, path)
    return run_dir


def redacted_config(config: ExperimentConfig) -> dict:
    """The config as experiment.json stores it: the userinfo and query string of every URL redacted (a key can
    ride in either); `resume_compare` takes a redacted base URL from $OPENAI_BASE_URL."""
    return _redact_strings(json.loads(config.model_dump_json()))


def _redact_strings(value: object) -> object:
    if isinstance(value, str):
        return redact_urls(value) if "://" in value else value
    if isinstance(value, dict):
        return {k: _redact_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_strings(v) for v in value]
    return value


def run_compare(config: ExperimentConfig, resume: bool = False, console: Console | None = None) -> Path:
    """Train/load each recommender, simulate every persona against it, print the table, write the report."""
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    start = time.perf_counter()
    config = config.model_copy(update={"engine": compare_engine(config)})  # recorded as chosen; a resume keeps it
    needs_llm = config.users.writes_text or "llm-rank" in config.recommenders.names
    preflight(
        config,
        recommenders=config.recommenders.names,
        needs_llm=needs_llm,
        run_dir=Path(config.run.out_dir) / config.run.name,
        marker=EXPERIMENT_FILE,
        resume=resume,
    )
    world = build_world(config)  # data errors surface here, before anything is written
    policies = check_recommender_specs(config, world)  # as do bad recommender specs; their policy names
    check_sizes(config, world)  # and pages that cannot be filled
    console.print(
        f"{world.dataset.name}: {world.dataset.n_users} users, {world.dataset.n_items} items; "
        f"split {len(world.split.users)} users / {len(world.split.train)} train ratings; "
        f"{len(world.personas)} personas × ≤{config.simulation.pages} pages × {config.simulation.page_size} items"
    )
    llm = build_llm(config) if needs_llm else None
    run_dir = prepare_run_dir(config, resume)
    try:
        return _run_policies(config, world, policies, llm, run_dir, console, start, resume)
    except KeyboardInterrupt as exc:
        if llm is not None:
            with contextlib.suppress(Exception):
                llm.close()  # its connections and loop thread, now rather than in a finalizer at exit
        raise RunInterrupted(
            f"{str(exc) or 'interrupted'}: the pages in flight are dropped (logs end at the last checkpoint); "
            f"resume with: simrec resume {run_dir}"
        ) from None


def _run_policies(
    config: ExperimentConfig, world: World, policies: list[str], llm: LLM | None, run_dir: Path, console: Console,
    start: float, resume: bool,
) -> Path:  # fmt: skip
    """Every policy's sessions, then the table and the report (`run_compare` after its checks)."""
    console.print(f"[bold]simrec compare[/] → {run_dir}")
    (run_dir / "reference.json").write_text(json.dumps(reference_stats(world, config.users.kind), indent=2))
    users = UserModelFactory(config, world, llm)
    train_s = simulate_s = 0.0
    with _progress_bars(console) as progress:
        for name in policies:
            task = progress.add_task(f"{name:>9}: training", total=len(world.personas), rate="")
            policy_dir = run_dir / "policies" / name
            resuming = resume or (policy_dir / "config.json").is_file()
            if resuming:  # drop the chunk in flight before the call log re-reads its directory
                rollback_to_checkpoint(policy_dir)
            call_log = None if llm is None else CallLogLLM(llm, policy_dir / "llm_calls", prompts=config.log.prompts)
            with training_progress(TrainingLog(progress.console)):  # a line every few seconds while models train
                recommender, seconds = train_recommender(config, world, name, llm=call_log)
                user_model = users(call_log)  # a response model may train its candidate recommenders
            train_s += seconds
            record_training(run_dir, name, recommender)
            warn_if_time_capped(progress.console, name, recommender)
            progress.update(task, description=f"{name:>9}: simulating")
            t0 = time.perf_counter()

            def on_page(done: int, pages: int, t0: float = t0, task: int = task, calls: CallLogLLM | None = call_log):
                elapsed = max(time.perf_counter() - t0, 1e-9)
                rate = f"{done / elapsed:.2f} users/s, {pages / elapsed:.2f} pages/s"
                if calls is not None:
                    rate += f", {calls.n_calls / elapsed:.2f} LLM calls/s"
                progress.update(task, completed=done, rate=rate)

            first_seq = 0 if call_log is None else call_log.n_calls
            _policy_sessions(config, world, name, recommender, user_model, policy_dir, resuming, llm, on_page, run_dir)
            wall = time.perf_counter() - t0
            latency = None
            if call_log is not None:
                call_log.close()
                latency = policy_latency(config, world, policy_dir, first_seq)
            _record_policy_run(config, console, run_dir, name, recommender, policy_dir, resuming, latency, wall)
            simulate_s += time.perf_counter() - t0
            progress.update(task, completed=len(world.personas), description=f"{name:>9}: done")
    _table_and_report(config, run_dir, console, start, train_s, simulate_s)
    return run_dir


def _policy_sessions(
    config: ExperimentConfig, world: World, name: str, recommender: Recommender, user_model: UserModel,
    policy_dir: Path, resuming: bool, llm: LLM | None, on_page: Callable[[int, int], None], run_dir: Path,
) -> None:  # fmt: skip
    """One policy's sessions into `policy_dir`; a stop for too many LLM fallbacks says how to resume."""
    try:
        world.run_sessions(
            recommender,
            user_model,
            policy_dir,
            PolicyRecipe(config, name, worker_setup, policy_parts, build_llm if llm is not None else None),
            n_pages=config.simulation.pages,
            page_size=config.simulation.page_size,
            seed=config.run.seed,
            policy_name=name,
            resume=resuming,
            batch_size=runner_batch(config),
            concurrency=runner_slots(config),
            progress=on_page,
            max_fallback_share=config.llm.max_fallback_share if config.users.writes_text else None,
        )
    except FallbackShareExceeded as exc:
        raise FallbackShareExceeded(f"{exc}; stopped, the run is resumable: simrec resume {run_dir}") from None


def _record_policy_run(
    config: ExperimentConfig, console: Console, run_dir: Path, name: str, recommender: Recommender,
    policy_dir: Path, resuming: bool, latency: float | None, wall: float,
) -> None:  # fmt: skip
    """After a policy's sessions: an external recommender's record, and (LLM users on an endpoint) how busy the
    endpoint was over the policy's `wall` seconds: `latency` (seconds of LLM calls, every shard's on a sharded
    engine) / (the concurrent requests configured x `wall`)."""
    if isinstance(recommender, ExternalRecommender):
        console.print(f"{name:>9}: {record_external(recommender, policy_dir, resuming)}")
    slots = runner_slots(config)
    if latency is not None and slots is not None:
        share = latency / (slots * max(wall, 1e-9))
        record_simulation(run_dir, name, {"wall_s": wall, "llm_latency_s": latency, "slots": slots,
                                          "busy_share": share, "engine": config.engine})  # fmt: skip
        console.print(
            f"{name:>9}: endpoint busy share {share:.2f} ({latency:.1f} s of LLM call latency / "
            f"({slots} concurrent requests x {wall:.1f} s), {config.engine} engine)"
        )
        hint = busy_hint(share, slots, config.engine, os.cpu_count() or 1)
        if hint:
            console.print(f"{name:>9}: {hint}")


def busy_hint(share: float, slots: int, engine: str, cpus: int) -> str | None:
    """The advice for an endpoint left idle because one process cannot feed it: at >= `AUTO_PROCESSES_SLOTS` requests
    in flight one Python process needs about a core (docs/LLM_ENDPOINTS.md); `--engine processes` adds the others."""
    if engine != "local" or share >= BUSY_HINT_BELOW or slots < AUTO_PROCESSES_SLOTS or cpus < 2:
        return None
    return (
        f"this process cannot keep {slots} requests in flight; --engine processes --processes.workers "
        f"{min(cpus, 4)} runs the sessions on {min(cpus, 4)} processes of this machine (same results)"
    )


def _progress_bars(console: Console) -> Progress:
    """One bar per policy: what it is doing (training, simulating), users done, its rates, the time elapsed."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _table_and_report(
    config: ExperimentConfig, run_dir: Path, console: Console, start: float, train_s: float, simulate_s: float
) -> None:
    """The finished run's metrics table and report, and where its wall time (since `start`) went."""
    tables = read_run(run_dir)
    metrics = metrics_table(tables, config.run.seed)
    print_table(console, metrics, llm_summary(tables.llm_calls))
    report = build_report(run_dir, seed=config.run.seed)
    total = time.perf_counter() - start
    llm_s = float(tables.llm_calls["latency_s"].sum()) if not tables.llm_calls.empty else 0.0
    console.print(
        f"wall time {total:.1f} s: training {train_s:.1f} s, simulation {simulate_s:.1f} s (of which LLM {llm_s:.1f} s)"
    )
    console.print(f"report: {report}")


def record_training(run_dir: Path, name: str, recommender: Recommender) -> None:
    """Add the policy's training summary (`stopped_by`, epochs, best valid metric, `time_capped`) to
    `training.json` in the run directory (null for a model without a training loop)."""
    path = run_dir / TRAINING_FILE
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data[name] = training_summary(recommender)
    tmp = path.with_name(f".{TRAINING_FILE}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def record_simulation(run_dir: Path, name: str, stats: dict[str, float | int | str]) -> None:
    """Add the policy's simulation figures (wall time, LLM latency, concurrent requests, endpoint busy share, engine) to
    `simulation.json` in the run directory (this process's part of the policy's run on resume)."""
    path = run_dir / SIMULATION_FILE
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data[name] = {k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}
    tmp = path.with_name(f".{SIMULATION_FILE}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def policy_parts(users: UserModelFactory, llm: LLM | None, name: str) -> tuple[Recommender, UserModel]:
    """A policy's recommender (from the model cache) and a fresh user model: what an engine worker runs."""
    return train_recommender(users.config, users.world, name, llm=llm)[0], users(llm)


def record_external(recommender: ExternalRecommender, policy_dir: Path, resuming: bool) -> str:
    """Write how a ranking file or service served the policy (pages, fallback pages and items, unknown users,
    dropped ids, failed requests) to `policies/<name>/external.json`, summed with an earlier process's counts
    when resuming; close a service's client. Returns the one-line summary printed after the policy."""
    counts = recommender.report()
    path = policy_dir / EXTERNAL_FILE
    if resuming and path.is_file():
        earlier = json.loads(path.read_text(encoding="utf-8"))
        counts = {k: int(earlier.get(k, 0)) + int(counts.get(k, 0)) for k in {*earlier, *counts}}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(counts.items())), indent=2), encoding="utf-8")
    os.replace(tmp, path)
    close = getattr(recommender, "close", None)
    if callable(close):
        close()
    failed = sum(v for k, v in counts.items() if k.startswith("fail_"))
    return (
        f"{counts.get('pages', 0)} pages, {counts.get('fallback_pages', 0)} filled by the fallback "
        f"({counts.get('fallback_items', 0)} items; {counts.get('fallback_users', 0)} users not in the source), "
        f"{counts.get('dropped_ids', 0)} ids dropped"
        + (f", {failed} failed attempts of {counts.get('requests', 0)} requests" if "requests" in counts else "")
    )


def print_table(console: Console, metrics: pd.DataFrame, llm: pd.DataFrame) -> None:
    """The Agent4Rec table (mean and 95% interval over users), the share of pages marked fallback
    (figures of a policy above 0% rest partly on fallbacks) plus LLM calls, tokens and cache hits."""
    table = Table(title="Agent4Rec metrics (mean [95% CI] over users)")
    table.add_column("policy")
    for metric in METRICS:
        table.add_column(metric, justify="right")
    table.add_column("users", justify="right")
    has_share = "fallback_share" in metrics.columns
    if has_share:
        table.add_column("fallback share", justify="right")
    if not llm.empty:
        for column in ("LLM calls", "tokens", "cache hits"):
            table.add_column(column, justify="right")
    by_policy = metrics.set_index(["policy", "metric"])
    for policy in sorted(metrics["policy"].unique()):
        cells = []
        for metric in METRICS:
            if (policy, metric) in by_policy.index:
                r = by_policy.loc[(policy, metric)]
                cells.append(f"{r['mean']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]")
            else:
                cells.append("—")
        users = int(metrics.loc[metrics["policy"] == policy, "n_users"].max())
        share = [f"{metrics.loc[metrics['policy'] == policy, 'fallback_share'].max():.1%}"] if has_share else []
        extra = []
        if not llm.empty and policy in llm.index:
            row = llm.loc[policy]
            extra = [
                f"{int(row['calls'])}",
                f"{int(row['prompt_tokens'] + row['completion_tokens'])}",
                f"{row['cache_hit_rate']:.0%}",
            ]
        elif not llm.empty:
            extra = ["0", "0", "—"]
        table.add_row(policy, *cells, str(users), *share, *extra)
    console.print(table)


def resume_compare(run_dir: Path) -> Path:
    """Continue a crashed compare run with exactly the config it was started with."""
    return run_compare(stored_config(run_dir), resume=True)


def stored_config(run_dir: Path) -> ExperimentConfig:
    """The config a compare or validate run directory was started with (its experiment.json)."""
    path = Path(run_dir) / EXPERIMENT_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a compare or validate run directory (no {EXPERIMENT_FILE})")
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        config = ExperimentConfig.model_validate(with_base_url(stored, path))
    except (ValueError, UnicodeDecodeError) as exc:  # JSON or pydantic: a damaged experiment.json
        detail = format_validation_error(exc, str(path)) if isinstance(exc, ValidationError) else f"{path}: {exc}"
        raise ConfigError(one_line_detail(detail)) from None
    return config


def with_base_url(stored: dict, path: Path) -> dict:
    """experiment.json with a redacted `[llm] base_url` (its query string held a secret) replaced by
    $OPENAI_BASE_URL, which must be the same endpoints (the config check on resume compares the redacted forms)."""
    llm = stored.get("llm") if isinstance(stored, dict) else None
    if not isinstance(llm, dict) or REDACTED not in json.dumps(llm.get("base_url")):
        return stored
    env = os.environ.get("OPENAI_BASE_URL")
    if not env:
        raise ConfigError(f"{path}: [llm.base_url] was stored redacted; set OPENAI_BASE_URL to the run's endpoint(s)")
    return {**stored, "llm": {**llm, "base_url": env}}


def one_line_detail(text: str) -> str:
    return " | ".join(p.strip() for p in text.splitlines() if p.strip())
