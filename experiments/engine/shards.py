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
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from simenv.eventlog import CONFIG_FILE, RunLog

CALL_LOG = "llm_calls"


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
