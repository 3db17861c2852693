"""Popularity baselines: Pop (most-consumed train items first) and Agent4Rec's PopHead (a random page
sampled from the popular head, stochastic with propensities)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recommenders.base import BaseRecommender, RecommenderConfig, top_k
from recommenders.sampling import sample_without_replacement
from simenv.records import Recommendation, as_int_tuple


class PopRecommender(BaseRecommender):
    """Global popularity from train: items ranked by number of train positives (ties: lower id first)."""

    name = "pop"

    def _fit(self, valid: pd.DataFrame | None) -> None:
        assert self.user_items is not None
        self.popularity = np.bincount(self.user_items.indices, minlength=self.n_items).astype(np.float32)

    def score_batch(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        return np.broadcast_to(self.popularity, (len(user_ids), self.n_items))

    def _state(self) -> dict[str, torch.Tensor]:
        return {"popularity": torch.from_numpy(self.popularity)}

    def _restore(self, state) -> None:
        self.popularity = state["popularity"].numpy()


@dataclass(frozen=True)
class PopHeadConfig(RecommenderConfig):
    """`head_size` most popular non-excluded items form the pool (Agent4Rec: 30 x 20 = 600); the page is
    drawn from it uniformly, or with probability proportional to (count + 1) when weighting="popularity"."""

    head_size: int = 600
    weighting: str = "uniform"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.head_size, int) or self.head_size <= 0:
            raise ValueError(f"PopHeadConfig.head_size must be a positive int, got {self.head_size!r}")
        if self.weighting not in ("uniform", "popularity"):
            raise ValueError(f"PopHeadConfig.weighting must be 'uniform' or 'popularity', got {self.weighting!r}")


class PopHeadRecommender(PopRecommender):
    """Agent4Rec's Pop: k items sampled without replacement from the popular head of the allowed items.

    `propensities[j]` = P(item at position j | items above it); their product is the page's probability.
    """

    name = "pop-head"
    Config = PopHeadConfig
    stochastic = True

    def _weights(self, ids: np.ndarray) -> np.ndarray:
        if self.config.weighting == "popularity":
            return self.popularity[ids].astype(np.float64) + 1.0
        return np.ones(ids.size)

    def score_batch(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """One seeded sampled ranking per user (for offline metrics): Gumbel keys inside the global head,
        the tail below it in popularity order."""
        head = top_k(self.popularity, min(self.config.head_size, self.n_items))
        out = np.empty((len(user_ids), self.n_items), dtype=np.float32)
        for row, u in enumerate(user_ids):
            rng = np.random.default_rng([self.config.seed, int(u)])
            out[row] = self.popularity / (self.popularity.max() + 1.0) - 1e6
            out[row, head] = np.log(self._weights(head)) + rng.gumbel(size=head.size)
        return out

    def recommend(
        self,
        user_id: int,
        k: int,
        exclude: Collection[int],
        rng: np.random.Generator,
        history: Sequence[int] = (),
    ) -> Recommendation:
        self._check_user(user_id)
        if k > self.config.head_size:
            raise ValueError(f"pop-head: k={k} exceeds head_size={self.config.head_size}")
        allowed = self.allowed_mask(exclude, k)
        head = top_k(np.where(allowed, self.popularity, -np.inf), min(self.config.head_size, int(allowed.sum())))
        chosen, propensities = sample_without_replacement(head, self._weights(head), k, rng)
        return Recommendation(item_ids=as_int_tuple(chosen), propensities=propensities)
