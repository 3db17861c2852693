"""Sharding a policy's sessions and merging the shards' run directories back into one, without Ray.

A shard is a contiguous range of the runner's chunks (`batch_size` episodes each, global episode numbers and
seeds), run by `simenv.runner.run_sessions(only_chunks=...)` into its own directory
`<policy_dir>/../.<policy>.shards/<k>/<policy>` (named like the policy directory, so the `run` column matches).
A worker streams its finished shard's files back with its result (`shard_files`; the driver writes those it does
not already see, `receive_files`), so workers on other machines need no shared file system.
Concatenating the shards' part files in chunk order reproduces the parts an unsharded run writes, so the merged
`events`, `pages` and `interviews` are the local run's, file for file. The call log's `seq` is renumbered to
run on across shards. Parts are hard-linked before the shard directories are removed, so a driver that dies
mid-merge finds the shards intact and merges again.

`run_sharded` is the driver's side every sharded engine (ray, processes) shares: plan, run the shards through the
engine's `execute`, report progress, merge, record `engine.json`; `run_on_pool` hands the shards to idle workers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import pyarrow.compute as pc
import pyarrow.parquet as pq

from experiments.engine.base import PolicyRecipe, SessionWorld
from experiments.engine.local import LocalEngine
from recommenders.external import ExternalRecommender
from simenv.eventlog import CONFIG_FILE, RunLog
from simenv.llm import read_call_log
from simenv.protocols import PagePolicy, UserModel
from simenv.runner import RunSummary

log = logging.getLogger(__name__)
CALL_LOG = "llm_calls"
ENGINE_FILE = "engine.json"


@dataclass(frozen=True)
class Shard:
    """Shard `index` runs chunks [first_chunk, end_chunk) into `directory`."""

    index: int
    first_chunk: int
    end_chunk: int
    directory: Path

    @property
    def chunks(self) -> range:
        return range(self.first_chunk, self.end_chunk)


@dataclass(frozen=True)
class ShardResult:
    """What a worker reports for a shard: pages shown, seconds building its parts (0 when cached) and running."""

    index: int
    n_episodes: int
    n_pages: int
    build_s: float
    run_s: float
    worker: int
    attempt_pid: int
    started: float  # wall clock (time.time) when the worker began the shard
    policy_report: dict[str, int] = field(default_factory=dict)  # the policy's `report()` counters for this shard
    fallback_users: tuple[int, ...] = ()  # users an external source did not know (ExternalRecommender)
    files: dict[str, bytes] = field(default_factory=dict, repr=False)  # the finished shard directory's files
    llm_latency_s: float = 0.0  # the latency of the LLM calls this attempt made (cache hits excluded)


def call_latency_s(calls_dir: Path, first_seq: int = 0) -> float:
    """Seconds of LLM call latency a call log holds from row `first_seq` on, cache hits excluded: the endpoint time
    a run used (the numerator of `simrec compare`'s busy share)."""
    calls = read_call_log(calls_dir)
    calls = calls[(calls["seq"] >= first_seq) & ~calls["cache_hit"]]
    return float(calls["latency_s"].sum())


def shard_files(directory: Path) -> dict[str, bytes]:
    """Every file of a finished shard directory (config, checkpoint, parts), by path relative to it."""
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.endswith(".tmp")
    }


def receive_files(directory: Path, files: dict[str, bytes]) -> int:
    """Write a shard's streamed files into `directory` (the driver's copy); files already there with the same
    bytes (a worker on this machine wrote them) are left alone. Returns the number written."""
    written = 0
    for name, data in files.items():
        path = directory / name
        if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        written += 1
    return written


def shard_root(policy_dir: Path) -> Path:
    """Where a policy's shard directories live: a hidden sibling the report never reads."""
    return policy_dir.with_name(f".{policy_dir.name}.shards")


def plan_shards(policy_dir: Path, n_episodes: int, batch_size: int, n_shards: int) -> list[Shard]:
    """Split the run's chunks into at most `n_shards` contiguous, near-equal ranges (none empty)."""
    if batch_size < 1 or n_shards < 1:
        raise ValueError(f"batch_size={batch_size} and n_shards={n_shards} must be >= 1")
    n_chunks = math.ceil(n_episodes / batch_size)
    n = max(1, min(n_shards, n_chunks))
    bounds = [round(i * n_chunks / n) for i in range(n + 1)]
    root = shard_root(policy_dir)
    return [
        Shard(i, bounds[i], bounds[i + 1], root / f"{i:05d}" / policy_dir.name)
        for i in range(n)
        if bounds[i + 1] > bounds[i]
    ]


