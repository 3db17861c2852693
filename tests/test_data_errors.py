"""Bad files: every error names the file, the 1-based line, the field and the value; nothing is cached."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simenv.data import DataError, load_dataset
from tests.fixtures_data import (
    ML1M_MOVIES,
    ML1M_RATINGS,
    ML100K_ITEMS,
    ML100K_RATINGS,
    write_lines,
    write_ml1m_dir,
    write_ml100k_dir,
)


def _replace(lines: list[str], index: int, line: str) -> list[str]:
    out = list(lines)
    out[index] = line
    return out


def _load_error(root: Path, cache: Path) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(root, cache_dir=cache)
    assert not (cache / "datasets").exists() or not any((cache / "datasets").iterdir()), "half-loaded data was cached"
    return str(info.value)


ML1M_CASES = [
    # (which file, 0-based row to replace, new line, expected message after "<file> line <n>: ")
    ("ratings.dat", 2, "2::2::4", r"expected 4 fields separated by '::', found 3"),
    ("ratings.dat", 2, "2::2::4::978301968::9", r"expected 4 fields separated by '::', found 5"),
    ("ratings.dat", 3, "3::1::x::978300275", r"rating 'x' is not a number"),
    ("ratings.dat", 1, "1::11::7::978302109", r"rating '7' outside 1..5"),
    ("ratings.dat", 1, "1::11::0::978302109", r"rating '0' outside 1..5"),
    ("ratings.dat", 4, "3::99::2::978824291", r"unknown item id '99'"),
    ("ratings.dat", 4, "7::2::2::978824291", r"unknown user id '7'"),
    ("ratings.dat", 4, "3::2::2::soon", r"timestamp 'soon' is not an integer"),
    ("ratings.dat", 4, "3::1::2::978824291", r"duplicate rating of item '1' by user '3' \(first on line 4\)"),
    ("movies.dat", 1, "11::American President, The (1995)", r"expected 3 fields separated by '::', found 2"),
    ("movies.dat", 2, "1::Jumanji (1995)::Adventure", r"duplicate item id '1' \(first on line 1\)"),
    ("users.dat", 1, "2::M::57::16::70072", r"age '57' is not an ML-1M age code"),
    ("users.dat", 1, "2::M::56::21::70072", r"occupation '21' outside 0..20"),
]


@pytest.mark.parametrize(("name", "row", "line", "message"), ML1M_CASES)
def test_ml1m_bad_line_is_named(tmp_path: Path, name: str, row: int, line: str, message: str) -> None:
    root = write_ml1m_dir(tmp_path / "ml")
    path = root / name
    write_lines(path, _replace(path.read_text(encoding="latin-1").splitlines(), row, line))
    text = _load_error(root, tmp_path / "cache")
    assert re.search(rf"{re.escape(str(path))} line {row + 1}: {message}", text), text


def test_ml100k_bad_lines_are_named(tmp_path: Path) -> None:
    cases = [
        ("u.data", ML100K_RATINGS, 3, "10\t1\t1", r"expected 4 fields separated by '\\t', found 3"),
        ("u.data", ML100K_RATINGS, 0, "1\t1\t5.5\t881250949", r"rating '5.5' outside 1..5"),
        ("u.data", ML100K_RATINGS, 1, "1\t2\tgood\t881250950", r"rating 'good' is not a number"),
        ("u.item", ML100K_ITEMS, 1, ML100K_ITEMS[1].replace("|1|0|0", "|2|0|0"), r"genre flag 'Crime' is '2'"),
        ("u.item", ML100K_ITEMS, 2, "10|Short line|01-Jan-1995", r"expected 24 fields separated by '\|', found 3"),
    ]
    for i, (name, lines, row, line, message) in enumerate(cases):
        root = write_ml100k_dir(tmp_path / f"ml{i}")
        path = write_lines(root / name, _replace(lines, row, line))
        text = _load_error(root, tmp_path / f"cache{i}")
        assert re.search(rf"{re.escape(str(path))} line {row + 1}: {message}", text), (name, text)


def test_blank_line_in_the_middle_is_a_wrong_column_count(tmp_path: Path) -> None:
    root = write_ml1m_dir(tmp_path / "ml", ratings=[*ML1M_RATINGS[:2], "", *ML1M_RATINGS[2:]])
    text = _load_error(root, tmp_path / "cache")
    assert "ratings.dat line 3: expected 4 fields separated by '::', found 1" in text


def test_trailing_blank_lines_and_crlf_are_fine(tmp_path: Path) -> None:
    root = write_ml1m_dir(tmp_path / "ml")
    (root / "ratings.dat").write_bytes(("\r\n".join(ML1M_RATINGS) + "\r\n\r\n").encode())
    ds = load_dataset(root, use_cache=False)
    assert len(ds.interactions) == len(ML1M_RATINGS)
    assert ds.interactions["timestamp"].max() == 978824291


def test_utf16_file_is_bad_encoding(tmp_path: Path) -> None:
    root = write_ml1m_dir(tmp_path / "ml")
    (root / "movies.dat").write_bytes(("\n".join(ML1M_MOVIES) + "\n").encode("utf-16"))
    text = _load_error(root, tmp_path / "cache")
    assert re.search(r"movies\.dat line 1: bad encoding: the file is UTF-16", text), text
    # without the byte-order mark, the NUL bytes give it away
    (root / "movies.dat").write_bytes(("\n".join(ML1M_MOVIES) + "\n").encode("utf-16-le"))
    text = _load_error(root, tmp_path / "cache")
    assert re.search(r"movies\.dat line 1: bad encoding: control byte 0x00 at byte offset \d+", text), text


def test_nul_byte_names_its_line(tmp_path: Path) -> None:
    root = write_ml1m_dir(tmp_path / "ml")
    lines = list(ML1M_RATINGS)
    lines[3] = "3::1::1::97830\x000275"
    (root / "ratings.dat").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    text = _load_error(root, tmp_path / "cache")
    assert "ratings.dat line 4: bad encoding: control byte 0x00" in text


def test_latin1_atomic_file_is_detected_per_file(tmp_path: Path) -> None:
    """A file that is not valid UTF-8 is read as latin-1 (per file): the title keeps its accent."""
    root = tmp_path / "atomic"
    root.mkdir()
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    write_lines(root / "toy.inter", [header, "1\t1\t5\t10", "1\t2\t4\t11"], "utf-8")
    (root / "toy.item").write_bytes(
        b"item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n1\tA\t1999\tDrama\n"
        + b"2\tMis\xe9rables, Les\t1995\tDrama Musical\n"
    )
    ds = load_dataset(root, use_cache=False)
    assert ds.items["title"].tolist() == ["A", "Les Misérables"]


def test_atomic_directory_loads(tmp_path: Path) -> None:
    root = tmp_path / "atomic"
    root.mkdir()
    write_lines(
        root / "toy.inter",
        ["user_id:token\titem_id:token\trating:float\ttimestamp:float", "u1\t2\t5\t10", "u2\t1\t4\t11"],
        "utf-8",
    )
    write_lines(
        root / "toy.item",
        [
            "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
            "1\tBirdcage, The\t1996\tComedy",
            "2\tB\t\tDrama",
        ],
        "utf-8",
    )
    ds = load_dataset(root, use_cache=False)
    assert [(i.title, i.year, i.genres) for i in ds.catalog] == [
        ("The Birdcage", 1996, ("Comedy",)),
        ("B", None, ("Drama",)),
    ]
    assert ds.interactions[["user_id", "item_id"]].values.tolist() == [[0, 1], [1, 0]]


def test_missing_movie_file_is_named(tmp_path: Path) -> None:
    root = write_ml1m_dir(tmp_path / "ml")
    (root / "movies.dat").unlink()
    with pytest.raises(DataError, match=r"movies\.dat: missing file"):
        load_dataset(root, use_cache=False)


def test_empty_ratings_file_is_an_error_and_empty_users_file_names_the_rating(tmp_path: Path) -> None:
    root = write_ml1m_dir(tmp_path / "ml", ratings=[])
    (root / "ratings.dat").write_bytes(b"")
    text = _load_error(root, tmp_path / "cache")
    assert "ratings.dat: no ratings (the file is empty)" in text
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.parquet"))
    root = write_ml1m_dir(tmp_path / "ml2")
    (root / "users.dat").write_bytes(b"")
    text = _load_error(root, tmp_path / "cache")
    assert "ratings.dat line 1: unknown user id '1'" in text


@pytest.mark.parametrize(("short", "long"), [(1, 3), (3, 1), (4, 0)])
def test_short_and_long_lines_that_balance_out_are_caught(tmp_path: Path, short: int, long: int) -> None:
    lines = list(ML1M_RATINGS)
    lines[short] = lines[short].rsplit("::", 1)[0]
    lines[long] = lines[long] + "::1"
    root = write_ml1m_dir(tmp_path / "ml", ratings=lines)
    text = _load_error(root, tmp_path / "cache")
    first = min(short, long)
    found = 3 if first == short else 5
    assert f"ratings.dat line {first + 1}: expected 4 fields separated by '::', found {found}" in text, text
