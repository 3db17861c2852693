"""`simrec transcript`: the story of one seeded mock session is a golden file; the CLI finds runs, policies, users.

Regenerate the golden file after an intended change with `SIMREC_UPDATE_GOLDEN=1 pytest tests/test_transcript.py`
and read the diff.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from agents.config import load_user
from agents.embedding import HashingEmbedder
from agents.llm_user import LLMUserModel
from experiments.cli import app
from experiments.transcript import load_sessions, render, write_user_events
from recommenders.popularity import PopRecommender
from simenv.data.synthetic import make_synthetic
from simenv.eventlog import read_table
from simenv.llm.mock import FaultConfig, MockLLM
from simenv.runner import run_sessions
from tests.fixtures_agents import tiny_world

GOLDEN = Path(__file__).parent / "golden" / "transcript_mock.txt"


def _seeded_run(run_dir: Path) -> None:
    """Pop against three narrating LLM users on the mock (a third of its answers broken, so some text falls
    back), reflecting often enough to show reflections."""
    ds, split, personas = tiny_world()
    base = load_user("handset").user
    config = replace(base, page_prompt="narrate", memory=replace(base.memory, reflection_threshold=12.0))
    llm = MockLLM(seed=5, faults=FaultConfig(rate=0.34, kinds=("out_of_range",)))
    users = LLMUserModel(ds, llm, HashingEmbedder(64), config, train=split.train)
    chosen = {u: personas[u] for u in sorted(personas)[:3]}
    rec = PopRecommender().fit(split.train, ds.n_users, ds.n_items)
    run_sessions(rec, users, chosen, ds, split.train, run_dir, n_pages=5, page_size=4, seed=3, policy_name="pop")
    write_user_events(run_dir, users.events)


def test_transcript_of_a_seeded_mock_run_is_golden(tmp_path: Path) -> None:
    _seeded_run(tmp_path / "run")
    ds, _, personas = tiny_world()
    users = sorted(personas)[:3]
    text = "\n\n".join(
        render(s, lambda i: ds.catalog[i].title) for u in users for s in load_sessions(tmp_path / "run", u)
    )
    if os.environ.get("SIMREC_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text + "\n", encoding="utf-8")
    assert text + "\n" == GOLDEN.read_text(encoding="utf-8")
    assert "[fallback]" in text and "Reflects:" in text and "Interview: satisfaction" in text


def test_transcript_command_on_a_compare_run(tmp_path: Path, capsys) -> None:
    flags = [
        "--data.dataset", "synthetic", "--data.n-personas", "4", "--data.cache-dir", str(tmp_path / "cache"),
        "--llm.backend", "mock", "--users.embedder", "hashing", "--users.kind", "persona",
        "--simulation.pages", "3", "--run.out-dir", str(tmp_path / "runs"), "--run.name", "t",
        "--recommenders.names", '["pop", "random"]',
    ]  # fmt: skip
    app(["compare", *flags])
    run = tmp_path / "runs" / "t"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        app(["transcript", str(run), "--user", "0"])
    assert exit_info.value.code == 2 and "--policy" in capsys.readouterr().err  # two policies: which one?
    user = int(read_table(run / "policies" / "pop", "events")["user"].iloc[0])
    app(["transcript", str(run), "--user", str(user), "--policy", "pop"])
    out = capsys.readouterr().out
    first = make_synthetic().catalog[int(read_table(run / "policies" / "pop", "events")["item"].iloc[0])].title
    assert out.startswith(f"User {user} \u00b7 pop") and first in out and "Interview: satisfaction" in out
    assert "this run did not record user events" in out
    with pytest.raises(SystemExit) as exit_info:
        app(["transcript", str(run), "--user", "99999", "--policy", "pop"])
    assert exit_info.value.code == 2 and "has no session" in capsys.readouterr().err