def is_complete(run_dir: Path, n_episodes: int) -> bool:
    """True when the run directory's checkpoint covers all `n_episodes` (a finished run or merged policy)."""
    checkpoint = RunLog(run_dir).read_checkpoint() if run_dir.is_dir() else None
    return checkpoint is not None and int(checkpoint["state"].get("episodes_done", -1)) >= n_episodes


def merge_shards(policy_dir: Path, shards: list[Shard], n_episodes: int) -> None:
    """Write the shards' parts into `policy_dir` in chunk order, its config.json and final checkpoint; then remove
    the shard directories. Every shard must be complete."""
    unfinished = [s.index for s in shards if not _shard_done(s)]
    if unfinished:
        raise RuntimeError(f"{policy_dir}: shards {unfinished} are not finished; cannot merge")
    policy_dir.mkdir(parents=True, exist_ok=True)
    run_log = RunLog(policy_dir)
    run_log.rollback({})  # parts of an interrupted earlier merge
    tables = sorted({t.name for s in shards for t in s.directory.iterdir() if t.is_dir()})
    for table in tables:
        target = policy_dir / table
        target.mkdir(exist_ok=True)
        n, seq = 0, 0
        for shard in shards:
            for part in sorted((shard.directory / table).glob("part-*.parquet")):
                dest = target / f"part-{n:05d}.parquet"
                if table == CALL_LOG:
                    seq = _renumbered_call_log(part, dest, seq)
                else:
                    _link(part, dest)
                n += 1
    _link(shards[0].directory / CONFIG_FILE, policy_dir / CONFIG_FILE)
    run_log.checkpoint({"chunks_done": shards[-1].end_chunk, "episodes_done": n_episodes})
    shutil.rmtree(shard_root(policy_dir), ignore_errors=True)


def _shard_done(shard: Shard) -> bool:
    checkpoint = RunLog(shard.directory).read_checkpoint() if shard.directory.is_dir() else None
    return checkpoint is not None and int(checkpoint["state"]["chunks_done"]) >= shard.end_chunk


def _link(src: Path, dest: Path) -> None:
    """Hard-link `src` at `dest` (a copy across file systems), replacing `dest` atomically."""
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _renumbered_call_log(src: Path, dest: Path, seq: int) -> int:
    """Copy a call-log part with `seq` shifted to continue after `seq` rows; returns the next seq."""
    table = pq.read_table(src)
    column = table.schema.get_field_index("seq")
    shifted = pc.add(table.column(column), seq).cast(table.schema.field(column).type)
    tmp = dest.with_name(dest.name + ".tmp")
    pq.write_table(table.set_column(column, table.schema.field(column), shifted), tmp)
    os.replace(tmp, dest)
    return seq + table.num_rows


@dataclass
class EngineStats:
    """What the last policy run cost: each shard's result, the driver's merge seconds, the whole wall time."""

    shards: list[ShardResult] = field(default_factory=list)
    merge_s: float = 0.0
    wall_s: float = 0.0
    dispatch_s: dict[int, float] = field(default_factory=dict)  # shard -> seconds from submission to its start

    @property
    def llm_latency_s(self) -> float:
        """The latency of the LLM calls the shards made in this run (a resumed run's earlier shards excluded)."""
        return sum(r.llm_latency_s for r in self.shards)


def write_stats(policy_dir: Path, stats: EngineStats, engine: str) -> None:
    """`<policy_dir>/engine.json`: per shard its worker, start-up and run seconds; the merge and wall seconds."""
    payload = {
        "engine": engine,
        "wall_s": round(stats.wall_s, 3),
        "merge_s": round(stats.merge_s, 3),
        "shards": [
            {k: v for k, v in asdict(r).items() if k != "files"} | {"dispatch_s": round(stats.dispatch_s[r.index], 3)}
            for r in stats.shards
        ],
    }
    tmp = policy_dir / ".engine.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, policy_dir / ENGINE_FILE)


def absorb_reports(policy: PagePolicy, results: list[ShardResult]) -> None:
    """Add the workers' counters of a ranking file or service to the driver's instance, so `simrec compare`
    writes the run's external.json as a local run would."""
    if isinstance(policy, ExternalRecommender):
        for r in results:
            policy.stats.update(r.policy_report)
            policy.fallback_users.update(r.fallback_users)


class Execute(Protocol):
    """An engine's way to run shards: yield each shard's result as it finishes, with `run` (the runner settings
    without `progress` and `resume`); record each shard's submission time (time.time) in `submitted`."""

    def __call__(
        self, shards: list[Shard], run: dict[str, Any], submitted: dict[int, float]
    ) -> Iterable[ShardResult]: ...


