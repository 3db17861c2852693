"""Data layer speed and persona trait group sizes.

- load: cold = parse the package files (no cache), warm = read the parquet cache; best of `--repeat` runs.
- personas: build_personas for every ML-1M user with all ratings as train (6,040 personas).
- trait group sizes (groups 1/2/3 of activity, conformity, diversity) for ML-1M (all users; Agent4Rec's
  1,000-user split with seed 0) and ML-100K (all users; Agent4Rec split of all eligible users).
  Agent4Rec reported 539/352/109 activity, 315/303/382 diversity, 257/566/177 conformity for its agents.

    .venv/bin/python -m benchmarks.bench_data [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from agents.persona import build_personas, compute_traits, trait_group_sizes
from simenv.data import Dataset, Split, agent4rec_split, load_dataset

T = TypeVar("T")


def best_of(repeat: int, fn: Callable[[], T]) -> tuple[float, T]:
    """(fastest wall time in seconds, last result) over `repeat` calls."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result  # type: ignore[return-value]


def all_ratings_split(dataset: Dataset) -> Split:
    """Every rating in train, every user simulated: traits over the whole dataset."""
    empty = dataset.interactions.iloc[:0]
    return Split(dataset, dataset.interactions, empty, empty, np.arange(dataset.n_users, dtype=np.int64), "all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    print(f"{'load':<10} {'cold parse s':>13} {'first load + cache write s':>27} {'warm (cache) s':>15}")
    datasets: dict[str, Dataset] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("ml-1m", "ml-100k"):
            cold, _ = best_of(args.repeat, lambda n=name: load_dataset(n, use_cache=False))
            first, _ = best_of(1, lambda n=name: load_dataset(n, cache_dir=Path(tmp)))
            warm, datasets[name] = best_of(args.repeat, lambda n=name: load_dataset(n, cache_dir=Path(tmp)))
            print(f"{name:<10} {cold:>13.2f} {first:>27.2f} {warm:>15.3f}")

    ml1m = datasets["ml-1m"]
    full = all_ratings_split(ml1m)
    ml1m.genre_matrix  # noqa: B018  (built once per dataset; not part of the persona timing)
    seconds, personas = best_of(args.repeat, lambda: build_personas(full))
    print(f"\nbuild_personas, all {len(personas):,} ML-1M users: {seconds:.2f} s (best of {args.repeat})")

    rows = [
        ("ml-1m", "all users, all ratings", full),
        ("ml-1m", "agent4rec n=1000 seed=0 (train)", agent4rec_split(ml1m, n_users=1000, seed=0)),
        ("ml-100k", "all users, all ratings", all_ratings_split(datasets["ml-100k"])),
        ("ml-100k", "agent4rec all eligible (train)", agent4rec_split(datasets["ml-100k"], n_users=None, seed=0)),
    ]
    print(f"\n{'dataset':<8} {'population':<32} {'n':>5}  {'activity':<16} {'conformity':<16} {'diversity':<16}")
    for name, label, split in rows:
        sizes = trait_group_sizes(build_personas(split))
        cells = ["/".join(str(v) for v in sizes[t]) for t in ("activity", "conformity", "diversity")]
        print(f"{name:<8} {label:<32} {len(split.users):>5}  {cells[0]:<16} {cells[1]:<16} {cells[2]:<16}")
    print(f"{'':<8} {'Agent4Rec (paper)':<32} {1000:>5}  {'539/352/109':<16} {'257/566/177':<16} {'315/303/382':<16}")

    print("\ncut points (low, high) per population:")
    for name, label, split in rows:
        cuts = compute_traits(split).cuts
        text = ", ".join(f"{t} {lo:.3g}/{hi:.3g}" for t, (lo, hi) in cuts.items())
        print(f"  {name} {label}: {text}")


if __name__ == "__main__":
    main()
