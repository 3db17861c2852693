"""The policies `simrec validate` scores: registry models, degraded variants of known lower quality, and the
simulator's own optimum; and which fit-source family each belongs to (for the leave-one-source-out scores).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from experiments.build import UserModelFactory, train_recommender
from recommenders.degraded import NoisyRanking, PopularityBand, Rescored, TopNSampling
from simenv.llm import LLM
from simenv.protocols import Recommender, UserModel

SIMULATOR_FAMILY = "simulator"


@dataclass(frozen=True)
class Variant:
    """A policy built from a registry model (optionally with a smaller budget), optionally wrapped."""

    base: str
    settings: dict[str, Any] = field(default_factory=dict)
    wrap: str | None = None  # noise | sample | band | simulator
    value: float = 0.0


VARIANTS: dict[str, Variant] = {
    "mf-undertrained": Variant("mf", {"epochs": 2, "eval_every": 1000}),
    "lightgcn-undertrained": Variant("lightgcn", {"epochs": 3, "eval_every": 1000}),
    "mf-noise1": Variant("mf", wrap="noise", value=1.0),
    "mf-noise3": Variant("mf", wrap="noise", value=3.0),
    "lightgcn-top200": Variant("lightgcn", wrap="sample", value=200),
    "pop-band100": Variant("pop", wrap="band", value=100),
    # every unseen item ranked by the watch probability of response-model ensemble member 1 (same data, other
    # seed and user folds), scored by member 0: the optimum a policy trained against the simulator would find
    "sim-greedy": Variant("pop", wrap="simulator", value=1),
}


def family_of(name: str) -> str:
    """The recommender family a policy's impressions come from (`mf` for `mf-noise1`; `simulator` for
    sim-greedy); a policy outside the registry and the variants is its own family."""
    variant = VARIANTS.get(name)
    if variant is None:
        return name
    return SIMULATOR_FAMILY if variant.wrap == "simulator" else variant.base


def build_policy(users: UserModelFactory, name: str) -> Recommender:
    """A registry recommender by name, a recommender spec, or a variant from `VARIANTS` (trained through the
    cache)."""
    config, world = users.config, users.world
    variant = VARIANTS.get(name)
    if variant is None:
        return train_recommender(config, world, name)[0]
    base, _ = train_recommender(config, world, variant.base, overrides=variant.settings or None)
    seed = config.run.seed
    if variant.wrap is None:
        return base
    if variant.wrap == "noise":
        return NoisyRanking(base, name, noise=variant.value, seed=seed)
    if variant.wrap == "sample":
        return TopNSampling(base, name, pool=int(variant.value), seed=seed)
    if variant.wrap == "band":
        return PopularityBand(base, name, skip=int(variant.value), seed=seed)
    if variant.wrap == "simulator":
        response = users.response_model(users.spec("fitted").decision.response or "full", member=int(variant.value))
        personas = world.personas
        return Rescored(base, name, lambda user: response.plan(personas[user]).watch_probability)
    raise ValueError(f"variant {name!r}: unknown wrap {variant.wrap!r}")


def policy_parts(
    users: UserModelFactory, llm: LLM | None, name: str, sources: tuple[str, ...] | None = None
) -> tuple[Recommender, UserModel]:
    """A policy (from the model cache) and the user model (its response model fitted on `sources`' impressions;
    default the config's): what an engine worker runs."""
    return build_policy(users, name), users(llm, sources=sources)
