"""Cost growth with the population size (issue 18), each figure measured in a fresh child process (its own peak
memory), ratios within this one run.

    .venv/bin/python -m benchmarks.bench_scale [--quick] [--dataset ml-100k] [--chunk 10000] [--sizes ...]
        [--no-ray] [--ray-args '...']

1. Fast users through the vector path: a synthetic population (`simenv.synthetic_population.draw_population`,
   members drawn with replacement from the real personas, seed 0) of 1k / 10k / 100k members (`--sizes`, e.g.
   `1000,10000,100000,1000000`), one session of up to 5 pages of 4 items each, run `--chunk` sessions at a time
   (`FastRecVectorEnv(population=..., autoreset_mode="Disabled")`, `reset(options={"users": ids})`), the policy
   showing each session's best remaining candidates (the candidate set is ordered by popularity). Wall and CPU
   time from the first reset to the last page (the world and the env are built, and one chunk run, before), peak
   RSS of the process; each size against the one before (linear growth: time grows as the members do). Then the
   largest size up to 100k as ONE batch of that many sessions (what the env allowed before populations): the
   same work, its memory.
2. Persona users (`LLMUserModel`, kind `handset`, mock LLM, hashing embedder) through
   `simenv.runner.run_sessions` against Pop: 100 and 1k members x 5 pages, pages decided in one batch
   (`GroundedDecider.decide_batch`, the only copy of the rule), each run twice (means printed):
   wall time of the run, time inside the user model's `react_batch`, and inside the decision step alone. The
   plans are built before the clock starts (once per source persona: `GroundedDecider.use_sources`; reported
   apart).
3. Ray (`benchmarks.bench_ray.run_ray_benchmark`, another module): printed when that module and ray are
   installed, else the reason they are skipped.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shlex
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

PAGES, PAGE_SIZE = 5, 4


def _rss_mb() -> float:
    """Resident memory of this process now (MB), from /proc (Linux); NaN elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def _child(conn: Any, fn: Callable[..., dict], args: tuple) -> None:
    try:
        conn.send(fn(*args))
    except BaseException as exc:  # reported by the parent, which raises
        conn.send({"error": f"{type(exc).__name__}: {exc}"})


