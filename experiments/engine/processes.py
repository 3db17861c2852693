"""The processes engine: a policy's shards run on worker processes of this machine and are merged in chunk order,
as the Ray engine's are, without Ray (`--engine processes`, `[processes] workers`).

Why: the pipelined runner's own work (~1.5 ms of CPU per LLM call) makes one Python process CPU-bound at about
128 requests in flight behind a 250 ms endpoint; `workers` processes of `concurrency / workers` sessions each share
that work out. How: the shard machinery of the Ray engine: `shards.plan_shards` cuts the runner's chunks into
contiguous shards, a `worker.ShardWorker` in each process builds its parts from the recipe (once per config; each
policy's recommender from the model cache) and runs its shards with the episodes' global numbers and seeds, and
`shards.merge_shards` concatenates them in chunk order. The chunks are the local engine's (`compare.runner_batch`),
so the run directory is the local engine's, part file for part file.

Each worker is a one-process `ProcessPoolExecutor` (a lane). When `m` lanes have shards, lane `i` runs its shard
with its share of the sessions in flight and of `[llm] concurrency` (near-equal whole shares summing to the
totals, at least one each), so the endpoint gets what a local run sends. Processes are spawned, not forked (a
forked child deadlocks in torch's thread pool once the parent has used it), inherit this process's environment (API
keys stay there: a task carries the config and function names only) and are kept for the command's later policies.
They write their shards into the run directory themselves (one machine: nothing is streamed back). A failing shard
fails the command once the shards in flight have finished, and `simrec resume` continues from the shards'
checkpoints; a worker process that dies is not restarted (the Ray engine restarts its actors): its shard fails so.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from experiments.config import ExperimentConfig
from experiments.engine.base import PolicyRecipe, SessionWorld
from experiments.engine.shards import EngineStats, Shard, ShardedEngine, ShardResult, run_on_pool, run_sharded
from experiments.engine.worker import ShardWorker
from simenv.protocols import PagePolicy
from simenv.runner import RunSummary

_WORKER: list[ShardWorker] = []  # in a worker process: its one ShardWorker


class _Pool:
    """This process's lanes (one worker process each), kept across policies; rebuilt when their number changes."""

    lanes: list[ProcessPoolExecutor] = []


def stop_workers() -> None:
    """End this process's worker processes now (a shard in flight is abandoned: its last checkpoint stays)."""
    for lane in _Pool.lanes:
        for process in list((getattr(lane, "_processes", None) or {}).values()):  # 3.11 has no public terminate
            process.terminate()
        lane.shutdown(wait=False, cancel_futures=True)
    _Pool.lanes = []


def share(total: int, parts: int, index: int) -> int:
    """Part `index` of `total` cut into `parts` near-equal whole parts (the first `total % parts` one larger), >= 1."""
    return max(1, total // parts + (index < total % parts))


def _start_worker(index: int) -> None:
    """A worker process's initializer: its ShardWorker, which keeps its world and parts across tasks."""
    _WORKER.append(ShardWorker(index, stream_files=False))


def _run_shard(recipe: PolicyRecipe, shard: Shard, run: dict[str, Any], llm_concurrency: int) -> ShardResult:
    """In a worker process: run `shard` with an LLM limited to `llm_concurrency` requests in flight per endpoint."""
    worker = _WORKER[0]
    worker.llm_concurrency = llm_concurrency
    return worker.run_shard(recipe, shard, run)


def _first_done(futures: list[Future]) -> Future:
    return next(iter(wait(futures, return_when=FIRST_COMPLETED).done))


class ProcessEngine(ShardedEngine):
    """Runs a policy's shards on `[processes] workers` spawned processes; identical output to the local engine."""

    name = "processes"

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        self.section = config.processes
        self.last = EngineStats()

    def lanes(self) -> list[ProcessPoolExecutor]:
        """The worker processes' executors, started on first use (a process starts when its first task comes)."""
        if len(_Pool.lanes) != self.section.workers:
            stop_workers()
            context = multiprocessing.get_context("spawn")
            _Pool.lanes = [
                ProcessPoolExecutor(1, mp_context=context, initializer=_start_worker, initargs=(i,))
                for i in range(self.section.workers)
            ]
        return _Pool.lanes

    def run_shards(
        self, world: SessionWorld, policy: PagePolicy, policy_dir: Path, recipe: PolicyRecipe, run: Mapping[str, Any]
    ) -> RunSummary:
        """Run the policy's shards on the worker processes and merge them into `policy_dir`."""

        def execute(shards: list[Shard], run: dict[str, Any], submitted: dict[int, float]) -> Any:
            lanes = self.lanes()[: len(shards)]
            sessions, llm = run.get("concurrency"), self.config.llm.concurrency

            def submit(i: int, shard: Shard) -> Future:
                submitted[shard.index] = time.time()
                lane_run = run if sessions is None else {**run, "concurrency": share(sessions, len(lanes), i)}
                return lanes[i].submit(_run_shard, recipe, shard, lane_run, share(llm, len(lanes), i))

            return run_on_pool(list(range(len(lanes))), submit, shards, _first_done, Future.result)

        n_shards = self.section.workers * self.section.shards_per_worker
        try:
            summary, self.last = run_sharded(
                self.name, len(world.personas), policy, policy_dir, run, n_shards, execute, stop_workers
            )
        except BrokenProcessPool as exc:
            stop_workers()  # the next run starts fresh processes
            raise RuntimeError(
                f"{policy_dir.name}: a worker process of --engine processes died mid-shard ({exc}); the shards' "
                "finished chunks are kept and a resume continues from them"
            ) from exc
        return summary
