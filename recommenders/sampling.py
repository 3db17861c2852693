"""Sampling a ranked page without replacement (Plackett-Luce) with exact per-position propensities."""

from __future__ import annotations

import numpy as np


def sample_without_replacement(
    ids: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Draw k of `ids` in order, each step with probability proportional to `weights` among those left.

    Uses the Gumbel-top-k trick (one draw of k ordered items is exactly a Plackett-Luce sample).
    Returns the ids and, per position, P(item | items above it) = w_j / (sum of weights still left).
    """
    if ids.shape != weights.shape:
        raise ValueError(f"ids and weights differ in shape: {ids.shape} vs {weights.shape}")
    if k > ids.size:
        raise ValueError(f"cannot sample k={k} items from {ids.size}")
    if np.any(weights <= 0) or not np.all(np.isfinite(weights)):
        raise ValueError("sampling weights must be positive and finite")
    keys = np.log(weights) + rng.gumbel(size=weights.size)
    picked = np.argsort(-keys, kind="stable")[:k]
    w = weights[picked]
    remaining = weights.sum() - np.concatenate([[0.0], np.cumsum(w)[:-1]])
    return ids[picked], tuple(float(p) for p in w / remaining)
