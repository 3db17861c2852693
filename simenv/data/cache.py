"""A parquet copy of each parsed dataset, so the second load of ML-1M takes milliseconds.

Entries live under `cache_dir`, else `$SIMREC_CACHE_DIR`, else `~/.cache/simrec`, in `datasets/<name>-<key>/`.
The key hashes the loader version and each source file's absolute path, size and mtime, so editing a file
or upgrading the parser makes a new entry. Entries are written to a temporary directory and renamed into
place, so a crash never leaves a half-written entry that a later load would trust.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from simenv.data.dataset import Dataset

log = logging.getLogger(__name__)

# Bump when parsing changes what a loader returns for the same files.
LOADER_VERSION = 1
_TABLES = ("items", "users", "interactions")


def cache_root(cache_dir: str | Path | None) -> Path:
    """The cache directory to use: the argument, else $SIMREC_CACHE_DIR, else ~/.cache/simrec."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("SIMREC_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "simrec"


def mark_used(path: Path) -> None:
    """Record that a cache entry (file or directory) was just used: its mtime is its last use, which
    `simrec cache --prune-days N` reads. Best effort: a read-only cache is still usable."""
    try:
        os.utime(path)
    except OSError as exc:
        log.debug("could not mark %s used: %s", path, exc)


def cache_key(kind: str, files: list[Path]) -> str:
    """Hash of the loader version, the source kind and each file's absolute path, size and mtime."""
    parts: list[object] = [LOADER_VERSION, kind]
    for path in sorted(files):
        stat = path.stat()
        parts.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def entry_dir(root: Path, name: str, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return root / "datasets" / f"{safe}-{key}"


def read_entry(entry: Path) -> Dataset | None:
    """The cached dataset in `entry`, or None when there is no complete entry (a broken one is removed)."""
    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        tables = {t: pd.read_parquet(entry / f"{t}.parquet") for t in _TABLES}
        raw = {k: pd.read_parquet(entry / f"{k}.parquet")["raw_id"] for k in ("item_raw_ids", "user_raw_ids")}
    except (OSError, ValueError, KeyError) as exc:
        log.warning("removing unreadable dataset cache %s: %s", entry, exc)
        shutil.rmtree(entry, ignore_errors=True)  # so the fresh parse can take its place
        return None
    items = tables["items"]
    items["genres"] = [tuple(g) for g in items["genres"]]
    return Dataset(
        name=meta["name"],
        items=items,
        users=tables["users"],
        interactions=tables["interactions"],
        item_raw_ids=raw["item_raw_ids"].to_numpy(dtype=object),
        user_raw_ids=raw["user_raw_ids"].to_numpy(dtype=object),
    )


def write_entry(entry: Path, dataset: Dataset) -> None:
    """Write `dataset` to `entry` atomically (temporary directory + rename). Failures are logged, not raised."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    except OSError as exc:
        log.warning("cannot create dataset cache under %s: %s", entry.parent, exc)
        return
    try:
        items = dataset.items.copy()
        items["genres"] = [list(g) for g in items["genres"]]
        items.to_parquet(tmp / "items.parquet", index=False)
        dataset.users.to_parquet(tmp / "users.parquet", index=False)
        dataset.interactions.to_parquet(tmp / "interactions.parquet", index=False)
        pd.DataFrame({"raw_id": dataset.item_raw_ids.astype(str)}).to_parquet(tmp / "item_raw_ids.parquet")
        pd.DataFrame({"raw_id": np.asarray(dataset.user_raw_ids).astype(str)}).to_parquet(tmp / "user_raw_ids.parquet")
        (tmp / "meta.json").write_text(
            json.dumps({"name": dataset.name, "loader_version": LOADER_VERSION}), encoding="utf-8"
        )
        os.rename(tmp, entry)
    except OSError as exc:
        # Another process may have written the same entry first (rename onto a non-empty dir fails): fine.
        if not (entry / "meta.json").is_file():
            log.warning("cannot write dataset cache %s: %s", entry, exc)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
