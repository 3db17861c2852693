"""`simrec check-recommender SPEC`: train a recommender as a run would and run the conformance checker on it."""

from __future__ import annotations

from experiments.build import build_llm, build_world, train_recommender
from experiments.config import ExperimentConfig
from experiments.recommender_specs import accepted_kwargs, check_spec, import_class, parse_spec
from recommenders.conformance import ConformanceReport, check_recommender


def run_check(config: ExperimentConfig, text: str) -> ConformanceReport:
    """`simrec check-recommender SPEC`: check the spec, train it on the config's data as a run would, and run
    the conformance checker on the first three personas with the run's page size and seed."""
    spec = parse_spec(text)
    world = build_world(config)
    wants_llm = spec.kind == "import" and "llm" in accepted_kwargs(import_class(spec), {"llm": True})
    llm = build_llm(config) if spec.target == "llm-rank" or wants_llm else None
    check_spec(config, world, spec)
    rec, _ = train_recommender(config, world, text, llm=llm)
    load_kwargs = accepted_kwargs(type(rec).load, {"llm": llm, "catalog": world.dataset, "dataset": world.dataset})
    try:
        return check_recommender(
            rec,
            world.dataset,
            train=world.split.train,
            users=sorted(world.personas)[:3],
            k=config.simulation.page_size,
            seed=config.run.seed,
            load_kwargs=load_kwargs,
            raise_on_failure=False,
        )
    finally:
        close = getattr(rec, "close", None)
        if callable(close):
            close()
