"""Readers for the official MovieLens files as GroupLens distributes them (latin-1 text; a re-saved UTF-8 copy,
with or without a byte-order mark or CRLF line ends, is detected per file).

ML-100K: `u.data` (tab: user, item, rating, timestamp), `u.item` (`|`: id, title, release date, video date,
IMDb URL, 19 genre flags), `u.user` (`|`: id, age, gender, occupation, zip), optional `u.genre`.
ML-1M:   `ratings.dat`, `movies.dat` (genres `|`-separated), `users.dat`, all `::`-separated.
Users files are optional; without one the users are taken from the ratings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from simenv.data.assemble import assemble, check_unique_ids
from simenv.data.dataset import DataError, Dataset
from simenv.data.textfile import Table, check_nonempty, check_range, numeric_column, read_table
from simenv.data.titles import natural_title, split_year

ENCODING = "auto"  # per file: UTF-8 if it decodes, else latin-1 (see textfile.normalise_text)
RATING_NAMES = ("user", "item", "rating", "timestamp")
RATING_NUMERIC = {"rating": "float", "timestamp": "int"}
# MovieLens's own list, in u.item's flag order; u.genre overrides it when present.
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
# The catch-all label means "no genre known"; items carrying it get an empty genre tuple.
NO_GENRE = frozenset({"unknown", "(no genres listed)"})
ML1M_AGE_GROUPS = {1: "under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)  # fmt: skip


def is_ml100k_dir(path: Path) -> bool:
    return (path / "u.data").is_file()


def is_ml1m_dir(path: Path) -> bool:
    return (path / "ratings.dat").is_file()


def ml100k_files(path: Path) -> list[Path]:
    return [p for p in (path / "u.data", path / "u.item", path / "u.user", path / "u.genre") if p.is_file()]


def ml1m_files(path: Path) -> list[Path]:
    return [p for p in (path / "ratings.dat", path / "movies.dat", path / "users.dat") if p.is_file()]


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: missing file (a MovieLens directory needs its ratings and movie files)")
    return path


def _titles_and_years(titles: pd.Series, fallback_years: pd.array | None = None) -> tuple[list[str], pd.array]:
    split = [split_year(t) for t in titles]
    names = [natural_title(t) for t, _ in split]
    years = pd.array([y for _, y in split], dtype="Int64")
    if fallback_years is not None:
        years = years.fillna(fallback_years)
    return names, years


def genre_tuples(labels: pd.Series, sep: str) -> list[tuple[str, ...]]:
    """Split genre strings into tuples, dropping the "unknown" catch-all."""
    return [tuple(g for g in text.split(sep) if g and g not in NO_GENRE) for text in labels]


def _genre_names(path: Path) -> tuple[str, ...]:
    genre_file = path / "u.genre"
    if not genre_file.is_file():
        return ML100K_GENRES
    table = read_table(genre_file, ("genre", "index"), "|", ENCODING)
    index = numeric_column(table, "index", "int")
    order = np.argsort(index)
    if not np.array_equal(index[order], np.arange(len(index))):
        raise table.fail(0, f"genre indexes must be 0..{len(index) - 1}, found {sorted(index.tolist())}")
    return tuple(table.frame["genre"].to_numpy()[order])


def load_ml100k_dir(path: Path, name: str | None = None) -> Dataset:
    """Load an official ML-100K directory (`u.data`, `u.item`, optional `u.user` / `u.genre`)."""
    genre_names = _genre_names(path)
    flag_names = tuple(f"g{i}" for i in range(len(genre_names)))
    item_table = read_table(
        _require_file(path / "u.item"), ("raw_id", "title", "released", "video", "url", *flag_names), "|", ENCODING
    )
    check_nonempty(item_table, "raw_id")
    numeric_column(item_table, "raw_id", "int")
    check_unique_ids(item_table, "raw_id", "item")
    flags = np.column_stack([item_table.frame[f].str.strip().to_numpy(dtype=object) for f in flag_names])
    bad = np.argwhere((flags != "0") & (flags != "1"))
    if bad.size:
        row, col = (int(v) for v in bad[0])
        raise item_table.fail(row, f"genre flag {genre_names[col]!r} is {flags[row, col]!r}, expected '0' or '1'")
    genres = [
        tuple(g for g, f in zip(genre_names, row, strict=True) if f == "1" and g not in NO_GENRE) for row in flags
    ]
    released = item_table.frame["released"].str.strip().str[-4:]
    release_years = pd.array(pd.to_numeric(released, errors="coerce"), dtype="Int64")
    titles, years = _titles_and_years(item_table.frame["title"], release_years)
    items = pd.DataFrame(
        {"raw_id": item_table.frame["raw_id"].str.strip(), "title": titles, "year": years, "genres": genres}
    )
    ratings = read_table(_require_file(path / "u.data"), RATING_NAMES, "\t", ENCODING, numeric=RATING_NUMERIC)
    users = None
    if (path / "u.user").is_file():
        user_table = read_table(path / "u.user", ("raw_id", "age", "gender", "occupation", "zip"), "|", ENCODING)
        occupation = user_table.frame["occupation"].str.strip().to_numpy(dtype=object)
        users = _users_frame(user_table, numeric_column(user_table, "age", "int"), occupation)
    return assemble(name or path.name, items, ratings, users)


def load_ml1m_dir(path: Path, name: str | None = None) -> Dataset:
    """Load an official ML-1M directory (`ratings.dat`, `movies.dat`, optional `users.dat`)."""
    movie_table = read_table(_require_file(path / "movies.dat"), ("raw_id", "title", "genres"), "::", ENCODING)
    check_nonempty(movie_table, "raw_id")
    numeric_column(movie_table, "raw_id", "int")
    check_unique_ids(movie_table, "raw_id", "item")
    titles, years = _titles_and_years(movie_table.frame["title"])
    items = pd.DataFrame(
        {
            "raw_id": movie_table.frame["raw_id"].str.strip(),
            "title": titles,
            "year": years,
            "genres": genre_tuples(movie_table.frame["genres"].str.strip(), "|"),
        }
    )
    ratings = read_table(_require_file(path / "ratings.dat"), RATING_NAMES, "::", ENCODING, numeric=RATING_NUMERIC)
    users = None
    if (path / "users.dat").is_file():
        user_table = read_table(path / "users.dat", ("raw_id", "gender", "age", "occupation", "zip"), "::", ENCODING)
        users = ml1m_users(user_table)
    return assemble(name or path.name, items, ratings, users)


def _users_frame(table: Table, age: np.ndarray, occupation: np.ndarray | list[str]) -> pd.DataFrame:
    check_nonempty(table, "raw_id")
    check_unique_ids(table, "raw_id", "user")
    return pd.DataFrame(
        {
            "raw_id": table.frame["raw_id"].str.strip().to_numpy(dtype=object),
            "age": age,
            "gender": table.frame["gender"].str.strip().to_numpy(dtype=object),
            "occupation": occupation,
            "zip": table.frame["zip"].str.strip().to_numpy(dtype=object),
        }
    )


def ml1m_users(table: Table) -> pd.DataFrame:
    """ML-1M users: age and occupation are codes (see the ML-1M README); decode them to readable labels."""
    age = numeric_column(table, "age", "int")
    bad = np.flatnonzero(~np.isin(age, list(ML1M_AGE_GROUPS)))
    if bad.size:
        raise table.fail(int(bad[0]), f"age {table.frame['age'].iloc[int(bad[0])]!r} is not an ML-1M age code")
    occupation = numeric_column(table, "occupation", "int")
    check_range(table, "occupation", occupation, 0, len(ML1M_OCCUPATIONS) - 1)
    users = _users_frame(table, age, [ML1M_OCCUPATIONS[int(o)] for o in occupation])
    users.insert(2, "age_group", [ML1M_AGE_GROUPS[int(a)] for a in age])
    return users
