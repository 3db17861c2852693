"""Experiment-runner benchmarks: framework overhead with the mock LLM, `compare` wall time split into
training / simulation / LLM time, and Mesa population rounds per second.

    .venv/bin/python -m benchmarks.bench_experiments [--personas 200] [--dataset ml-100k]

1. Framework overhead: `simrec compare` with the mock LLM and the hashing embedder against Random and Pop
   (no training), pages/s of the whole pipeline (recommend, prompt, retrieval, mock, parse, memory, logs).
2. Compare split: the same with MF and SASRec (small budgets), wall time per phase as the CLI reports it.
3. Population: rounds/s of the Mesa model with the fast user and Pop (no retraining cost) and with MF
   retraining every round (closed loop).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from experiments.build import UserModelFactory, build_world
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


def population_rounds_per_s(dataset: str, personas: int, recommender: str, retrain: bool, rounds: int) -> float:
    config = load_config(None, {"data": {"dataset": dataset, "n_personas": personas}, "users": {"model": "fast"}})
    world = build_world(config)
    users = UserModelFactory(config, world, None)(kind="fast")
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
    args = parser.parse_args()
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
