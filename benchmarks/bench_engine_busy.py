"""How busy one process vs several keep an LLM endpoint: `simrec compare`'s sessions of LLM users on the local engine
(this process) and on the processes engine (`--workers` spawned processes), alternated round by round in one run.

    .venv/bin/python -m benchmarks.bench_engine_busy [--concurrency 32 128] [--rounds 2] [--workers 2]
        [--engines local,processes[,ray]] [--kind llm-only] [--latency 0.25] [--sigma 0.5]

What runs:
- The endpoint: tests/servers/latency_server.py in a process of its own on loopback, outside every client process.
  It answers each chat request with a canned body after a lognormal latency (mean `--latency`, shape `--sigma`,
  seeded, drawn in arrival order) and sums the latencies it served (`GET /v1/stats`).
- The client: LLM persona users of `--kind` (default llm-only: the LLM decides every page) with the hashing embedder,
  facing Pop, on ML-100K's personas cycled to 16 x concurrency episodes of <= 5 pages (bench_llm's runner workload).
  Every LLM call goes to the endpoint as a real request through the openai backend (`--http-client`, default auto:
  the direct transport for a local server; aiohttp for the SDK), so the client's HTTP work is in the figures; the
  endpoint cannot write a page decision, so once it has answered, the call's answer is the mock LLM's to the same
  request (`PacedMockLLM`). The call log records the HTTP latency.
- local: `simenv.runner.run_sessions` pipelined in this process with `concurrency` sessions in flight, in chunks of
  8 x concurrency (what `simrec compare` runs). processes: `ProcessEngine` with the same chunks, `concurrency /
  workers` sessions in flight per process, the shards merged (compared with the local files, byte for byte).
  ray (optional): `RayEngine` as `simrec compare` runs it (chunks of `concurrency`, every worker with
  `concurrency` sessions, at most `concurrency` requests in flight over the cluster).
- Each engine's workers are started and have built their worlds before the timed runs (start-up printed apart);
  each timed run still loads Pop and builds a user model per worker, as a compare policy does.

Printed per concurrency: the engine `simrec compare` picks by default (`--engine auto`) for this workload. Per run:
wall seconds; the endpoint busy share (its summed latencies / (concurrency x wall)) and the one `simrec compare`
prints (the latencies the client measured: under CPU starvation they include the client's delay in taking the
answer, so that figure reads higher); client CPU per call (this process plus the engine's worker processes; Ray's
own daemons are not counted); each shard's run seconds; the load average at the start of the run.
Then, per concurrency, each engine's busy share over local's within each round. The machine is shared: read the
ratios within a run, beside the load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_llm import _process_cpu_s, _start_servers
from benchmarks.bench_ray import same_output
from experiments.build import build_world, worker_setup
from experiments.compare import compare_engine, policy_parts, runner_batch, runner_slots
from experiments.config import ExperimentConfig, RaySection, load_config
from experiments.engine import LocalEngine, PolicyRecipe, ProcessEngine
from experiments.engine.processes import _Pool, stop_workers
from experiments.engine.shards import call_latency_s
from simenv.llm import LLM, CallLogLLM, LLMRequest, LLMResponse, LLMWrapper, MockLLM, OpenAIBackend

LOOPBACK_KEY = "sk-bench-loopback-not-a-secret"  # the loopback server checks no key; the SDK wants one


class PacedMockLLM(LLMWrapper):
    """Sends each request to `endpoint` as it is and, once the endpoint has answered, returns the mock's answer to
    it with the HTTP call's latency: the client's whole path to an endpoint, with answers the users can read."""

    label = "paced"

    def __init__(self, inner: MockLLM, endpoint: OpenAIBackend) -> None:
        super().__init__(inner)
        self.endpoint = endpoint

    def complete(self, request: LLMRequest) -> LLMResponse:
        return self.complete_batch([request])[0]

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        sent = self.endpoint.complete_batch(requests)
        answers = self.inner.complete_batch(requests)
        return [dataclasses.replace(a, latency_s=s.latency_s) for a, s in zip(answers, sent, strict=True)]

    def close(self) -> None:
        self.endpoint.close()
        super().close()


def make_paced_llm(config: ExperimentConfig) -> LLM:
    """The recipe's LLM (module level: workers import it by name): `[llm] base_url` at `[llm] concurrency` (a
    worker process's share of it on the processes engine), answers from the seeded mock."""
    section = config.llm
    endpoint = OpenAIBackend(
        model="latency-model", base_url=section.base_url, concurrency=section.concurrency, max_retries=0,
        timeout_s=section.timeout_s, http_client=section.http_client,
    )  # fmt: skip
    return PacedMockLLM(MockLLM(seed=config.run.seed), endpoint)


