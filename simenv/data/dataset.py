"""The `Dataset` container every source loader returns, and the `Split` every split function returns.

Ids are dense integers (`item_id` in 0..n_items-1, `user_id` in 0..n_users-1), stable for a given source
file: loaders assign them by sorting the original ids. `item_raw_ids[i]` / `user_raw_ids[u]` map back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from simenv.records import Item


class DataError(ValueError):
    """Bad or missing data. The message names the file, line, field and value, or how to get the data."""


def item_text(title: str, year: int | None, genres: tuple[str, ...]) -> str:
    """The one-line description of an item that prompts and embedders see."""
    when = f" ({year})" if year else ""
    kinds = ", ".join(genres) if genres else "unknown genre"
    return f"{title}{when} — {kinds}"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded catalog, user table and rating log.

    items:        item_id (int64, dense), title (str), year (Int64, nullable), genres (tuple[str, ...]), text (str)
    users:        user_id (int64, dense) plus whatever demographics the source has (age, gender, occupation, zip)
    interactions: user_id (int64), item_id (int64), rating (float32, 1..5), timestamp (int64), sorted by
                  (user_id, timestamp, item_id)
    """

    name: str
    items: pd.DataFrame
    users: pd.DataFrame
    interactions: pd.DataFrame
    item_raw_ids: np.ndarray
    user_raw_ids: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @cached_property
    def catalog(self) -> tuple[Item, ...]:
        """All items as records, indexed by item id."""
        return tuple(
            Item(
                item_id=int(r.item_id),
                title=str(r.title),
                year=None if pd.isna(r.year) else int(r.year),
                genres=tuple(r.genres),
                text=str(r.text),
            )
            for r in self.items.itertuples(index=False)
        )

    def item(self, item_id: int) -> Item:
        return self.catalog[item_id]

    @cached_property
    def genre_vocabulary(self) -> tuple[str, ...]:
        """Sorted genre names; the column order of `genre_matrix`."""
        return tuple(sorted({g for gs in self.items["genres"] for g in gs}))

    @cached_property
    def genre_matrix(self) -> np.ndarray:
        """(n_items, n_genres) 0/1 float32 matrix of item genres."""
        index = {g: j for j, g in enumerate(self.genre_vocabulary)}
        m = np.zeros((self.n_items, len(index)), dtype=np.float32)
        for i, gs in enumerate(self.items["genres"]):
            for g in gs:
                m[i, index[g]] = 1.0
        return m


@dataclass(frozen=True, eq=False)
class Split:
    """Train/valid/test interactions of one dataset (same columns as `Dataset.interactions`).

    `users` are the user ids the split was drawn for (the simulated population for Agent4Rec's protocol).
    Everything derived for personas or recommender training must use `train` only.
    """

    dataset: Dataset
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    users: np.ndarray
    protocol: str
