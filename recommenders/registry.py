"""Name -> class registry, so configs and the CLI can name recommenders (like SB3's policy aliases)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recommenders.base import BaseRecommender, read_meta
from recommenders.lightgcn import LightGCNRecommender
from recommenders.llm_ranker import LLMRanker
from recommenders.mf import MFRecommender
from recommenders.multvae import MultVAERecommender
from recommenders.popularity import PopHeadRecommender, PopRecommender
from recommenders.random_policy import RandomRecommender
from recommenders.sasrec import SASRecRecommender

REGISTRY: dict[str, type[BaseRecommender]] = {
    cls.name: cls
    for cls in (
        RandomRecommender,
        PopRecommender,
        PopHeadRecommender,
        MFRecommender,
        MultVAERecommender,
        LightGCNRecommender,
        SASRecRecommender,
        LLMRanker,
    )
}


def get(name: str) -> type[BaseRecommender]:
    """The class registered under `name`; a clear error lists the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown recommender {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def make(name: str, **config: Any) -> BaseRecommender:
    """Build a recommender by name; keyword arguments are its config fields (and, for `llm-rank`,
    `base=` (a `Recommender` or a registered name), `llm=`, `catalog=`, `base_config=`)."""
    cls = get(name)
    base_config = config.pop("base_config", None)
    if getattr(cls, "base_dir", None) is not None and isinstance(config.get("base"), str):
        config["base"] = make(config["base"], **dict(base_config or {}))
    elif base_config:
        raise TypeError(f"{name}: base_config is only used when base is given by name")
    return cls(**config)


def load(path: Path | str, **kwargs: Any) -> BaseRecommender:
    """Load any saved recommender, dispatching on the name in its config.json (`llm-rank` needs
    `llm=` and `catalog=`; its base model is loaded from its `base` directory)."""
    cls = get(read_meta(Path(path))["name"])
    base_dir = getattr(cls, "base_dir", None)
    if base_dir is not None:
        kwargs["base"] = load(Path(path) / base_dir)
    return cls.load(path, **kwargs)
