"""`simrec cache`: what the cache holds (entries, size, last use per kind) and pruning of entries unused for N days.

The cache (`[data] cache_dir`, else $SIMREC_CACHE_DIR, else ~/.cache/simrec) only grows on its own: a new dataset
file, recommender setting, response-model version or seed makes a new entry beside the old ones (an ML-1M response
model is ~340 MB, ~630 MB with every persona's plan). Every load marks its entry used (`simenv.data.cache.mark_used`:
the mtime), so "unused for N days" is counted from the last run that read it. Entry kinds, each a direct child of
its folder:
- datasets: parsed MovieLens copies (`data/datasets/` for the CLI, `datasets/` for library calls without a cache dir);
- models: trained recommenders (one folder each) and local GGUF re-encodings (`models/`);
- response: fitted response models with their plans (`response/*.pkl`);
- set aside: entries `check_caches` found damaged and renamed `*.corrupt-<time>`, kept for inspection.
The embeddings and LLM-response databases (`embeddings/`, `llm/`) are shown but never pruned: their rows are
keyed by text, and a run's own calls replay from them; delete the folder to drop one.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

ENTRY_FOLDERS = {"datasets": ("data/datasets", "datasets"), "models": ("models",), "response": ("response",)}
DATABASES = ("embeddings", "llm")
SET_ASIDE = "set aside"
DAY_S = 86_400.0


@dataclass(frozen=True)
class CacheEntry:
    """One prunable cache entry: its kind, path, size in bytes and last use (epoch seconds, the mtime)."""

    kind: str
    path: Path
    size: int
    last_used: float


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cache_entries(root: Path) -> Iterator[CacheEntry]:
    """Every prunable entry under `root`, kind by kind (damaged, set-aside entries as their own kind)."""
    for kind, folders in ENTRY_FOLDERS.items():
        for folder in folders:
            if not (root / folder).is_dir():
                continue
            for path in sorted((root / folder).iterdir()):
                entry_kind = SET_ASIDE if ".corrupt-" in path.name else kind
                yield CacheEntry(entry_kind, path, _size(path), path.stat().st_mtime)


def database_sizes(root: Path) -> dict[str, int]:
    """Bytes of each sqlite cache folder (embeddings, LLM responses) that exists."""
    return {name: _size(root / name) for name in DATABASES if (root / name).is_dir()}


def prune(root: Path, older_than_days: float, dry_run: bool = False, now: float | None = None) -> list[CacheEntry]:
    """Remove (or with `dry_run` only list) the entries not used for `older_than_days` days; returns them."""
    if older_than_days < 0:
        raise ValueError(f"--prune-days must be >= 0, got {older_than_days}")
    cutoff = (time.time() if now is None else now) - older_than_days * DAY_S
    stale = [e for e in cache_entries(root) if e.last_used < cutoff]
    if not dry_run:
        for entry in stale:
            if entry.path.is_dir():
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                entry.path.unlink(missing_ok=True)
    return stale


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def _age(seconds: float) -> str:
    days = seconds / DAY_S
    return f"{days:.1f} days" if days >= 1 else f"{seconds / 3600:.1f} hours"


def summary_table(root: Path, now: float | None = None) -> Table:
    """Per kind: entries, total size and the least recent use; the databases' sizes below."""
    now = time.time() if now is None else now
    table = Table(title=f"simrec cache: {root}")
    for column in ("kind", "entries", "size", "least recently used"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    by_kind: dict[str, list[CacheEntry]] = {}
    for entry in cache_entries(root):
        by_kind.setdefault(entry.kind, []).append(entry)
    for kind, entries in by_kind.items():
        oldest = min(e.last_used for e in entries)
        table.add_row(kind, str(len(entries)), _megabytes(sum(e.size for e in entries)), f"{_age(now - oldest)} ago")
    for name, size in database_sizes(root).items():
        table.add_row(f"{name} db (kept)", "-", _megabytes(size), "-")
    return table


def run_cache(root: Path, prune_days: float | None, dry_run: bool, console: Console | None = None) -> None:
    """Print the summary; with `prune_days`, remove (or list, `dry_run`) the entries unused that long first."""
    console = console or Console()
    if not root.is_dir():
        console.print(f"simrec cache: {root} does not exist (nothing cached yet)")
        return
    if prune_days is not None:
        stale = prune(root, prune_days, dry_run)
        verb = "would remove" if dry_run else "removed"
        for entry in stale:
            console.print(f"  {verb} {entry.kind}: {entry.path.name} ({_megabytes(entry.size)})")
        freed = sum(e.size for e in stale)
        console.print(f"{verb} {len(stale)} entries unused for {prune_days:g} days: {_megabytes(freed)}")
    console.print(summary_table(root))
