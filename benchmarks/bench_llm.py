"""LLM layer benchmarks: endpoint throughput per transport, the runner's page barrier, embedded SmolLM2 page-decision
latency, mock throughput.

Run: `.venv/bin/python -m benchmarks.bench_llm [--skip-embedded] [--skip-http] [--skip-runner]`. Prints the figures.

- Concurrency: loopback servers in subprocesses (tests/servers/latency_server.py: ~0.03 ms of server CPU per
  request, so the client is what is measured; `--server fault` uses the aiohttp fault server) answer after a fixed
  latency; the openai backend sends waves x C requests per round, three rounds on one backend, for each transport
  (`--clients`: aiohttp = the openai SDK on its aiohttp transport, what "auto" picks for OpenAI's API; direct =
  plain aiohttp, what "auto" picks for any other server, this loopback one included) at each
  concurrency (`--concurrency`, default 32 and 128), then two endpoints round-robin, then the SDK at 128 behind
  a 1 s endpoint. Efficiency = achieved calls/s / ideal (C x endpoints / latency), median round; target >= 0.9.
  Client CPU per call (this process, all threads) and the servers' CPU per call are printed. `--cpu-hogs K` runs
  K busy loops meanwhile. Figures need an idle machine: on 2 shared cores read ratios within one run.
- Runner: the LLM persona user (`--runner-kind`, default handset; mock answers, hashing embedder) in
  `simenv.runner.run_sessions` behind an in-process endpoint stand-in with seeded lognormal latency (mean 250 ms,
  sigma 0.5) at each concurrency, 16 x concurrency episodes (ML-100K's 703 personas, cycled): the endpoint's busy
  share (sum of latencies / (concurrency x wall)) of the page-by-page loop in chunks of `concurrency` (before: what
  `simrec compare` ran) and of the pipelined loop (after; `--runner-loops pipelined`: only this one). Target >= 0.9
  at 32, >= 0.8 at 128. A whole run ends by draining its last sessions, so fewer episodes per concurrent request
  mean a lower share.
- Embedded: one page decision with a ~500-token prompt (persona system prompt + page) and a fixed-key JSON
  answer; cold (fresh model, nothing cached) and warm (same persona prefix, a new page each call).
  Target <= 1 s warm. Once per weights format (`--gguf-formats`): the shipped Q4_1 file and the F16 re-encoding
  the backend uses by default (see simenv/llm/model_files.py); `benchmarks.bench_embedded` times the persona
  user's own page prompts.
- Mock: calls/s of `MockLLM.complete_batch` on distinct page_decision requests (best and median of several
  rounds). Target >= 20,000.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

import numpy as np

from simenv.llm import LLMRequest, LLMWrapper, Message, MockLLM, OpenAIBackend
from simenv.llm.batching import LoopThread
from simenv.llm.llama_cpp_backend import LlamaCppBackend
from simenv.llm.local_server import free_port
from simenv.llm.schemas import page_decision_schema
from simenv.llm.structured import validate_answer
from simenv.runner import run_sessions
from tests.fixtures_llm import page_request

GENRES = ("Action", "Adventure", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller")


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_servers(
    n: int, latency_s: float, server: str, extra: Sequence[str] = ()
) -> tuple[list[subprocess.Popen], list[str]]:
    """`n` loopback server processes (`latency`: tests/servers/latency_server.py, `fault`: the aiohttp fault
    server with no faults), each answering after `latency_s` (`extra`: more arguments for the server); returns
    them and their base URLs once all answer."""
    module = "tests.servers.latency_server" if server == "latency" else "tests.servers.fault_server"
    procs, urls = [], []
    for _ in range(n):
        port = free_port()
        cmd = [sys.executable, "-m", module, "--port", str(port), "--latency", str(latency_s), *extra]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        urls.append(f"http://127.0.0.1:{port}/v1")
    for url in urls:
        for _ in range(400):
            try:
                urllib.request.urlopen(f"{url}/models", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
    return procs, urls


def bench_concurrency(
    concurrency: int,
    latency_s: float,
    http_client: str,
    waves: int = 16,
    rounds: int = 3,
    endpoints: int = 1,
    server: str = "latency",
) -> dict[str, Any]:
    """`rounds` batches of `waves * concurrency * endpoints` requests on one backend (its client and connections
    live across batches, as in a run); efficiency per round = achieved calls/s / ideal, ideal = concurrency *
    endpoints / latency. Client CPU is this process's (all threads), server CPU the loopback servers' (they share
    the machine's cores; a remote server would not)."""
    procs, urls = _start_servers(endpoints, latency_s, server)
    n = waves * concurrency * endpoints
    ideal = concurrency * endpoints / latency_s
    effs, client_ms, server_ms, failed = [], [], [], 0
    try:
        backend = OpenAIBackend(
            model="m", base_url=urls, concurrency=concurrency, max_retries=0, timeout_s=30, http_client=http_client
        )
        requests = [
            LLMRequest(messages=(Message("user", f"request #{i}"),), template="echo", template_version="v1")
            for i in range(n)
        ]
        backend.complete_batch(requests[: concurrency * endpoints])  # warm-up: imports, connections
        for _ in range(rounds):
            server_start = sum(_process_cpu_s(p.pid) for p in procs)
            start, cpu_start = time.perf_counter(), time.process_time()
            responses = backend.complete_batch(requests)
            elapsed = time.perf_counter() - start
            client_ms.append((time.process_time() - cpu_start) * 1000 / n)
            server_ms.append((sum(_process_cpu_s(p.pid) for p in procs) - server_start) * 1000 / n)
            effs.append(n / elapsed / ideal)
            failed += sum(1 for r in responses if r.error)
        backend.close()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    eff = statistics.median(effs)
    return {
        "requests": n,
        "rounds": rounds,
        "failed": failed,
        "calls_per_s": eff * ideal,
        "ideal": ideal,
        "eff": eff,
        "eff_min": min(effs),
        "eff_max": max(effs),
        "cpu_ms_per_call": statistics.median(client_ms),
        "server_cpu_ms_per_call": statistics.median(server_ms),
        "http_client": backend.http_client,
    }


class DelayedLLM(LLMWrapper):
    """An endpoint stand-in for the runner benchmark: the inner model's answers, each after a seeded lognormal
    latency (mean `latency_s`, shape `sigma`, drawn from the request's cache key), at most `concurrency` at once
    over all callers and threads (one gate on one event loop, as `OpenAIBackend` has per endpoint). `busy_s` sums
    the latencies served: busy_s / (concurrency * wall) is the share of the endpoint's capacity used."""

    label = "delayed"

    def __init__(self, inner: Any, latency_s: float, sigma: float, concurrency: int, seed: int = 0) -> None:
        super().__init__(inner)
        self.latency_s, self.sigma, self.concurrency, self.seed = latency_s, sigma, concurrency, seed
        self.busy_s = 0.0
        self.calls = 0
        self._count = threading.Lock()
        self._loop = LoopThread("delayed-endpoint")
        self._gate = self._loop.run(self._new_gate())

    async def _new_gate(self) -> asyncio.Semaphore:
        return asyncio.Semaphore(self.concurrency)

    def _latency(self, request: LLMRequest) -> float:
        rng = np.random.default_rng([self.seed, int(request.call_id()[:12], 16)])
        return float(self.latency_s * rng.lognormal(-(self.sigma**2) / 2, self.sigma))

    def complete(self, request: LLMRequest) -> Any:
        return self.complete_batch([request])[0]

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[Any]:
        delays = [self._latency(r) for r in requests]

        async def one(delay: float) -> None:
            async with self._gate:
                await asyncio.sleep(delay)

        async def serve() -> None:
            await asyncio.gather(*(one(d) for d in delays))

        self._loop.run(serve())
        with self._count:
            self.busy_s += sum(delays)
            self.calls += len(requests)
        return self.inner.complete_batch(requests)

    def close(self) -> None:
        self._loop.close()
        super().close()


def bench_runner(
    n_users: int, concurrency: int, latency_s: float, sigma: float, pipelined: bool, pages: int = 5, kind: str = ""
) -> dict[str, float]:
    """The LLM persona user (mock answers, hashing embedder) in `simenv.runner.run_sessions` against a
    `DelayedLLM`: how much of the endpoint's capacity (concurrency / latency) a whole run uses. Page by page
    (before): chunks of `concurrency` personas (what `simrec compare` ran), each page step waiting for its slowest
    call. Pipelined (after): `concurrency` sessions in flight, one chunk (`simrec compare` chunks 8 x concurrency).
    `kind`: the user kind (`agents.config.load_user`; "": the model's default, handset, narrate mode)."""
    from agents.config import load_user
    from agents.embedding import HashingEmbedder
    from agents.llm_user import LLMUserModel
    from recommenders.registry import make
    from simrec.envs import default_world

    world = default_world("ml-100k")
    ds, train = world.dataset, world.split.train
    ids = (sorted(world.personas) * -(-n_users // len(world.personas)))[:n_users]  # episodes; personas cycled
    llm = DelayedLLM(MockLLM(seed=0), latency_s, sigma, concurrency)
    config = load_user(kind).user if kind else None
    user_model = LLMUserModel(ds, llm, HashingEmbedder(), config, train=train)
    rec = make("pop").fit(train, ds.n_users, ds.n_items)
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        summary = run_sessions(
            rec, user_model, world.personas, ds, train, tmp, n_pages=pages, seed=0, users=ids,
            batch_size=len(ids) if pipelined else concurrency, concurrency=concurrency if pipelined else None,
        )  # fmt: skip
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    llm.close()
    return {
        "users": len(ids),
        "calls": llm.calls,
        "pages": summary.n_pages_shown,
        "wall_s": wall,
        "cpu_ms_per_call": cpu * 1000 / max(llm.calls, 1),
        "calls_per_s": llm.calls / wall,
        "ideal": concurrency / latency_s,
        "eff": llm.busy_s / (concurrency * wall),
    }


def _persona_prompt() -> str:
    """A ~380-token persona system prompt, like the agents layer builds."""
    liked = ["The Matrix", "Alien", "Die Hard", "Star Wars", "Terminator 2", "Aliens", "Total Recall", "Predator"]
    disliked = ["Titanic", "The Notebook", "Scream", "Saw"]
    return (
        "You are a simulated movie watcher on a streaming site. Stay in character.\n"
        "Your traits: activity high (you watch many films), conformity low (you trust your own taste), "
        "diversity mid (you stick to a few genres).\n"
        "Your taste: you love Action, Sci-Fi and Thriller films with strong plots and memorable set pieces; "
        "you usually skip Romance and Horror. "
        f"Films you rated highly: {', '.join(liked)}. Films you disliked: {', '.join(disliked)}.\n"
        "Memory of earlier pages: you watched two action films and rated them 4 and 5; you skipped a romance; "
        "you felt the site understood you. You get bored when a page has nothing for you, and you leave when "
        "you are bored twice in a row.\n"
        "For every page you see, decide for each movie whether you watch it; if you watch, rate it from 1 to 5 "
        "as you would after watching. Then decide whether to leave the site. Be consistent with your taste and "
        "your traits; do not watch everything; ratings of 5 are rare and reserved for films you truly love. "
        "Think about genre, year and how the film compares to the films you rated before. "
        "Answer only with the JSON object requested, with the keys given, and nothing else."
    )


def _page_prompt(page: int) -> str:
    lines = []
    for k in range(4):
        g1, g2 = GENRES[(page + k) % len(GENRES)], GENRES[(page * 3 + k + 2) % len(GENRES)]
        lines.append(
            f"Movie {k + 1}: 'Film {page}-{k}' ({1980 + 3 * k + page}), genres {g1} and {g2}. A {g1.lower()} story "
            f"about a team facing an impossible task, praised for its pace and its ending."
        )
    return f"Page {page + 1}. The site shows you these four movies:\n" + "\n".join(lines) + "\nYour decision:"


FIXED_KEY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        **{f"watch_{k}": {"type": "boolean"} for k in range(1, 5)},
        **{f"rating_{k}": {"type": "integer", "minimum": 1, "maximum": 5} for k in range(1, 5)},
        "leave": {"type": "boolean"},
    },
    "required": [*(f"watch_{k}" for k in range(1, 5)), *(f"rating_{k}" for k in range(1, 5)), "leave"],
    "additionalProperties": False,
}


def bench_embedded(n_warm: int, n_threads: int, gguf_format: str) -> dict[str, float]:
    persona = _persona_prompt()

    def request(page: int) -> LLMRequest:
        return LLMRequest(
            messages=(Message("system", persona), Message("user", _page_prompt(page))),
            template="page_decision_fixed",
            template_version="v1",
            json_schema=FIXED_KEY_SCHEMA,
            max_tokens=120,
        )

    backend = LlamaCppBackend(n_threads=n_threads, gguf_format=gguf_format)
    start = time.perf_counter()
    backend._get()
    load_s = time.perf_counter() - start
    cold = backend.complete(request(0))
    validate_answer(cold.text, FIXED_KEY_SCHEMA, None)
    warm = [backend.complete(request(p)) for p in range(1, n_warm + 1)]
    for r in warm:
        validate_answer(r.text, FIXED_KEY_SCHEMA, None)
    backend.close()
    return {
        "load_s": load_s,
        "prompt_tokens": cold.prompt_tokens,
        "completion_tokens": cold.completion_tokens,
        "cold_s": cold.latency_s,
        "warm_median_s": statistics.median(r.latency_s for r in warm),
        "warm_max_s": max(r.latency_s for r in warm),
    }


def bench_mock(n: int, rounds: int = 12) -> dict[str, float]:
    """Best and median of `rounds` timed rounds of `n` calls: the best round is the least disturbed by other
    jobs on a shared machine (as `timeit` reports), the median shows how much they disturbed it.

    Each round's requests are built (~30 GC-tracked objects each) and then collected with `gc.collect()` before
    the clock starts: otherwise the full (generation-2) collection those objects trigger lands inside some timed
    rounds and not others (~90 ms on this heap, the main reason rounds varied 1.6x). The collector stays on
    while timing, so the mock's own allocations (and any full collection they trigger) are counted;
    `full_gcs` says how many fell inside timed rounds."""

    def fresh() -> list[LLMRequest]:  # new request objects each round: nothing memoised from the last one
        return [page_request(page_index=i % 5, user=i, item_ids=tuple(range(4 * i, 4 * i + 4))) for i in range(n)]

    mock = MockLLM(seed=0)
    mock.complete_batch(fresh()[:500])  # warm-up
    walls, cpus, full_gcs = [], [], 0
    for _ in range(rounds):
        requests = fresh()
        assert requests[0].json_schema == page_decision_schema(4)
        gc.collect()
        gen2_before = gc.get_stats()[2]["collections"]
        start, cpu_start = time.perf_counter(), time.process_time()
        responses = mock.complete_batch(requests)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
        full_gcs += gc.get_stats()[2]["collections"] - gen2_before
        del responses  # freed outside the timed region, like the requests
    best, best_cpu = min(walls), min(cpus)
    return {
        "calls": n,
        "rounds": rounds,
        "seconds": best,
        "calls_per_s": n / best,
        "calls_per_cpu_s": n / best_cpu,
        "median_calls_per_s": n / statistics.median(walls),
        "median_calls_per_cpu_s": n / statistics.median(cpus),
        "full_gcs": full_gcs,
    }


def _http_cases(args: argparse.Namespace) -> list[tuple[str, int, float, int]]:
    """(http_client, concurrency per endpoint, latency, endpoints): every client at every concurrency, then two
    endpoints round-robin (half the concurrency each), and the SDK at 128 behind a 1 s endpoint."""
    clients = args.clients.split(",")
    cases = [(client, c, args.latency, 1) for client in clients for c in args.concurrency]
    top = max(args.concurrency)
    cases += [(client, top // 2, args.latency, 2) for client in clients]
    if "aiohttp" in clients:
        cases.append(("aiohttp", top, 1.0, 1))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description="LLM layer benchmarks")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--skip-runner", action="store_true")
    parser.add_argument("--waves", type=int, default=16, help="requests per round = waves x concurrency")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[32, 128])
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--clients", default="aiohttp,direct", help="http_client values: aiohttp, httpx (SDK), direct")
    parser.add_argument("--server", choices=("latency", "fault"), default="latency")
    parser.add_argument("--cpu-hogs", type=int, default=0, help="busy-loop processes during the concurrency run")
    parser.add_argument("--runner-episodes", type=int, default=0, help="runner episodes (default 16 x concurrency)")
    parser.add_argument("--runner-loops", choices=("both", "pipelined"), default="both", help="pipelined: no barrier")
    parser.add_argument("--runner-kind", default="", help="runner user kind, e.g. llm-only (default: handset)")
    parser.add_argument("--warm-calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gguf-formats", default="source,f16", help="embedded weights: source (Q4_1), f16, q8_0")
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} "
        "(wall-clock figures degrade when it exceeds the cpu count)"
    )

    m = bench_mock(5_000)
    print(
        f"mock: best of {m['rounds']} rounds of {m['calls']} page_decision calls: {m['seconds']:.3f} s = "
        f"{m['calls_per_s']:,.0f} calls/s wall, {m['calls_per_cpu_s']:,.0f} per CPU-second (target >= 20,000); "
        f"median round {m['median_calls_per_s']:,.0f} wall, {m['median_calls_per_cpu_s']:,.0f} per CPU-second; "
        f"full GCs inside timed rounds: {m['full_gcs']}"
    )

    if not args.skip_http:
        hogs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(args.cpu_hogs)]
        try:
            for client, concurrency, latency, endpoints in _http_cases(args):
                c = bench_concurrency(concurrency, latency, client, args.waves, endpoints=endpoints, server=args.server)
                print(
                    f"concurrency ({c['http_client']} transport, {endpoints} endpoint(s) x {concurrency} concurrent, "
                    f"{args.server} server, latency {latency * 1000:.0f} ms, {args.cpu_hogs} CPU hogs): "
                    f"{c['requests']} requests x {c['rounds']} rounds: {c['calls_per_s']:.1f} calls/s vs ideal "
                    f"{c['ideal']:.1f} -> efficiency {c['eff']:.2f} (rounds {c['eff_min']:.2f}-{c['eff_max']:.2f}; "
                    f"target >= 0.9), failed {c['failed']}, client CPU {c['cpu_ms_per_call']:.2f} ms/call, "
                    f"loopback server CPU {c['server_cpu_ms_per_call']:.2f} ms/call"
                )
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait(10)

    if not args.skip_runner:
        for concurrency in args.concurrency:
            n_users = args.runner_episodes or 16 * concurrency
            for pipelined in (True,) if args.runner_loops == "pipelined" else (False, True):
                r = bench_runner(
                    n_users, concurrency, args.latency, sigma=0.5, pipelined=pipelined, kind=args.runner_kind
                )
                loop = "pipelined (after)" if pipelined else f"page by page, batch {concurrency} (before)"
                print(
                    f"runner ({args.runner_kind or 'handset'} LLM user, mock answers behind a lognormal "
                    f"{args.latency * 1000:.0f} ms +-50% endpoint, "
                    f"concurrency {concurrency}): {r['users']} episodes, {loop}: {r['calls']} calls, "
                    f"{r['pages']} pages in {r['wall_s']:.1f} s = {r['calls_per_s']:.1f} calls/s vs ideal "
                    f"{r['ideal']:.0f} -> endpoint busy share {r['eff']:.2f} (target >= 0.9 at 32, >= 0.8 at 128); "
                    f"client CPU {r['cpu_ms_per_call']:.2f} ms/call"
                )

    for fmt in [] if args.skip_embedded else args.gguf_formats.split(","):
        e = bench_embedded(args.warm_calls, args.threads, fmt)
        print(
            f"embedded SmolLM2-135M ({fmt} weights, n_threads={args.threads}): load {e['load_s']:.2f} s; "
            f"page decision with "
            f"{e['prompt_tokens']} prompt tokens, {e['completion_tokens']} answer tokens: cold {e['cold_s']:.2f} s, "
            f"warm (persona prefix cached) median {e['warm_median_s']:.2f} s, max {e['warm_max_s']:.2f} s "
            "(target <= 1 s warm)"
        )


if __name__ == "__main__":
    main()
