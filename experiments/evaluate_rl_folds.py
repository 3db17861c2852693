"""Cross-fitted RL evaluation: pool the `evaluate-rl` results of K checkpoints whose held-out folds cover the split.

Train K policies with `[rl] eval_fold` = 0..K-1 and `eval_personas` = ceil(N / K): each persona is held out by
exactly one of them, so every persona is scored by a policy that never trained on it, and the pooled paired
differences rest on N personas instead of N / K (a bootstrap interval about sqrt(K) times narrower). The pooled
figures are computed by the same functions as one checkpoint's (`experiments.evaluate_rl`), from each checkpoint's
`evaluate/per_persona.parquet`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.evaluate_rl import (
    EVALUATE_FILE,
    GREEDY,
    PER_PERSONA_FILE,
    comparisons,
    load_per_persona,
    policy_scores,
)


def pool_folds(directories: Sequence[Path], n_boot: int = 1000) -> dict[str, Any]:
    """The pooled `evaluate_rl.json` body of the evaluated checkpoints in `directories` (folds of one seed)."""
    results = [json.loads((Path(d) / EVALUATE_FILE).read_text()) for d in directories]
    first = results[0]
    for key in ("dataset", "seed", "algo", "base", "trained_on"):
        values = {r[key] for r in results}
        if len(values) > 1:
            raise ValueError(f"cannot pool checkpoints with different {key}: {sorted(map(str, values))}")
    held_out = [set(r["eval_personas"]) for r in results]
    seen: set[int] = set()
    for users in held_out:
        if seen & users:
            raise ValueError(f"folds overlap: persona {min(seen & users)} is held out by two checkpoints")
        seen |= users
    frames: dict[str, list[pd.DataFrame]] = {}
    for directory in directories:
        for key, frame in load_per_persona(Path(directory) / "evaluate" / PER_PERSONA_FILE).items():
            frames.setdefault(key, []).append(frame)
    pooled = {key: pd.concat(parts, ignore_index=True) for key, parts in frames.items()}
    names = list(first["policies"])
    labels = {key: first["policies"][first["algo"]][key]["user_model"] for key in pooled}
    recall = {name: _mean_recall(results, name) for name in names}
    scores = policy_scores(pooled, labels, names, recall)
    recommenders = [n for n in names if n not in (first["algo"], GREEDY)]
    return {
        "checkpoints": [str(d) for d in directories],
        "dataset": first["dataset"],
        "seed": first["seed"],
        "algo": first["algo"],
        "base": first["base"],
        "trained_on": first["trained_on"],
        "folds": len(directories),
        "n_personas": int(sum(len(h) for h in held_out)),
        "timesteps": [r["timesteps"] for r in results],
        "train_seconds": [r["train_seconds"] for r in results],
        "policies": scores,
        "comparisons": comparisons(pooled, scores, first["algo"], first["base"], recommenders, n_boot, first["seed"]),
    }


def _mean_recall(results: list[dict[str, Any]], name: str) -> float:
    """A policy's offline recall@20 over the folds, weighted by their held-out sizes (NaN for re-rankers)."""
    values = np.array([r["policies"][name]["real"]["recall_at_20"] for r in results], dtype=np.float64)
    weights = np.array([len(r["eval_personas"]) for r in results], dtype=np.float64)
    return float(np.average(values, weights=weights))
