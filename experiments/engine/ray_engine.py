"""The Ray engine: a policy's personas sharded over a pool of worker actors, the shards merged in chunk order.

Cluster: `[ray] address` joins a running cluster ('auto' on a machine where `ray start` ran); None starts a local
one bound to 127.0.0.1 with `num_workers` CPUs, no dashboard and no client server. API keys reach the workers
through the job's runtime environment (`env_vars` copied from this process's environment), never as task
arguments or objects. Workers are actors with `max_restarts` / `max_task_retries` = `[ray] max_retries`: a
worker killed mid-shard is restarted and the shard retried, resuming from its checkpoint (see `worker`).
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from experiments.config import ConfigError, ExperimentConfig, RaySection
from experiments.engine.base import PolicyRecipe, SessionWorld, Setup
from experiments.engine.limits import NAMESPACE, EndpointSlots, slots_name
from experiments.engine.shards import EngineStats, Shard, ShardedEngine, run_sharded
from experiments.engine.shards import run_on_pool as run_on_any_pool
from experiments.engine.worker import ShardWorker
from simenv.llm import LLM
from simenv.llm.openai_backend import endpoint_urls
from simenv.protocols import PagePolicy
from simenv.runner import RunSummary

LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a single-node cluster on 127.0.0.1 (Ray's own switch)
FORWARDED_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SIMREC_CACHE_DIR", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("--engine ray needs Ray: pip install 'simrec[ray]' (ray==2.60.0)") from exc
    return ray


def worker_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment variables workers need (API key, endpoint, cache dir, offline switches), from ours."""
    env = os.environ if environ is None else environ
    return {k: env[k] for k in FORWARDED_ENV if k in env}


def connect(section: RaySection) -> Any:
    """Join `section.address`, or start a local loopback-only cluster (no dashboard, no client port)."""
    if section.address is None:
        os.environ.setdefault(LOOPBACK_ONLY, "0")  # read by every Ray process when it imports ray
    ray = import_ray()
    if ray.is_initialized():
        return ray
    if section.address is None:  # this process may have imported ray before the variable was set
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = os.environ[LOOPBACK_ONLY] != "0"
    runtime_env = {"env_vars": worker_env()}
    if section.address is None:
        ray.init(
            num_cpus=section.num_workers,
            include_dashboard=False,
            namespace=NAMESPACE,
            runtime_env=runtime_env,
            log_to_driver=False,
            configure_logging=False,
        )
    else:
        ray.init(address=section.address, namespace=NAMESPACE, runtime_env=runtime_env, log_to_driver=False)
    return ray


class _Pool:
    """The live worker actors (one pool per process; replaced when the settings change)."""

    settings: tuple | None = None
    actors: list[Any] = []
    slots: list[Any] = []
    slot_names: dict[str, str] = {}


def stop_workers() -> None:
    """Kill this process's worker and endpoint-slot actors (the next run starts a fresh pool)."""
    import ray

    for actor in [*_Pool.actors, *_Pool.slots]:
        ray.kill(actor)
    _Pool.actors, _Pool.slots, _Pool.settings = [], [], None


