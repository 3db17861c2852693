"""A shard worker: builds its parts once (world, user-model factory, LLM, each policy's recommender and user
model, from the shared caches) and runs the shards it is given. Plain Python; `ray_engine` makes it an actor.

A policy's parts are kept for the shards of one policy run and rebuilt for the next (from the caches: loading,
not training). Before each shard the worker points its policy parts' LLM at the shard's own call log
(`SwitchLLM`), so a recommender and user model built once log every call into the directory of the shard that
made it. A shard directory that already holds a run (a retry after the worker died) is rolled back to its last
checkpoint and resumed, so a retried shard writes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from experiments.config import ExperimentConfig
from experiments.engine.base import PolicyRecipe, WorkerContext, context_key
from experiments.engine.limits import NAMESPACE, ClusterLimitedLLM
from experiments.engine.shards import CALL_LOG, Shard, ShardResult, call_latency_s, shard_files
from simenv.llm import LLM, CallLogLLM, LLMWrapper
from simenv.protocols import PagePolicy, UserModel
from simenv.runner import rollback_to_checkpoint


class SwitchLLM(LLMWrapper):
    """An LLM whose inner model is swapped per shard (to that shard's call log); flush and close reach it."""

    label = "shard"

    def flush(self) -> None:
        flush = getattr(self.inner, "flush", None)
        if callable(flush):
            flush()


class ShardWorker:
    """Worker `index` of a pool; `endpoint` is the LLM base URL it uses (None: the config's), `slots` the name of
    that endpoint's `EndpointSlots` actor (None: no cluster-wide limit); `llm_concurrency` this worker's part of
    `[llm] concurrency` (the processes engine shares it out; None: the config's); `stream_files`: return a finished
    shard's files with its result (for a driver on another machine; False when it shares this file system)."""

    def __init__(
        self,
        index: int,
        endpoint: str | None = None,
        slots: str | None = None,
        concurrency: int = 1,
        llm_concurrency: int | None = None,
        stream_files: bool = True,
    ):
        self.index = index
        self.endpoint = endpoint
        self.slots_name = slots
        self.concurrency = concurrency
        self.llm_concurrency = llm_concurrency
        self.stream_files = stream_files
        self._contexts: dict[str, WorkerContext] = {}
        self._llms: dict[str, LLM] = {}
        self._parts: dict[str, tuple[SwitchLLM, PagePolicy, UserModel]] = {}
        if slots is not None:  # a restarted worker takes back the slots its previous process died holding
            import ray

            ray.get(self._slots().release_all.remote(self.holder))

    @property
    def holder(self) -> str:
        return f"worker-{self.index}"

    def _slots(self) -> Any:
        import ray

        return ray.get_actor(self.slots_name, namespace=NAMESPACE)

    def context(self, setup: Callable[[ExperimentConfig, int | None], WorkerContext], config, n_personas) -> Any:
        key = context_key(setup, config, n_personas)
        if key not in self._contexts:
            self._contexts[key] = setup(config, n_personas)
        return self._contexts[key]

    def llm(self, make_llm: Callable[[ExperimentConfig], LLM], config: ExperimentConfig) -> LLM:
        """The worker's LLM for `config` (its endpoint, the cluster-wide limit around it), built once."""
        if self.endpoint is not None:
            config = config.model_copy(update={"llm": config.llm.model_copy(update={"base_url": self.endpoint})})
        if self.llm_concurrency is not None:
            llm = config.llm.model_copy(update={"concurrency": self.llm_concurrency})
            config = config.model_copy(update={"llm": llm})
        key = config.llm.model_dump_json()
        if key not in self._llms:
            llm = make_llm(config)
            if self.slots_name is not None:
                llm = ClusterLimitedLLM(llm, self._slots(), self.holder, self.concurrency)
            self._llms[key] = llm
        return self._llms[key]

    def run_shard(self, recipe: PolicyRecipe, shard: Shard, run: Mapping[str, Any]) -> ShardResult:
        """Run `shard` of `recipe`'s policy with the runner settings `run`; resume it if it was started before."""
        started, start = time.time(), time.perf_counter()
        context = self.context(recipe.setup, recipe.config, recipe.n_personas)
        base = self.llm(recipe.make_llm, recipe.config) if recipe.make_llm is not None else None
        # parts live for one policy run (its shards): a recommender's counters must not carry over to another run
        key = f"{recipe.key()}|{recipe.parts.__module__}.{recipe.parts.__qualname__}|{shard.directory.parent.parent}"
        if key not in self._parts:
            self._parts.clear()
            switch = SwitchLLM(base) if base is not None else None
            policy, user_model = recipe.parts(context, switch, recipe.policy)
            self._parts[key] = (switch, policy, user_model)  # type: ignore[assignment]
        switch, policy, user_model = self._parts[key]
        resume = (shard.directory / "config.json").is_file()
        if resume:  # before the call log re-reads its directory
            rollback_to_checkpoint(shard.directory)
        call_log = None
        if switch is not None and base is not None:
            call_log = CallLogLLM(base, shard.directory / CALL_LOG) if recipe.call_log else None
            switch.inner = call_log or base
        first_call = call_log.n_calls if call_log is not None else 0  # a retried shard's log holds earlier calls
        built = time.perf_counter()
        before, users_before = _counters(policy)
        summary = context.world.run_sessions(
            policy, user_model, shard.directory, **run, resume=resume, only_chunks=shard.chunks
        )
        if call_log is not None:
            call_log.flush()
        after, users_after = _counters(policy)
        return ShardResult(
            index=shard.index,
            n_episodes=summary.n_episodes,
            n_pages=summary.n_pages_shown,
            build_s=built - start,
            run_s=time.perf_counter() - built,
            worker=self.index,
            attempt_pid=os.getpid(),
            started=started,
            policy_report={k: v - before.get(k, 0) for k, v in after.items() if k != "fallback_users"},
            fallback_users=tuple(sorted(users_after - users_before)),
            files=shard_files(shard.directory) if self.stream_files else {},
            llm_latency_s=call_latency_s(shard.directory / CALL_LOG, first_call) if call_log is not None else 0.0,
        )

    def call(self, setup: Callable[[ExperimentConfig, int | None], WorkerContext], config, fn, item, make_llm) -> Any:
        """`fn(context, llm, item)` with this worker's context and LLM for `config` (built once; the LLM None when
        `make_llm` is): a command's unit of work."""
        llm = self.llm(make_llm, config) if make_llm is not None else None
        return fn(self.context(setup, config, None), llm, item)

    def ping(self) -> int:
        return os.getpid()

    def peak_rss_mb(self) -> float:
        """This worker process's peak resident memory (MB)."""
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _counters(policy: Any) -> tuple[dict[str, int], set[int]]:
    """A policy's `report()` counters (ranking files, services) and the users its source did not know."""
    report = getattr(policy, "report", None)
    counts = {k: int(v) for k, v in report().items()} if callable(report) else {}
    return counts, set(getattr(policy, "fallback_users", ()))
