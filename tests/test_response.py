"""The fitted response model: recovers a planted consumption rule, no leakage, cross-fitting, determinism."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from agents.config import ResponseConfig
from agents.persona import build_personas
from agents.response import fit_response_model
from simenv.data import agent4rec_split
from simenv.data.dataset import Split
from tests.fixtures_agents import planted_dataset


@pytest.fixture(scope="module", name="planted")
def planted_fixture() -> tuple[Split, dict, np.ndarray]:
    dataset, truth = planted_dataset()
    split = agent4rec_split(dataset, n_users=None, seed=0, min_liked=5)
    return split, build_personas(split), truth


CONFIG = ResponseConfig(feature_set="nocollab", candidates="scorers", max_iter=60, seed=0)


def test_fit_recovers_planted_rule(planted) -> None:
    """Fitted watch probability ranks test membership about as well as the planted rule itself, and it rises
    with the two planted signals (popularity and genre match)."""
    split, personas, truth = planted
    model = fit_response_model(split, personas, CONFIG)
    test = set(zip(split.test["user_id"].tolist(), split.test["item_id"].tolist(), strict=True))
    fitted, planted_score, label = [], [], []
    rng = np.random.default_rng(1)
    for u, persona in personas.items():
        unseen = np.setdiff1d(np.arange(split.dataset.n_items), persona.train_items)
        ids = rng.choice(unseen, size=40, replace=False)
        fitted += model.watch_probability(persona, ids).tolist()
        planted_score += truth[u, ids].tolist()
        label += [(u, int(i)) in test for i in ids]
    auc_fit, auc_rule = roc_auc_score(label, fitted), roc_auc_score(label, planted_score)
    assert auc_rule > 0.7  # the planted rule is learnable
    assert auc_fit >= auc_rule - 0.04, (auc_fit, auc_rule)
    # direction of the two planted effects (partial dependence, the tree-model analogue of a weight's sign)
    persona = personas[min(personas)]
    x = model.features.matrix(persona)
    names = model.features.names
    watch = model.models[0].watch
    for feature in ("log_pop", "genre"):
        j = names.index(feature)
        low, high = x.copy(), x.copy()
        low[:, j], high[:, j] = np.quantile(x[:, j], 0.1), np.quantile(x[:, j], 0.9)
        assert watch.predict_proba(high)[:, 1].mean() > watch.predict_proba(low)[:, 1].mean() + 0.02, feature


def _perturb(frame: pd.DataFrame, n_items: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = frame.copy()
    out["item_id"] = rng.integers(0, n_items, len(out))
    out["rating"] = rng.integers(1, 6, len(out)).astype("float32")
    return out


def test_no_leakage(planted) -> None:
    """Perturbing TEST changes neither features nor fitted outputs; perturbing VALID changes the fit only."""
    split, personas, _ = planted
    n = split.dataset.n_items
    base = fit_response_model(split, personas, CONFIG)
    test_perturbed = fit_response_model(replace(split, test=_perturb(split.test, n, 1)), personas, CONFIG)
    valid_perturbed = fit_response_model(replace(split, valid=_perturb(split.valid, n, 2)), personas, CONFIG)
    probe = [personas[u] for u in sorted(personas)[:20]]
    for p in probe:
        np.testing.assert_array_equal(base.features.matrix(p), test_perturbed.features.matrix(p))
        np.testing.assert_array_equal(base.features.matrix(p), valid_perturbed.features.matrix(p))
        np.testing.assert_array_equal(base.plan(p).watch_probability, test_perturbed.plan(p).watch_probability)
        np.testing.assert_array_equal(base.plan(p).rating.prediction, test_perturbed.plan(p).rating.prediction)
    changed = [
        not np.array_equal(base.plan(p).watch_probability, valid_perturbed.plan(p).watch_probability) for p in probe
    ]
    assert all(changed)


def test_cross_fitting_never_scores_a_persona_with_its_own_valid_ratings(planted) -> None:
    split, personas, _ = planted
    base = fit_response_model(split, personas, CONFIG)
    target = sorted(personas)[3]
    other = split.valid[split.valid["user_id"] != target]
    own = _perturb(split.valid[split.valid["user_id"] == target], split.dataset.n_items, 3)
    changed = fit_response_model(replace(split, valid=pd.concat([other, own])), personas, CONFIG)
    np.testing.assert_array_equal(
        base.plan(personas[target]).watch_probability, changed.plan(personas[target]).watch_probability
    )
    moved = [u for u in personas if base.fold_of(personas[u]) != base.fold_of(personas[target])][:5]
    assert any(
        not np.array_equal(base.plan(personas[u]).watch_probability, changed.plan(personas[u]).watch_probability)
        for u in moved
    )


def test_seeded_determinism_and_level(planted) -> None:
    split, personas, _ = planted
    a = fit_response_model(split, personas, CONFIG)
    b = fit_response_model(split, personas, CONFIG)
    valid_level = fit_response_model(split, personas, replace(CONFIG, level="valid"))
    p = personas[min(personas)]
    np.testing.assert_array_equal(a.plan(p).watch_probability, b.plan(p).watch_probability)
    np.testing.assert_array_equal(a.cuts, b.cuts)
    # "heldout" is twice the "valid" level wherever neither is clipped
    ratio = a.plan(p).watch_probability / valid_level.plan(p).watch_probability
    unclipped = valid_level.plan(p).watch_probability < 0.45
    np.testing.assert_allclose(ratio[unclipped & (valid_level.plan(p).watch_probability > 0.03)], 2.0, rtol=1e-5)


def test_rating_model_orders_planted_ratings(planted) -> None:
    """Favourite-genre items were rated ~4.4, others ~2.6: the fitted like logit separates them."""
    split, personas, _ = planted
    model = fit_response_model(split, personas, CONFIG)
    genres = np.array([g[0] for g in split.dataset.items["genres"]])
    gaps = []
    for p in list(personas.values())[:40]:
        liked = split.dataset.genre_vocabulary.index(p.liked_genres[0]) if p.liked_genres else None
        if liked is None:
            continue
        pred = model.plan(p).rating.prediction
        fav = genres == split.dataset.genre_vocabulary[liked]
        gaps.append(pred[fav].mean() - pred[~fav].mean())
    assert np.mean(gaps) > 0.8


def test_user_models_draw_from_the_response_model(planted) -> None:
    """The grounded decider and the silent user (hence the vector env, which calls its decide_batch) use the fitted
    watch probability and rating plan; a fitted kind without a model is a clear error."""
    from agents.config import DecisionConfig
    from agents.decision import GroundedDecider
    from agents.silent_user import SilentUserModel

    split, personas, _ = planted
    model = fit_response_model(split, personas, CONFIG)
    persona = personas[min(personas)]
    ids = np.arange(20)
    decider = GroundedDecider(split.dataset, split.train, DecisionConfig(response="nocollab"), response=model)
    np.testing.assert_allclose(
        decider.watch_probability(persona, ids), model.watch_probability(persona, ids), rtol=1e-5, atol=1e-6
    )
    assert decider.plan(persona).rating is model.plan(persona).rating
    silent = SilentUserModel(decider)
    np.testing.assert_allclose(silent.watch_probability(persona, ids), model.watch_probability(persona, ids), rtol=1e-5)
    with pytest.raises(ValueError, match="response model"):
        GroundedDecider(split.dataset, split.train, DecisionConfig(response="nocollab"))


def test_source_rank_features_carry_what_a_recommender_knows(planted) -> None:
    """A source's ranking becomes a `rank:` feature column holding each item's log rank among the persona's unseen
    items, and the fit uses it: with a ranking that knows the planted rule, items it ranks first get a higher
    watch probability than the same items moved to the bottom of the ranking."""
    split, personas, truth = planted
    n_users, n_items = truth.shape
    scores = truth.astype(np.float64).copy()
    for u, persona in personas.items():
        scores[u, list(persona.train_items)] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")
    position = np.empty(order.shape)
    np.put_along_axis(position, order, np.arange(n_items, dtype=np.float64)[None, :], axis=1)
    rankings = {"oracle": np.log1p(position).astype(np.float16)}
    without = fit_response_model(split, personas, CONFIG)
    model = fit_response_model(split, personas, CONFIG, rankings=rankings)
    assert model.features.names == (*without.features.names, "rank:oracle")
    persona = personas[min(personas)]
    x = model.features.matrix(persona)
    j = model.features.names.index("rank:oracle")
    np.testing.assert_allclose(x[:, j], np.log1p(position[persona.user_id]), rtol=2e-3)
    top = order[persona.user_id, :20]
    moved = x[top].copy()
    moved[:, j] = np.log1p(n_items - 30)
    watch = model.models[0].watch
    assert watch.predict_proba(x[top])[:, 1].mean() > watch.predict_proba(moved)[:, 1].mean() + 0.02


def test_page_kernel_samples_stars_from_the_fitted_distribution(planted) -> None:
    """Stars the decider gives on pages (decide_batch, every user's path) follow the rating model's distribution
    for each item, and P(stars >= 4) is the like classifier's probability."""
    from agents.config import DecisionConfig
    from agents.decision import GroundedDecider
    from agents.rating_model import sigmoid, star_probabilities

    split, personas, _ = planted
    model = fit_response_model(split, personas, CONFIG)
    persona = personas[min(personas)]
    decider = GroundedDecider(split.dataset, split.train, DecisionConfig(response="nocollab"), response=model)
    ids = np.array([0, 7, 31, 64])
    n = 6000
    rows = np.repeat(ids[None], n, axis=0)
    rngs = [np.random.default_rng([9, k]) for k in range(n)]
    _, stars, _ = decider.decide_batch([persona] * n, rows, np.full(n, 4), np.zeros(n, np.int64), rngs)
    rating = model.plan(persona).rating
    want = star_probabilities(rating.prediction[ids], rating.cuts)
    for k in range(len(ids)):
        got = np.bincount(stars[:, k] - 1, minlength=5) / n
        np.testing.assert_allclose(got, want[k], atol=0.025)
    np.testing.assert_allclose(want[:, 3:].sum(axis=1), sigmoid(rating.prediction[ids]), rtol=1e-6)


def test_lazy_plans_decide_exactly_as_whole_plans(planted, tmp_path) -> None:
    """A lazy model (validate's leave-one-source-out users) predicts only the items sessions ask for, and the
    pages decide exactly as with whole-catalog plans; its cache entry holds no plans, and loading that entry
    without `lazy` predicts whole plans again."""
    from agents.config import DecisionConfig
    from agents.decision import GroundedDecider
    from agents.response import load_or_fit

    split, personas, _ = planted
    whole = load_or_fit(tmp_path / "whole", split, personas, CONFIG)
    lazy = load_or_fit(tmp_path / "lazy", split, personas, CONFIG, lazy=True)
    assert lazy.lazy and not lazy._plans
    config = DecisionConfig(response="nocollab")
    deciders = [GroundedDecider(split.dataset, split.train, config, response=m) for m in (whole, lazy)]
    people = [personas[u] for u in sorted(personas)[:12]]
    page_rng = np.random.default_rng(5)
    for page in range(3):
        ids = np.stack([page_rng.choice(split.dataset.n_items, 6, replace=False) for _ in people])
        sizes = np.full(len(people), 6)
        sizes[::4] = 4  # padded rows: their tail is never predicted
        index = np.full(len(people), page)
        out = [
            d.decide_batch(people, ids, sizes, index, [np.random.default_rng([7, page, i]) for i in range(len(people))])
            for d in deciders
        ]
        for a, b in zip(*out, strict=True):
            np.testing.assert_array_equal(a, b)
    shown = people[1]
    predicted = np.isfinite(lazy.plan(shown).watch_logit)
    assert 0 < predicted.sum() <= 18 < split.dataset.n_items
    np.testing.assert_array_equal(lazy.plan(shown).watch_logit[predicted], whole.plan(shown).watch_logit[predicted])
    np.testing.assert_array_equal(
        lazy.plan(shown).rating.prediction[predicted], whole.plan(shown).rating.prediction[predicted]
    )
    other = np.flatnonzero(~predicted)[:5]  # never shown: predicted on request, equal to the whole plan
    np.testing.assert_array_equal(
        deciders[1].watch_probability(shown, other), deciders[0].watch_probability(shown, other)
    )
    np.testing.assert_array_equal(deciders[1].expected_rating(shown, other), deciders[0].expected_rating(shown, other))
    reloaded = load_or_fit(tmp_path / "lazy", split, personas, CONFIG)
    assert not reloaded.lazy and not reloaded._plans
    np.testing.assert_array_equal(reloaded.plan(shown).watch_logit, whole.plan(shown).watch_logit)


def test_star_cuts_from_one_predict_per_fold_equal_the_per_user_ones(planted) -> None:
    """The cut points are fitted on every fit user's out-of-fold like logits; predicting a fold's users in one call
    (as the fit does) gives exactly the per-user logits, in user order."""
    from agents.rating_model import fit_ordinal_cuts, like_logit
    from agents.response import _fit_blocks, _fit_star_cuts, _user_items

    split, personas, _ = planted
    model = fit_response_model(split, personas, CONFIG)
    population = [personas[u] for u in sorted(personas)]
    valid = _user_items(split.valid)
    blocks = _fit_blocks(model.features, model.factors, population, valid, model.folds, CONFIG, None)
    rated = [b for b in blocks if len(b.stars)]
    assert {b.fold for b in rated[:10]} == set(range(CONFIG.folds))  # the folds interleave in user order
    per_user = [like_logit(model.models[b.fold].rating, b.rating_x) for b in rated]
    expected = fit_ordinal_cuts(np.concatenate(per_user), np.concatenate([b.stars for b in rated]))
    assert np.array_equal(_fit_star_cuts(blocks, model.models), expected)
    assert np.array_equal(model.cuts, expected)
