"""Where trained models and caches live, and each recommender's settings from the recommenders config file.

Shared by the composition root (experiments.build) and the recommender specs (experiments.recommender_specs),
so neither has to import the other for them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from experiments.config import CONFIG_DIR, ExperimentConfig, read_toml
from recommenders import registry
from recommenders.base import build_config
from simenv.data.cache import cache_root as data_cache_root


def cache_root(config: ExperimentConfig) -> Path:
    """Parsed data, trained models, embeddings and LLM responses live here (never in git): `[data] cache_dir`,
    else $SIMREC_CACHE_DIR, else ~/.cache/simrec (`simenv.data.cache.cache_root`)."""
    return data_cache_root(config.data.cache_dir)


def recommender_settings(config: ExperimentConfig, name: str) -> dict[str, Any]:
    """Hyperparameters for `name` from recommenders.toml: [models.<name>] then [datasets.<dataset>.<name>]; for a
    registry model, every field of its config with the defaults filled in (`resolved_settings`)."""
    path = Path(config.recommenders.config_file or "recommenders.toml")
    if not path.is_file() and (CONFIG_DIR / path).is_file():  # bare names refer to experiments/configs/
        path = CONFIG_DIR / path
    data = read_toml(path)
    settings = dict(data.get("models", {}).get(name, {}))
    settings.update(data.get("datasets", {}).get(config.data.dataset, {}).get(name, {}))
    return resolved_settings(name, settings)


def resolved_settings(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """A registry model's settings with every config field present (defaults filled in), so the model cache key,
    which hashes the settings, changes when a default or a new field (e.g. the stopping rule) changes and a stale
    model is never reused. Other names, and settings the config rejects (make() reports them), pass unchanged."""
    cls = registry.REGISTRY.get(name)
    if cls is None or getattr(cls, "base_dir", None) is not None:
        return settings
    try:
        return dataclasses.asdict(build_config(cls.Config, settings, {}))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return settings
