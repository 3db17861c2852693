"""`simrec demo` end to end with tiny budgets: the table, the validity headline, the narrated transcripts (here by
the mock), and narration replaying exactly the decisions of the decisions pass."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from experiments.cli import app
from experiments.config import load_config
from experiments.demo import DEMO_MARK, NARRATED_DIR, NARRATED_POLICY, own_run_dir, validity_config
from simenv.eventlog import read_table

RECS = """
[models.mf]
epochs = 30
eval_every = 1000
[models.lightgcn]
dim = 16
n_layers = 1
epochs = 5
eval_every = 1000
[models.multvae]
epochs = 5
eval_every = 1000
[models.sasrec]
dim = 16
n_blocks = 1
max_len = 20
epochs = 2
eval_every = 1000
"""


def test_demo_prints_table_headline_and_narrated_transcripts(tmp_path: Path, capsys) -> None:
    (tmp_path / "recs.toml").write_text(RECS)
    args = [
        "demo",
        "--data.dataset", "synthetic", "--data.n-personas", "12", "--data.cache-dir", str(tmp_path / "cache"),
        "--llm.backend", "mock", "--users.embedder", "hashing", "--run.out-dir", str(tmp_path / "runs"),
        "--recommenders.config-file", str(tmp_path / "recs.toml"),
        "--validity.policies", '["random", "pop", "mf", "lightgcn"]', "--validity.bootstrap", "50",
    ]  # fmt: skip
    app(args)
    out = capsys.readouterr().out
    assert "Agent4Rec metrics" in out and "validity (synthetic" in out
    assert "User " in out and f"\u00b7 {NARRATED_POLICY} \u00b7 episode" in out and "Interview: satisfaction" in out
    assert "demo wall time" in out and "training" in out and "narration" in out
    run = tmp_path / "runs" / "demo"
    narrated = run / NARRATED_DIR
    assert not (narrated / "mismatched.json").exists()  # same decisions as the decisions pass
    replayed = read_table(narrated, "events")
    logged = read_table(run / "policies" / NARRATED_POLICY, "events")
    users = sorted(replayed["user"].unique())
    assert len(users) == 3
    cols = ["user", "episode", "page", "position", "item", "watched", "rating"]
    want = logged[logged["user"].isin(users)][cols].sort_values(cols[:4], ignore_index=True)
    got = replayed[cols].sort_values(cols[:4], ignore_index=True)
    assert got.equals(want)
    assert (narrated / "user_events").is_dir() and (narrated / "llm_calls").is_dir()

    # `make demo` twice: the second run replaces the demo's own output (caches reused) and ends the same way
    before = read_table(run / "policies" / "random", "events")
    app(args)
    again = capsys.readouterr().out
    assert "validity (synthetic" in again and "demo wall time" in again
    assert read_table(run / "policies" / "random", "events").equals(before)
    assert (run / DEMO_MARK).is_file() and (tmp_path / "runs" / "demo-validity" / DEMO_MARK).is_file()
    # a run directory the demo did not make is never replaced: the demo refuses like any command (exit 2)
    shutil.rmtree(run)
    other = [*args[:-2], "--users.kind", "fitted", "--recommenders.names", '["random"]', "--run.name", "demo"]
    app(["compare", *other[1:]])
    made = (run / "experiment.json").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        app(args)
    assert info.value.code == 2 and "already holds a run" in capsys.readouterr().err
    assert (run / "experiment.json").read_text() == made and not (run / DEMO_MARK).exists()


def test_output_of_a_demo_from_before_the_mark_is_recognised(tmp_path: Path) -> None:
    config = load_config(Path("demo"), {"run": {"out_dir": str(tmp_path)}})
    old, validity = tmp_path / config.run.name, tmp_path / f"{config.run.name}-validity"
    (old / NARRATED_DIR).mkdir(parents=True)
    (old / NARRATED_DIR / "config.json").write_text("{}")
    (old / "experiment.json").write_text("{}")
    validity.mkdir()
    (validity / "validity.json").write_text("{}")
    own_run_dir(validity_config(config), narrated_sibling=config.run.name)
    own_run_dir(config)
    assert sorted(p.name for p in old.iterdir()) == [DEMO_MARK] == sorted(p.name for p in validity.iterdir())
    stranger = tmp_path / "x"
    (stranger / "policies").mkdir(parents=True)
    own_run_dir(config.model_copy(update={"run": config.run.model_copy(update={"name": "x"})}))
    assert sorted(p.name for p in stranger.iterdir()) == ["policies"]  # not the demo's: untouched, not marked
