"""Offline accuracy and training time of every recommender: Recall@20 / NDCG@20 on held-out test items.

Datasets (pick with --datasets, models with --models, so it can be run piecewise):
- ml-1m-agent4rec:  Agent4Rec's split of ML-1M: 1,000 sampled users, each user's ratings shuffled 40/30/30.
- ml-100k-agent4rec: the same protocol on all 703 eligible ML-100K users (>= 20 ratings above 3).
- ml-1m-temporal:   leave-one-out by time on all 6,040 users (train = all but the last two ratings, valid =
                    second to last, test = last); the valid item is fed to the models as session history
                    when scoring test (SASRec's protocol) and masked for everyone.
- ml-1m-random:     a random 70/10/20 split of every ML-1M user, close to the 80/20 splits of the
                    LightGCN/MF literature (for a sanity check against published numbers; slower).
Every rating is a positive (implicit feedback). Model configs come from experiments/configs/recommenders.toml:
`[models.<name>]`, overridden per dataset by `[datasets.<dataset>.<name>]`.

    .venv/bin/python -m benchmarks.bench_recommenders --models mf,lightgcn --datasets ml-1m-agent4rec
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import tomllib

# Idle OpenMP threads must sleep, not spin: on a shared 2-core machine spinning made epochs 10x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from pathlib import Path
from typing import Any

import numpy as np
import torch  # noqa: E402  (after OMP_WAIT_POLICY is set)

from recommenders.evaluation import evaluate_split
from recommenders.registry import make
from simenv.data import Split, agent4rec_split, load_dataset, temporal_split

CONFIG = Path(__file__).resolve().parent.parent / "experiments" / "configs" / "recommenders.toml"
MODELS = ("random", "pop", "pop-head", "mf", "multvae", "lightgcn", "sasrec")
DATASETS = ("ml-1m-agent4rec", "ml-100k-agent4rec", "ml-1m-temporal", "ml-1m-random")


def load_split(name: str) -> tuple[Split, bool]:
    """The split and whether valid items are session history when scoring test."""
    if name == "ml-1m-agent4rec":
        return agent4rec_split(load_dataset("ml-1m"), n_users=1000, seed=0), False
    if name == "ml-100k-agent4rec":
        return agent4rec_split(load_dataset("ml-100k"), n_users=None, seed=0), False
    if name == "ml-1m-temporal":
        return temporal_split(load_dataset("ml-1m"), k=1), True
    if name == "ml-1m-random":
        return agent4rec_split(load_dataset("ml-1m"), n_users=None, seed=0, min_liked=0, ratios=(0.7, 0.1, 0.2)), False
    raise SystemExit(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def model_config(table: dict[str, Any], dataset: str, model: str) -> dict[str, Any]:
    config = dict(table.get("models", {}).get(model, {}))
    config.update(table.get("datasets", {}).get(dataset, {}).get(model, {}))
    return config


def run(models: list[str], datasets: list[str], config_path: Path, out: Path | None) -> list[dict[str, Any]]:
    table = tomllib.loads(config_path.read_text(encoding="utf-8"))
    rows = []
    for dataset in datasets:
        split, valid_as_history = load_split(dataset)
        print(
            f"# {dataset}: {split.protocol}; {len(split.users)} users, train {len(split.train)}, "
            f"valid {len(split.valid)}, test {len(split.test)}",
            flush=True,
        )
        for name in models:
            config = model_config(table, dataset, name)
            model = make(name, **config)
            start = time.perf_counter()
            model.fit(split.train, split.dataset.n_users, split.dataset.n_items, split.valid)
            seconds = time.perf_counter() - start
            result = evaluate_split(model, split, on="test", k=20, valid_as_history=valid_as_history)
            report = model.train_report
            row = {
                "dataset": dataset,
                "model": name,
                "recall@20": round(result.recall, 4),
                "ndcg@20": round(result.ndcg, 4),
                "train_s": round(seconds, 1),
                "epochs": report.get("epochs_run", 0),
                "best_epoch": report.get("best_epoch", 0),
                "stopped": report.get("stopped_by", "-"),
                "valid_recall@20": report.get("best_valid_recall@20"),
                "test_users": result.n_users,
                "config": config,
            }
            rows.append(row)
            print(
                f"{dataset:18s} {name:9s} recall@20 {row['recall@20']:.4f}  ndcg@20 {row['ndcg@20']:.4f}  "
                f"train {row['train_s']:7.1f}s  epochs {row['epochs']} (best {row['best_epoch']}, {row['stopped']})",
                flush=True,
            )
            if out is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print()
    print(f"| {'model':9s} | {'dataset':18s} | recall@20 | ndcg@20 | train s | epochs (best) |")
    print(f"|{'-' * 11}|{'-' * 20}|-----------|---------|---------|---------------|")
    for r in rows:
        print(
            f"| {r['model']:9s} | {r['dataset']:18s} | {r['recall@20']:9.4f} | {r['ndcg@20']:7.4f} | "
            f"{r['train_s']:7.1f} | {str(r['epochs']) + ' (' + str(r['best_epoch']) + ')':13s} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list from {', '.join(MODELS)}")
    parser.add_argument("--datasets", default=",".join(DATASETS[:3]), help=f"comma list from {', '.join(DATASETS)}")
    parser.add_argument("--config", type=Path, default=CONFIG, help="TOML of model configs")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here too")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each validation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    torch.set_num_threads(args.threads)
    np.set_printoptions(precision=4)
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    rows = run(models, [d for d in args.datasets.split(",") if d], args.config, args.out)
    print_table(rows)


if __name__ == "__main__":
    main()
