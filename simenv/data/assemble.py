"""Turn parsed source tables into a `Dataset`: dense ids, validated ratings, sorted interactions.

Every source loader produces the same three inputs - an item frame, an optional user frame and the
ratings `Table` - and calls `assemble`, so id assignment and rating checks are written once. Nothing is
returned until every check has passed.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from simenv.data.dataset import DataError, Dataset, item_text
from simenv.data.textfile import Table, check_range, numeric_column, short, shown_value

RATING_RANGE = (1.0, 5.0)
_DIGITS = re.compile(r"(\d+)")


def natural_key(raw_id: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders "u2" before "u10" and "9" before "10" (numbers compare as numbers)."""
    return tuple((1, int(part)) if part.isdigit() else (0, part) for part in _DIGITS.split(raw_id) if part)


def natural_order(raw_ids: pd.Series | np.ndarray) -> np.ndarray:
    """The raw ids sorted naturally, as an object array (the dense id of `out[i]` is `i`)."""
    return np.array(sorted({str(r) for r in raw_ids}, key=natural_key), dtype=object)


def natural_argsort(raw_ids: pd.Series) -> np.ndarray:
    """Positions that put `raw_ids` in natural order (stable for equal keys)."""
    keys = [natural_key(str(r)) for r in raw_ids]
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)


def _order(user_ids: np.ndarray, timestamp: np.ndarray, item_ids: np.ndarray, n_items: int) -> np.ndarray:
    """Row order by (user, timestamp, item): one argsort of a packed int64 key when it fits, else lexsort."""
    if user_ids.size == 0:
        return np.arange(0)
    span = int(timestamp.max()) - int(timestamp.min()) + 1
    n_users = int(user_ids.max()) + 1
    if n_users * span * n_items < 2**62:
        packed = (user_ids * span + (timestamp - timestamp.min())) * n_items + item_ids
        return np.argsort(packed, kind="stable")
    return np.lexsort((item_ids, timestamp, user_ids))


def _map_ids(table: Table, column: str, raw_ids: np.ndarray, what: str) -> np.ndarray:
    codes = pd.Index(raw_ids).get_indexer(table.frame[column])
    unknown = np.flatnonzero(codes < 0)
    if unknown.size:
        row = int(unknown[0])
        raise table.fail(row, f"unknown {what} id {short(table.frame[column].iloc[row])} (not in the {what} file)")
    return codes.astype(np.int64)


def assemble(
    name: str,
    items: pd.DataFrame,
    ratings: Table,
    users: pd.DataFrame | None = None,
    item_order: str = "natural",
) -> Dataset:
    """Build a Dataset from parsed source tables.

    items:   raw_id (str), title (str, already natural), year (Int64), genres (tuple[str, ...]), one row per item
    ratings: a Table with string columns user, item, rating, timestamp
    users:   raw_id (str) plus demographics, or None to take the users from the ratings
    item_order: "natural" assigns item ids by natural sort of the raw ids; "file" keeps the item file's row
             order (for sources whose raw ids are titles but whose rows are in MovieLens id order)
    """
    if len(items) == 0:
        raise DataError(f"{name}: the item file has no items")
    if len(ratings.frame) == 0:
        raise DataError(f"{ratings.path}: no ratings (the file is empty)")
    if item_order == "natural":
        items = items.iloc[natural_argsort(items["raw_id"])].reset_index(drop=True)
    elif item_order != "file":
        raise ValueError(f"item_order must be 'natural' or 'file', got {item_order!r}")
    item_raw_ids = items["raw_id"].astype(str).to_numpy(dtype=object)

    item_ids = _map_ids(ratings, "item", item_raw_ids, "item")
    users = _user_table(ratings, users)
    user_raw_ids = users["raw_id"].astype(str).to_numpy(dtype=object)
    user_ids = _map_ids(ratings, "user", user_raw_ids, "user")

    rating = numeric_column(ratings, "rating", "float")
    check_range(ratings, "rating", rating, *RATING_RANGE)
    timestamp = numeric_column(ratings, "timestamp", "int")
    negative = np.flatnonzero(timestamp < 0)  # seconds since 1970: a negative one is a damaged or shifted file
    if negative.size:
        row = int(negative[0])
        raise ratings.fail(row, f"timestamp {shown_value(ratings, 'timestamp', row)} is negative (seconds since 1970)")

    _check_one_rating_per_pair(ratings, user_ids * len(item_raw_ids) + item_ids)

    sort = _order(user_ids, timestamp, item_ids, len(item_raw_ids))
    interactions = pd.DataFrame(
        {
            "user_id": user_ids[sort],
            "item_id": item_ids[sort],
            "rating": rating[sort].astype(np.float32),
            "timestamp": timestamp[sort],
        }
    )
    user_frame = users.drop(columns=["raw_id"]).reset_index(drop=True)
    user_frame.insert(0, "user_id", np.arange(len(users), dtype=np.int64))
    return Dataset(
        name=name,
        items=_item_frame(items),
        users=user_frame,
        interactions=interactions,
        item_raw_ids=item_raw_ids,
        user_raw_ids=user_raw_ids,
    )


