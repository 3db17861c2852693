"""The Ray engine: a policy's personas sharded over a pool of worker actors, the shards merged in chunk order.

Cluster: `[ray] address` joins a running cluster ('auto' on a machine where `ray start` ran); None starts a local
one bound to 127.0.0.1 with `num_workers` CPUs, no dashboard and no client server. API keys reach the workers
through the job's runtime environment (`env_vars` copied from this process's environment), never as task
arguments or objects. Workers are actors with `max_restarts` / `max_task_retries` = `[ray] max_retries`: a
worker killed mid-shard is restarted and the shard retried, resuming from its checkpoint (see `worker`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from experiments.config import ConfigError, ExperimentConfig, RaySection
from experiments.engine.base import PolicyRecipe, SessionWorld, Setup
from experiments.engine.limits import NAMESPACE, EndpointSlots, slots_name
from experiments.engine.local import LocalEngine
from experiments.engine.shards import (
    ShardResult,
    is_complete,
    merge_shards,
    plan_shards,
    receive_files,
    shard_root,
)
from experiments.engine.worker import ShardWorker
from recommenders.external import ExternalRecommender
from simenv.llm import LLM
from simenv.llm.openai_backend import endpoint_urls
from simenv.protocols import PagePolicy, UserModel
from simenv.runner import RunSummary

log = logging.getLogger(__name__)
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a single-node cluster on 127.0.0.1 (Ray's own switch)
ENGINE_FILE = "engine.json"
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


@dataclass
class EngineStats:
    """What the last policy run cost: each shard's result, the driver's merge seconds, the whole wall time."""

    shards: list[ShardResult] = field(default_factory=list)
    merge_s: float = 0.0
    wall_s: float = 0.0
    dispatch_s: dict[int, float] = field(default_factory=dict)  # shard -> seconds from submission to its start


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


def absorb_reports(policy: PagePolicy, results: list[ShardResult]) -> None:
    """Add the workers' counters of a ranking file or service to the driver's instance, so `simrec compare`
    writes the run's external.json as a local run would."""
    if isinstance(policy, ExternalRecommender):
        for r in results:
            policy.stats.update(r.policy_report)
            policy.fallback_users.update(r.fallback_users)


def write_stats(policy_dir: Path, stats: EngineStats) -> None:
    """`<policy_dir>/engine.json`: per shard its worker, start-up and run seconds; the merge and wall seconds."""
    payload = {
        "engine": "ray",
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


class RayEngine:
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
    def run_policy(
        self,
        world: SessionWorld,
        policy: PagePolicy,
        user_model: UserModel,
        policy_dir: Path,
        recipe: PolicyRecipe | None,
        run: Mapping[str, Any],
    ) -> RunSummary:
        """Shard the policy's episodes, run the shards on the workers, merge them into `policy_dir`."""
        if recipe is None:  # train-rl / evaluate-rl: an SB3 policy is not rebuilt from a recipe on workers
            log.warning("--engine ray: %s runs its sessions in this process (no worker recipe)", policy_dir.name)
            return LocalEngine().run_policy(world, policy, user_model, policy_dir, recipe, run)
        start = time.perf_counter()
        run = dict(run)
        progress: Callable[[int, int], None] | None = run.pop("progress", None)
        resume = bool(run.pop("resume", False))
        users = run.get("users")
        n = len(world.personas) if users is None else len(users)
        batch_size = int(run.get("batch_size", 1000))
        policy_dir = Path(policy_dir).resolve()  # workers on other machines write the same absolute path
        if (policy_dir / "config.json").is_file() and not resume:
            raise FileExistsError(f"{policy_dir}: already holds a run; pass resume=True or use a new directory")
        if resume and is_complete(policy_dir, n):
            return RunSummary(policy_dir, n, n, 0)
        if not resume:
            shutil.rmtree(shard_root(policy_dir), ignore_errors=True)
        shards = plan_shards(policy_dir, n, batch_size, self.section.num_workers * self.section.shards_per_worker)
        ray = import_ray()
        recipe_ref = ray.put(recipe)
        results: list[ShardResult] = []
        submitted: dict[int, float] = {}

        def submit(actor: Any, shard: Any) -> Any:
            submitted[shard.index] = time.time()
            return actor.run_shard.remote(recipe_ref, shard, run)

        done = pages = 0
        try:
            for result in run_on_pool(self.workers(), submit, shards):
                receive_files(shards[result.index].directory, result.files)
                result = replace(result, files={})
                results.append(result)
                shard = shards[result.index]
                done += min(n, shard.end_chunk * batch_size) - shard.first_chunk * batch_size
                pages += result.n_pages
                if progress is not None:
                    progress(done, pages)
        except (KeyboardInterrupt, SystemExit):
            stop_workers()  # no shard keeps writing after the driver gave up
            raise
        absorb_reports(policy, results)
        merge_start = time.perf_counter()
        merge_shards(policy_dir, shards, n)
        end = time.perf_counter()
        dispatch = {r.index: r.started - submitted[r.index] for r in results}
        self.last = EngineStats(sorted(results, key=lambda r: r.index), end - merge_start, end - start, dispatch)
        write_stats(policy_dir, self.last)
        return RunSummary(policy_dir, n, 0, pages)

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
    """Yield `submit(actor, item)`'s results as they finish, one item per idle actor at a time (`(index, result)`
    pairs if `indexed`). After a failure nothing new starts; the shards in flight finish (their checkpoints are
    what a resume continues from) and the first error is raised."""
    import ray

    idle, pending, queue = list(actors), {}, list(enumerate(items))
    error: BaseException | None = None
    while queue or pending:
        while idle and queue and error is None:
            actor = idle.pop()
            index, item = queue.pop(0)
            pending[submit(actor, item)] = (actor, index)
        if not pending:
            break
        [ready], _ = ray.wait(list(pending), num_returns=1)
        actor, index = pending.pop(ready)
        idle.append(actor)
        try:
            result = ray.get(ready)
        except Exception as exc:  # noqa: BLE001 - kept and raised once the shards in flight are done
            error = error or exc
            continue
        if error is None:
            yield (index, result) if indexed else result
    if error is not None:
        raise error
