"""`simrec transcript`: the story of a seeded mock session tells exactly what the run logged, in order, with text
the model did not write marked; the same seeds tell the same story; the CLI finds runs, policies, users.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from agents.config import load_user
from agents.embedding import HashingEmbedder
from agents.llm_user import LLMUserModel
from experiments.cli import app
from experiments.transcript import Session, load_sessions, render, write_user_events
from recommenders.popularity import PopRecommender
from simenv.data.synthetic import make_synthetic
from simenv.eventlog import read_table
from simenv.llm.mock import FaultConfig, MockLLM
from simenv.runner import run_sessions
from tests.fixtures_agents import tiny_world


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


def _expected_fragments(session: Session, title) -> list[str]:
    """What the story must say, in order, from the session's own log rows."""
    out = [f"User {session.user} \u00b7 {session.policy} \u00b7 episode {session.episode}\n"]
    fallback_pages = set(session.pages.loc[session.pages["fallback"], "page"].astype(int))
    ue = session.user_events
    for page, items in session.events.groupby("page", sort=True):
        out.append(f"Page {int(page) + 1}\n")
        for row in items.itertuples():
            head = f"  {int(row.position) + 1}. {title(int(row.item))} \u2014 "
            if not row.watched:
                out.append(head + "skipped\n")
                continue
            stars = "\u2605" * int(row.rating) + "\u2606" * (5 - int(row.rating))
            mark = " [fallback]" if int(page) in fallback_pages else ""
            out.append(f"{head}watched, {stars} \u201c{row.feeling}\u201d{mark}")
        for detail in ue.loc[(ue["kind"] == "reflection") & (ue["page"] == page), "detail"]:
            out += [f"  Reflects: \u201c{t.strip()}\u201d" for t in str(detail).split(" | ") if t.strip()]
        left = session.pages.loc[session.pages["page"] == page]
        if bool(left["left"].iloc[0]):
            out.append(f"  Leaves: \u201c{left['reason'].iloc[0]}\u201d")
    interview = session.interview
    assert interview is not None
    out.append(f"Interview: satisfaction {int(interview['score'])}/10 \u2014 \u201c{interview['reason']}")
    ev = session.events
    out.append(f"\n{len(ev)} shown, {int(ev['watched'].sum())} watched, {int(ev['liked'].sum())} liked; text: ")
    return out


def _assert_in_order(text: str, fragments: list[str]) -> None:
    at = 0
    for fragment in fragments:
        found = text.find(fragment, at)
        assert found >= 0, f"{fragment!r} missing after position {at} of:\n{text}"
        at = found + len(fragment)


def test_transcript_of_a_seeded_mock_run_tells_the_logged_sessions(tmp_path: Path) -> None:
    _seeded_run(tmp_path / "run")
    ds, _, personas = tiny_world()

    def title(i: int) -> str:
        return ds.catalog[i].title

    sessions = [s for u in sorted(personas)[:3] for s in load_sessions(tmp_path / "run", u)]
    assert len(sessions) == 3
    stories = [render(s, title) for s in sessions]
    for session, story in zip(sessions, stories, strict=True):
        _assert_in_order(story + "\n", _expected_fragments(session, title))
        n_text = int(session.events["watched"].sum()) + story.count("Reflects: ") + story.count("Leaves: ") + 1
        own, total, marked = re.search(r"text: (\d+) of (\d+) in the model's own words, (\d+) fallback", story).groups()
        assert int(total) == n_text and int(own) + int(marked) == n_text
        assert int(marked) == story.count("[fallback]") + story.count("[default]")
    text = "\n\n".join(stories)
    assert "[fallback]" in text and "Reflects:" in text and "Interview: satisfaction" in text
    _seeded_run(tmp_path / "again")  # the same seeds tell the same story
    again = [render(s, title) for u in sorted(personas)[:3] for s in load_sessions(tmp_path / "again", u)]
    assert again == stories


def test_transcript_command_on_a_compare_run(tmp_path: Path, worker_cache: Path, capsys) -> None:
    flags = [
        "--data.dataset", "synthetic", "--data.n-personas", "4", "--data.cache-dir", str(worker_cache),
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
