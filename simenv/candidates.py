"""The per-episode candidate set: a base recommender's top-n (or train popularity) plus a seeded exploration sample.

The set is fixed at reset and ordered best first: the base ranking, then the exploration sample in the
order drawn. Items in the persona's training history are never candidates.
"""

from __future__ import annotations

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
) -> np.ndarray:
    """Item ids (int64, length `n_candidates`): `n_candidates - n_explore` ranked ones, then `n_explore` random."""
    if not 0 <= n_explore <= n_candidates:
        raise ValueError(f"n_explore={n_explore} must be in 0..n_candidates={n_candidates}")
    available = np.ones(features.n_items, dtype=bool)
    train = np.asarray(persona.train_items, dtype=np.int64)
    available[train] = False
    n_free = int(available.sum())
    if n_free < n_candidates:
        raise ValueError(
            f"persona {persona.user_id}: only {n_free} items outside its train history, "
            f"fewer than n_candidates={n_candidates}"
        )
    n_base = n_candidates - n_explore
    if recommender is None:
        order = features.popularity_order
        base = order[available[order]][:n_base]
    else:
        rec = recommender.recommend(persona.user_id, n_base, set(train.tolist()), rng, ())
        base = np.asarray(rec.item_ids, dtype=np.int64)
        if len(base) != n_base or len(set(base.tolist())) != n_base or not available[base].all():
            raise ValueError(
                f"candidate recommender {getattr(recommender, 'name', recommender)!r} returned "
                f"{len(base)} ids for k={n_base} (duplicates or train items included)"
            )
    available[base] = False
    explore = rng.choice(np.flatnonzero(available), size=n_explore, replace=False) if n_explore else base[:0]
    return np.concatenate([base, explore.astype(np.int64)])
