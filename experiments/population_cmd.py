"""`simrec population`: the Mesa population with and without closed-loop retraining, side by side.

Writes `<out_dir>/<name>/population/part-*.parquet` (one row per round and variant), `experiment.json`
and a report with the per-round curves.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import track

from experiments.build import UserModelFactory, build_llm, build_world, worker_setup
from experiments.config import ExperimentConfig
from experiments.population import PopulationConfig, PopulationModel
from experiments.preflight import check_recommender_name, preflight
from experiments.recommender_specs import build_unfitted, check_spec, parse_spec
from experiments.report import build_report
from simenv.eventlog import RunLog
from simenv.llm import LLM


def variant_table(
    users: UserModelFactory, llm: LLM | None, retrain: bool, console: Console | None = None
) -> pd.DataFrame:
    """One variant's per-round table: the closed loop (`retrain`) or the open loop, from the run's seed."""
    config, world, section = users.config, users.world, users.config.population
    variant = "closed loop" if retrain else "open loop"
    pop_config = PopulationConfig(
        rounds=section.rounds,
        page_size=config.simulation.page_size,
        login_prob=section.login_prob,
        retrain=retrain,
    )
    spec = parse_spec(section.recommender)
    model = PopulationModel(
        world.dataset,
        world.split.train,
        list(world.personas.values()),
        users(llm),
        lambda: build_unfitted(config, world, spec, llm),
        pop_config,
        rng=np.random.default_rng(config.run.seed),
    )
    rounds = range(section.rounds)
    for _ in track(rounds, description=f"{variant:>11}", console=console) if console is not None else rounds:
        model.step()
    table = model.datacollector.get_model_vars_dataframe().reset_index(drop=True)
    table.insert(0, "round", np.arange(1, len(table) + 1))
    table.insert(0, "variant", variant)
    return table


def run_population_cmd(config: ExperimentConfig, console: Console | None = None) -> Path:
    """Run the closed loop (retrain each round) and the open loop (never retrain) from the same seed."""
    console = console or Console()
    section = config.population
    run_dir = Path(config.run.out_dir) / config.run.name
    needs_llm = config.users.writes_text
    preflight(config, needs_llm=needs_llm, run_dir=run_dir, marker="population")
    check_recommender_name("population.recommender", section.recommender)
    spec = parse_spec(section.recommender)  # a registry name or a spec (import path, file:, http(s)://)
    world = build_world(config)  # data errors surface before anything is written
    check_spec(config, world, spec)  # as do a bad spec's module, class, file or service
    llm = build_llm(config) if needs_llm else None
    run_log = RunLog(run_dir)
    tmp = run_dir / ".experiment.json.tmp"
    tmp.write_text(config.model_dump_json(indent=2))
    os.replace(tmp, run_dir / "experiment.json")
    users = UserModelFactory(config, world, llm)
    variants = sorted({section.retrain, False}, reverse=True)
    if config.engine == "ray":  # the closed and the open loop on separate workers (a round is a global barrier)
        console.print(f"population: {len(variants)} loop variants on {config.ray.num_workers} workers (ray)")
        tables = world.engine.map(  # type: ignore[attr-defined]
            worker_setup, config, variant_table, variants, build_llm if needs_llm else None
        )
    else:
        tables = [variant_table(users, llm, retrain, console) for retrain in variants]
    result = pd.concat(tables, ignore_index=True)
    run_log.append("population", result.to_dict("records"))
    console.print(result.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    report = build_report(run_dir, seed=config.run.seed)
    console.print(f"report: {report}")
    return run_dir