def in_child(fn: Callable[..., dict], *args: Any) -> dict:
    """`fn(*args)` in a fresh spawned process (so its peak RSS is its own); returns fn's dict."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args))
    proc.start()
    result = parent.recv()
    proc.join()
    if "error" in result:
        raise RuntimeError(f"{fn.__name__}{args}: {result['error']}")
    return result


def fast_population(n_members: int, chunk: int, dataset: str, seed: int = 0) -> dict:
    """One session of <= 5 pages for each of `n_members` synthetic members, `chunk` sessions at a time."""
    import gymnasium as gym

    import simrec  # noqa: F401  (registers the ids)
    from simenv.synthetic_population import draw_population
    from simrec.envs import default_world

    personas = default_world(dataset).population
    pop = draw_population(sorted(personas), n_members, np.random.default_rng(seed))
    envs: dict[int, Any] = {}

    def env_for(size: int) -> Any:
        if size not in envs:
            envs[size] = gym.make_vec(
                "simrec/FastRec-v1",
                num_envs=size,
                vectorization_mode="vector_entry_point",
                dataset=dataset,
                max_pages=PAGES,
                page_size=PAGE_SIZE,
                population=pop,
                autoreset_mode="Disabled",
            )
        return envs[size]

    sizes = [min(chunk, n_members - s) for s in range(0, n_members, chunk)]
    for size in set(sizes):  # not timed: per-persona arrays (a one-off) and one chunk (first touch of its arrays)
        env = env_for(size)
        env.unwrapped.prepare(np.arange(len(personas)))
        _, info = env.reset(seed=seed, options={"users": pop.user_ids[:size]})
        for _ in range(PAGES):
            _, _, _, _, info = env.step(np.argsort(~info["action_mask"], axis=1, kind="stable")[:, :PAGE_SIZE])
    base = _rss_mb()
    pages = liked = 0
    start, cpu = time.perf_counter(), time.process_time()
    for k, (first, size) in enumerate(zip(range(0, n_members, chunk), sizes, strict=True)):
        env = env_for(size)
        _, info = env.reset(seed=seed + k, options={"users": pop.user_ids[first : first + size]})
        for _ in range(PAGES):
            action = np.argsort(~info["action_mask"], axis=1, kind="stable")[:, :PAGE_SIZE]
            _, _, _, _, info = env.step(action)
            pages += int(info["_page_items"].sum())
            liked += int(info["n_liked"].sum())
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"members": n_members, "chunk": chunk, "wall": wall, "cpu": cpu, "pages": pages, "liked": liked,
            "base_mb": base, "peak_mb": _peak_mb()}  # fmt: skip


def grounded_population(n_members: int, dataset: str, profile: str = "handset", seed: int = 0) -> dict:
    """`n_members` grounded persona users x 5 pages through `run_sessions` (mock LLM), timed in three layers."""
    from agents.config import load_user
    from agents.embedding import HashingEmbedder
    from agents.llm_user import LLMUserModel, page_decisions
    from recommenders.registry import make
    from simenv.llm import LLMConfig, make_llm
    from simenv.runner import run_sessions
    from simenv.synthetic_population import SourceIdPolicy, draw_population, member_personas
    from simrec.envs import default_world

    world = default_world(dataset)
    ds, split, personas = world.dataset, world.split, world.population
    pop = draw_population(sorted(personas), n_members, np.random.default_rng(seed))
    members = member_personas(pop, personas)
    llm = make_llm(LLMConfig(backend="mock"))  # no cache_dir: no response cache
    model = LLMUserModel(ds, llm, HashingEmbedder(), load_user(profile).user, train=split.train)
    model.decider.use_sources(dict(zip(pop.user_ids.tolist(), pop.source.tolist(), strict=True)))  # plan per source
    rec = SourceIdPolicy(make("pop").fit(split.train, ds.n_users, ds.n_items), pop)  # Pop knows real ids only
    t0 = time.perf_counter()
    model.decider.prepare(list(members.values()))  # per-member plans (a one-off per persona)
    prepare = time.perf_counter() - t0
    spent = {"react": 0.0, "decide": 0.0, "react_cpu": 0.0, "decide_cpu": 0.0}

    def timed(key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t, c = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - t
                spent[f"{key}_cpu"] += time.process_time() - c

        return wrapper

    model.react_batch = timed("react", model.react_batch)  # type: ignore[method-assign]
    page_decisions.decide_batch = timed("decide", page_decisions.decide_batch)  # benchmark instrumentation only
    base = _rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        summary = run_sessions(rec, model, members, ds, split.train, tmp, n_pages=PAGES, page_size=PAGE_SIZE,
                               seed=seed, policy_name="pop")  # fmt: skip
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"members": n_members, "wall": wall, "cpu": cpu, "pages": summary.n_pages_shown,
            **spent, "prepare": prepare, "base_mb": base,
            "peak_mb": _peak_mb()}  # fmt: skip


def _mean(results: list[dict]) -> dict:
    """Field-wise mean of numeric results (the repeats of one configuration)."""
    return {k: sum(r[k] for r in results) / len(results) if isinstance(v, float) else v for k, v in results[0].items()}


def ray_figures(ray_args: list[str] | None) -> None:
    """The Ray engine's benchmark (another module, its own defaults unless `ray_args`), or why it is skipped."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        print(f"ray: skipped (ray is not installed: {exc}; pip install 'simrec[ray]')")
        return
    try:
        from benchmarks import bench_ray
    except ImportError as exc:
        print(f"ray: skipped (benchmarks.bench_ray is not available: {exc})")
        return
    parse = getattr(bench_ray, "parse_args", None)
    options = parse(ray_args or []) if parse is not None else None
    result = bench_ray.run_ray_benchmark(options)
    print(f"ray (benchmarks.bench_ray {' '.join(ray_args or [])}):")
    for key, value in result.items():
        print(f"  {key}: {value}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--chunk", type=int, default=10_000, help="fast-user sessions stepped at once")
    parser.add_argument("--sizes", default="1000,10000,100000", help="fast-user population sizes, comma-separated")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray figures")
    parser.add_argument("--ray-args", default=None, help="arguments passed to bench_ray (one shell-quoted string)")
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}; dataset {args.dataset}")

    sizes = tuple(int(x) for x in args.sizes.split(","))
    if args.quick:
        sizes = tuple(n for n in sizes if n <= 10_000) or (1_000,)
    print(f"\n1. fast users, vector path, one session of <= {PAGES} pages x {PAGE_SIZE} items per member, "
          f"{args.chunk:,} sessions at a time")  # fmt: skip
    fast = [in_child(fast_population, n, args.chunk, args.dataset) for n in sizes]
    for k, r in enumerate(fast):
        growth = ""
        if k:  # linear growth: time grows as the members do
            prev = fast[k - 1]
            growth = (f"; {r['members'] / prev['members']:.0f}x the members of the line above: wall "
                      f"{r['wall'] / prev['wall']:.1f}x, CPU {r['cpu'] / prev['cpu']:.1f}x")  # fmt: skip
        print(f"  {r['members']:>9,} members: {r['wall']:6.2f} s wall, {r['cpu']:6.2f} s CPU, {r['pages']:>9,} pages "
              f"({r['pages'] / r['wall']:,.0f} pages/s wall), peak RSS {r['peak_mb']:,.0f} MB (before the run "
              f"{r['base_mb']:,.0f} MB){growth}")  # fmt: skip
    last = max(fast, key=lambda r: r["members"] if r["members"] <= 100_000 else 0)
    big = last["members"]
    one = in_child(fast_population, big, big, args.dataset)
    print(f"  {big:>7,} members as one batch of {big:,} sessions: {one['wall']:6.2f} s wall, {one['cpu']:.2f} s CPU "
          f"({one['wall'] / last['wall']:.2f}x / {one['cpu'] / last['cpu']:.2f}x the chunked run), peak RSS "
          f"{one['peak_mb']:,.0f} MB ({one['peak_mb'] / last['peak_mb']:.2f}x)")  # fmt: skip
    print(f"  target: 100,000 members x 5 pages in <= 60 s wall on 2 cores; measured {last['wall']:.2f} s wall for "
          f"{big:,}")  # fmt: skip

    grounded_sizes = (100, 300) if args.quick else (100, 1_000)
    print(f"\n2. grounded persona users (mock LLM, hashing embedder), Pop, {PAGES} pages x {PAGE_SIZE} items")
    for n in grounded_sizes:
        r = _mean([in_child(grounded_population, n, args.dataset) for _ in range(2)])
        print(f"  {n:>5,} members: run {r['wall']:6.2f} s wall ({r['cpu']:.2f} s CPU, "
              f"{r['pages']:,} pages, {r['wall'] / r['pages'] * 1e3:.2f} ms/page), user model "
              f"{r['react']:.2f} s ({r['react_cpu']:.2f} s CPU), decisions {r['decide']:.3f} s "
              f"({r['decide_cpu'] / r['pages'] * 1e6:.0f} us CPU/page); plans {r['prepare']:.2f} s before; "
              f"peak RSS {r['peak_mb']:,.0f} MB")  # fmt: skip
    g0, g1 = (in_child(grounded_population, n, args.dataset) for n in grounded_sizes)
    print(f"  growth {grounded_sizes[0]:,} -> {grounded_sizes[1]:,} members (measured again), CPU: run "
          f"{g1['cpu'] / g0['cpu']:.2f}x, user model {g1['react_cpu'] / g0['react_cpu']:.2f}x, wall: run "
          f"{g1['wall'] / g0['wall']:.2f}x, for "
          f"{grounded_sizes[1] / grounded_sizes[0]:.0f}x the members")  # fmt: skip

    print("\n3. Ray")
    if args.no_ray:
        print("ray: skipped (--no-ray)")
    else:
        ray_figures(shlex.split(args.ray_args) if args.ray_args else None)


if __name__ == "__main__":
    main()
