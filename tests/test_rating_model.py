"""The rating model (agents.rating_model): a like classifier and an ordinal star distribution on its logit.

On synthetic data with a known ordinal rule: the fitted cut points come back, the like classifier is calibrated
on its fit data, P(stars >= 4) is the like probability exactly, and stars sampled through the page kernel's
rating plan (the path every simulated user takes) follow the fitted distribution.
"""

from __future__ import annotations

import numpy as np
import pytest

from agents.rating_model import (
    expected_stars,
    fit_like_classifier,
    fit_ordinal_cuts,
    like_logit,
    sigmoid,
    star_probabilities,
)
from agents.signals import RatingPlan

TRUE_CUTS = np.array([-3.0, -1.6, 0.0, 1.8])
BOOSTING = {"max_iter": 60, "learning_rate": 0.1, "max_leaf_nodes": 15, "min_samples_leaf": 40, "random_state": 0}


def synthetic(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features x (2 columns, one useless), the true like logit z = 1.5 x0, stars drawn from the ordinal rule."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    z = 1.5 * x[:, 0]
    u = rng.random(n)
    cdf = np.cumsum(star_probabilities(z, TRUE_CUTS), axis=1)
    stars = 1 + (u[:, None] > cdf[:, :4]).sum(axis=1)
    return x, z, stars.astype(np.float64)


def test_probabilities_are_a_distribution_with_the_like_probability_exact() -> None:
    z = np.linspace(-6, 6, 41)
    p = star_probabilities(z, TRUE_CUTS)
    assert (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[:, 3:].sum(axis=1), sigmoid(z))  # P(stars >= 4) = sigmoid(logit)
    np.testing.assert_allclose(expected_stars(z, TRUE_CUTS), p @ np.arange(1, 6))
    assert np.all(np.diff(expected_stars(z, TRUE_CUTS)) > 0)


def test_cut_points_are_recovered_from_the_true_logits() -> None:
    _, z, stars = synthetic()
    np.testing.assert_allclose(fit_ordinal_cuts(z, stars), TRUE_CUTS, atol=0.12)


def test_like_classifier_is_calibrated_on_its_fit_data_and_ranks_by_the_true_logit() -> None:
    x, z, stars = synthetic()
    model = fit_like_classifier(x, stars, BOOSTING)
    p = sigmoid(like_logit(model, x))
    liked = stars >= 4
    assert abs(p.mean() - liked.mean()) < 0.01
    bins = np.quantile(p, np.linspace(0, 1, 11))
    which = np.clip(np.searchsorted(bins, p, side="right") - 1, 0, 9)
    for b in range(10):  # reliability: each decile's mean probability is its observed like rate
        assert abs(p[which == b].mean() - liked[which == b].mean()) < 0.04, b
    assert np.corrcoef(like_logit(model, x), z)[0, 1] > 0.95
    with pytest.raises(ValueError, match="nothing to discriminate"):
        fit_like_classifier(x, np.full(len(x), 5.0), BOOSTING)


def test_sampled_stars_follow_the_fitted_distribution_through_the_rating_plan() -> None:
    _, z, stars = synthetic()
    cuts = fit_ordinal_cuts(z, stars)
    plan = RatingPlan(prediction=np.array([-2.0, 0.3, 2.5], dtype=np.float32), cuts=cuts, noise=1.0)
    rng = np.random.default_rng(5)
    draws = np.stack([plan.stars(plan.prediction, rng) for _ in range(40_000)])
    want = star_probabilities(plan.prediction, cuts)
    for item in range(3):
        got = np.bincount(draws[:, item] - 1, minlength=5) / len(draws)
        np.testing.assert_allclose(got, want[item], atol=0.01)
    np.testing.assert_allclose(plan.expected(plan.prediction), expected_stars(plan.prediction, cuts))
    with pytest.raises(ValueError, match="session rng"):
        plan.stars(plan.prediction)
