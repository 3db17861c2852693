"""`simrec fidelity`: taste discrimination (1:m) and rating fidelity per user-model configuration.

Each user kind from `[fidelity] kinds` is scored on the same personas and the same sampled items (every kind gets
identically seeded generators); kinds come from the `[users] config_file` (docs/USERS.md). Each row holds the
kind's own (calibrated) decisions, the protocol as peers run it (`protocol_*`: told how many of a page's items it
watched, the user picks that many) and the rating RMSE (of the expected rating; `rmse_stars` of the drawn stars)
and KL. Writes `fidelity.csv` (columns in docs/CONTRACTS.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from agents.fidelity import discrimination, rating_fidelity
from experiments.build import UserModelFactory, build_llm, build_world, worker_setup
from experiments.config import ExperimentConfig, UsersSection
from simenv.llm import LLM

AGENT4REC = {1: (0.6912, 0.6982), 9: (0.6175, 0.3232)}  # published (accuracy, F1), gpt-3.5, ML-1M


def score_kind(config: ExperimentConfig, users: UserModelFactory, kind: str) -> list[dict]:
    """Discrimination rows (one per ratio), each carrying the kind's rating RMSE/KL."""
    subject = users(kind=kind)
    world = users.world
    personas = list(world.personas.values())
    seed = config.run.seed
    disc = discrimination(subject, world.split, personas, np.random.default_rng([seed, 7]), config.fidelity.ratios)
    rating = rating_fidelity(subject, world.split, personas, np.random.default_rng([seed, 8]))
    return [
        {
            "kind": kind,
            **d.as_dict(),
            "rmse": rating.rmse,
            "rmse_stars": rating.rmse_stars,
            "kl": rating.kl,
            "n_ratings": rating.n,
        }
        for d in disc.values()
    ]


def kind_rows(users: UserModelFactory, llm: LLM | None, kind: str) -> list[dict]:
    """`score_kind` on an engine worker, with the LLM that worker built (kinds are seeded alike, so a kind scores
    the same on any worker)."""
    if users.llm is None:
        users.llm = llm
    return score_kind(users.config, users, kind)


def users_of(config: ExperimentConfig, kind: str) -> UsersSection:
    return config.users.model_copy(update={"kind": kind})


def run_fidelity(config: ExperimentConfig, console: Console | None = None) -> pd.DataFrame:
    """Score every configured kind on `fidelity.n_personas` personas; print and write the table."""
    console = console or Console()
    data = config.data.model_copy(update={"n_personas": config.fidelity.n_personas})
    config = config.model_copy(update={"data": data})
    world = build_world(config)
    needs_llm = any(users_of(config, k).writes_text for k in config.fidelity.kinds)
    users = UserModelFactory(config, world, build_llm(config) if needs_llm else None)
    rows: list[dict] = []
    if config.engine == "ray":  # one task per kind, spread over the workers
        console.print(f"scoring {', '.join(config.fidelity.kinds)} on {len(world.personas)} personas (ray)")
        parts = world.engine.map(  # type: ignore[attr-defined]
            worker_setup, config, kind_rows, list(config.fidelity.kinds), build_llm if needs_llm else None
        )
        rows = [row for part in parts for row in part]
    else:
        for kind in config.fidelity.kinds:
            console.print(f"scoring {kind} on {len(world.personas)} personas of {world.dataset.name}")
            rows.extend(score_kind(config, users, kind))
    table = pd.DataFrame(rows)
    out = Path(config.run.out_dir) / config.run.name
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "fidelity.csv", index=False)
    console.print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    published = "; ".join(f"1:{m} accuracy {a:.4f} F1 {f:.4f}" for m, (a, f) in AGENT4REC.items())
    console.print(f"Agent4Rec (gpt-3.5, ML-1M): {published}")
    console.print(f"written: {out / 'fidelity.csv'}")
    return table
