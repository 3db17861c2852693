"""Random: a uniformly random page from the items not excluded. A stochastic policy with propensities."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from recommenders.base import BaseRecommender
from recommenders.sampling import sample_without_replacement
from simenv.records import Recommendation, as_int_tuple


class RandomRecommender(BaseRecommender):
    """Shows k items drawn uniformly without replacement from the non-excluded catalog.

    `Recommendation.propensities[j]` is the probability of the item at position j given the items above
    it, here 1 / (n_allowed - j); their product is the probability of the whole ordered page.
    """

    name = "random"
    stochastic = True

    def score_batch(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """One seeded random ranking per user (for offline metrics): uniform noise keyed by (seed, user)."""
        return np.stack(
            [np.random.default_rng([self.config.seed, int(u)]).random(self.n_items, dtype=np.float32) for u in user_ids]
        )

    def recommend(
        self,
        user_id: int,
        k: int,
        exclude: Collection[int],
        rng: np.random.Generator,
        history: Sequence[int] = (),
    ) -> Recommendation:
        self._check_user(user_id)
        allowed = np.flatnonzero(self.allowed_mask(exclude, k))
        chosen, propensities = sample_without_replacement(allowed, np.ones(allowed.size), k, rng)
        return Recommendation(item_ids=as_int_tuple(chosen), propensities=propensities)
