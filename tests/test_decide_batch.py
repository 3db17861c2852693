"""The page rule (`GroundedDecider.decide_batch`, its only copy) decides a page the same in any batch.

- Unit: for several decision configs (sampled / threshold watch, rating noise, the LLM's watch, rating and leave
  terms with the running yes-rate, ragged pages, pages without an answer), a batch of B pages gives every watch,
  star and leave that the same pages give one at a time (`decide_page`, a batch of one) from the same
  generators, and every generator is left in the same state (same draws consumed).
- End to end: `run_sessions` with the LLM persona user on the mock backend writes the same events, pages and
  interviews whether sessions are stepped 16 at a time or one by one, in narrate mode (hand-set kind) and in
  decide mode with an LLM-weighted config and injected faults (fallback pages decided by the fallback decider).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from agents.config import DecisionConfig, LeaveConfig, load_user
from agents.decision import BatchAnswers, GroundedDecider
from agents.embedding import HashingEmbedder
from agents.llm_user import LLMUserModel
from recommenders.registry import make
from simenv.eventlog import read_table
from simenv.llm.mock import FaultConfig, MockLLM
from simenv.runner import run_sessions
from tests.fixtures_agents import tiny_world

# Watch rates near one half keep logits near 0, where a wrong term or draw flips decisions.
RATES = (0.35, 0.45, 0.55)
PROFILES = {
    "grounded-sample": DecisionConfig(w_genre=4.0, w_popularity=2.0, w_collab=4.0, watch_rate=RATES),
    "noise-threshold": DecisionConfig(w_genre=4.0, decide="threshold", rating_noise=0.6, watch_rate=RATES),
    "llm-blend": DecisionConfig(
        w_genre=2.0, w_llm=1.5, rating_llm=0.5, rating_noise=0.3, leave=LeaveConfig(llm=2.0), watch_rate=RATES
    ),
    "llm-stars": DecisionConfig(w_llm=1.0, calibrate=False, decide="threshold", rating_llm=1.0),
}


def _one_at_a_time(decider, personas, pages, page_index, seeds, answers):
    """Each page as a batch of one, in row order."""
    out = []
    for persona, ids, page, seed, ans in zip(personas, pages, page_index, seeds, answers, strict=True):
        rng = np.random.default_rng(seed)
        llm_watch, llm_ratings, llm_leave = (None, None, None) if ans is None else ans
        watched, stars, left = decider.decide_page(persona, ids, int(page), rng, llm_watch, llm_ratings, llm_leave)
        out.append((watched, stars, left, rng.random()))  # the last draw: the generator's state after the page
    return out


@pytest.mark.parametrize("ragged", [True, False])  # equal sizes take the one-call-per-session draw path
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_a_batch_decides_as_its_pages_one_at_a_time(profile, ragged):
    ds, split, personas = tiny_world()
    cfg = PROFILES[profile]
    rng = np.random.default_rng(11)
    users = [personas[u] for u in rng.choice(sorted(personas), size=200)]  # repeats: one persona, several pages
    sizes = rng.integers(1, 7, size=len(users)) if ragged else np.full(len(users), 4)
    pages = [rng.choice(ds.n_items, size=k, replace=False) for k in sizes]
    page_index = rng.integers(0, 5, size=len(users))
    seeds = rng.integers(2**31, size=len(users))
    answers = [
        None
        if cfg.w_llm == 0 or rng.random() < 0.2
        else (rng.random(k) < 0.5, rng.integers(1, 6, k) * 1.0, rng.random() < 0.3)
        for k in sizes
    ]
    reference = GroundedDecider(ds, split.train, cfg)
    batched = GroundedDecider(ds, split.train, cfg)
    expected = _one_at_a_time(reference, users, pages, page_index, seeds, answers)

    width = int(sizes.max())
    ids = np.zeros((len(users), width), dtype=np.int64)
    watch = np.zeros((len(users), width), dtype=bool)
    ratings = np.zeros((len(users), width))
    for i, (page, ans) in enumerate(zip(pages, answers, strict=True)):
        ids[i, : len(page)] = page
        if ans is not None:
            watch[i, : len(page)], ratings[i, : len(page)] = ans[0], ans[1]
    batch = BatchAnswers(
        np.array([a is not None for a in answers]), watch, ratings, np.array([a is not None and a[2] for a in answers])
    )
    rngs = [np.random.default_rng(s) for s in seeds]
    watched, stars, left = batched.decide_batch(users, ids, sizes, page_index, rngs, batch if cfg.w_llm else None)
    for i, (w, s, lv, after) in enumerate(expected):
        k = sizes[i]
        np.testing.assert_array_equal(watched[i, :k], w)
        np.testing.assert_array_equal(stars[i, :k], s)
        assert bool(left[i]) == lv
        assert rngs[i].random() == after
        assert not watched[i, k:].any()
    assert batched.llm_yes_rate == reference.llm_yes_rate
    assert watched.any() and (~watched).any() and left.any() and (~left).any()  # the cases are not degenerate


def _run(model: LLMUserModel, tmp_path, name: str, batch_size: int) -> dict[str, pd.DataFrame]:
    ds, split, personas = tiny_world()
    rec = make("pop").fit(split.train, ds.n_users, ds.n_items)
    run_dir = tmp_path / name / "run"  # the run column is the directory name
    run_sessions(rec, model, personas, ds, split.train, run_dir, n_pages=5, page_size=4, seed=3, batch_size=batch_size)
    tables = {t: read_table(run_dir, t) for t in ("events", "pages", "interviews")}  # written in batch order
    keys = {"events": ["episode", "page", "position"], "pages": ["episode", "page"], "interviews": ["episode"]}
    return {t: f.sort_values(keys[t]).reset_index(drop=True) for t, f in tables.items()}


# Only the narrated kind: where the LLM's answer enters the decision, its running yes rate advances in the order
# pages are decided, which a different batch size changes (by design; the unit test above holds it fixed).
@pytest.mark.parametrize(("profile", "page_prompt", "faults"), [("grounded", "auto", 0.0)])
def test_runs_write_the_same_logs_whatever_the_batch_size(tmp_path, profile, page_prompt, faults):
    ds, split, _ = tiny_world()
    base = load_user("handset" if profile == "handset" else "llm-only").user
    decision = PROFILES.get(profile, base.decision)
    cfg = replace(base, decision=decision, page_prompt=page_prompt)
    logs = []
    for batch_size in (16, 1):
        llm = MockLLM(seed=1, faults=FaultConfig(rate=faults)) if faults else MockLLM(seed=1)
        model = LLMUserModel(ds, llm, HashingEmbedder(64), cfg, train=split.train)
        logs.append(_run(model, tmp_path, f"{profile}-{batch_size}", batch_size))
    for table in ("events", "pages", "interviews"):
        a, b = logs[0][table], logs[1][table]
        assert len(a) > 0
        pd.testing.assert_frame_equal(
            a.drop(columns=["latency_s"], errors="ignore"), b.drop(columns=["latency_s"], errors="ignore")
        )
    events = logs[0]["events"]
    assert events["watched"].any() and not events["watched"].all()


def test_members_decide_with_their_source_plan_computed_once_under_the_source_id():
    from simenv.synthetic_population import draw_population, member_personas

    ds, split, personas = tiny_world()
    pop = draw_population(sorted(personas), 40, np.random.default_rng(5))
    members = member_personas(pop, personas)
    decider = GroundedDecider(ds, split.train, PROFILES["grounded-sample"])
    decider.use_sources(dict(zip(pop.user_ids.tolist(), pop.source.tolist(), strict=True)))
    decider.prepare(list(members.values()))
    for uid, src in zip(pop.user_ids.tolist(), pop.source.tolist(), strict=True):
        assert decider.plan(members[uid]) is decider.plan(personas[src])
    # a member and its source, same page and seed: same decisions
    uid, src = int(pop.user_ids[0]), int(pop.source[0])
    ids = np.tile(np.arange(8), (2, 1))
    out = [
        decider.decide_batch([p], ids[:1], np.array([8]), np.array([1]), [np.random.default_rng(9)])
        for p in (members[uid], personas[src])
    ]
    for a, b in zip(*out, strict=True):
        np.testing.assert_array_equal(a, b)
    everyone = list(members.values())
    rngs = [np.random.default_rng(i) for i in range(len(everyone))]
    pages = np.tile(np.arange(4), (len(everyone), 1))
    decider.decide_batch(everyone, pages, np.full(len(everyone), 4), np.zeros(len(everyone), dtype=np.int64), rngs)
    assert decider.table.n == len(set(pop.source.tolist()))  # one stacked row per source

    class FittedStandIn:  # records which ids the response model is asked about (its folds are by user id)
        def __init__(self) -> None:
            self.asked: list[int] = []

        def prepare(self, people):
            self.asked.extend(p.user_id for p in people)

        def plan(self, persona):
            base = decider.plan(personas[persona.user_id])
            return type("Fitted", (), {"watch_logit": base.base_logit, "rating": base.rating})()

    stand_in = FittedStandIn()
    fitted = GroundedDecider(ds, split.train, replace(PROFILES["grounded-sample"], response="full"), response=stand_in)
    fitted.use_sources(dict(zip(pop.user_ids.tolist(), pop.source.tolist(), strict=True)))
    fitted.prepare(list(members.values()))
    assert sorted(stand_in.asked) == sorted(set(pop.source.tolist()))