def _user_table(ratings: Table, users: pd.DataFrame | None) -> pd.DataFrame:
    """The user file's rows in natural raw-id order, or (no user file) the ratings' users as a raw_id column."""
    if users is not None:
        return users.iloc[natural_argsort(users["raw_id"])].reset_index(drop=True)
    empty = np.flatnonzero((ratings.frame["user"] == "").to_numpy())
    if empty.size:
        raise ratings.fail(int(empty[0]), "user is empty")
    return pd.DataFrame({"raw_id": natural_order(ratings.frame["user"].unique())})


def _check_one_rating_per_pair(ratings: Table, key: np.ndarray) -> None:
    """Fail on the first (user, item) pair rated twice; `key` numbers the pairs of the ratings' rows."""
    dup = pd.Series(key).duplicated(keep="first").to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(key == key[row])[0])
        raise ratings.fail(
            row,
            f"duplicate rating of item {ratings.frame['item'].iloc[row]!r} by user "
            f"{ratings.frame['user'].iloc[row]!r} (first on line {ratings.line(first)})",
        )


def _item_frame(items: pd.DataFrame) -> pd.DataFrame:
    """The Dataset's item table (dense ids in row order, Int64 years, genre tuples, the text line) from the
    ordered source items."""
    genres = [tuple(g) for g in items["genres"]]
    years = pd.array(items["year"], dtype="Int64")
    titles = items["title"].astype(str).tolist()
    return pd.DataFrame(
        {
            "item_id": np.arange(len(items), dtype=np.int64),
            "title": titles,
            "year": years,
            "genres": genres,
            "text": [
                item_text(t, None if pd.isna(y) else int(y), g) for t, y, g in zip(titles, years, genres, strict=True)
            ],
        }
    )


def parse_years(
    table: Table,
    column: str,
    fallback: pd.api.extensions.ExtensionArray | None = None,
    missing: tuple[str, ...] = ("", "unknown", "unkonwn"),
) -> pd.api.extensions.ExtensionArray:
    """A nullable Int64 year column; blank or 'unknown' markers become <NA>.

    A value that is not a year is replaced by `fallback` (e.g. the year in the title: RecBole's ml-100k
    has "V" as the year of one video release) and is an error when there is no fallback for that row.
    """
    text = table.frame[column].str.strip()
    is_missing = text.str.lower().isin(missing).to_numpy()
    values = pd.to_numeric(text.where(~is_missing, "0"), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    invalid = ~is_missing & ~(np.isfinite(values) & (values == np.round(values)))
    usable = np.zeros(len(text), dtype=bool) if fallback is None else ~pd.isna(np.asarray(fallback, dtype=object))
    bad = np.flatnonzero(invalid & ~usable)
    if bad.size:
        row = int(bad[0])
        raise table.fail(row, f"{column} {table.frame[column].iloc[row]!r} is not a year")
    years = pd.array(np.where(is_missing | invalid, 0, values).astype(np.int64), dtype="Int64")
    years[is_missing] = pd.NA
    if invalid.any():
        years[invalid] = fallback[invalid]
    return years


def check_unique_ids(table: Table, column: str, what: str) -> None:
    """Raise naming the first line whose id repeats an earlier line's."""
    ids = table.frame[column].str.strip()
    dup = ids.duplicated(keep="first").to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((ids == ids.iloc[row]).to_numpy())[0])
        raise table.fail(row, f"duplicate {what} id {ids.iloc[row]!r} (first on line {table.line(first)})")
