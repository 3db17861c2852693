"""Shared fixtures for the agents tests: a tiny synthetic catalog, its Agent4Rec-style split and personas, a
hand-written persona, and a dataset with a planted consumption rule (for the fitted response model).

Personas come from `agents.persona.build_personas` when that module exists; until then a minimal stand-in
computes the same Persona fields from the train split (clearly marked below).
"""

from __future__ import annotations

from collections import Counter
from functools import cache

import numpy as np
import pandas as pd
import pytest

from simenv.data.dataset import Dataset, Split, item_text
from simenv.data.synthetic import make_synthetic
from simenv.records import Persona


def _terciles(values: np.ndarray, cuts: tuple[float, float]) -> np.ndarray:
    lo, hi = np.quantile(values, cuts)
    return 1 + (values > lo).astype(int) + (values > hi).astype(int)


def standin_personas(split: Split) -> dict[int, Persona]:
    """Stand-in for agents.persona.build_personas (Agent4Rec's traits, from train only)."""
    ds, train = split.dataset, split.train
    item_mean = train.groupby("item_id")["rating"].mean()
    rows = {}
    for u, g in train.groupby("user_id"):
        items = g["item_id"].to_numpy()
        ratings = g["rating"].to_numpy(np.float64)
        conf = float(np.mean((ratings - item_mean.loc[items].to_numpy()) ** 2))
        genres = Counter(x for i in items for x in ds.catalog[i].genres)
        total, acc, div = sum(genres.values()), 0, 0
        for _, c in genres.most_common():
            acc += c
            div += 1
            if acc >= 0.8 * total:
                break
        rows[int(u)] = (items, ratings, len(items), conf, div)
    users = sorted(rows)
    act = _terciles(np.array([rows[u][2] for u in users], float), (0.6, 0.9))
    conf = _terciles(np.array([rows[u][3] for u in users], float), (0.25, 0.8))
    div = _terciles(np.array([rows[u][4] for u in users], float), (0.33, 0.66))
    out = {}
    for k, u in enumerate(users):
        items, ratings, n, c, d = rows[u]
        liked_g = Counter(x for i, r in zip(items, ratings, strict=True) if r >= 4 for x in ds.catalog[i].genres)
        disliked_g = Counter(x for i, r in zip(items, ratings, strict=True) if r <= 2 for x in ds.catalog[i].genres)
        liked = tuple(g for g, _ in liked_g.most_common(2))
        disliked = tuple(g for g, _ in disliked_g.most_common(2) if g not in liked)
        liked_titles = tuple(ds.catalog[i].title for i, r in zip(items, ratings, strict=True) if r >= 4)[:5]
        disliked_titles = tuple(ds.catalog[i].title for i, r in zip(items, ratings, strict=True) if r <= 2)[:3]
        taste = f"You enjoy {', '.join(liked) or 'many kinds of'} movies" + (
            f" and avoid {', '.join(disliked)} movies." if disliked else "."
        )
        out[u] = Persona(
            user_id=u,
            activity=int(act[k]),
            conformity=int(conf[k]),
            diversity=int(div[k]),
            activity_value=float(n),
            conformity_value=float(c),
            diversity_value=float(d),
            liked_genres=liked,
            disliked_genres=disliked,
            liked_titles=liked_titles,
            disliked_titles=disliked_titles,
            taste_text=taste,
            train_items=tuple(int(i) for i in items),
            train_ratings=tuple(float(r) for r in ratings),
        )
    return out


def build_personas(split: Split) -> dict[int, Persona]:
    """The real persona builder once it has landed, else the stand-in above."""
    try:
        from agents.persona import build_personas as real
    except ImportError:
        return standin_personas(split)
    return real(split)


@cache
def tiny_world(n_users: int = 80, n_items: int = 120, seed: int = 3) -> tuple[Dataset, Split, dict[int, Persona]]:
    """A synthetic dataset with planted favourite genres, an Agent4Rec split and personas (cached per process)."""
    from simenv.data.splits import agent4rec_split

    ds = make_synthetic(n_users=n_users, n_items=n_items, ratings_per_user=(30, 60), seed=seed)
    split = agent4rec_split(ds, n_users=None, seed=seed, min_liked=5)
    return ds, split, build_personas(split)


@pytest.fixture
def world() -> tuple[Dataset, Split, dict[int, Persona]]:
    return tiny_world()


@pytest.fixture
def train(world) -> pd.DataFrame:
    return world[1].train


PLANTED_GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi")
GENRE_BOOST = 2.5  # planted: log-odds of consuming an item of the user's favourite genre, over another genre


def planted_dataset(n_users: int = 240, n_items: int = 240, seed: int = 0) -> tuple[Dataset, np.ndarray]:
    """Users consume items with log-weight log(popularity) + GENRE_BOOST * [favourite genre]; returns the
    dataset and the planted (n_users, n_items) log-weight matrix."""
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, len(PLANTED_GENRES), n_items)
    log_pop = rng.normal(0.0, 1.0, n_items)
    favourite = rng.integers(0, len(PLANTED_GENRES), n_users)
    truth = log_pop[None, :] + GENRE_BOOST * (genre[None, :] == favourite[:, None])
    rows = []
    for u in range(n_users):
        w = np.exp(truth[u])
        chosen = rng.choice(n_items, size=int(rng.integers(50, 80)), replace=False, p=w / w.sum())
        match = genre[chosen] == favourite[u]
        ratings = np.clip(np.rint(np.where(match, 4.4, 2.6) + rng.normal(0, 0.6, chosen.size)), 1, 5)
        rows += [(u, int(i), float(r), t) for t, (i, r) in enumerate(zip(chosen, ratings, strict=True))]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).astype(
        {"user_id": "int64", "item_id": "int64", "rating": "float32", "timestamp": "int64"}
    )
    titles = [f"Film {i}" for i in range(n_items)]
    items = pd.DataFrame(
        {
            "item_id": np.arange(n_items, dtype=np.int64),
            "title": titles,
            "year": pd.array([1990] * n_items, dtype="Int64"),
            "genres": [(PLANTED_GENRES[g],) for g in genre],
            "text": [item_text(t, 1990, (PLANTED_GENRES[g],)) for t, g in zip(titles, genre, strict=True)],
        }
    )
    dataset = Dataset(
        name="planted",
        items=items,
        users=pd.DataFrame({"user_id": np.arange(n_users, dtype=np.int64)}),
        interactions=frame.sort_values(["user_id", "timestamp", "item_id"], ignore_index=True),
        item_raw_ids=np.array([str(i) for i in range(n_items)], dtype=object),
        user_raw_ids=np.array([str(u) for u in range(n_users)], dtype=object),
    )
    return dataset, truth


def hand_persona() -> Persona:
    return Persona(
        user_id=7,
        activity=2,
        conformity=3,
        diversity=1,
        activity_value=40,
        conformity_value=1.2,
        diversity_value=2,
        liked_genres=("Drama",),
        disliked_genres=("Horror",),
        liked_titles=("Movie 0003 (1990)",),
        disliked_titles=(),
        taste_text="You enjoy Drama movies, such as Movie 0003 (1990). You rarely dislike a movie.",
        train_items=(1, 2, 3),
        train_ratings=(4.0, 5.0, 2.0),
    )
