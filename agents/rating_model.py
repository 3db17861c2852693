"""The fitted rating model: a like classifier and the star distribution built on it (what a watcher rates).

Why: a point prediction of the rating cut into stars makes `like` (stars >= 4) a hard yes/no per
(persona, item) and gives one star per pair, so P_like is uncalibrated and the star histogram is only matched by
tuning cut points. This model fits what is simulated directly:
- like: P(rating >= 4 | watched), a gradient-boosted classifier (scikit-learn, seeded) of "the VALIDATION rating
  is 4 or 5" on the response model's train-only features plus the rating baseline (agents.signals.rating_plan);
  its logit z is the item's like logit.
- stars: a proportional-odds (ordinal logistic) distribution over 1..5 on that logit,
      P(stars <= k) = sigmoid(c_k - z),   c_1 < c_2 < c_3 = 0 < c_4,
  so P(stars >= 4) = sigmoid(z) is exactly the like classifier's probability; c_1, c_2 and c_4 are fitted by
  maximum likelihood on the fit users' out-of-fold logits and real VALIDATION stars.
Sampling stars from this distribution is "z plus standard logistic noise, counted against the cut points", which
is what `agents.signals.RatingPlan` does with `noise = 1` (prediction = z, cuts = c): the page kernel is
unchanged. The expected rating 1 + sum_k sigmoid(z - c_k) is the model's point prediction (what rating RMSE is
measured on; a sampled star is a draw, whose error includes the rating's own spread).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from sklearn.ensemble import HistGradientBoostingClassifier

LIKE_STARS = 4  # like = rating >= 4 (Agent4Rec's N_like / P_like)
LOGIT_CLIP = 1e-4  # like probabilities are clipped to [1e-4, 1 - 1e-4] before the logit (finite cut distances)
ORDINAL_SCALE = 1.0  # the logistic noise scale of the star distribution (the like logit's own scale)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def cuts_from(params: np.ndarray) -> np.ndarray:
    """Increasing cut points (c_1, c_2, 0, c_4) from 3 unconstrained numbers (log gaps)."""
    a, b, c = np.exp(np.asarray(params, dtype=np.float64))
    return np.array([-a - b, -b, 0.0, c])


def star_probabilities(logit: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """(n, 5) probabilities of 1..5 stars under P(stars <= k) = sigmoid(c_k - logit)."""
    z = np.asarray(logit, dtype=np.float64)
    cdf = sigmoid(np.asarray(cuts, dtype=np.float64)[None, :] - z[:, None])
    full = np.column_stack([np.zeros(len(z)), cdf, np.ones(len(z))])
    return np.diff(full, axis=1)


def expected_stars(logit: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """The distribution's mean rating, 1 + sum_k P(stars > k)."""
    z = np.asarray(logit, dtype=np.float64)
    return 1.0 + sigmoid(z[..., None] - np.asarray(cuts, dtype=np.float64)).sum(axis=-1)


def fit_ordinal_cuts(logit: np.ndarray, stars: np.ndarray) -> np.ndarray:
    """Maximum-likelihood cut points of the star distribution given each pair's like logit (c_3 fixed at 0)."""
    z = np.asarray(logit, dtype=np.float64)
    s = np.clip(np.rint(np.asarray(stars, dtype=np.float64)), 1, 5).astype(np.int64) - 1
    if z.size == 0:
        raise ValueError("fit_ordinal_cuts: no rated pairs")
    rows = np.arange(z.size)

    def nll(params: np.ndarray) -> float:
        p = star_probabilities(z, cuts_from(params))[rows, s]
        return float(-np.log(np.clip(p, 1e-12, None)).mean())

    start = np.log(np.array([1.5, 1.5, 2.0]))
    result = minimize(nll, start, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-8, "maxiter": 2000})
    return cuts_from(result.x)


def fit_like_classifier(x: np.ndarray, stars: np.ndarray, boosting: dict) -> HistGradientBoostingClassifier:
    """The like classifier: P(rating >= 4) on the rating features (boosting settings shared with the watch model)."""
    y = np.asarray(stars, dtype=np.float64) >= LIKE_STARS
    if y.min() == y.max():
        raise ValueError(f"like fit: every rating is {'liked' if y.max() else 'not liked'}; nothing to discriminate")
    return HistGradientBoostingClassifier(**boosting).fit(x, y)


def like_logit(model: HistGradientBoostingClassifier, x: np.ndarray) -> np.ndarray:
    """The clipped logit of P(rating >= 4) for rating-feature rows `x`."""
    p = np.clip(model.predict_proba(x)[:, 1], LOGIT_CLIP, 1.0 - LOGIT_CLIP)
    return np.log(p / (1.0 - p))
