"""Fidelity of the shipped user kinds, calibrated and under the protocol as peers run it, and the rating model.

python -m benchmarks.bench_fidelity                                  # fitted user, ML-100K seeds 0 and 1
python -m benchmarks.bench_fidelity --datasets ml-100k ml-1m --seeds 0
python -m benchmarks.bench_fidelity --kinds fitted llm-only --llm llama-cpp --personas 20   # SmolLM2 (slow)

Per dataset, seed, kind and ratio 1:m: accuracy and F1 of the user's own (calibrated) decisions, the same under
the protocol as peers run it (told how many of a page's items it watched, it picks that many: `protocol`), the
level-free AUC of its watch probability; then the rating model's RMSE (of the expected rating; of the sampled
stars) and KL of the star histogram on test pairs. Each row is `experiments.fidelity.score_kind`, the code
`simrec fidelity` runs, on the same personas and sampled items.
"""

from __future__ import annotations

import argparse
import time

from experiments.build import UserModelFactory, build_llm, build_world
from experiments.config import ExperimentConfig
from experiments.fidelity import AGENT4REC, score_kind


def config_for(dataset: str, seed: int, personas: int, llm: str) -> ExperimentConfig:
    base = ExperimentConfig()
    return base.model_copy(
        update={
            "data": base.data.model_copy(update={"dataset": dataset, "n_personas": personas}),
            "run": base.run.model_copy(update={"seed": seed}),
            "llm": base.llm.model_copy(update={"backend": llm}),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["ml-100k"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--kinds", nargs="+", default=["fitted"])
    ap.add_argument("--personas", type=int, default=200)
    ap.add_argument("--llm", default="mock", help="LLM backend for kinds that write text (mock, llama-cpp, ...)")
    args = ap.parse_args()
    published = "; ".join(f"1:{m} acc {a:.3f} F1 {f:.3f}" for m, (a, f) in AGENT4REC.items())
    print(f"Agent4Rec (gpt-3.5, ML-1M): {published}")
    header = "ratio  acc    F1     | protocol acc  F1    | AUC"
    for dataset in args.datasets:
        for seed in args.seeds:
            config = config_for(dataset, seed, args.personas, args.llm)
            world = build_world(config)
            needs_llm = any(k not in ("fitted", "handset") for k in args.kinds)
            users = UserModelFactory(config, world, build_llm(config) if needs_llm else None)
            for kind in args.kinds:
                start = time.perf_counter()
                rows = score_kind(config, users, kind)
                print(f"\n{dataset} seed {seed} {kind} ({len(world.personas)} personas) {header}")
                for r in rows:
                    print(
                        f"  1:{r['ratio']:<3} {r['accuracy']:.3f}  {r['f1']:.3f}  | "
                        f"{r['protocol_accuracy']:.3f}         {r['protocol_f1']:.3f} | {r['auc']:.3f}"
                    )
                r = rows[0]
                print(
                    f"  rating: RMSE {r['rmse']:.3f} (sampled stars {r['rmse_stars']:.3f}), KL {r['kl']:.4f}, "
                    f"{r['n_ratings']} test ratings; {time.perf_counter() - start:.0f} s"
                )


if __name__ == "__main__":
    main()