def endpoint_stats(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/stats", timeout=5) as response:
        return json.loads(response.read())


def workload(url: str, concurrency: int, args: argparse.Namespace) -> ExperimentConfig:
    overrides: dict[str, Any] = {
        "data": {"dataset": "ml-100k", "n_personas": 100_000},  # every persona of the split
        "llm": {"backend": "openai", "model": "latency-model", "base_url": url, "concurrency": concurrency,
                "cache": False, "max_retries": 0, "http_client": args.http_client},
        "users": {"kind": args.kind, "embedder": "hashing"},
        "simulation": {"pages": 5},
        "recommenders": {"names": ["pop"]},
        "processes": {"workers": args.workers},
        "ray": {"num_workers": args.workers},
    }  # fmt: skip
    return load_config(None, overrides)


class Runs:
    """One concurrency's world, recipe inputs and driver-side parts; `run(engine)` times one policy run."""

    def __init__(self, config: ExperimentConfig, url: str, root: Path) -> None:
        self.config, self.url, self.root = config, url, root
        self.slots = runner_slots(config) or 1
        self.world = build_world(config)
        self.factory = worker_setup(config)
        self.ids = (sorted(self.world.personas) * -(-16 * self.slots // len(self.world.personas)))[: 16 * self.slots]
        self.engines: dict[str, Any] = {"local": LocalEngine()}
        self.count = 0

    def settings(self, engine: str) -> dict[str, Any]:
        config = self.config.model_copy(update={"engine": engine})
        return {"n_pages": 5, "seed": 0, "policy_name": "pop", "batch_size": runner_batch(config),
                "concurrency": self.slots, "users": self.ids}  # fmt: skip

    def start(self, engine: str) -> float:
        """Start a sharded engine's workers and build their worlds (a small untimed run); returns its seconds."""
        t0 = time.perf_counter()
        config = self.config.model_copy(update={"engine": engine})
        if engine == "ray":
            from experiments.engine import RayEngine
            from experiments.engine.ray_engine import connect

            connect(RaySection(num_workers=self.config.ray.num_workers))
            self.engines[engine] = RayEngine(config)
        else:
            self.engines[engine] = ProcessEngine(config)
        warm = {**self.settings(engine), "users": self.ids[:4], "batch_size": 2, "concurrency": 2}
        self._policy_run(engine, warm)
        return time.perf_counter() - t0

    def worker_pids(self, engine: str) -> list[int]:
        """The processes that run `engine`'s sessions besides this one (their CPU is the client's too)."""
        if engine == "processes":
            return [pid for lane in _Pool.lanes for pid in lane._processes]  # a private dict: pid -> process
        if engine == "ray":
            import ray

            return ray.get([w.ping.remote() for w in self.engines[engine].workers()])
        return []

    def _policy_run(self, engine: str, run: dict[str, Any]) -> Path:
        self.count += 1
        policy_dir = self.root / f"{engine}-{self.count}" / "pop"
        config = self.config.model_copy(update={"engine": engine})
        # the driver's parts: what the local engine runs; the sharded engines' workers build their own from the recipe
        llm = CallLogLLM(make_paced_llm(self.config), policy_dir / "llm_calls") if engine == "local" else MockLLM()
        recommender, user_model = policy_parts(self.factory, llm, "pop")
        recipe = PolicyRecipe(config, "pop", worker_setup, policy_parts, make_paced_llm)
        self.engines[engine].run_policy(self.world, recommender, user_model, policy_dir, recipe, run)
        if isinstance(llm, CallLogLLM):
            llm.close()
        return policy_dir

    def run(self, engine: str) -> dict[str, Any]:
        """One timed policy run on `engine`: wall, endpoint and client busy shares, client CPU per call."""
        pids = self.worker_pids(engine)
        before, cpu0, workers0 = endpoint_stats(self.url), time.process_time(), sum(map(_process_cpu_s, pids))
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        policy_dir = self._policy_run(engine, self.settings(engine))
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0 + sum(map(_process_cpu_s, pids)) - workers0
        after = endpoint_stats(self.url)
        calls = after["requests"] - before["requests"]
        shards = [] if engine == "local" else self.engines[engine].last.shards
        client_latency = sum(r.llm_latency_s for r in shards) if shards else call_latency_s(policy_dir / "llm_calls")
        return {
            "engine": engine, "dir": policy_dir, "wall_s": wall, "calls": calls, "load": load,
            "busy": (after["busy_s"] - before["busy_s"]) / (self.slots * wall),
            "compare_busy": client_latency / (self.slots * wall),
            "cpu_ms_per_call": cpu * 1000 / max(calls, 1), "shards_s": [round(r.run_s, 1) for r in shards],
        }  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="*", default=[32, 128])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--engines", default="local,processes", help="comma-separated: local, processes, ray")
    parser.add_argument("--kind", default="llm-only")
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument(
        "--http-client", default="auto", help="[llm] http_client: auto (direct for this loopback server), aiohttp (SDK)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    engines = args.engines.split(",")
    os.environ.setdefault("OPENAI_API_KEY", LOOPBACK_KEY)  # before the workers start: they inherit it
    procs, urls = _start_servers(1, args.latency, "latency", ("--sigma", str(args.sigma), "--seed", "0"))
    print(
        f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}; endpoint: loopback latency server "
        f"(own process), lognormal {args.latency * 1000:.0f} ms mean, sigma {args.sigma}; {args.kind} users, "
        f"mock answers after each real HTTP call ({args.http_client} client); engines {engines}, {args.workers} workers"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="bench_engine_busy_") as tmp:
            for concurrency in args.concurrency:
                bench_concurrency(workload(urls[0], concurrency, args), urls[0], Path(tmp), engines, args.rounds)
    finally:
        stop_workers()
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def bench_concurrency(config: ExperimentConfig, url: str, root: Path, engines: list[str], rounds: int) -> None:
    """Start every engine, then `rounds` rounds of one run per engine (alternated); print each and the ratios."""
    runs = Runs(config, url, root / str(config.llm.concurrency))
    print(f"  concurrency {runs.slots}: `simrec compare`'s default engine (auto) here: {compare_engine(config)}")
    for engine in (e for e in engines if e != "local"):
        seconds = runs.start(engine)
        print(f"  concurrency {runs.slots}: {engine} start-up (workers spawned, worlds built) {seconds:.1f} s")
    ratios: dict[str, list[float]] = {e: [] for e in engines}
    for r in range(rounds):
        results = {e: runs.run(e) for e in engines}
        for e, res in results.items():
            same = same_output(results["local"]["dir"], res["dir"]) if "local" in results and e == "processes" else None
            print(
                f"  concurrency {runs.slots}, round {r + 1}, {e:>9}: {len(runs.ids)} episodes, {res['calls']} calls in "
                f"{res['wall_s']:.1f} s; endpoint busy share {res['busy']:.2f} (compare prints "
                f"{res['compare_busy']:.2f}); client CPU {res['cpu_ms_per_call']:.2f} ms/call; load {res['load']:.1f}"
                + (f"; shards ran {res['shards_s']} s" if res["shards_s"] else "")
                + ("" if same is None else f"; files identical to local: {same}")
            )
            if "local" in results:
                ratios[e].append(res["busy"] / results["local"]["busy"])
    for e in engines:
        if e != "local" and ratios[e]:
            shown = ", ".join(f"{x:.2f}" for x in ratios[e])
            print(f"  concurrency {runs.slots}: {e} / local busy share per round: {shown} (median "
                  f"{statistics.median(ratios[e]):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
