"""Recommender plugin classes that the spec tests name by import path (`tests.fixtures_plugins:PlainPop`):
written against the `Recommender` protocol alone, plus two that break it on purpose."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from simenv.records import Page, PageFeedback, Recommendation


class PlainPop:
    """A third-party recommender written against the protocol alone (no simrec base class): train
    popularity, ties to the lower id — the same policy as the registry's `pop`."""

    name = "plain-pop"
    fits = 0
    columns: list[str] = []  # the train frame's columns at the last fit (a plugin sees ratings and timestamps)

    def __init__(self, min_count: int = 0) -> None:
        self.min_count = min_count
        self.counts = np.zeros(0)

    def fit(self, train: pd.DataFrame, n_users: int, n_items: int, valid: pd.DataFrame | None = None) -> PlainPop:
        PlainPop.fits += 1
        PlainPop.columns = list(train.columns)
        self.counts = np.bincount(train["item_id"].to_numpy(), minlength=n_items).astype(np.float64)
        return self

    def score(self, user_id: int, history: Sequence[int] = ()) -> np.ndarray:
        return self.counts.copy()

    def recommend(self, user_id, k, exclude: Collection[int], rng, history=()) -> Recommendation:
        scores = self.counts.copy()
        scores[list(exclude)] = -np.inf
        page = np.argsort(-scores, kind="stable")[:k]
        if len(page) < k or not np.isfinite(scores[page]).all():
            raise ValueError(f"plain-pop: fewer than k={k} items allowed")
        return Recommendation(item_ids=tuple(int(i) for i in page))

    def observe(self, user_id: int, page: Page, feedback: PageFeedback) -> None:
        pass

    def save(self, path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        np.save(Path(path) / "counts.npy", self.counts)

    @classmethod
    def load(cls, path) -> PlainPop:
        model = cls()
        model.counts = np.load(Path(path) / "counts.npy")
        return model


class NoRecommend:
    def fit(self, train, n_users, n_items, valid=None):
        return self

    def score(self, user_id, history=()):
        return np.zeros(1)

    def observe(self, user_id, page, feedback) -> None: ...

    def save(self, path) -> None: ...

    @classmethod
    def load(cls, path):
        return cls()


class LeaksExcluded(PlainPop):
    """Shows the most popular item even when it is excluded (caught by check-recommender)."""

    def recommend(self, user_id, k, exclude, rng, history=()) -> Recommendation:
        page = super().recommend(user_id, k, (), rng, history)
        return page