def run_sharded(
    engine: str, n_personas: int, policy: PagePolicy, policy_dir: Path, run: Mapping[str, Any], n_shards: int,
    execute: Execute, stop: Callable[[], None],
) -> tuple[RunSummary, EngineStats]:  # fmt: skip
    """The driver's side of a sharded engine: cut `policy_dir`'s episodes into at most `n_shards` shards, run them
    through `execute`, write the files a worker streamed back, report progress, merge in chunk order and write
    `engine.json`. A resumed run keeps its finished shards (a complete policy returns at once); Ctrl-C calls `stop`
    so that no worker keeps writing after the driver gave up."""
    start = time.perf_counter()
    run = dict(run)
    progress: Callable[[int, int], None] | None = run.pop("progress", None)
    resume = bool(run.pop("resume", False))
    users = run.get("users")
    n = n_personas if users is None else len(users)
    batch_size = int(run.get("batch_size", 1000))
    if (policy_dir / CONFIG_FILE).is_file() and not resume:
        raise FileExistsError(f"{policy_dir}: already holds a run; pass resume=True or use a new directory")
    if resume and is_complete(policy_dir, n):
        return RunSummary(policy_dir, n, n, 0), EngineStats()
    if not resume:
        shutil.rmtree(shard_root(policy_dir), ignore_errors=True)
    shards = plan_shards(policy_dir, n, batch_size, n_shards)
    results: list[ShardResult] = []
    submitted: dict[int, float] = {}
    done = pages = 0
    try:
        for result in execute(shards, run, submitted):
            shard = shards[result.index]
            receive_files(shard.directory, result.files)
            results.append(replace(result, files={}))
            done += min(n, shard.end_chunk * batch_size) - shard.first_chunk * batch_size
            pages += result.n_pages
            if progress is not None:
                progress(done, pages)
    except (KeyboardInterrupt, SystemExit):
        stop()
        raise
    absorb_reports(policy, results)
    merge_start = time.perf_counter()
    merge_shards(policy_dir, shards, n)
    end = time.perf_counter()
    dispatch = {r.index: r.started - submitted[r.index] for r in results}
    stats = EngineStats(sorted(results, key=lambda r: r.index), end - merge_start, end - start, dispatch)
    write_stats(policy_dir, stats, engine)
    return RunSummary(policy_dir, n, 0, pages), stats


def run_on_pool(
    workers: list[Any], submit: Callable[[Any, Any], Hashable], items: list[Any], wait: Callable[[list], Hashable],
    get: Callable[[Any], Any], indexed: bool = False,
) -> Iterator[Any]:  # fmt: skip
    """Yield the results of `submit(worker, item)` as they finish, one item per idle worker at a time (`(index,
    result)` pairs if `indexed`); `wait(handles)` returns one finished handle, `get(handle)` its result or raises
    its error. After a failure nothing new starts; the items in flight finish (a shard's checkpoints are what a
    resume continues from) and the first error is raised."""
    idle, pending, queue = list(workers), {}, list(enumerate(items))
    error: BaseException | None = None
    while queue or pending:
        while idle and queue and error is None:
            worker = idle.pop()
            index, item = queue.pop(0)
            pending[submit(worker, item)] = (worker, index)
        if not pending:
            break
        ready = wait(list(pending))
        worker, index = pending.pop(ready)
        idle.append(worker)
        try:
            result = get(ready)
        except Exception as exc:  # noqa: BLE001 - kept and raised once the items in flight are done
            error = error or exc
            continue
        if error is None:
            yield (index, result) if indexed else result
    if error is not None:
        raise error


class ShardedEngine:
    """What the sharded engines (ray, processes) share: a run without a worker recipe (train-rl, evaluate-rl: an SB3
    policy is not rebuilt from a recipe on a worker) stays in this process; any other runs the engine's
    `run_shards` with the policy directory made absolute (workers elsewhere write the same path)."""

    name: str

    def run_policy(
        self,
        world: SessionWorld,
        policy: PagePolicy,
        user_model: UserModel,
        policy_dir: Path,
        recipe: PolicyRecipe | None,
        run: Mapping[str, Any],
    ) -> RunSummary:
        """Shard the policy's episodes, run the shards on the engine's workers, merge them into `policy_dir`."""
        if recipe is None:
            name = policy_dir.name
            log.warning("--engine %s: %s runs its sessions in this process (no worker recipe)", self.name, name)
            return LocalEngine().run_policy(world, policy, user_model, policy_dir, recipe, run)
        return self.run_shards(world, policy, Path(policy_dir).resolve(), recipe, run)

    def run_shards(
        self, world: SessionWorld, policy: PagePolicy, policy_dir: Path, recipe: PolicyRecipe, run: Mapping[str, Any]
    ) -> RunSummary:
        raise NotImplementedError
