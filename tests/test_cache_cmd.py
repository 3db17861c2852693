"""`simrec cache`: every load marks its cache entry used, and `--prune-days N` removes exactly the entries no run
has used for N days (a run's own recommenders and response model survive; stale ones go, `--dry-run` keeps all)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from experiments.cache_cmd import cache_entries, prune
from experiments.cli import app
from tests.test_cache_damage import ARGS

DAY = 86_400


def _backdate(path: Path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(path, (then, then))


def _plant_stale(cache: Path) -> list[Path]:
    """A response pickle and a recommender folder of some older version, last used 40 days ago."""
    (cache / "models" / "synthetic-mf-0123456789abcdef").mkdir(parents=True)
    (cache / "response").mkdir(exist_ok=True)
    (cache / "models" / "synthetic-mf-0123456789abcdef" / "state.pt").write_bytes(b"x" * 1000)
    (cache / "response" / "synthetic-full-0123456789abcdef.pkl").write_bytes(b"\x80" + b"y" * 500 + b".")
    stale = [
        cache / "models" / "synthetic-mf-0123456789abcdef",
        cache / "response" / "synthetic-full-0123456789abcdef.pkl",
    ]
    for path in stale:
        _backdate(path, 40)
    return stale


def test_runs_mark_what_they_load_and_prune_removes_only_unused_entries(tmp_path: Path, capsys) -> None:
    cache = tmp_path / "c"
    run = [*ARGS, "--run.out-dir", str(tmp_path / "runs"), "--data.cache-dir", str(cache)]
    app([*run, "--run.name", "a"])
    first = [e.path for e in cache_entries(cache)]
    for path in first:  # as if the first run were 40 days ago
        _backdate(path, 40)
    app([*run, "--run.name", "b"])  # loads its recommender and the response model from the cache
    fresh = sorted(p for p in first if p.stat().st_mtime > time.time() - DAY)
    assert {p.parent.name for p in fresh} == {"models", "response"}
    assert any("-mf-" in p.name for p in fresh)  # the policy's recommender
    # the fit sources' recommenders were only needed to fit the response model, which now comes from the cache
    unused = sorted(set(first) - set(fresh))
    stale = _plant_stale(cache)

    listed = prune(cache, 30, dry_run=True)
    assert sorted(e.path for e in listed) == sorted(unused + stale) and all(p.exists() for p in unused + stale)

    app(["cache", "--cache-dir", str(cache), "--prune-days", "30"])
    out = capsys.readouterr().out
    assert f"removed {len(unused) + 2} entries unused for 30 days" in out and "response" in out
    assert not any(p.exists() for p in unused + stale) and all(p.exists() for p in fresh)
    app([*run, "--run.name", "c"])  # still runs from the cache: nothing retrained
    assert sorted(e.path for e in cache_entries(cache)) == fresh


def test_prune_zero_days_empties_the_entry_kinds_but_keeps_the_databases(tmp_path: Path) -> None:
    cache = tmp_path / "c"
    (cache / "llm").mkdir(parents=True)
    (cache / "llm" / "cache.db").write_bytes(b"z" * 100)
    stale = _plant_stale(cache)
    (cache / "data" / "datasets" / "ml-100k-abc").mkdir(parents=True)
    removed = prune(cache, 0.0, now=time.time() + 1)
    assert {e.kind for e in removed} == {"models", "response", "datasets"}
    assert not any(p.exists() for p in stale) and (cache / "llm" / "cache.db").is_file()
