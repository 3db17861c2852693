"""Experiment-runner benchmarks: framework overhead with the mock LLM, `compare` wall time split into
training / simulation / LLM time, and Mesa population rounds per second.

    .venv/bin/python -m benchmarks.bench_experiments [--personas 200] [--dataset ml-100k] [--default-only]

0. The shipped default configuration: `simrec compare --config demo --llm.backend mock` (fitted users, MiniLM
   memories, five recommenders), simulation pages/s as the CLI reports it. Trained models, the response model
   and parsed data are reused from the cache (`--cache-dir`, default the simrec cache; trained there on the first
   run). Text embeddings start empty (a machine's first run), then only the catalog's are cached (later runs).
1. Framework overhead: `simrec compare` with the mock LLM and the hashing embedder against Random and Pop
   (no training), pages/s of the whole pipeline (recommend, prompt, retrieval, mock, parse, memory, logs).
2. Compare split: the same with MF and SASRec (small budgets), wall time per phase as the CLI reports it.
3. Population: rounds/s of the Mesa model with the fast user and Pop (no retraining cost) and with MF
   retraining every round (closed loop).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from experiments.build import UserModelFactory, build_embedder, build_world, cache_root
from experiments.compare import run_compare
from experiments.config import load_config
from experiments.population import PopulationConfig, PopulationModel
from experiments.report import read_run
from recommenders.registry import make


def compare_once(tmp: Path, dataset: str, personas: int, names: list[str]) -> tuple[float, int, str]:
    overrides = {
        "run": {"name": "bench-" + "-".join(names), "out_dir": str(tmp)},
        "data": {"dataset": dataset, "n_personas": personas, "cache_dir": str(tmp / "cache")},
        "llm": {"backend": "mock", "cache": False},
        "users": {"embedder": "hashing"},
        "recommenders": {"names": names},
    }
    config = load_config(None, overrides)
    console = Console(file=io.StringIO(), width=160)
    start = time.perf_counter()
    run_dir = run_compare(config, console=console)
    seconds = time.perf_counter() - start
    pages = len(read_run(run_dir).pages)
    summary = next(line for line in console.file.getvalue().splitlines() if line.startswith("wall time"))
    return seconds, pages, summary


def default_config_pages_per_s(tmp: Path, cache_dir: Path, dataset: str, personas: int) -> list[tuple[float, int, str]]:
    """Simulation pages/s of the demo config with the mock LLM (MiniLM, fitted users), twice: with no text
    embeddings on disk (a machine's first run), then on a fresh cache holding only the catalog's embeddings (item
    texts and titles, as any earlier run leaves them; the sessions' own texts are new). See the module docstring."""
    out = []
    for name in ("bench-default", "bench-default-catalog"):
        cache = tmp / f"{name}-cache"
        cache.mkdir()
        for sub in ("data", "models", "response"):  # trained artefacts are shared; embeddings start empty
            (cache_dir / sub).mkdir(parents=True, exist_ok=True)
            (cache / sub).symlink_to((cache_dir / sub).resolve(), target_is_directory=True)
        overrides = {
            "run": {"name": name, "out_dir": str(tmp)},
            "data": {"dataset": dataset, "n_personas": personas, "cache_dir": str(cache)},
            "llm": {"backend": "mock", "cache": False},
        }
        config = load_config(Path("demo"), overrides)
        if name.endswith("catalog"):
            embedder = build_embedder(config)
            catalog = build_world(config).dataset.catalog
            embedder.embed([it.text for it in catalog] + [it.title for it in catalog])
            embedder.close()
        console = Console(file=io.StringIO(), width=160)
        run_dir = run_compare(config, console=console)
        pages = len(read_run(run_dir).pages)
        summary = next(line for line in console.file.getvalue().splitlines() if line.startswith("wall time"))
        simulate_s = float(re.search(r"simulation ([0-9.]+) s", summary).group(1))
        out.append((pages / simulate_s, pages, summary))
    return out


def population_rounds_per_s(dataset: str, personas: int, recommender: str, retrain: bool, rounds: int) -> float:
    config = load_config(None, {"data": {"dataset": dataset, "n_personas": personas}, "users": {"kind": "fitted"}})
    world = build_world(config)
    users = UserModelFactory(config, world, None)()
    model = PopulationModel(
        world.dataset,
        world.split.train,
        list(world.personas.values()),
        users,
        lambda: make(recommender, **({"epochs": 10, "eval_every": 5} if recommender == "mf" else {})),
        PopulationConfig(rounds=rounds, retrain=retrain),
        rng=np.random.default_rng(0),
    )
    start = time.perf_counter()
    for _ in range(rounds):
        model.step()
    return rounds / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--personas", type=int, default=200)
    parser.add_argument("--cache-dir", type=Path, default=None, help="trained models to reuse (default: simrec's)")
    parser.add_argument("--default-only", action="store_true", help="only the shipped default configuration")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cache_dir = args.cache_dir or cache_root(load_config(None))
    with tempfile.TemporaryDirectory() as tmp:
        runs = default_config_pages_per_s(Path(tmp), cache_dir, args.dataset, args.personas)
        for when, (rate, pages, summary) in zip(("no embeddings", "catalog embeddings"), runs, strict=True):
            print(f"default configuration (demo config, mock LLM, MiniLM, fitted users, {args.personas} personas, "
                  f"{when} cached): {pages} pages, {rate:,.0f} pages/s of simulation")  # fmt: skip
            print(f"  {summary}")
    if args.default_only:
        return
    with tempfile.TemporaryDirectory() as tmp:
        seconds, pages, summary = compare_once(Path(tmp), args.dataset, args.personas, ["random", "pop"])
        print(f"framework overhead (mock LLM, random+pop, {args.personas} personas): "
              f"{pages} pages in {seconds:.1f} s = {pages / seconds:,.0f} pages/s end to end")  # fmt: skip
        print(f"  {summary}")
        seconds, pages, summary = compare_once(Path(tmp), args.dataset, args.personas, ["mf", "sasrec"])
        print(f"compare (mock LLM, mf+sasrec, {args.personas} personas): {seconds:.1f} s total")
        print(f"  {summary}")
    rate = population_rounds_per_s(args.dataset, args.personas, "pop", retrain=False, rounds=20)
    print(f"population (fast user, pop, {args.personas} personas): {rate:.1f} rounds/s")
    rate = population_rounds_per_s(args.dataset, args.personas, "mf", retrain=True, rounds=3)
    print(f"population (fast user, mf retrained every round): {rate:.2f} rounds/s")


if __name__ == "__main__":
    main()
