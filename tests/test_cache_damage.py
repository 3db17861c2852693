"""Issue 26 item 4: every cache is checked before a command loads it; a damaged one (the fitted response model's
pickle, a recommender's state.pt, the embeddings and LLM response cache.db) is set aside as *.corrupt-<timestamp>
with one warning line and rebuilt, and the run's results are those of an undamaged cache."""

from __future__ import annotations

import logging
from pathlib import Path

from experiments.cli import app
from simenv.eventlog import read_table

ARGS = ["compare", "--llm.backend", "mock", "--users.kind", "persona", "--users.embedder", "hashing",
        "--data.dataset", "synthetic", "--data.n-personas", "6", "--recommenders.names", '["mf"]',
        "--simulation.pages", "2"]  # fmt: skip


def _compare(tmp_path: Path, name: str) -> Path:
    app([*ARGS, "--run.name", name, "--run.out-dir", str(tmp_path / "runs"), "--data.cache-dir", str(tmp_path / "c")])
    return tmp_path / "runs" / name


def test_damaged_caches_are_set_aside_with_one_warning_each_and_rebuilt(tmp_path: Path, caplog) -> None:
    first = _compare(tmp_path, "a")
    cache = tmp_path / "c"
    pickles = sorted((cache / "response").glob("*.pkl"))
    assert pickles
    states = sorted((cache / "models").glob("*/state.pt"))
    assert states
    llm_db = cache / "llm" / "cache.db"
    assert llm_db.is_file()
    for pickle in pickles:
        pickle.write_bytes(pickle.read_bytes()[: pickle.stat().st_size // 2])  # cut short
    for state in states:
        state.write_bytes(b"\0" * 64)  # garbage
    llm_db.write_bytes(b"not a database" * 100)
    (cache / "embeddings").mkdir()
    (cache / "embeddings" / "cache.db").write_bytes(b"x" * 4096)
    with caplog.at_level(logging.WARNING, logger="simenv.set_aside"):
        second = _compare(tmp_path, "b")
    warnings = [r.getMessage() for r in caplog.records if r.name == "simenv.set_aside"]
    damaged = {*pickles, *(s.parent for s in states), llm_db, cache / "embeddings" / "cache.db"}
    assert {w.split(" is damaged")[0].removeprefix("cache ") for w in warnings} >= {str(p) for p in damaged}
    for path in damaged:
        assert len(list(path.parent.glob(f"{path.name}.corrupt-*"))) == 1, path
    assert all(p.is_file() for p in [*pickles, *states, llm_db])  # rebuilt
    cols = ["episode", "user", "page", "position", "item", "watched", "rating"]
    assert read_table(second / "policies" / "mf", "events")[cols].equals(
        read_table(first / "policies" / "mf", "events")[cols]
    )
