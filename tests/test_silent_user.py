"""The no-text user (`agents.silent_user.SilentUserModel`): the decider's rule, no LLM.

- protocol and seeded determinism;
- `react` page by page equals `decide_page` on the same generator (the rule exists once);
- the silent user and the LLM persona user built on the same decider write identical decisions (events, pages)
  for the same seed: the persona adds only words;
- a kind that decides with the LLM's answer cannot be silent.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from agents.config import DecisionConfig, load_user
from agents.decision import GroundedDecider
from agents.embedding import HashingEmbedder
from agents.llm_user import LLMUserModel
from agents.silent_user import SilentUserModel
from recommenders.registry import make
from simenv.eventlog import read_table
from simenv.llm.mock import MockLLM
from simenv.protocols import BatchDecider, UserModel, UserSession
from simenv.records import Page
from simenv.runner import run_sessions
from tests.fixtures_agents import tiny_world

DECISION = DecisionConfig(name="planted", w_genre=4.0, w_popularity=2.0, watch_rate=(0.35, 0.45, 0.55))


def _decider(ds, split, decision: DecisionConfig = DECISION) -> GroundedDecider:
    return GroundedDecider(ds, split.train, decision)


def _rollout(model: SilentUserModel, personas, ds, seed: int) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for persona in list(personas.values())[:20]:
        session = model.start_session(persona, 0, np.random.default_rng(rng.integers(2**31)))
        for t in range(5):
            ids = tuple(int(i) for i in rng.choice(ds.n_items, 4, replace=False))
            feedback = session.react(Page(0, t, ids), [ds.catalog[i] for i in ids])
            out.append(feedback)
            if feedback.left:
                break
        out.append(session.interview())
    return out


def test_protocol_and_seeded_determinism():
    ds, split, personas = tiny_world()
    model = SilentUserModel(_decider(ds, split))
    assert isinstance(model, UserModel) and isinstance(model, BatchDecider)
    assert isinstance(model.start_session(next(iter(personas.values())), 0, np.random.default_rng(0)), UserSession)
    a, b, c = (_rollout(model, personas, ds, seed) for seed in (1, 1, 2))
    assert a == b and a != c
    pages = [x for x in a if hasattr(x, "reactions")]
    assert any(p.left for p in pages) and any(not p.left for p in pages)
    assert any(r.watched for p in pages for r in p.reactions)
    assert all((r.rating is None) != r.watched for p in pages for r in p.reactions)


def test_react_is_the_deciders_page_rule():
    ds, split, personas = tiny_world()
    decider = _decider(ds, split)
    model = SilentUserModel(decider)
    persona = next(iter(personas.values()))
    for seed in range(10):
        ids = np.random.default_rng(seed).choice(ds.n_items, 6, replace=False)
        session = model.start_session(persona, 0, np.random.default_rng(seed))
        feedback = session.react(Page(0, 1, tuple(int(i) for i in ids)), [ds.catalog[int(i)] for i in ids])
        watched, stars, left = decider.decide_page(persona, ids, 1, np.random.default_rng(seed))
        assert [r.watched for r in feedback.reactions] == watched.tolist()
        assert [r.rating for r in feedback.reactions] == [
            int(s) if w else None for w, s in zip(watched, stars, strict=True)
        ]
        assert feedback.left == left


def _events(model, tmp_path, name: str):
    ds, split, personas = tiny_world()
    rec = make("pop").fit(split.train, ds.n_users, ds.n_items)
    run_dir = tmp_path / name / "run"
    run_sessions(rec, model, personas, ds, split.train, run_dir, n_pages=5, page_size=4, seed=3, batch_size=16)
    return read_table(run_dir, "events"), read_table(run_dir, "pages")


def test_silent_and_persona_users_on_one_decider_decide_alike(tmp_path):
    ds, split, _ = tiny_world()
    decider = _decider(ds, split)
    persona_config = replace(load_user("persona").user, decision=DECISION)
    persona_user = LLMUserModel(
        ds, MockLLM(seed=1), HashingEmbedder(64), persona_config, train=split.train, decider=decider
    )
    silent_events, silent_pages = _events(SilentUserModel(decider), tmp_path, "silent")
    persona_events, persona_pages = _events(persona_user, tmp_path, "persona")
    columns = ["episode", "user", "page", "position", "item", "watched", "rating", "left"]
    assert len(silent_events) > 0 and silent_events["watched"].any() and not silent_events["watched"].all()
    assert silent_events[columns].equals(persona_events[columns])
    assert silent_pages["left"].tolist() == persona_pages["left"].tolist()


def test_llm_deciding_kinds_cannot_be_silent():
    ds, split, _ = tiny_world()
    with pytest.raises(ValueError, match="needs the LLM persona user"):
        SilentUserModel(_decider(ds, split, replace(DECISION, w_llm=1.0)))
