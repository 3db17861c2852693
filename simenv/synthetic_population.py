"""Synthetic populations larger than a dataset's users: N personas drawn with replacement from the real ones.

A member has its own user id (above every real id, so the two never collide) and copies one real persona's
traits, taste and train history, so any user model decides for it exactly as for that persona, but each member's
session is its own (own session slot, own random draws). This is how a 703-persona split becomes a population of
100,000 for a scale run (`simenv.vector_env.FastRecVectorEnv(population=...)`, `benchmarks/bench_scale.py`):
per-persona arrays stay sized by the real personas, per-session state by the sessions stepped at once.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from simenv.protocols import PagePolicy
from simenv.records import Page, PageFeedback, Persona, Recommendation


@dataclass(frozen=True, eq=False)
class SyntheticPopulation:
    """Members of a population: `user_ids[m]` is member m's id, `source[m]` the real user id it copies."""

    user_ids: np.ndarray  # (N,) int64, increasing
    source: np.ndarray  # (N,) int64, ids of real personas

    def __post_init__(self) -> None:
        if self.user_ids.shape != self.source.shape or self.user_ids.ndim != 1 or not len(self.user_ids):
            raise ValueError(f"population: user_ids {self.user_ids.shape} and source {self.source.shape} must be (N,)")
        if (np.diff(self.user_ids) <= 0).any():
            raise ValueError("population: user_ids must be strictly increasing")

    def __len__(self) -> int:
        return len(self.user_ids)


def draw_population(
    real_user_ids: Sequence[int] | np.ndarray, n: int, rng: np.random.Generator, first_id: int | None = None
) -> SyntheticPopulation:
    """`n` members, each copying a real persona drawn uniformly with replacement by `rng`; member ids run from
    `first_id` (default: one above the largest real id) upwards."""
    real = np.unique(np.asarray(real_user_ids, dtype=np.int64))
    if n < 1 or not len(real):
        raise ValueError(f"draw_population: n={n} members from {len(real)} real personas")
    start = int(real[-1]) + 1 if first_id is None else int(first_id)
    if np.searchsorted(real, start + n) > np.searchsorted(real, start):  # a real id inside start..start+n-1
        raise ValueError(f"first_id={first_id}: member ids {start}..{start + n - 1} would collide with real ids")
    source = real[rng.integers(len(real), size=n)]
    return SyntheticPopulation(np.arange(start, start + n, dtype=np.int64), source)


def member_personas(population: SyntheticPopulation, personas: Mapping[int, Persona]) -> dict[int, Persona]:
    """Persona records of the members (each its source's with the member's user id), for user models that take
    records (the LLM persona user through `simenv.runner.run_sessions`); user models that key per-user state by
    id then keep one plan and one memory per member."""
    missing = sorted(set(population.source.tolist()) - set(personas))
    if missing:
        raise ValueError(f"population: source ids {missing[:5]} have no persona")
    return {
        int(uid): replace(personas[int(src)], user_id=int(uid))
        for uid, src in zip(population.user_ids.tolist(), population.source.tolist(), strict=True)
    }


class SourceIdPolicy:
    """A page policy that serves members as the real users they copy: `recommend` and `observe` get the source
    id (a recommender trained on the dataset knows only real ids); everything else is the wrapped policy's."""

    def __init__(self, policy: PagePolicy, population: SyntheticPopulation) -> None:
        self.policy = policy
        self.name = policy.name
        self._source = dict(zip(population.user_ids.tolist(), population.source.tolist(), strict=True))

    def recommend(
        self, user_id: int, k: int, exclude: Collection[int], rng: np.random.Generator, history: Sequence[int] = ()
    ) -> Recommendation:
        return self.policy.recommend(self._source.get(user_id, user_id), k, exclude, rng, history)

    def observe(self, user_id: int, page: Page, feedback: PageFeedback) -> None:
        self.policy.observe(self._source.get(user_id, user_id), page, feedback)
