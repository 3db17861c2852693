"""The TRAIN-rating factorisation (agents.rating_factors), one feature of the like model.

On ratings with a planted low-rank taste: a persona's fold-in prediction recovers its held-out ratings better
than item means plus its own bias; it reads the persona's train ratings only; fits are seeded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agents.config import ResponseConfig
from agents.rating_factors import fit_rating_factors

N_USERS, N_ITEMS, RANK = 300, 200, 3


def planted(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, held-out) ratings 1..5 = round(3.4 + u . v + noise), each user rating a random 40% of the items."""
    rng = np.random.default_rng(seed)
    u, v = rng.normal(0, 0.7, (N_USERS, RANK)), rng.normal(0, 0.7, (N_ITEMS, RANK))
    users, items = np.nonzero(rng.random((N_USERS, N_ITEMS)) < 0.4)
    rating = np.clip(np.rint(3.4 + (u[users] * v[items]).sum(1) + rng.normal(0, 0.4, len(users))), 1, 5)
    frame = pd.DataFrame({"user_id": users, "item_id": items, "rating": rating})
    held = rng.random(len(frame)) < 0.2
    return frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)


def _persona_ratings(train: pd.DataFrame, user: int) -> tuple[np.ndarray, np.ndarray]:
    rows = train[train["user_id"] == user]
    return rows["item_id"].to_numpy(np.int64), rows["rating"].to_numpy(np.float64)


def test_fold_in_recovers_held_out_ratings_better_than_means_and_bias() -> None:
    train, held = planted()
    factors = fit_rating_factors(train, N_ITEMS, rank=RANK, l2=5.0)
    item_mean = train.groupby("item_id")["rating"].mean().reindex(range(N_ITEMS)).to_numpy()
    errors, baseline_errors = [], []
    for user, rows in held.groupby("user_id"):
        items, ratings = _persona_ratings(train, int(user))
        prediction = factors.predict(items, ratings)
        bias = (ratings - item_mean[items]).mean()
        ids, real = rows["item_id"].to_numpy(), rows["rating"].to_numpy()
        errors.append(prediction[ids] - real)
        baseline_errors.append(item_mean[ids] + bias - real)
    rmse = float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))
    baseline = float(np.sqrt(np.mean(np.concatenate(baseline_errors) ** 2)))
    assert rmse < 0.8 * baseline, (rmse, baseline)


def test_prediction_reads_only_the_persona_train_ratings_and_fits_are_seeded() -> None:
    train, _ = planted()
    factors = fit_rating_factors(train, N_ITEMS, rank=RANK, seed=3)
    again = fit_rating_factors(train, N_ITEMS, rank=RANK, seed=3)
    np.testing.assert_array_equal(factors.item_factors, again.item_factors)
    items, ratings = _persona_ratings(train, 7)
    prediction = factors.predict(items, ratings)
    assert prediction.shape == (N_ITEMS,) and prediction.dtype == np.float32
    np.testing.assert_array_equal(prediction, factors.predict(items.copy(), ratings.copy()))
    higher = factors.predict(items, np.clip(ratings + 1, 1, 5))
    assert higher.mean() > prediction.mean()  # the persona's own ratings move its prediction
    cold = factors.predict(np.zeros(0, np.int64), np.zeros(0))  # no train ratings: the item side alone
    np.testing.assert_allclose(cold, factors.mean + factors.item_bias, rtol=1e-6)
    with pytest.raises(ValueError, match="no train ratings"):
        fit_rating_factors(train.iloc[:0], N_ITEMS)
    with pytest.raises(ValueError, match="rating_factors"):
        ResponseConfig(rating_factors=-1)
