"""Signals, the grounded decision rule and user configs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from agents.config import KINDS, ConfigError, DecisionConfig, LeaveConfig, kind_names, load_user
from agents.decision import GroundedDecider
from agents.embedding import CachedEmbedder, HashingEmbedder
from agents.signals import (
    CollabPrior,
    TrainStats,
    fit_cuts,
    genre_signal,
    sigmoid,
    solve_bias,
    stats_interview_score,
)
from tests.fixtures_agents import tiny_world


def test_solve_bias_hits_the_target_rate():
    scores = np.random.default_rng(0).normal(size=500)
    for target in (0.05, 0.3, 0.8):
        b = solve_bias(scores, target)
        assert abs(sigmoid(b + scores).mean() - target) < 1e-6
    with pytest.raises(ValueError, match="target"):
        solve_bias(scores, 1.0)


def test_fit_cuts_reproduce_the_target_histogram():
    values = np.random.default_rng(1).normal(3.5, 0.6, size=4000)
    targets = np.cumsum([0.06, 0.11, 0.26, 0.35])
    cuts = fit_cuts(values, targets, noise=0.0)
    stars = 1 + (values[:, None] > cuts).sum(axis=1)
    hist = np.bincount(stars, minlength=6)[1:] / len(stars)
    np.testing.assert_allclose(hist, [0.06, 0.11, 0.26, 0.35, 0.22], atol=0.002)
    noisy = fit_cuts(values, targets, noise=0.5)
    cdf = sigmoid((noisy[:, None] - values[None, :]) / 0.5).mean(axis=1)
    np.testing.assert_allclose(cdf, targets, atol=1e-6)


def test_genre_signal_ranks_the_planted_favourite_first():
    ds, split, personas = tiny_world()
    stats = TrainStats.from_train(ds, split.train)
    fav = dict(zip(ds.users["user_id"], ds.users["favourite_genre"], strict=True))
    hits = 0
    for p in personas.values():
        z = genre_signal(stats, p)
        assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3
        has = ds.genre_matrix[:, ds.genre_vocabulary.index(fav[p.user_id])] > 0
        hits += z[has].mean() > z[~has].mean()
    assert hits / len(personas) > 0.9


def test_train_stats_use_only_what_they_are_given():
    ds, split, _ = tiny_world()
    stats = TrainStats.from_train(ds, split.train)
    counts = np.bincount(split.train["item_id"], minlength=ds.n_items)
    np.testing.assert_array_equal(stats.counts, counts)
    with pytest.raises(ValueError, match="out of range"):
        TrainStats.from_train(ds, pd.DataFrame({"item_id": [ds.n_items], "rating": [3.0]}))


def test_collab_prior_is_cosine_co_occurrence():
    train = pd.DataFrame({"user_id": [0, 0, 1, 1, 2], "item_id": [0, 1, 0, 1, 2], "rating": [5.0] * 5})
    prior = CollabPrior.from_train(train, n_users=3, n_items=3, neighbours=0)
    np.testing.assert_allclose(prior.similarity, [[0, 1, 0], [1, 0, 0], [0, 0, 0]], atol=1e-6)


def test_decider_calibrates_activity_and_threshold_follows_the_llm():
    ds, split, personas = tiny_world()
    cfg = DecisionConfig(name="t", w_genre=1.0, w_popularity=0.5, watch_rate=(0.1, 0.2, 0.4))
    dec = GroundedDecider(ds, split.train, cfg)
    for p in list(personas.values())[:10]:
        plan = dec.plan(p)
        assert abs(sigmoid(plan.base_logit).mean() - cfg.watch_rate[p.activity - 1]) < 1e-4
    llm_only = GroundedDecider(ds, split.train, DecisionConfig(name="l", w_llm=1.0, w_genre=0.0, calibrate=False,
                                                               decide="threshold"))  # fmt: skip
    persona = next(iter(personas.values()))
    answer = np.array([True, False, True, True, False])
    watch, _, _ = llm_only.decide_page(
        persona, np.arange(5), 0, np.random.default_rng(0), answer, np.full(5, 3.0), False
    )
    np.testing.assert_array_equal(watch, answer)


def test_llm_term_is_centred_on_the_running_yes_rate_when_calibrated():
    ds, split, personas = tiny_world()
    cfg = DecisionConfig(name="g", w_llm=2.0, w_genre=1.0, decide="threshold")
    dec = GroundedDecider(ds, split.train, cfg)
    persona = next(iter(personas.values()))
    ids = np.arange(40)
    yes = np.ones(40, bool)
    for _ in range(200):  # a yes-sayer: its yes carries no information once the centre has learnt it
        dec.decide_page(persona, ids, 0, np.random.default_rng(0), yes, np.full(40, 3.0), False)
    watched, _, _ = dec.decide_page(persona, ids, 0, np.random.default_rng(0), yes, np.full(40, 3.0), False)
    base = dec.plan(persona).base_logit[ids]
    clear = np.abs(base) > 0.05
    assert clear.sum() > 20
    np.testing.assert_array_equal(watched[clear], base[clear] > 0)


def test_ratings_blend_llm_and_baseline():
    ds, split, personas = tiny_world()
    p = next(iter(personas.values()))
    ids = np.arange(20)
    rng = np.random.default_rng(0)
    base = GroundedDecider(ds, split.train, DecisionConfig(name="b", rating_llm=0.0, rating_spread=0.0))
    llm = GroundedDecider(ds, split.train, DecisionConfig(name="l", w_llm=1.0, rating_llm=1.0))
    fives = np.full(20, 5.0)
    expected = np.clip(np.rint(base.plan(p).rating.prediction[ids]), 1, 5)
    no = np.zeros(20, bool)
    np.testing.assert_array_equal(base.decide_page(p, ids, 0, rng, no, fives, False)[1], expected)
    np.testing.assert_array_equal(llm.decide_page(p, ids, 0, rng, no, fives, False)[1], fives)


def test_leave_follows_the_logistic_rule():
    """A user who watches nothing leaves with sigmoid(base + fatigue * page + activity * (activity - 2)
    + satisfaction * (0 - 0.5)) (agents.config.LeaveConfig), within 4 standard errors."""
    ds, split, personas = tiny_world()
    leave = LeaveConfig(base=-1.0, fatigue=0.5, activity=-0.5, satisfaction=-1.0)
    cfg = DecisionConfig(name="none", calibrate=False, decide="threshold", leave=leave)  # logits 0: never watches
    dec = GroundedDecider(ds, split.train, cfg)
    persona = next(p for p in personas.values() if p.activity == 3)
    rng = np.random.default_rng(4)
    n = 4000
    left = [dec.decide_page(persona, np.arange(4), 2, rng)[2] for _ in range(n)]
    p = 1 / (1 + np.exp(-(-1.0 + 0.5 * 2 - 0.5 * (3 - 2) - 1.0 * (0.0 - 0.5))))
    assert abs(np.mean(left) - p) < 4 * np.sqrt(p * (1 - p) / n)


def test_leave_and_interview_rules():
    assert stats_interview_score(0, 0, 0) == 1
    assert stats_interview_score(10, 5, 5) == round(1 + 9 * (0.6 * 0.5 + 0.4 * 0.5))
    assert stats_interview_score(4, 4, 4) == 10


def test_kinds_load_and_bad_configs_name_the_problem(tmp_path):
    assert kind_names() == KINDS  # the packaged file ships exactly the documented kinds
    llm_only = load_user("llm-only")
    assert llm_only.writes_text and llm_only.decision.w_llm > 0 and not llm_only.decision.calibrate
    assert llm_only.decision.decide == "threshold" and llm_only.decision.leave.llm == 4.0
    assert load_user("handset").decision.name == "handset" and not load_user("handset").writes_text
    assert load_user().kind == "fitted" and load_user().decision.response == "full"
    bad = tmp_path / "users.toml"
    bad.write_text("[kinds.x]\nw_genre = 1.0\nw_typo = 2.0\n")
    with pytest.raises(ConfigError, match="w_typo"):
        load_user("x", bad)
    with pytest.raises(ConfigError, match="no user kind 'nope'"):
        load_user("nope", bad)
    bad.write_text("[kinds.x]\nw_llm = 1.0\n")
    with pytest.raises(ConfigError, match="needs text = true"):
        load_user("x", bad)
    bad.write_text('[kinds.x]\ndecide = "maybe"\n')
    with pytest.raises(ConfigError, match="decide"):
        load_user("x", bad)
    with pytest.raises(ConfigError, match="not found"):
        load_user("x", tmp_path / "missing.toml")


def test_hashing_embedder_is_deterministic_and_cached_on_disk(tmp_path):
    emb = HashingEmbedder(32)
    a = emb.embed(["space opera with robots", "romantic comedy", ""])
    np.testing.assert_allclose(np.linalg.norm(a[:2], axis=1), 1.0, rtol=1e-5)
    assert not a[2].any()
    np.testing.assert_array_equal(a, HashingEmbedder(32).embed(["space opera with robots", "romantic comedy", ""]))
    assert a[0] @ emb.embed(["robots in space opera"])[0] > a[0] @ a[1]
    cached = CachedEmbedder(emb, tmp_path / "cache")
    first = cached.embed(["x y", "z"])
    again = CachedEmbedder(emb, tmp_path / "cache")
    np.testing.assert_array_equal(again.embed(["z", "x y"]), first[::-1])
    assert (again.hits, again.misses) == (2, 0)
    cached.close()
    again.close()


def test_profile_replace_keeps_validation_simple():
    cfg = replace(load_user("handset").decision, w_llm=0.0)
    assert cfg.weight("llm") == 0.0 and cfg.weight("genre") == load_user("handset").decision.w_genre
