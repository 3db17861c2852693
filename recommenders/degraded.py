"""Policies of known, lower quality built from a trained recommender, for validating the simulator.

`simrec validate` needs policies whose real quality differs in a known direction (a simulator that ranks
them must rank these below their base). Each wrapper keeps the `Recommender` protocol:
- NoisyRanking:   the base's per-user standardised scores plus Gaussian noise of sd `noise` (fixed per user and
                  seed, so the same user sees the same noisy ranking within a session);
- TopNSampling:   each page sampled uniformly without replacement from the base's top `pool` allowed items;
- PopularityBand: items ranked by train popularity, skipping the `skip` most popular (a weaker Pop);
- Rescored:       the base's sessions ranked by another score (validate's adversarial simulator-greedy policy).
Under-trained checkpoints are built by training a registry model for a few epochs (experiments.validate).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import numpy as np
import pandas as pd

from recommenders.base import batched_pages, best_page, top_k
from recommenders.sampling import sample_without_replacement
from simenv.protocols import Recommender
from simenv.records import Page, PageFeedback, PageRequest, Recommendation, as_int_tuple


class _Wrapper:
    """Delegates session bookkeeping to the base recommender; subclasses change scoring or selection."""

    stochastic = False

    def __init__(self, base: Recommender, name: str, seed: int = 0) -> None:
        self.base = base
        self.name = name
        self.seed = int(seed)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, base={self.base!r})"

    @property
    def n_items(self) -> int:
        return int(self.base.n_items)  # type: ignore[attr-defined]

    def fit(self, train: pd.DataFrame, n_users: int, n_items: int, valid: pd.DataFrame | None = None) -> _Wrapper:
        self.base.fit(train, n_users, n_items, valid=valid)
        return self

    def score(self, user_id: int, history: Sequence[int] = ()) -> np.ndarray:
        return self.base.score(user_id, history)

    def observe(self, user_id: int, page: Page, feedback: PageFeedback) -> None:
        self.base.observe(user_id, page, feedback)

    def end_session(self, user_id: int | None = None) -> None:
        self.base.end_session(user_id)  # type: ignore[attr-defined]

    def session_history(self, user_id: int, history: Sequence[int] = ()) -> list[int]:
        return self.base.session_history(user_id, history)  # type: ignore[attr-defined]

    def _allowed(self, exclude: Collection[int], k: int) -> np.ndarray:
        allowed = np.ones(self.n_items, dtype=bool)
        allowed[np.asarray(list(exclude), dtype=np.int64)] = False
        if int(allowed.sum()) < k:
            raise ValueError(f"{self.name}: asked for k={k} items but only {int(allowed.sum())} are not excluded")
        return allowed


class NoisyRanking(_Wrapper):
    """Base scores, standardised per user, plus N(0, noise^2) drawn once per (seed, user)."""

    def __init__(self, base: Recommender, name: str, noise: float, seed: int = 0) -> None:
        super().__init__(base, name, seed)
        if noise < 0:
            raise ValueError(f"{name}: noise must be >= 0, got {noise}")
        self.noise = float(noise)

    def score(self, user_id: int, history: Sequence[int] = ()) -> np.ndarray:
        return self._noisy(user_id, self.base.score(user_id, history))

    def _noisy(self, user_id: int, base_scores: np.ndarray) -> np.ndarray:
        """The user's base scores standardised, plus the user's fixed noise (float32)."""
        raw = np.asarray(base_scores, dtype=np.float64)
        finite = np.isfinite(raw)
        z = np.zeros_like(raw)
        if finite.any():
            sd = float(raw[finite].std()) or 1.0
            z[finite] = (raw[finite] - raw[finite].mean()) / sd
        z[~finite] = -1e9
        rng = np.random.default_rng([self.seed, int(user_id), 7])
        return (z + self.noise * rng.standard_normal(raw.size)).astype(np.float32)

    def recommend(
        self, user_id: int, k: int, exclude: Collection[int], rng: np.random.Generator, history: Sequence[int] = ()
    ) -> Recommendation:
        allowed = self._allowed(exclude, k)
        return best_page(self.score(user_id, self.session_history(user_id, history)), allowed, k)

    def recommend_batch(self, requests: Sequence[PageRequest]) -> list[Recommendation]:
        """`recommend` for many users from one batched scoring pass of the base (`BaseRecommender.batch_scores`),
        the same pages: a user whose k + 1 best noisy scores are within rounding of each other is served alone."""

        def one(r: PageRequest) -> Recommendation:
            return self.recommend(r.user_id, r.k, r.exclude, r.rng, r.history)

        batch_scores = getattr(self.base, "batch_scores", None)
        rows = batch_scores(requests) if batch_scores is not None else None
        if rows is None:
            return [one(r) for r in requests]
        noisy = (self._noisy(r.user_id, raw) for r, raw in zip(requests, rows, strict=True))
        tie = self.base.BATCH_TIE  # type: ignore[attr-defined]
        return batched_pages(requests, noisy, lambda r: self._allowed(r.exclude, r.k), tie, one)


class TopNSampling(_Wrapper):
    """A page drawn uniformly from the base's top-`pool` allowed items (stochastic, with propensities)."""

    stochastic = True

    def __init__(self, base: Recommender, name: str, pool: int, seed: int = 0) -> None:
        super().__init__(base, name, seed)
        if pool < 1:
            raise ValueError(f"{name}: pool must be >= 1, got {pool}")
        self.pool = int(pool)

    def recommend(
        self, user_id: int, k: int, exclude: Collection[int], rng: np.random.Generator, history: Sequence[int] = ()
    ) -> Recommendation:
        allowed = self._allowed(exclude, k)
        scores = np.asarray(self.base.score(user_id, self.session_history(user_id, history)), dtype=np.float64)
        masked = np.where(allowed, scores, -np.inf)
        head = top_k(masked, max(self.pool, k))
        head = head[np.isfinite(masked[head])]
        picked, propensities = sample_without_replacement(head, np.ones(head.size), k, rng)
        return Recommendation(
            item_ids=as_int_tuple(picked),
            scores=tuple(float(scores[i]) for i in picked),
            propensities=tuple(float(p) for p in propensities),
        )


