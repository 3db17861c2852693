"""Training time, accuracy and determinism of the epoch-trained recommenders (MF, LightGCN, MultVAE by default).

Each model is fitted `--repeat` times (default 2) with the same config and seed on the same split, as the CLI
would (early stopping on the valid split, best weights kept). Printed per model: train seconds of each fit,
epochs run / best epoch / stop rule, best valid metric, test Recall@20 and NDCG@20 (recommenders.evaluation,
train and valid items masked), and whether the fits gave identical state tensors and identical top-20 lists for
every user. `--cross-threads` adds one fit with a single torch thread and compares it too (the guarantee is for
the same torch version and thread count; this shows whether it also holds across thread counts).

    .venv/bin/python -m benchmarks.bench_training                       # ML-100K, demo_recommenders.toml
    .venv/bin/python -m benchmarks.bench_training --config experiments/configs/recommenders.toml \\
        --dataset ml-1m-agent4rec --models mf
"""

from __future__ import annotations

import argparse
import json
import os
import time
import tomllib

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep instead of spinning
from pathlib import Path
from typing import Any

import numpy as np
import torch  # noqa: E402  (after OMP_WAIT_POLICY is set)

from benchmarks.bench_recommenders import DATASETS, load_split, model_config
from recommenders.evaluation import evaluate_split
from recommenders.registry import make

CONFIG = Path(__file__).resolve().parent.parent / "experiments" / "configs" / "demo_recommenders.toml"
MODELS = ("mf", "lightgcn", "multvae")


def fit_once(name: str, config: dict[str, Any], split: Any, threads: int) -> tuple[Any, float]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = make(name, **config)
        start = time.perf_counter()
        model.fit(split.train, split.dataset.n_users, split.dataset.n_items, split.valid)
        return model, time.perf_counter() - start
    finally:
        torch.set_num_threads(before)


def same_model(a: Any, b: Any, users: np.ndarray) -> tuple[bool, float, bool]:
    """(identical state tensors, max |difference| over them, identical top-20 of every user)."""
    sa, sb = a._state(), b._state()
    equal = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    diff = max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa) if sa.keys() == sb.keys() else np.inf
    top_a = np.argsort(-a.score_batch(users), axis=1, kind="stable")[:, :20]
    top_b = np.argsort(-b.score_batch(users), axis=1, kind="stable")[:, :20]
    return equal, diff, bool(np.array_equal(top_a, top_b))


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    table = tomllib.loads(args.config.read_text(encoding="utf-8"))
    split, valid_as_history = load_split(args.dataset)
    users = np.arange(split.dataset.n_users)
    print(
        f"# {args.dataset}: {len(split.users)} users, train {len(split.train)}, valid {len(split.valid)}, "
        f"test {len(split.test)}; config {args.config.name}; {args.threads} torch threads; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rows = []
    for name in args.models:
        config = model_config(table, args.dataset, name)
        fits = [fit_once(name, config, split, args.threads) for _ in range(args.repeat)]
        model = fits[0][0]
        result = evaluate_split(model, split, on="test", k=20, valid_as_history=valid_as_history)
        report = model.train_report
        checks = [same_model(model, other, users) for other, _ in fits[1:]]
        row: dict[str, Any] = {
            "model": name,
            "train_s": [round(s, 1) for _, s in fits],
            "epochs": report["epochs_run"],
            "best_epoch": report["best_epoch"],
            "stopped_by": report["stopped_by"],
            f"valid_{report['valid_metric']}": report["best_valid"],
            "test_recall@20": round(result.recall, 4),
            "test_ndcg@20": round(result.ndcg, 4),
            "identical_state": all(c[0] for c in checks),
            "identical_top20": all(c[2] for c in checks),
            "max_state_diff": max((c[1] for c in checks), default=0.0),
        }
        if args.cross_threads:
            other, seconds = fit_once(name, config, split, 1)
            equal, diff, top = same_model(model, other, users)
            row["one_thread"] = {"train_s": round(seconds, 1), "identical_state": equal, "max_state_diff": diff}
            row["one_thread"]["identical_top20"] = top
        rows.append(row)
        print(
            f"{name:9s} train {' / '.join(f'{s:.1f}' for s in row['train_s'])} s  epochs {row['epochs']} "
            f"(best {row['best_epoch']}, {row['stopped_by']})  "
            f"valid {report['valid_metric']} {report['best_valid']:.4f}  "
            f"test recall@20 {row['test_recall@20']:.4f} ndcg@20 {row['test_ndcg@20']:.4f}  "
            f"identical state {row['identical_state']} top-20 {row['identical_top20']}"
            + (
                f"  | 1 thread: identical state {row['one_thread']['identical_state']} "
                f"(max diff {row['one_thread']['max_state_diff']:.2e}) top-20 {row['one_thread']['identical_top20']}"
                if args.cross_threads
                else ""
            ),
            flush=True,
        )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of registry names")
    parser.add_argument("--dataset", default="ml-100k-agent4rec", choices=DATASETS)
    parser.add_argument("--config", type=Path, default=CONFIG, help="TOML of model configs")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the fits")
    parser.add_argument("--repeat", type=int, default=2, help="fits per model (compared for determinism)")
    parser.add_argument("--cross-threads", action="store_true", help="also compare with a one-thread fit")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here too")
    args = parser.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    run(args)


if __name__ == "__main__":
    main()
