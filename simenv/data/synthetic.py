"""A small seeded synthetic dataset with planted taste structure, for fast unit tests.

Each user has a favourite genre; items of that genre are rated higher and watched more often. A
recommender or user model that learns anything should beat random on it by a clear margin.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simenv.data.dataset import Dataset, item_text

SYNTHETIC_GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi")


def make_synthetic(
    n_users: int = 200,
    n_items: int = 300,
    ratings_per_user: tuple[int, int] = (25, 60),
    seed: int = 0,
) -> Dataset:
    """Build a planted-structure dataset: users rate mostly items of their favourite genre, and rate them high."""
    rng = np.random.default_rng(seed)
    n_genres = len(SYNTHETIC_GENRES)
    primary = rng.integers(0, n_genres, size=n_items)
    secondary = rng.integers(0, n_genres, size=n_items)
    popularity = rng.pareto(1.5, size=n_items) + 1.0
    titles = [f"Movie {i:04d}" for i in range(n_items)]
    years = rng.integers(1950, 2000, size=n_items)
    genres = [
        tuple(sorted({SYNTHETIC_GENRES[p], SYNTHETIC_GENRES[s]})) for p, s in zip(primary, secondary, strict=True)
    ]
    items = pd.DataFrame(
        {
            "item_id": np.arange(n_items, dtype=np.int64),
            "title": titles,
            "year": pd.array(years, dtype="Int64"),
            "genres": genres,
            "text": [item_text(t, int(y), g) for t, y, g in zip(titles, years, genres, strict=True)],
        }
    )
    favourite = rng.integers(0, n_genres, size=n_users)
    users = pd.DataFrame(
        {
            "user_id": np.arange(n_users, dtype=np.int64),
            "favourite_genre": [SYNTHETIC_GENRES[f] for f in favourite],
        }
    )
    rows = []
    for u in range(n_users):
        matches = (primary == favourite[u]) | (secondary == favourite[u])
        weight = popularity * np.where(matches, 8.0, 1.0)
        count = int(rng.integers(ratings_per_user[0], ratings_per_user[1] + 1))
        chosen = rng.choice(n_items, size=min(count, n_items), replace=False, p=weight / weight.sum())
        base = np.where(matches[chosen], 4.3, 2.4)
        ratings = np.clip(np.rint(base + rng.normal(0, 0.7, size=len(chosen))), 1, 5)
        stamps = np.sort(rng.integers(0, 10_000_000, size=len(chosen)))
        for i, r, t in zip(chosen, ratings, stamps, strict=True):
            rows.append((u, int(i), float(r), int(t)))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    interactions = interactions.astype(
        {"user_id": "int64", "item_id": "int64", "rating": "float32", "timestamp": "int64"}
    )
    interactions = interactions.sort_values(["user_id", "timestamp", "item_id"], ignore_index=True)
    return Dataset(
        name=f"synthetic-{seed}",
        items=items,
        users=users,
        interactions=interactions,
        item_raw_ids=np.array([str(i) for i in range(n_items)], dtype=object),
        user_raw_ids=np.array([str(u) for u in range(n_users)], dtype=object),
    )