class RayEngine(ShardedEngine):
    """Runs a policy's shards on `[ray] num_workers` worker actors; identical output to the local engine."""

    name = "ray"

    def __init__(self, config: ExperimentConfig) -> None:
        if importlib.util.find_spec("ray") is None:  # before any work starts
            raise ConfigError("--engine ray needs Ray: pip install 'simrec[ray]' (ray==2.60.0)")
        self.config = config
        self.section = config.ray
        self.last = EngineStats()

    # -- workers ---------------------------------------------------------------------------------------------
    def endpoint_urls(self) -> tuple[str, ...]:
        """The endpoints workers share out: `[ray] llm_endpoints`, else the URLs `[llm] base_url` lists (none: the
        backend's default, $OPENAI_BASE_URL)."""
        if self.section.llm_endpoints:
            return tuple(self.section.llm_endpoints)
        base = self.config.llm.base_url
        if base is None or (not isinstance(base, str) and not base):
            return ()
        return tuple(u for u in endpoint_urls(base) if u is not None)

    def endpoints(self) -> list[str | None]:
        """One entry per worker: the single endpoint it calls (worker i: URL i mod n; None: the backend's default).
        One URL per worker keeps the cluster-wide limit exact per URL."""
        urls = self.endpoint_urls()
        return [urls[i % len(urls)] if urls else None for i in range(self.section.num_workers)]

    def endpoint_limit(self) -> int | None:
        """Cluster-wide in-flight requests per endpoint: set explicitly, or [llm] concurrency for endpoints."""
        if self.section.endpoint_concurrency is not None:
            return self.section.endpoint_concurrency
        return self.config.llm.concurrency if self.config.llm.backend == "openai" else None

    def workers(self) -> list[Any]:
        """The first `num_workers` actors of this process's pool (grown as needed; rebuilt when the retry, endpoint
        or LLM settings change)."""
        ray = connect(self.section)
        limit = self.endpoint_limit()
        settings = (self.section.max_retries, limit, self.endpoint_urls(), self.config.llm)
        if _Pool.settings != settings:
            stop_workers()
            _Pool.slot_names = {}
            if limit is not None:
                slots_actor = ray.remote(num_cpus=0, max_concurrency=10_000)(EndpointSlots)
                for endpoint in {self._endpoint_key(e) for e in self.endpoint_urls() or (None,)}:
                    name = _Pool.slot_names[endpoint] = slots_name(endpoint)
                    _Pool.slots.append(slots_actor.options(name=name, namespace=NAMESPACE).remote(limit))
            _Pool.settings = settings
        actor = ray.remote(
            num_cpus=1, max_restarts=self.section.max_retries, max_task_retries=self.section.max_retries
        )(ShardWorker)
        endpoints = self.endpoints()
        for i in range(len(_Pool.actors), len(endpoints)):
            slots = _Pool.slot_names.get(self._endpoint_key(endpoints[i]))
            _Pool.actors.append(actor.remote(i, endpoints[i], slots, self.config.llm.concurrency))
        return _Pool.actors[: len(endpoints)]

    def _endpoint_key(self, endpoint: str | None) -> str:
        return endpoint or self.config.llm.backend  # no URL: the backend's default endpoint

    # -- runs ------------------------------------------------------------------------------------------------
    def run_shards(
        self, world: SessionWorld, policy: PagePolicy, policy_dir: Path, recipe: PolicyRecipe, run: Mapping[str, Any]
    ) -> RunSummary:
        """Run the policy's shards on the worker actors and merge them into `policy_dir`."""
        ray = import_ray()

        def execute(shards: list[Shard], run: dict[str, Any], submitted: dict[int, float]) -> Any:
            actors = self.workers()  # connects first: `ray.put` would otherwise start a default (not loopback) Ray
            recipe_ref = ray.put(recipe)

            def submit(actor: Any, shard: Shard) -> Any:
                submitted[shard.index] = time.time()
                return actor.run_shard.remote(recipe_ref, shard, run)

            return run_on_pool(actors, submit, shards)

        n_shards = self.section.num_workers * self.section.shards_per_worker
        summary, self.last = run_sharded(
            self.name, len(world.personas), policy, policy_dir, run, n_shards, execute, stop_workers
        )
        return summary

    def map(
        self,
        setup: Setup,
        config: ExperimentConfig,
        fn: Callable[[Any, LLM | None, Any], Any],
        items: list[Any],
        make_llm: Callable[[ExperimentConfig], LLM] | None = None,
    ) -> list:
        """`[fn(setup(config, None), make_llm(config), item) for item in items]` on the workers, results in order;
        each worker builds its context and LLM once. For work split into independent, identically seeded units
        (the fidelity harness's profiles, the population's loop variants)."""

        def submit(actor: Any, item: Any) -> Any:
            return actor.call.remote(setup, config, fn, item, make_llm)

        results = dict(run_on_pool(self.workers(), submit, items, indexed=True))
        return [results[i] for i in range(len(items))]


def run_on_pool(actors: list[Any], submit: Callable[[Any, Any], Any], items: list[Any], indexed: bool = False):
    """`shards.run_on_pool` over Ray actors: `submit(actor, item)` returns an object ref."""
    import ray

    def wait(refs: list[Any]) -> Any:
        return ray.wait(refs, num_returns=1)[0][0]

    return run_on_any_pool(actors, submit, items, wait, ray.get, indexed)
