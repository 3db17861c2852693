"""A static policy from a ranking file made elsewhere (RecBole, Elliot, a production system).

File format: parquet (`.parquet`, `.pq`), CSV (`.csv`) or TSV (`.tsv`) with columns `user_id`, `item_id`
and one of `score` (higher is better) or `rank` (1 is best). Ids are the dataset's raw ids by default (the
MovieLens `user id` / `movie id`), or its dense ids with `ids="dense"`. Each page shows the user's best
ranked items that are not excluded (ties: lower dense item id first); users absent from the file, and users
whose ranking runs out, get the fallback policy (`ExternalConfig.fallback`), counted in `stats`.

    ranking = read_ranking_file("rankings.csv", dataset)
    policy = RankingFileRecommender(ranking=ranking, fallback="pop").fit(train, dataset.n_users, dataset.n_items)
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from recommenders.external import ExternalConfig, ExternalRecommender, IdMap, canonical_ids
from simenv.data import Dataset

SUFFIXES = (".parquet", ".pq", ".csv", ".tsv")
SAMPLE = 5


class RankingFileError(ValueError):
    """A ranking file cannot be used; the message names the file and what is wrong with a sample."""


@dataclass(frozen=True)
class Ranking:
    """Per-user ranked dense item ids as CSR arrays: user u's items are `items[indptr[u]:indptr[u + 1]]`,
    best first. `source` is the file it came from (for messages)."""

    indptr: np.ndarray
    items: np.ndarray
    source: str = ""

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def of(self, user_id: int) -> np.ndarray:
        if not 0 <= user_id < self.n_users:
            return self.items[:0]
        return self.items[self.indptr[user_id] : self.indptr[user_id + 1]]

    def users(self) -> np.ndarray:
        """Dense ids of the users with at least one ranked item."""
        return np.flatnonzero(np.diff(self.indptr) > 0)


def read_ranking_file(path: Path | str, dataset: Dataset, ids: str = "raw") -> Ranking:
    """Read and check a ranking file against `dataset`; raises `RankingFileError` naming what is wrong."""
    path = Path(path)
    frame = _read_frame(path)
    where = str(path)
    missing = [c for c in ("user_id", "item_id") if c not in frame.columns]
    order_cols = [c for c in ("score", "rank") if c in frame.columns]
    if missing or len(order_cols) != 1:
        need = f"missing column(s) {missing}" if missing else "needs exactly one of the columns score, rank"
        raise RankingFileError(
            f"{where}: {need}; columns are {list(frame.columns)} (want user_id, item_id, score|rank)"
        )
    if frame.empty:
        raise RankingFileError(f"{where}: no rows")
    order_col = order_cols[0]
    values = pd.to_numeric(frame[order_col], errors="coerce")
    bad = np.flatnonzero(values.isna().to_numpy())
    if bad.size:
        rows = [int(r) + _first_data_line(path) for r in bad[:SAMPLE]]
        sample = frame[order_col].iloc[bad[:SAMPLE]].tolist()
        raise RankingFileError(
            f"{where}: column {order_col} has {bad.size} non-numeric value(s), e.g. {sample} at rows {rows}"
        )
    users = _dense(frame["user_id"], dataset, "user_id", ids, where, path)
    items = _dense(frame["item_id"], dataset, "item_id", ids, where, path)
    table = pd.DataFrame({"user": users, "item": items, "key": -values.to_numpy(np.float64)})
    if order_col == "rank":
        table["key"] = values.to_numpy(np.float64)
    dup = table.duplicated(["user", "item"], keep="first").to_numpy()
    if dup.any():
        first = np.flatnonzero(dup)[:SAMPLE]
        pairs = list(zip(frame["user_id"].iloc[first].tolist(), frame["item_id"].iloc[first].tolist(), strict=True))
        raise RankingFileError(f"{where}: {int(dup.sum())} repeated (user_id, item_id) pair(s), e.g. {pairs}")
    table = table.sort_values(["user", "key", "item"], kind="stable")
    counts = np.bincount(table["user"].to_numpy(), minlength=dataset.n_users)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Ranking(indptr=indptr, items=table["item"].to_numpy(np.int64), source=where)


def _read_frame(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise RankingFileError(f"{path}: no such ranking file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise RankingFileError(f"{path}: unknown ranking file type {suffix!r}; use one of {list(SUFFIXES)}")
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype={"user_id": str, "item_id": str})
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise RankingFileError(f"{path}: cannot read: {exc}") from None


def _first_data_line(path: Path) -> int:
    """File line of data row 0 (CSV/TSV: 2, after the header); 0-based row numbers for parquet."""
    return 2 if path.suffix.lower() in (".csv", ".tsv") else 0


def _dense(values: pd.Series, dataset: Dataset, column: str, ids: str, where: str, path: Path) -> np.ndarray:
    """Dense ids of a column, or an error with a sample of the unknown ones."""
    n = dataset.n_users if column == "user_id" else dataset.n_items
    if ids == "dense":
        numbers = pd.to_numeric(values, errors="coerce")
        ok = numbers.notna().to_numpy() & (numbers % 1 == 0).to_numpy()
        ok &= (numbers >= 0).to_numpy() & (numbers < n).to_numpy()
        dense = numbers.where(ok, -1).to_numpy(np.int64)
        what = f"dense ids in 0..{n - 1}"
    elif ids == "raw":
        id_map = IdMap.of(dataset)
        lookup = id_map.dense_users if column == "user_id" else id_map.dense_items
        mapped = lookup(canonical_ids(values).tolist())
        dense = np.array([-1 if m is None else m for m in mapped], dtype=np.int64)
        ok = dense >= 0
        what = f"raw {dataset.name} ids (pass ids=dense for 0..{n - 1})"
    else:
        raise RankingFileError(f"{where}: ids must be 'raw' or 'dense', got {ids!r}")
    if not ok.all():
        bad = np.flatnonzero(~ok)
        sample = values.iloc[bad[:SAMPLE]].tolist()
        rows = [int(r) + _first_data_line(path) for r in bad[:SAMPLE]]
        raise RankingFileError(
            f"{where}: {bad.size} of {len(values)} {column} value(s) are not {what}, e.g. {sample} at rows {rows}"
        )
    return dense


@dataclass(frozen=True)
class RankingFileConfig(ExternalConfig):
    """`source`: the file the ranking was read from (recorded, never re-read after `fit`)."""

    source: str = ""


class RankingFileRecommender(ExternalRecommender):
    """Shows each user the best not-excluded items of their ranking; the fallback fills the rest.

    Scores (for offline metrics): ranked items above every unranked one, in file order; unranked items by
    train popularity below them.
    """

    name: ClassVar[str] = "file"
    Config = RankingFileConfig

    def __init__(self, config: Any = None, *, ranking: Ranking | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.ranking = ranking

    def __repr__(self) -> str:
        return f"RankingFileRecommender(source={self.config.source!r}, fallback={self.config.fallback!r})"

    def _fit(self, valid: pd.DataFrame | None) -> None:
        super()._fit(valid)
        if self.ranking is None:
            raise ValueError(
                "file: no ranking given (build with RankingFileRecommender(ranking=read_ranking_file(...)))"
            )
        if self.ranking.n_users != self.n_users or (self.ranking.items >= self.n_items).any():
            raise ValueError(
                f"file {self.config.source}: the ranking covers {self.ranking.n_users} users, the data {self.n_users}"
            )

    def _external_page(
        self, user_id: int, k: int, exclude: Collection[int], history: Sequence[int]
    ) -> list[int] | None:
        assert self.ranking is not None
        ranked = self.ranking.of(user_id)
        if ranked.size == 0:
            return None
        excluded = exclude if isinstance(exclude, set | frozenset) else set(exclude)
        page: list[int] = []
        for item in ranked.tolist():
            if item not in excluded:
                page.append(item)
                if len(page) == k:
                    break
        return page

    def score_batch(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        assert self.ranking is not None
        base = self.popularity / (float(self.popularity.max()) + 1.0)
        out = np.tile(base.astype(np.float32), (len(user_ids), 1))
        for row, user in enumerate(user_ids):
            ranked = self.ranking.of(int(user))
            out[row, ranked] = 1.0 + np.arange(ranked.size, 0, -1, dtype=np.float32)
        return out

    def _state(self) -> dict[str, torch.Tensor]:
        assert self.ranking is not None
        return {
            "rank_indptr": torch.from_numpy(self.ranking.indptr.copy()),  # copies: the ranking arrays are read-only
            "rank_items": torch.from_numpy(self.ranking.items.copy()),
        }

    def _restore(self, state: Any) -> None:
        self.ranking = Ranking(state["rank_indptr"].numpy(), state["rank_items"].numpy(), source=self.config.source)
        super()._restore(state)
