"""Non-LLM signals about a (persona, item) pair, all computed from the TRAIN split only.

Each signal is a per-persona standardised score over the whole catalog (mean 0, sd 1 across items), so
weights in `users.toml` are comparable:
- genre:      lift of the item's genres in the persona's train history over their share in all train ratings
              (log of smoothed share ratio, averaged over the item's genres);
- embedding:  cosine between the persona's taste text and the item text (injected embedder);
- collab:     item-item cosine co-occurrence (kNN-style) summed over the persona's train items. This is a
              collaborative-filtering prior: a user simulated with it rewards recommenders that exploit the same
              co-occurrence structure (MF, LightGCN), which is the circularity risk `benchmarks/bench_agents.py
              --fidelity` measures;
- popularity: log train count of the item (global, the same for every persona).
The rating baseline (item mean + persona bias + persona genre deviation, all shrunk) and the per-persona
cut points that map it to 1..5 stars also live here, shared by the LLM user and the fast user.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from simenv.data.dataset import Dataset
from simenv.kernel import interview_scores
from simenv.records import Persona


def standardise(x: np.ndarray) -> np.ndarray:
    """(x - mean) / sd as float32; a constant vector becomes zeros."""
    x = np.asarray(x, dtype=np.float64)
    sd = float(x.std())
    if sd <= 1e-12:
        return np.zeros_like(x, dtype=np.float32)
    return ((x - x.mean()) / sd).astype(np.float32)


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def solve_bias(scores: np.ndarray, target: float, iterations: int = 60) -> float:
    """The b with mean(sigmoid(b + scores)) == target (bisection; the mean is increasing in b)."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"target watch rate must be in (0, 1), got {target!r}")
    lo, hi = -30.0, 30.0
    s = np.asarray(scores, dtype=np.float64)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if sigmoid(mid + s).mean() < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True, eq=False)
class TrainStats:
    """Catalog-level facts from the train interactions (never valid/test)."""

    n_items: int
    counts: np.ndarray  # (n_items,) train ratings per item
    item_mean: np.ndarray  # (n_items,) mean train rating, shrunk toward the global mean
    global_mean: float
    genre_norm: np.ndarray  # (n_items, n_genres) item genre rows scaled to sum 1
    genre_share: np.ndarray  # (n_genres,) share of each genre among train ratings (smoothed, sums to 1)
    popularity: np.ndarray  # (n_items,) standardised log1p(counts)
    rating_hist: np.ndarray  # (5,) share of 1..5 stars among train ratings

    @classmethod
    def from_train(cls, dataset: Dataset, train: pd.DataFrame, shrink: float = 5.0) -> TrainStats:
        missing = {"item_id", "rating"} - set(train.columns)
        if missing:
            raise ValueError(f"train interactions lack columns {sorted(missing)}")
        n = dataset.n_items
        items = train["item_id"].to_numpy(np.int64)
        ratings = train["rating"].to_numpy(np.float64)
        if len(items) and (items.min() < 0 or items.max() >= n):
            raise ValueError(f"train item_id out of range 0..{n - 1}: {int(items.min())}..{int(items.max())}")
        counts = np.bincount(items, minlength=n).astype(np.float64)
        sums = np.bincount(items, weights=ratings, minlength=n)
        mu = float(ratings.mean()) if len(ratings) else 3.0
        item_mean = (sums + shrink * mu) / (counts + shrink)
        g = dataset.genre_matrix.astype(np.float64)
        genre_norm = g / np.maximum(g.sum(axis=1, keepdims=True), 1.0)
        share = counts @ genre_norm + 1.0
        hist = np.bincount(np.clip(np.rint(ratings), 1, 5).astype(np.int64) - 1, minlength=5).astype(np.float64)
        return cls(
            n_items=n,
            counts=counts,
            item_mean=item_mean,
            global_mean=mu,
            genre_norm=genre_norm,
            genre_share=share / share.sum(),
            popularity=standardise(np.log1p(counts)),
            rating_hist=(hist + 1.0) / (hist.sum() + 5.0),
        )


def persona_arrays(persona: Persona) -> tuple[np.ndarray, np.ndarray]:
    items = np.asarray(persona.train_items, dtype=np.int64)
    ratings = np.asarray(persona.train_ratings, dtype=np.float64)
    if items.shape != ratings.shape:
        raise ValueError(
            f"persona {persona.user_id}: train_items ({len(items)}) and train_ratings ({len(ratings)}) differ"
        )
    return items, ratings


def genre_affinity(stats: TrainStats, persona: Persona, smoothing: float = 5.0) -> np.ndarray:
    """Per-genre log lift of the persona's train genre share over the population share."""
    items, _ = persona_arrays(persona)
    counts = stats.genre_norm[items].sum(axis=0)
    share = (counts + smoothing * stats.genre_share) / (len(items) + smoothing)
    return np.log(share / stats.genre_share)


def genre_signal(stats: TrainStats, persona: Persona) -> np.ndarray:
    """Standardised genre-lift score of every catalog item for this persona."""
    return standardise(stats.genre_norm @ genre_affinity(stats, persona))


def embedding_signal(item_vectors: np.ndarray, taste_vector: np.ndarray) -> np.ndarray:
    """Standardised cosine between the taste embedding and every item embedding (rows unit-normalised)."""
    return standardise(item_vectors @ taste_vector)


