"""How far is the watch model from what its features allow? On the pairs a `simrec validate` run showed.

python -m benchmarks.bench_watch_ceiling runs/validate                 # a validate run directory (fitted users)
python -m benchmarks.bench_watch_ceiling runs/validate --folds 2

Reads the run's config and every policy's events (policies/<name>/events), rebuilds the response model from the
cache the run used, and prints the test-membership AUC of:
- the response model's watch probability, pooled over every shown pair (validity.json `auc_watch_test`) and over
  the distinct (user, item) pairs (`auc_watch_test_distinct`);
- the same boosting fitted directly on those distinct pairs with VALID labels (cross-fitted over users; the same
  features and settings): the ceiling of the features on this distribution;
- an oracle that knows each persona's held-out set (VALID or TEST) but not which half an item fell in: the
  ceiling of any TRAIN-side model under the random split.
TEST is only read for scoring, as in `simrec validate`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from agents.response import _boosting, user_folds
from experiments.build import UserModelFactory, build_world
from experiments.compare import stored_config
from simenv.eventlog import read_table


def pairs_of(run_dir: Path) -> pd.DataFrame:
    """Every shown (policy, user, item) of the run's in-sample policies."""
    parts = [
        read_table(d, "events")[["user", "item"]].assign(policy=d.name)
        for d in sorted((run_dir / "policies").iterdir())
        if (d / "events").is_dir()
    ]
    if not parts:
        raise SystemExit(f"{run_dir}: no policies/<name>/events (is it a validate run directory?)")
    return pd.concat(parts, ignore_index=True)


def in_split(frame: pd.DataFrame, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Whether each (user, item) is a row of `frame` (a split part)."""
    keys = set(zip(frame["user_id"].tolist(), frame["item_id"].tolist(), strict=True))
    return np.fromiter(((u, i) in keys for u, i in zip(users.tolist(), items.tolist(), strict=True)), bool, len(users))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--folds", type=int, default=2, help="user folds for the fit on the shown pairs")
    args = ap.parse_args()
    start = time.perf_counter()
    config = stored_config(args.run_dir)
    world = build_world(config, n_personas=config.validity.n_personas or 10**9)
    users = UserModelFactory(config, world, None)
    model = users.response_model(users.spec().decision.response)
    shown = pairs_of(args.run_dir)
    distinct = shown[["user", "item"]].drop_duplicates(ignore_index=True)
    u, i = distinct["user"].to_numpy(np.int64), distinct["item"].to_numpy(np.int64)
    x = np.zeros((len(distinct), len(model.features.names)), dtype=np.float32)
    prob = np.empty(len(distinct))
    for user, rows in distinct.groupby("user").indices.items():
        persona = world.personas[int(user)]
        x[rows] = model.features.matrix(persona)[i[rows]]
        prob[rows] = model.plan(persona).watch_probability[i[rows]]
    in_test = in_split(world.split.test, u, i)
    in_valid = in_split(world.split.valid, u, i)
    pooled = shown.merge(distinct.assign(p=prob, y=in_test), on=["user", "item"])
    folds = user_folds(np.unique(u), args.folds, config.run.seed)
    fold = np.fromiter((folds[int(v)] for v in u), np.int64, len(u))
    ceiling = np.empty(len(distinct))
    for f in range(args.folds):
        fit = HistGradientBoostingClassifier(**_boosting(model.config)).fit(x[fold != f], in_valid[fold != f])
        ceiling[fold == f] = fit.predict_proba(x[fold == f])[:, 1]
    n_policies = shown["policy"].nunique()
    print(
        f"{world.dataset.name} seed {config.run.seed}: {len(shown)} shown pairs of {n_policies} policies, "
        f"{len(distinct)} distinct; TEST rate {in_test.mean():.3f}, VALID rate {in_valid.mean():.3f}"
    )
    print(f"AUC, response model, every shown pair:                 {roc_auc_score(pooled['y'], pooled['p']):.4f}")
    print(f"AUC, response model, distinct pairs:                   {roc_auc_score(in_test, prob):.4f}")
    print(f"AUC, boosting fitted on these pairs (VALID labels):    {roc_auc_score(in_test, ceiling):.4f}")
    print(f"AUC, oracle knowing the held-out set (VALID or TEST):  {roc_auc_score(in_test, in_test | in_valid):.4f}")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
