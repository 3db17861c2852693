"""The multinomial-logit fast user: protocol, seeded determinism, calibrated watch rate, persona effects."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from agents.config import FastUserConfig, load_fast_user_config
from agents.fast_user import FastUserModel
from simenv.protocols import UserModel, UserSession
from simenv.records import Page
from tests.fixtures_agents import tiny_world


def _model(config: FastUserConfig | None = None) -> tuple[FastUserModel, object, dict]:
    ds, split, personas = tiny_world()
    return FastUserModel(ds, config or load_fast_user_config(), split.train), ds, personas


def _rollout(model, personas, ds, seed: int, pages: int = 5):
    rng = np.random.default_rng(seed)
    out = []
    for p in list(personas.values())[:15]:
        s = model.start_session(p, 0, rng)
        for t in range(pages):
            ids = tuple(int(i) for i in rng.choice(ds.n_items, 4, replace=False))
            fb = s.react(Page(0, t, ids), [ds.catalog[i] for i in ids])
            out.append(fb)
            if fb.left:
                break
        out.append(s.interview())
    return out


def test_protocol_and_seeded_determinism():
    model, ds, personas = _model()
    assert isinstance(model, UserModel)
    assert isinstance(model.start_session(next(iter(personas.values())), 0, np.random.default_rng(0)), UserSession)
    a, b, c = _rollout(model, personas, ds, 1), _rollout(model, personas, ds, 1), _rollout(model, personas, ds, 2)
    assert a == b and a != c
    feedback = [x for x in a if hasattr(x, "reactions")]
    for fb in feedback:
        for r in fb.reactions:
            assert (r.rating is not None) == r.watched
            assert r.rating is None or 1 <= r.rating <= 5
    assert any(fb.left for fb in feedback)


def test_react_batch_matches_react():
    model, ds, personas = _model()
    ps = list(personas.values())[:5]
    pages = [(Page(0, 0, (1, 2, 3)), [ds.catalog[i] for i in (1, 2, 3)]) for _ in ps]
    batch = model.react_batch([model.start_session(p, 0, np.random.default_rng(i)) for i, p in enumerate(ps)], pages)
    single = [model.start_session(p, 0, np.random.default_rng(i)).react(*pages[0]) for i, p in enumerate(ps)]
    assert batch == single
    with pytest.raises(ValueError, match="sessions but"):
        model.react_batch([], pages)


def test_marginal_watch_rate_is_calibrated_and_fatigue_lowers_it():
    cfg = replace(load_fast_user_config(), watch_rate=(0.3, 0.3, 0.3), position=0.0, fatigue=1.0)
    model, ds, personas = _model(cfg)
    persona = next(iter(personas.values()))
    rng = np.random.default_rng(3)
    session = model.start_session(persona, 0, rng)
    n = 4000
    first = later = 0
    for _ in range(n):
        ids = tuple(int(i) for i in rng.choice(ds.n_items, 3, replace=False))
        first += sum(r.watched for r in session.react(Page(0, 0, ids)).reactions)
        later += sum(r.watched for r in session.react(Page(0, 3, ids)).reactions)
    rate = first / (3 * n)
    assert abs(rate - 0.3) < 0.03  # catalog-uniform pages watch at the calibrated rate
    assert later / (3 * n) < rate - 0.1


def test_planted_favourite_genre_is_watched_more():
    model, ds, personas = _model()
    fav = dict(zip(ds.users["user_id"], ds.users["favourite_genre"], strict=True))
    genres = ds.genre_vocabulary
    lifts = []
    for p in personas.values():
        probs = model.watch_probability(p, range(ds.n_items))
        has = ds.genre_matrix[:, genres.index(fav[p.user_id])] > 0
        lifts.append(probs[has].mean() / probs[~has].mean())
    assert np.median(lifts) > 1.5


def test_conformity_scales_the_popularity_pull():
    ds, split, personas = tiny_world()
    cfg = replace(load_fast_user_config(), genre=0.0, popularity=1.0, conformity_scale=(2.0, 1.0, 0.0))
    model = FastUserModel(ds, cfg, split.train)
    pop = model.stats.popularity
    by_group = {}
    for p in personas.values():
        probs = model.watch_probability(p, range(ds.n_items))
        by_group.setdefault(p.conformity, []).append(probs)
    ranks = np.argsort(np.argsort(pop))
    for probs in by_group[1]:  # followers: watch probability is a monotone function of popularity
        assert np.corrcoef(np.argsort(np.argsort(probs)), ranks)[0, 1] > 0.99
    for probs in by_group[3]:  # mavericks (scale 0, genre weight 0): popularity plays no part
        assert np.ptp(probs) < 1e-9


def test_ratings_follow_the_persona_histogram():
    model, ds, personas = _model()
    rng = np.random.default_rng(4)
    real, sim = [], []
    for p in personas.values():
        plan = model.plan(p)
        sim.extend(plan.rating.stars(plan.rating.prediction[list(p.train_items)], rng).tolist())
        real.extend(p.train_ratings)
    real_hist = np.bincount(np.array(real, int), minlength=6)[1:] / len(real)
    sim_hist = np.bincount(np.array(sim, int), minlength=6)[1:] / len(sim)
    assert np.abs(real_hist - sim_hist).max() < 0.06


def test_needs_train_and_valid_pages():
    ds, _, personas = tiny_world()
    with pytest.raises(ValueError, match="TRAIN"):
        FastUserModel(ds, load_fast_user_config())
    model, ds, personas = _model()
    session = model.start_session(next(iter(personas.values())), 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="max_page_size"):
        session.react(Page(0, 0, tuple(range(65))))