class CollabPrior:
    """Item-item cosine co-occurrence from the binary train matrix, pruned to each item's top neighbours."""

    def __init__(self, similarity: np.ndarray) -> None:
        self.similarity = similarity

    @classmethod
    def from_train(
        cls, train: pd.DataFrame, n_users: int, n_items: int, neighbours: int = 100, chunk: int = 1024
    ) -> CollabPrior:
        users = train["user_id"].to_numpy(np.int64)
        items = train["item_id"].to_numpy(np.int64)
        co = np.zeros((n_items, n_items), dtype=np.float32)
        order = np.argsort(users, kind="stable")
        users, items = users[order], items[order]
        bounds = np.searchsorted(users, np.arange(0, n_users + chunk, chunk))
        for a, b in zip(bounds[:-1], bounds[1:], strict=False):
            if a == b:
                continue
            u0 = users[a]
            x = np.zeros((int(users[b - 1] - u0) + 1, n_items), dtype=np.float32)
            x[users[a:b] - u0, items[a:b]] = 1.0
            co += x.T @ x
        degree = np.sqrt(np.maximum(np.diag(co).copy(), 1.0))
        sim = co / degree[:, None] / degree[None, :]
        np.fill_diagonal(sim, 0.0)
        if 0 < neighbours < n_items:
            cut = np.partition(sim, n_items - neighbours, axis=1)[:, n_items - neighbours][:, None]
            sim = np.where(sim >= cut, sim, 0.0).astype(np.float32)
        return cls(sim)

    def signal(self, persona: Persona) -> np.ndarray:
        items, _ = persona_arrays(persona)
        return standardise(np.log1p(self.similarity[items].sum(axis=0)))


@dataclass(frozen=True, eq=False)
class RatingPlan:
    """A persona's baseline rating prediction over the catalog and the 4 cut points that turn it into stars."""

    prediction: np.ndarray  # (n_items,) float32
    cuts: np.ndarray  # (4,) increasing
    noise: float

    def stars(self, values: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Map continuous values to 1..5 by the cut points, adding logistic noise when `noise` > 0."""
        v = np.asarray(values, dtype=np.float64)
        if self.noise > 0:
            if rng is None:
                raise ValueError("sampled ratings (noise > 0) need the session rng")
            v = v + self.noise * rng.logistic(size=v.shape)
        return 1 + (v[..., None] > self.cuts).sum(axis=-1)

    def expected(self, values: np.ndarray) -> np.ndarray:
        """The mean of the stars drawn for continuous values: with noise, 1 + sum_k P(v + noise*logistic > c_k)
        (the point prediction of the star distribution); without, the stars themselves."""
        v = np.asarray(values, dtype=np.float64)
        if self.noise <= 0:
            return self.stars(v).astype(np.float64)
        return 1.0 + sigmoid((v[..., None] - self.cuts) / self.noise).sum(axis=-1)


ROUNDING_CUTS = np.array([1.5, 2.5, 3.5, 4.5])


def rating_plan(
    stats: TrainStats,
    persona: Persona,
    noise: float = 0.0,
    spread: float = 1.0,
    shrink: float = 5.0,
    hist_prior: float = 10.0,
) -> RatingPlan:
    """Baseline = item mean + persona bias + persona genre deviation (shrunk). Cut points: `spread` = 1 fits
    them so the star histogram of the persona's train items matches their (smoothed) real train histogram;
    `spread` = 0 is plain rounding (lowest RMSE, but a histogram bunched at 3-4 stars); in between, a blend."""
    items, ratings = persona_arrays(persona)
    resid = ratings - stats.item_mean[items]
    bias = resid.sum() / (len(items) + shrink)
    g = stats.genre_norm[items]
    genre_dev = (g * (resid - bias)[:, None]).sum(axis=0) / (g.sum(axis=0) + shrink)
    prediction = stats.item_mean + bias + stats.genre_norm @ genre_dev
    counts = np.bincount(np.clip(np.rint(ratings), 1, 5).astype(np.int64) - 1, minlength=5)
    hist = (counts + hist_prior * stats.rating_hist) / (len(items) + hist_prior)
    targets = np.cumsum(hist)[:4]
    train_pred = prediction[items] if len(items) else stats.item_mean
    cuts = spread * fit_cuts(train_pred, targets, noise) + (1.0 - spread) * ROUNDING_CUTS
    return RatingPlan(prediction.astype(np.float32), cuts, noise)


def fit_cuts(values: np.ndarray, targets: np.ndarray, noise: float, iterations: int = 50) -> np.ndarray:
    """Cut points c_k with P(value + noise*logistic <= c_k) == targets[k] over the given values."""
    v = np.asarray(values, dtype=np.float64)
    if noise <= 0:
        return np.quantile(v, np.clip(targets, 0.0, 1.0))
    lo = np.full(len(targets), v.min() - 20 * noise - 5)
    hi = np.full(len(targets), v.max() + 20 * noise + 5)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        cdf = sigmoid((mid[:, None] - v[None, :]) / noise).mean(axis=1)
        low = cdf < targets
        lo = np.where(low, mid, lo)
        hi = np.where(low, hi, mid)
    return 0.5 * (lo + hi)


def stats_interview_score(n_shown: int, n_watched: int, n_liked: int) -> int:
    """Satisfaction 1..10 from the session's counts (`simenv.kernel.interview_scores` for one session)."""
    return int(interview_scores(np.array([n_shown]), np.array([n_watched]), np.array([n_liked]))[0])
