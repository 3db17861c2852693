"""`make bench`: every benchmark in turn, each printing its own figures (see each module's docstring)."""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = (
    ["benchmarks.bench_data"],
    ["benchmarks.bench_llm"],
    ["benchmarks.bench_embedded"],
    ["benchmarks.bench_prompt_injection"],
    ["benchmarks.bench_agents"],
    ["benchmarks.bench_fidelity", "--seeds", "0"],
    ["benchmarks.bench_env"],
    ["benchmarks.bench_experiments"],
    ["benchmarks.bench_unseen_validity"],  # validate with 12 recommenders it never saw (ML-100K seed 0)
    ["benchmarks.bench_batched_pages"],  # one recommend_batch per page step vs one recommend per session
    ["benchmarks.bench_recommenders"],
    ["benchmarks.bench_training"],
    ["benchmarks.bench_scale"],  # includes benchmarks.bench_ray when ray is installed
)


def main() -> int:
    failed = []
    for module in BENCHMARKS:
        print(f"\n=== python -m {' '.join(module)} ===", flush=True)
        if subprocess.call([sys.executable, "-m", *module]) != 0:
            failed.append(module[0])
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
