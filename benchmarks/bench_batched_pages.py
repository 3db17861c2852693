"""Sessions served with one `recommend_batch` call per page step against one `recommend` call per session.

For each recommender (a registry model, or one of validate's variants such as mf-noise1), the same sessions (every
eligible persona, the validated `fitted` user, validate's step, `STEP_BATCH` sessions) are run twice in one process:
as the runner serves them now (`recommend_batch`: one batched scoring pass for the step) and one page at a time (the
same model with `recommend_batch` hidden). Printed per recommender: seconds of each, their ratio, and whether the
two runs' events and pages are identical (they must be: batching may only change the speed).

    .venv/bin/python -m benchmarks.bench_batched_pages                        # ML-100K
    .venv/bin/python -m benchmarks.bench_batched_pages --dataset ml-1m --models multvae sasrec
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep instead of spinning
from pathlib import Path
from typing import Any

from experiments.build import UserModelFactory, build_world
from experiments.config import load_config
from experiments.validate import STEP_BATCH
from experiments.validity_policies import build_policy
from simenv.eventlog import read_table
from simenv.runner import run_sessions

MODELS = ("mf", "lightgcn", "multvae", "sasrec", "mf-noise1")  # registry models or validate's variants


class OneByOne:
    """A recommender with its `recommend_batch` hidden: the runner then asks it for one page per session."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.name = model.name

    def recommend(self, *args: Any, **kwargs: Any) -> Any:
        return self.model.recommend(*args, **kwargs)

    def observe(self, *args: Any) -> None:
        self.model.observe(*args)


def run(policy: Any, user_model: Any, world: Any, config: Any, out: Path) -> float:
    start = time.perf_counter()
    run_sessions(
        policy,
        user_model,
        world.personas,
        world.dataset,
        world.split.train,
        out,
        n_pages=config.simulation.pages,
        page_size=config.simulation.page_size,
        seed=config.run.seed,
        policy_name=policy.name,
        batch_size=STEP_BATCH,
        config={"benchmark": "batched_pages"},
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    config = load_config(None, {"data": {"dataset": args.dataset}, "users": {"embedder": "hashing"}})
    world = build_world(config, n_personas=10**9)
    factory = UserModelFactory(config, world, None)
    user_model = factory(None)
    user_model.decider.response.prepare(world.personas.values())  # plans first: the runs time the sessions only
    print(f"{args.dataset}: {len(world.personas)} personas, {config.simulation.pages} pages of "
          f"{config.simulation.page_size}, {STEP_BATCH} sessions a step")  # fmt: skip
    print(f"{'model':<10} {'one by one s':>12} {'batched s':>10} {'ratio':>6}  identical logs")
    # mf-noise1 is validate's degraded MF (recommenders.degraded.NoisyRanking): batched through its base's scores
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = build_policy(factory, name)
            single = run(OneByOne(model), user_model, world, config, Path(tmp) / f"{name}-single")
            model.end_session()  # the runner keeps a user's session history across its episodes: start clean
            batched = run(model, user_model, world, config, Path(tmp) / f"{name}-batched")
            same = all(
                read_table(Path(tmp) / f"{name}-single", t)
                .drop(columns="run")
                .equals(read_table(Path(tmp) / f"{name}-batched", t).drop(columns="run"))
                for t in ("events", "pages")
            )
            print(f"{name:<10} {single:>12.1f} {batched:>10.1f} {single / batched:>6.2f}  {same}", flush=True)


if __name__ == "__main__":
    main()