class PopularityBand(_Wrapper):
    """Train popularity order without the `skip` most popular items (ranked after everything else)."""

    def __init__(self, base: Recommender, name: str, skip: int, seed: int = 0) -> None:
        super().__init__(base, name, seed)
        self.skip = int(skip)

    def score(self, user_id: int, history: Sequence[int] = ()) -> np.ndarray:
        pop = np.asarray(self.base.score(user_id, history), dtype=np.float64)
        order = np.argsort(-pop, kind="stable")
        score = -np.arange(pop.size, dtype=np.float64)
        out = np.empty(pop.size, dtype=np.float64)
        out[order] = score
        out[order[: self.skip]] -= pop.size  # the head goes last
        return out.astype(np.float32)

    def recommend(
        self, user_id: int, k: int, exclude: Collection[int], rng: np.random.Generator, history: Sequence[int] = ()
    ) -> Recommendation:
        allowed = self._allowed(exclude, k)
        return best_page(self.score(user_id, history), allowed, k)


class Rescored(_Wrapper):
    """The base recommender's sessions, ranked by another per-user score over the catalog (`score_of(user)`).

    `simrec validate` ranks by a fitted response model's own watch probability this way: the policy a simulator
    would call optimal, to check that the simulator does not over-believe its own optimum."""

    def __init__(self, base: Recommender, name: str, score_of: Callable[[int], np.ndarray]) -> None:
        super().__init__(base, name)
        self.score_of = score_of

    def score(self, user_id: int, history: Sequence[int] = ()) -> np.ndarray:
        return np.asarray(self.score_of(user_id), dtype=np.float64)

    def recommend(
        self, user_id: int, k: int, exclude: Collection[int], rng: np.random.Generator, history: Sequence[int] = ()
    ) -> Recommendation:
        allowed = self._allowed(exclude, k)
        return best_page(self.score(user_id), allowed, k)
