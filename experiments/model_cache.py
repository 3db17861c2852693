"""Where trained models and caches live, and each recommender's settings from the recommenders config file.

Shared by the composition root (experiments.build) and the recommender specs (experiments.recommender_specs),
so neither has to import the other for them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

from experiments.config import CONFIG_DIR, ExperimentConfig, read_toml
from experiments.world import World
from recommenders import registry
from recommenders.base import build_config
from simenv.data.cache import cache_root as data_cache_root
from simenv.set_aside import set_aside


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


def model_dir(config: ExperimentConfig, world: World, label: str, **identity: Any) -> tuple[Path, dict[str, Any]]:
    """Where a trained recommender is cached, and the data its key hashes: `identity` (what the model is: name or
    spec, settings, ...) plus the data it is trained on and the run's seed. One key for registry models and plugins."""
    key_data = {
        **identity,
        "dataset": world.dataset.name,
        "n_interactions": len(world.split.train),
        "split_users": config.data.split_users,
        "seed": config.run.seed,
    }
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_root(config) / "models" / f"{world.dataset.name}-{label}-{key}", key_data


def check_caches(config: ExperimentConfig) -> list[Path]:
    """Check every cache a command may load, before it loads any (`simenv.set_aside` says why they are trusted):
    a fitted response model whose pickle is empty or cut short (`response/*.pkl`: a pickle ends with its STOP
    byte), a saved recommender whose `state.pt` is not a whole torch archive (its zip directory) or whose
    `config.json` is not JSON (`models/*/`), and an embeddings or LLM response `cache.db` that is not a readable
    sqlite database are set aside (renamed `*.corrupt-<timestamp>`, one warning line each) and rebuilt when next
    needed. Structural checks, cheap enough for every start: they catch truncation and garbage, not every flipped
    byte (a pickle or tensor file damaged inside fails when loaded, naming the file). Returns what was set aside."""
    root = cache_root(config)
    moved: list[Path] = []
    response = root / "response"
    for path in sorted(response.glob("*.pkl")) if response.is_dir() else []:
        why = _pickle_damage(path)
        if why:
            moved.append(set_aside(path, why))
    models = root / "models"
    for entry in (
        sorted(p for p in models.iterdir() if p.is_dir() and ".corrupt-" not in p.name) if models.is_dir() else []
    ):
        why = _model_damage(entry)
        if why:
            moved.append(set_aside(entry, why))
    for name in ("embeddings", "llm"):
        db = root / name / "cache.db"
        why = _sqlite_damage(db) if db.is_file() else None
        if why:
            moved.append(set_aside(db, why))
            for extra in ("cache.db-wal", "cache.db-shm"):  # the write-ahead log of the damaged file goes with it
                if (db.parent / extra).exists():
                    set_aside(db.parent / extra, "belongs to a damaged cache.db")
    return moved


def _pickle_damage(path: Path) -> str | None:
    size = path.stat().st_size
    if size < 2:
        return "empty pickle"
    with path.open("rb") as fh:
        head = fh.read(1)
        fh.seek(size - 1)
        tail = fh.read(1)
    if head != b"\x80" or tail != b".":
        return "not a whole pickle (no protocol header or STOP byte: cut short?)"
    return None


def _model_damage(entry: Path) -> str | None:
    try:
        json.loads((entry / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None  # not a saved model (or one still being written): nothing is loaded from it
    except (ValueError, UnicodeDecodeError) as exc:
        return f"config.json is not JSON ({exc})"
    state = entry / "state.pt"
    if not state.is_file():
        return "state.pt is missing"
    try:
        with zipfile.ZipFile(state) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        return f"state.pt is not a whole torch archive ({exc})"
    return None


def _sqlite_damage(db: Path) -> str | None:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        return f"sqlite: {exc}"
    return None
