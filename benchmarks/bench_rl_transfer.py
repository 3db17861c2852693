"""Does the candidate-scoring policy transfer from the simulator to real held-out data? (issue 24 §6)

    .venv/bin/python -m benchmarks.bench_rl_transfer [--runs ml-100k:0:mf ml-100k:1:mf ml-1m:0:mf] [--out runs/bench24]
    .venv/bin/python -m benchmarks.bench_rl_transfer --table-only --out runs/bench24   # re-print from the JSONs
    .venv/bin/python -m benchmarks.bench_rl_transfer --folds 2 --runs ml-100k:0:mf     # cross-fitted: every persona

Each run is `simrec train-rl` with the defaults (PPO, the item-wise ranking policy, trained against response
members 0-2 for 100,000 steps or `--budget` seconds; `--action weights` for the weights action) on
`dataset:seed:base`, held-out personas (200 on ML-100K, 300 on ML-1M, or `--eval-personas N`), then
`simrec evaluate-rl` (scored in-simulator with response member 3, in the persona user, and on the real TEST
ratings of what was shown). Printed per run: learned − base real hit with its persona-bootstrap 95% interval,
sim-greedy − base, the share of the greedy gain reached, learned − base real like, the in-sim / real lift ratio
(watches per session vs real hit, relative to the base), learned / base likes per session in the persona user,
and the training wall time.

`--folds K` cross-fits instead: K policies per run, fold k holding out block k of ceil(N / K) personas
(`[rl] eval_fold`), so all N personas are scored by a policy never trained on them and the row pools the K
evaluations (`experiments.evaluate_rl_folds.pool_folds`): intervals about sqrt(N / 200) times narrower on ML-100K.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.build import build_world
from experiments.config import load_config
from experiments.evaluate_rl import EVALUATE_FILE
from experiments.evaluate_rl_folds import pool_folds
from experiments.train_rl import run_train_rl

DEFAULT_RUNS = ("ml-100k:0:mf", "ml-100k:1:mf", "ml-1m:0:mf", "ml-100k:0:lightgcn")


def config_of(
    spec: str,
    out: Path,
    steps: int,
    budget: float,
    fold: int = 0,
    eval_personas: int | None = None,
    rank_sources: list[str] | None = None,
    action: str | None = None,
):
    """The train-rl config of one run; `rank_sources` / `action` None keep the defaults."""
    dataset, seed, base = spec.split(":")
    extra: dict = {} if rank_sources is None else {"rank_sources": rank_sources}
    if action is not None:
        extra["action"] = action
    return load_config(
        None,
        {
            "data": {"dataset": dataset},
            "run": {"seed": int(seed), "out_dir": str(out), "name": name_of(spec, fold if eval_personas else None)},
            "rl": {
                "base": base,
                "timesteps": steps,
                "time_budget": budget,
                "eval_personas": eval_personas or (300 if dataset == "ml-1m" else 200),
                "eval_fold": fold,
                **extra,
            },
        },
    )


def run_folds(
    spec: str,
    out: Path,
    steps: int,
    budget: float,
    folds: int,
    train: bool,
    rank_sources: list[str] | None,
    action: str | None = None,
) -> list[Path]:
    """Train and evaluate `folds` policies whose held-out blocks cover every persona; their run directories."""
    n_users = len(build_world(config_of(spec, out, steps, budget)).population)
    size = -(-n_users // folds)
    configs = [config_of(spec, out, steps, budget, fold, size, rank_sources, action) for fold in range(folds)]
    for config in configs if train else ():
        run_train_rl(config)
    return [out / config.run.name for config in configs]


def name_of(spec: str, fold: int | None = None) -> str:
    return spec.replace(":", "-") + ("" if fold is None else f"-fold{fold}")


def row(result: dict) -> str:
    c, base = result["comparisons"], result["base"]
    real = c["real"]
    hit, like = real["real_hit_difference_vs_base"], real["real_like_difference_vs_base"]
    greedy, share = real["greedy_real_hit_difference_vs_base"], real["share_of_greedy_real_hit_gain"]
    ratio = c["transfer"]["sim_over_real"]
    cells = [
        f"{result['dataset']} s{result['seed']} {base}"
        + (f" ({result['folds']} folds, {result['n_personas']} personas)" if "folds" in result else ""),
        f"{hit['difference']:+.4f} [{hit['ci'][0]:+.4f}, {hit['ci'][1]:+.4f}]",
        f"{greedy['difference']:+.4f}",
        "n/a" if share is None else f"{share:.2f}",
        f"{like['difference']:+.4f} [{like['ci'][0]:+.4f}, {like['ci'][1]:+.4f}]",
        f"{c['transfer']['sim_lift']:+.3f} / {c['transfer']['real_lift']:+.3f} = "
        + ("n/a" if ratio is None else f"{ratio:.2f}"),
        f"{c['train_sim'][f'likes_ratio_vs_{base}']:.3f}",
        f"{c['other_sim'][f'likes_ratio_vs_{base}']:.3f}",
        _train_time(result),
    ]
    return "| " + " | ".join(cells) + " |"


def _train_time(result: dict) -> str:
    seconds, steps = result["train_seconds"], result["timesteps"]
    if isinstance(seconds, list):  # pooled folds: the mean per policy
        return f"{sum(seconds) / len(seconds):.0f} s per fold ({steps[0]} steps)"
    return f"{seconds:.0f} s ({steps} steps)"


HEADER = (
    "| run | real hit RL − base [95% CI] | greedy − base | share of greedy gain | real like RL − base [95% CI] "
    "| in-sim lift / real lift | likes RL/base, held-out member | likes RL/base, persona user | train time |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), help="dataset:seed:base")
    parser.add_argument("--out", type=Path, default=Path("runs/bench24"))
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--budget", type=float, default=900.0)
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--folds", type=int, default=1, help="cross-fit: K policies whose held-out folds cover all")
    parser.add_argument("--rank-sources", nargs="*", help="[rl] rank_sources (none given: no rank columns)")
    parser.add_argument("--eval-personas", type=int, help="held-out personas of a single fold (default 200 / 300)")
    parser.add_argument("--action", choices=["weights", "ranking", "slate"], help="[rl] action (default: the config's)")
    args = parser.parse_args()
    results = []
    for spec in args.runs:
        if args.folds > 1:
            directories = run_folds(
                spec, args.out, args.steps, args.budget, args.folds, not args.table_only, args.rank_sources, args.action
            )
            if all((d / EVALUATE_FILE).is_file() for d in directories):
                results.append(pool_folds(directories))
            continue
        if not args.table_only:
            config = config_of(
                spec, args.out, args.steps, args.budget, 0, args.eval_personas, args.rank_sources, args.action
            )
            run_train_rl(config)
        path = args.out / name_of(spec, 0 if args.eval_personas else None) / EVALUATE_FILE
        if path.is_file():
            results.append(json.loads(path.read_text()))
    print(HEADER)
    for result in results:
        print(row(result))


if __name__ == "__main__":
    main()
