"""Every recommender a run names, resolved, trained or loaded in one place.

`train_recommender(config, world, name)` takes a registry name, a spec (`package.module:Class`, `file:PATH`,
`http(s)://...`) or the label of one of the run's specs (`NAME=spec` in `[recommenders] names`), and owns the
rest: the settings (`[models.<name>]` of the recommenders file, every default filled in), the model cache key,
loading a cached model, training and saving a new one. Parsing and checking specs is
`experiments.recommender_specs`; nothing there calls back here.
"""

from __future__ import annotations

import time
from typing import Any

from experiments.config import ExperimentConfig
from experiments.model_cache import model_dir, recommender_settings
from experiments.recommender_specs import build_file, build_http, find_spec, fit_external, train_plugin
from experiments.world import World
from recommenders import registry
from simenv.data.cache import mark_used
from simenv.llm import LLM
from simenv.protocols import Recommender


def train_recommender(
    config: ExperimentConfig,
    world: World,
    name: str,
    llm: LLM | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[Recommender, float]:
    """Fit `name` on the split's train part, or load it from the model cache. Returns (model, train seconds).

    `llm-rank` wraps its (cached, trained) base model — `base = "<name>"` in its settings, default mf — and
    reranks with `llm`, so its calls land in the policy's call log. `overrides` replace settings (e.g. a
    smaller training budget for an under-trained checkpoint); they are part of the cache key. Any other
    `name` is a spec (`package.module:Class`, `file:PATH`, `http(s)://...`, or the label of one of the run's
    specs), resolved by `experiments.recommender_specs`.
    """
    if name not in registry.REGISTRY:
        return _train_spec(config, world, name, llm, dict(overrides or {}))
    settings = recommender_settings(config, name) | dict(overrides or {})
    if name == "llm-rank":
        if llm is None:
            raise ValueError("llm-rank needs an LLM ([llm] backend)")
        base_name = settings.pop("base", "mf")
        base, seconds = train_recommender(config, world, base_name)
        ranker = registry.make(name, base=base, llm=llm, catalog=world.dataset, fit_base=False, **settings)
        ranker.fit(world.split.train, world.dataset.n_users, world.dataset.n_items)  # keeps the trained base
        return ranker, seconds
    path, _ = model_dir(config, world, name, name=name, settings=settings)
    if (path / "config.json").is_file():
        model = registry.load(path)
        mark_used(path)
        return model, 0.0
    start = time.perf_counter()
    model = registry.make(name, **settings)
    model.fit(world.split.train, world.dataset.n_users, world.dataset.n_items, valid=world.split.valid)
    seconds = time.perf_counter() - start
    model.save(path)
    return model, seconds


def _train_spec(
    config: ExperimentConfig, world: World, name: str, llm: LLM | None, overrides: dict[str, Any]
) -> tuple[Recommender, float]:
    """A spec or a label: a label naming a registry model trains that model; a class goes through the model
    cache (keyed by its own source); a ranking file or a service fits only its fallback."""
    spec = find_spec(config, name)
    if spec.kind == "registry":
        return train_recommender(config, world, spec.target, llm=llm, overrides=overrides or None)
    if spec.kind == "import":
        return train_plugin(config, world, spec, llm, overrides)
    if spec.kind == "file":
        return fit_external(build_file(config, world, spec, overrides), world)
    return fit_external(build_http(world, config, spec, overrides), world)
