"""Ray engine benchmark: the same policy's sessions on the local engine and on a Ray cluster with N workers.

    .venv/bin/python -m benchmarks.bench_ray [--dataset ml-1m] [--personas 2000] [--workers 2] [--pages 5]

Grounded persona users (the LLM user with the `persona` kind: fitted decisions) on the mock LLM (no
response cache, so both engines do the same work) and the hashing embedder, facing Pop. The world, Pop and the
response model come from the simrec cache (built on the first run, before any timing). Timed, in one process:
1. local: `World.run_sessions` in this process;
2. ray, cold: the Ray engine on a local cluster with `--workers` workers whose actors have started but built
   nothing: each worker's first shard imports the composition root (torch, sklearn) while its arguments are
   unpickled ("dispatch": from submission to the shard's start) and builds its world, user model and recommender
   from the caches ("build"): together the per-shard start-up cost;
3. ray, warm: the same again into a fresh directory (the workers' worlds and factories are built; each worker
   loads Pop and builds a user model again, as for a run's second policy).
Printed: wall seconds and pages/s of each, speed-ups (ratios within this run), each shard's start-up and run
seconds, the driver's merge seconds, the workers' peak RSS, and whether the outputs are identical; then the
measured per-page figures (LLM calls and tokens from the call log, worker seconds) and `project`'s estimate of a
1M-persona run against LLM endpoints for a few (concurrency, latency) scenarios.
"""

from __future__ import annotations

import argparse
import filecmp
import tempfile
import time
from pathlib import Path
from typing import Any

from experiments.build import UserModelFactory, build_llm, build_world, train_recommender, worker_setup
from experiments.compare import RUNNER_BATCH, policy_parts
from experiments.config import load_config
from experiments.engine import PolicyRecipe, RayEngine
from experiments.engine.ray_engine import connect, stop_workers
from simenv.llm import CallLogLLM, read_call_log


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--personas", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pages", type=int, default=5)
    parser.add_argument("--shards-per-worker", type=int, default=4)
    parser.add_argument("--kind", default="persona")
    parser.add_argument("--cache-dir", default=None, help="simrec cache (default $SIMREC_CACHE_DIR or ~/.cache/simrec)")
    return parser.parse_args(argv)


def same_output(a: Path, b: Path) -> bool:
    """The local and the Ray run wrote the same events, pages and interviews part files, byte for byte."""
    for table in ("events", "pages", "interviews"):
        left, right = sorted((a / table).iterdir()), sorted((b / table).iterdir())
        if [p.name for p in left] != [p.name for p in right]:
            return False
        if not all(filecmp.cmp(x, y, shallow=False) for x, y in zip(left, right, strict=True)):
            return False
    return True


def run_ray_benchmark(args: argparse.Namespace | None = None) -> dict[str, Any]:
    """Run the benchmark (see the module docstring) and return its figures. `args` is a namespace of
    `parse_args`; attributes it lacks take their defaults (so a caller may pass a namespace of its own)."""
    defaults = vars(parse_args([]))
    args = argparse.Namespace(
        **{**defaults, **{k: v for k, v in vars(args or argparse.Namespace()).items() if k in defaults}}
    )
    overrides: dict[str, Any] = {
        "data": {"dataset": args.dataset, "n_personas": args.personas, "cache_dir": args.cache_dir},
        "llm": {"backend": "mock", "cache": False},
        "users": {"kind": args.kind, "embedder": "hashing"},
        "simulation": {"pages": args.pages},
        "recommenders": {"names": ["pop"]},
        "ray": {"num_workers": args.workers, "shards_per_worker": args.shards_per_worker},
    }
    config = load_config(None, overrides)
    ray_config = config.model_copy(update={"engine": "ray"})
    start = time.perf_counter()
    world = build_world(config)
    llm = build_llm(config)
    users = UserModelFactory(config, world, llm)
    recommender, _ = train_recommender(config, world, "pop")
    user_model = users()  # fits or loads the response model before any timing
    prepare_s = time.perf_counter() - start
    run = {"n_pages": args.pages, "seed": config.run.seed, "policy_name": "pop", "batch_size": RUNNER_BATCH}
    recipe = PolicyRecipe(ray_config, "pop", worker_setup, policy_parts, build_llm)
    out: dict[str, Any] = {
        "dataset": world.dataset.name,
        "personas": len(world.personas),
        "pages_per_session": args.pages,
        "workers": args.workers,
        "kind": args.kind,
        "prepare_s": round(prepare_s, 1),
    }
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        local_dir = root / "local" / "policies" / "pop"
        call_log = CallLogLLM(llm, local_dir / "llm_calls")  # as `simrec compare` and the Ray workers log calls
        local = world.run_sessions(recommender, users(call_log), local_dir, **run)
        call_log.close()
        local_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        connect(ray_config.ray)
        engine = RayEngine(ray_config)
        import ray

        ray.get([w.ping.remote() for w in engine.workers()])  # actors up (processes started, nothing built)
        out["cluster_start_s"] = round(time.perf_counter() - t0, 1)
        timings = {}
        for label in ("cold", "warm"):
            policy_dir = root / label / "policies" / "pop"
            t0 = time.perf_counter()
            engine.run_policy(world, recommender, user_model, policy_dir, recipe, run)
            timings[label] = (time.perf_counter() - t0, engine.last)
            out[f"identical_{label}"] = same_output(root / "local" / "policies" / "pop", policy_dir)
        calls = read_call_log(root / "cold" / "policies" / "pop" / "llm_calls")
        peak_rss = ray.get([w.peak_rss_mb.remote() for w in engine.workers()])
        stop_workers()
        ray.shutdown()
    pages = local.n_pages_shown
    out.update(
        {
            "pages": pages,
            "local_s": round(local_s, 2),
            "local_pages_per_s": round(pages / local_s, 1),
            "worker_peak_rss_mb": [round(r) for r in peak_rss],
        }
    )
    run_s = sum(r.run_s for r in timings["warm"][1].shards)
    out["per_page"] = {
        "pages_per_session": round(pages / len(world.personas), 2),
        "llm_calls": round(len(calls) / pages, 3),
        "prompt_tokens": round(float(calls["prompt_tokens"].sum()) / pages, 1),
        "completion_tokens": round(float(calls["completion_tokens"].sum()) / pages, 1),
        "worker_cpu_s": round(run_s / pages, 5),  # shard run seconds per page (mock LLM: the non-LLM cost)
    }
    out["projection_1m"] = [project(out["per_page"], 1_000_000, c, latency) for c, latency in SCENARIOS]
    for label, (seconds, stats) in timings.items():
        out[f"ray_{label}_s"] = round(seconds, 2)
        out[f"ray_{label}_pages_per_s"] = round(pages / seconds, 1)
        out[f"speedup_{label}"] = round(local_s / seconds, 2)
        out[f"merge_{label}_s"] = round(stats.merge_s, 3)
        out[f"shards_{label}"] = [
            {
                "shard": s.index,
                "worker": s.worker,
                "dispatch_s": round(stats.dispatch_s.get(s.index, float("nan")), 2),
                "build_s": round(s.build_s, 2),
                "run_s": round(s.run_s, 2),
            }
            for s in stats.shards
        ]
    return out


