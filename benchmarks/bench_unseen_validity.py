"""Validity on recommenders the simulator has never seen (issue 27's headline test), through bring-your-own.

    PYTHONPATH=. .venv/bin/python -m benchmarks.bench_unseen_validity [--dataset ml-100k] [--seed 0]
        [--n-personas N] [--run-name NAME] [--score-only]

Runs `simrec validate` (in process, the same code as the CLI) over validate's own 14 policies plus the 12
recommenders of `benchmarks.unseen_recommenders`, passed as `label=module:Class` specs exactly as a user brings
them. None of the 12 is a fit source of the response model, so their figures are out of sample by construction;
validate's fit-source policies are taken from its leave-one-source-out block. Then, on three sets of policies
(the 12 new ones; the 12 + Random, Pop, MF, MultVAE, LightGCN, SASRec; all 26), it prints, out of sample:
- Spearman of the simulated P_view with the real held-out hit of the same shown pairs (95% persona-bootstrap
  interval), the share of significant real pairs the simulator orders the same way;
- the reference: Spearman of offline recall@20 with the same real hit, and sim minus recall (issue 27 goal:
  >= +0.02 on the 18);
- the largest quality-adjusted bias within the set (goal: within +-5%), P_like Spearman, the A/B lift error.
When the issue was filed (before the rank features): 12 new +0.90 / +0.96 (ML-100K / ML-1M), 53/55 and 59/62
pairs, recall +0.99 / +0.95; 18: +0.84 / +0.96, 115/125 and 138/145, recall +0.98 / +0.94.

The run directory stays under `runs/` (`--score-only` re-scores it; a crashed run resumes where it stopped).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from benchmarks.unseen_recommenders import UNSEEN
from experiments.build import build_world
from experiments.config import ExperimentConfig, ValiditySection, load_config
from experiments.validate import VALIDITY_FILE, run_validate
from experiments.validity import label_shown, score_validity

STANDARD = ("random", "pop", "mf", "multvae", "lightgcn", "sasrec")
MODULE = "benchmarks.unseen_recommenders"


def make_config(dataset: str, seed: int, run_name: str, n_personas: int | None) -> ExperimentConfig:
    policies = tuple(ValiditySection().policies) + tuple(UNSEEN)
    return load_config(
        None,
        {
            "run": {"name": run_name, "seed": seed},
            "data": {"dataset": dataset},
            "recommenders": {"names": [f"{label}={MODULE}:{cls}" for label, cls in UNSEEN.items()]},
            "validity": {"policies": list(policies), "n_personas": n_personas},
        },
    )


def out_of_sample_events(run_dir: Path, config: ExperimentConfig) -> pd.DataFrame:
    """Every policy's labelled events, a fit-source policy's from its leave-one-source-out user."""
    world = build_world(config, n_personas=config.validity.n_personas or 10**9)
    parts = []
    for name in config.validity.policies:
        left_out = run_dir / "leave_one_source_out" / name / "events"
        path = left_out if left_out.is_dir() else run_dir / "policies" / name / "events"
        events = pd.read_parquet(path, columns=["policy", "user", "item", "watched", "rating"])
        parts.append(label_shown(events, world.split.valid, world.split.test))
    return pd.concat(parts, ignore_index=True)


def score_set(labelled: pd.DataFrame, names: list[str], recall: dict[str, float], n_boot: int, seed: int) -> dict:
    """validate's own scores (`score_validity`) over the policies `names`, and the figures this benchmark prints."""
    chosen = labelled[labelled["policy"].isin(names)]
    scored = score_validity(chosen, names, recall, n_boot=n_boot, seed=seed)  # pop_cf: any non-empty subset
    p_view = scored["agreement"]["p_view_vs_real_hit"]["all"]
    recall_rho = scored["offline_recall_vs_real_hit"]["all"]
    biases = scored["bias"]["p_view_vs_real_hit"]
    worst = max(biases, key=lambda p: abs(biases[p]["bias"]))
    return {
        "n": len(biases),
        "p_view": p_view,
        "p_like_spearman": scored["agreement"]["p_like_vs_real_like"]["all"]["spearman"],
        "recall_spearman": recall_rho,
        "sim_minus_recall": p_view["spearman"] - recall_rho,
        "largest_bias": {"policy": worst, **biases[worst]},
        "n_biases_within_5pct": sum(abs(b["bias"]) <= 0.05 for b in biases.values()),
        "lift_error": scored["lift_agreement"]["p_view_vs_real_hit"]["median_relative_error"],
        "per_policy": {p: {**row, "bias": biases[p]["bias"]} for p, row in scored["policies"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-personas", type=int, default=None, help="default: every eligible persona")
    parser.add_argument("--run-name", default=None)
    parser.add_argument("--score-only", action="store_true", help="re-score an existing run directory")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    run_name = args.run_name or f"unseen-{args.dataset}-s{args.seed}"
    config = make_config(args.dataset, args.seed, run_name, args.n_personas)
    run_dir = config.run.out_dir / run_name
    t0 = time.perf_counter()
    if not args.score_only:
        run_validate(config, resume=run_dir.is_dir())
    validate_s = time.perf_counter() - t0
    result = json.loads((run_dir / VALIDITY_FILE).read_text())
    recall = {p: row["recall_at_20"] for p, row in result["policies"].items()}
    labelled = out_of_sample_events(run_dir, config)
    new = list(UNSEEN)
    sets = {"12 new": new, "12 new + 6 standard": new + list(STANDARD), "all 26": list(config.validity.policies)}
    scored = {k: score_set(labelled, names, recall, args.bootstrap, args.seed) for k, names in sets.items()}
    head = f"{args.dataset} seed {args.seed}: {result['n_personas']} personas, out of sample"
    print(f"\n{head}; validate {validate_s:.0f} s")
    print(f"{'policies':<22} {'sim P_view rho [95% CI]':<26} {'sig. pairs':>11} {'recall rho':>10} "
          f"{'sim-recall':>10} {'P_like rho':>10} {'lift err':>8}  largest bias [95% CI]")  # fmt: skip
    for k, s in scored.items():
        v, b = s["p_view"], s["largest_bias"]
        agreed = round(v["significant_pairs"] * v["n_significant_pairs"])
        print(
            f"{k:<22} {v['spearman']:+.3f} [{v['ci'][0]:+.2f}, {v['ci'][1]:+.2f}]{'':<7} "
            f"{agreed:>5}/{v['n_significant_pairs']:<5} {s['recall_spearman']:>+10.3f} {s['sim_minus_recall']:>+10.3f} "
            f"{s['p_like_spearman']:>+10.3f} {s['lift_error']:>8.2f}  {b['policy']} {b['bias']:+.1%} "
            f"[{b['ci'][0]:+.0%}, {b['ci'][1]:+.0%}]; {s['n_biases_within_5pct']}/{s['n']} within +-5%"
        )
        if v["inverted_pairs"]:
            print(f"{'':<22} inverted: {', '.join(' vs '.join(p) for p in v['inverted_pairs'])}")
    print("\nper policy (the 26): sim P_view, real hit, recall@20, bias in the all-26 set")
    for p, row in sorted(scored["all 26"]["per_policy"].items(), key=lambda kv: -kv[1]["real_hit"]):
        print(f"  {p:<22} {row['sim_p_view']:.4f} {row['real_hit']:.4f} {row['recall_at_20']:.4f} {row['bias']:+.1%}")
    out = run_dir / "unseen_validity.json"
    out.write_text(json.dumps(scored, indent=2, default=float))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
