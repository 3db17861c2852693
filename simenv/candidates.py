"""The per-episode candidate set: a base recommender's top-n (or train popularity) plus a seeded exploration sample.

The set is fixed at reset and ordered best first: the base ranking, then the exploration sample in the
order drawn. Items in the persona's training history are never candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simenv.protocols import Recommender
from simenv.records import Persona
from simenv.spaces import ItemFeatures


def candidate_set(
    persona: Persona,
    n_candidates: int,
    n_explore: int,
    rng: np.random.Generator,
    features: ItemFeatures,
    recommender: Recommender | None = None,
    cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:
    """Item ids (int64, length `n_candidates`): `n_candidates - n_explore` ranked ones, then `n_explore` random.

    `cache` (popularity base only) keeps each persona's deterministic part between episodes.
    """
    if not 0 <= n_explore <= n_candidates:
        raise ValueError(f"n_explore={n_explore} must be in 0..n_candidates={n_candidates}")
    cached = cache.get(persona.user_id) if cache is not None and recommender is None else None
    if cached is None:
        cached = candidate_pool(persona, n_candidates, n_explore, features, recommender, rng)
        if cache is not None and recommender is None:
            cache[persona.user_id] = cached
    base, rest = cached
    if not n_explore:
        return base.copy()
    return np.concatenate((base, rest.take(sample_indices(rng, len(rest), n_explore))))


def candidate_pool(
    persona: Persona,
    n_candidates: int,
    n_explore: int,
    features: ItemFeatures,
    recommender: Recommender | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(base, rest): the `n_candidates - n_explore` ranked candidates and the ascending ids the exploration
    sample is drawn from (the catalog minus the persona's train history and the base).

    The deterministic part of `candidate_set` (with the popularity base); exposed so that the vectorised env
    (`simenv.vector_env`) draws its exploration sample from exactly the same pool. A `recommender` needs `rng`.
    """
    if not 0 <= n_explore <= n_candidates:
        raise ValueError(f"n_explore={n_explore} must be in 0..n_candidates={n_candidates}")
    n_base = n_candidates - n_explore
    available = np.ones(features.n_items, dtype=bool)
    train = np.asarray(persona.train_items, dtype=np.int64)
    available[train] = False
    n_free = int(available.sum())
    if n_free < n_candidates:
        raise ValueError(
            f"persona {persona.user_id}: only {n_free} items outside its train history, "
            f"fewer than n_candidates={n_candidates}"
        )
    if recommender is None:
        order = features.popularity_order
        base = order[available[order]][:n_base]
    else:
        if rng is None:
            raise ValueError("candidate_pool: a candidate recommender needs the env's rng")
        rec = recommender.recommend(persona.user_id, n_base, set(train.tolist()), rng, ())
        base = np.asarray(rec.item_ids, dtype=np.int64)
        if len(base) != n_base or len(set(base.tolist())) != n_base or not available[base].all():
            raise ValueError(
                f"candidate recommender {getattr(recommender, 'name', recommender)!r} returned "
                f"{len(base)} ids for k={n_base} (duplicates or train items included)"
            )
    available[base] = False
    return base, np.flatnonzero(available)


def sample_without_replacement(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """`k` distinct indices in 0..n-1, uniformly at random, in the order drawn (int64 array)."""
    return np.asarray(sample_indices(rng, n, k), dtype=np.int64)


def sample_indices(rng: np.random.Generator, n: int, k: int) -> list[int]:
    """`k` distinct indices in 0..n-1, uniformly at random, in the order drawn.

    Draws with replacement and keeps first occurrences (each kept index is uniform over the ones not yet
    kept), which for k << n costs a few small draws instead of a permutation of all n. An index is
    `floor(u * n)` for a uniform double `u` < 1 (always below n for n < 2**53; one `random` call is several
    times cheaper than `integers` at this size, and the non-uniformity, at most n / 2**53, is far below anything
    a test could see). The first batch has k draws, so usually no draw is wasted. Runs at every env reset.
    """
    if k > n:
        raise ValueError(f"cannot draw {k} distinct indices from {n}")
    if 4 * k > n:
        return rng.permutation(n)[:k].tolist()
    kept = dict.fromkeys((rng.random(k) * n).astype(np.int64).tolist())  # an insertion-ordered set
    while len(kept) < k:  # rare when k * k << n: top up with twice the number missing
        kept.update(dict.fromkeys((rng.random(2 * (k - len(kept))) * n).astype(np.int64).tolist()))
    return list(kept)[:k]


class CandidatePools:
    """Candidate sets for many sessions at once (the vectorised env): per persona, filled on first draw, the
    ranked base and the exploration pool of `candidate_pool`; `draw` gives (R, n_candidates) item ids with the
    distribution of `candidate_set` (the base, then a uniform ordered sample without replacement).
    """

    def __init__(
        self,
        personas: Sequence[Persona],
        n_candidates: int,
        n_explore: int,
        features: ItemFeatures,
        recommender: Recommender | None = None,
    ) -> None:
        n_p = len(personas)
        self.personas = personas
        self.n_candidates, self.n_explore = n_candidates, n_explore
        self.features = features
        self.recommender = recommender
        self.ready = np.zeros(n_p, dtype=bool)
        self._base = np.zeros((n_p, n_candidates - n_explore), dtype=np.int64)
        # Row p = persona p's pool (ascending ids), padded; np.zeros leaves untouched rows virtual.
        self._rest = np.zeros((n_p, features.n_items), dtype=np.int32)
        self._rest_len = np.zeros(n_p, dtype=np.int64)

    def prepare(self, persona: np.ndarray) -> list[int]:
        """Fill the pools of personas drawn for the first time; returns those persona indices."""
        new = np.unique(persona[~self.ready[persona]]).tolist()
        for p in new:
            if self.recommender is None:
                base, rest = candidate_pool(self.personas[p], self.n_candidates, self.n_explore, self.features)
                self._base[p] = base
                self._rest[p, : len(rest)] = rest
                self._rest_len[p] = len(rest)
            self.ready[p] = True
        return new

    def draw(self, persona: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(R, n_candidates) item ids for personas `persona` (indices; `prepare`d).

        Every sampled row is a uniform ordered draw without replacement, as `sample_indices` gives: rows drawn
        with replacement are redrawn whole while they hold a repeat (rare for n_explore**2 << pool size).
        """
        if self.recommender is not None:
            return np.stack(
                [
                    candidate_set(
                        self.personas[p], self.n_candidates, self.n_explore, rng, self.features, self.recommender
                    )
                    for p in persona.tolist()
                ]
            )
        base = self._base[persona]
        m = self.n_explore
        if m == 0:
            return base.copy()
        size = self._rest_len[persona]
        idx = np.empty((len(persona), m), dtype=np.int64)
        todo = np.arange(len(persona))
        while len(todo):
            draw = (rng.random((len(todo), m)) * size[todo, None]).astype(np.int64)
            ordered = np.sort(draw, axis=1)
            ok = ~(ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
            idx[todo[ok]] = draw[ok]
            todo = todo[~ok]
        explore = self._rest[persona[:, None], idx]
        return np.concatenate((base, explore), axis=1)