SCENARIOS = ((64, 1.0), (256, 1.0), (1024, 1.5))  # (requests in flight over all endpoints, seconds per request)


def project(per_page: dict[str, float], personas: int, concurrency: int, latency_s: float) -> dict[str, Any]:
    """A run of `personas` against endpoints serving `concurrency` requests at once at `latency_s` each: pages,
    calls and tokens from the measured per-page figures; wall time bounded by the endpoints (calls x latency /
    concurrency) and by the workers' own CPU; workers needed so their batches (<= RUNNER_BATCH requests each)
    keep the endpoints full."""
    pages = personas * per_page["pages_per_session"]
    calls = pages * per_page["llm_calls"]
    llm_h = calls * latency_s / concurrency / 3600
    workers = max(1, -(-concurrency // RUNNER_BATCH))
    cpu_h = pages * per_page["worker_cpu_s"] / workers / 3600
    return {
        "personas": personas,
        "endpoint_concurrency": concurrency,
        "latency_s": latency_s,
        "workers": workers,
        "pages": round(pages),
        "llm_calls": round(calls),
        "tokens": round(pages * (per_page["prompt_tokens"] + per_page["completion_tokens"])),
        "hours": round(max(llm_h, cpu_h), 1),
        "bound": "endpoints" if llm_h >= cpu_h else "workers",
    }


def print_results(out: dict[str, Any]) -> None:
    print(
        f"Ray engine vs local: {out['dataset']}, {out['personas']} grounded personas ({out['kind']}, mock LLM) x "
        f"<= {out['pages_per_session']} pages, Pop; {out['workers']} workers; {out['pages']} pages shown"
    )
    print(f"  prepare (world, Pop, response model; cached): {out['prepare_s']} s")
    print(f"  cluster start and worker processes up: {out['cluster_start_s']} s")
    print(f"  local:     {out['local_s']:8.2f} s  {out['local_pages_per_s']:8.1f} pages/s")
    for label in ("cold", "warm"):
        print(
            f"  ray {label}:  {out[f'ray_{label}_s']:8.2f} s  {out[f'ray_{label}_pages_per_s']:8.1f} pages/s  "
            f"speed-up {out[f'speedup_{label}']:.2f}x  merge {out[f'merge_{label}_s']:.3f} s  "
            f"identical to local: {out[f'identical_{label}']}"
        )
        for s in out[f"shards_{label}"]:
            shard = f"    shard {s['shard']:>2} on worker {s['worker']}"
            print(f"{shard}: dispatch {s['dispatch_s']:6.2f} s, build {s['build_s']:6.2f} s, run {s['run_s']:6.2f} s")
    print(f"  worker peak RSS: {out['worker_peak_rss_mb']} MB")
    p = out["per_page"]
    print(
        f"  per page: {p['llm_calls']} LLM calls, {p['prompt_tokens']} prompt + {p['completion_tokens']} completion "
        f"tokens (mock: chars/4), {p['worker_cpu_s'] * 1000:.2f} ms worker time; {p['pages_per_session']} pages/session"
    )
    for r in out["projection_1m"]:
        print(
            f"  projection, {r['personas']:,} personas, {r['endpoint_concurrency']} requests in flight at "
            f"{r['latency_s']} s: {r['workers']} workers, {r['pages']:,} pages, {r['llm_calls']:,} calls, "
            f"{r['tokens'] / 1e9:.2f} G tokens, ~{r['hours']} h ({r['bound']}-bound)"
        )


def main(argv: list[str] | None = None) -> None:
    print_results(run_ray_benchmark(parse_args(argv)))


if __name__ == "__main__":
    main()
