"""Shared parts of recommenders whose rankings come from outside the process (a ranking file, an HTTP
service): the id convention they speak (raw dataset ids or dense ids), and the fallback policy that fills a
page the outside source cannot (a user it does not know, a ranking that ran out, a failed request).

The fallback is trained on the same train split (`fit`) and saved with the model, so an external policy is
a complete `Recommender`: every page has exactly `k` allowed ids, and every use of the fallback is counted
in `stats` and logged.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import torch

from recommenders.base import BaseRecommender, RecommenderConfig, top_k
from recommenders.sampling import sample_without_replacement
from simenv.records import Recommendation, as_int_tuple

log = logging.getLogger(__name__)

FALLBACKS = ("pop", "random", "none")
ID_KINDS = ("raw", "dense")
RAW_IDS_FILE = "raw_ids.json"


@dataclass(frozen=True)
class ExternalConfig(RecommenderConfig):
    """`fallback` fills what the outside source cannot: "pop" (train popularity), "random" (uniform, with
    propensities) or "none" (an error instead). `ids`: the outside source speaks the dataset's raw ids
    ("raw", e.g. MovieLens movie ids) or its dense 0..n-1 ids ("dense")."""

    fallback: str = "pop"
    ids: str = "raw"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fallback not in FALLBACKS:
            raise ValueError(f"{type(self).__name__}.fallback must be one of {list(FALLBACKS)}, got {self.fallback!r}")
        if self.ids not in ID_KINDS:
            raise ValueError(f"{type(self).__name__}.ids must be one of {list(ID_KINDS)}, got {self.ids!r}")


class IdMap:
    """Raw <-> dense ids of one dataset (`Dataset.user_raw_ids` / `item_raw_ids`, compared as strings)."""

    def __init__(self, user_raw_ids: Sequence[Any], item_raw_ids: Sequence[Any]) -> None:
        self.user_raw = np.asarray([str(u) for u in user_raw_ids], dtype=object)
        self.item_raw = np.asarray([str(i) for i in item_raw_ids], dtype=object)
        self._user_dense = {raw: i for i, raw in enumerate(self.user_raw)}
        self._item_dense = {raw: i for i, raw in enumerate(self.item_raw)}

    @classmethod
    def of(cls, dataset: Any) -> IdMap:
        return cls(dataset.user_raw_ids, dataset.item_raw_ids)

    def dense_items(self, raw: Sequence[Any]) -> list[int | None]:
        """Dense id per raw id (None where unknown)."""
        return [self._item_dense.get(str(r)) for r in raw]

    def dense_users(self, raw: Sequence[Any]) -> list[int | None]:
        return [self._user_dense.get(str(r)) for r in raw]

    def to_json(self) -> dict[str, list[str]]:
        return {"user_raw_ids": self.user_raw.tolist(), "item_raw_ids": self.item_raw.tolist()}


def canonical_ids(values: pd.Series) -> pd.Series:
    """Ids as strings the way the dataset writes raw ids: integral floats (a CSV column with gaps read as
    float) lose their '.0'."""
    if pd.api.types.is_float_dtype(values) and values.notna().all() and (values % 1 == 0).all():
        values = values.astype(np.int64)
    return values.astype(str)


class ExternalRecommender(BaseRecommender):
    """A recommender whose ranking comes from outside; subclasses implement `_external_page`.

    `recommend` asks `_external_page` for ids, keeps those that are known, allowed and not yet on the page
    (dropping the rest with a log line), and fills the remainder from the fallback policy.
    """

    name: ClassVar[str] = "external"
    Config: ClassVar[type[RecommenderConfig]] = ExternalConfig

    def __init__(self, config: ExternalConfig | dict[str, Any] | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.popularity = np.zeros(0, dtype=np.float32)
        self.stats: Counter[str] = Counter()
        self.fallback_users: set[int] = set()

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.config.fallback == "random"

    def _fit(self, valid: pd.DataFrame | None) -> None:
        assert self.user_items is not None
        self.popularity = np.bincount(self.user_items.indices, minlength=self.n_items).astype(np.float32)

    def _restore(self, state: Any) -> None:
        self._fit(None)

    def _external_page(
        self, user_id: int, k: int, exclude: Collection[int], history: Sequence[int]
    ) -> list[int] | None:
        """Dense item ids best first for this page (may be short or hold bad ids); None = nothing usable."""
        raise NotImplementedError

    def recommend(
        self,
        user_id: int,
        k: int,
        exclude: Collection[int],
        rng: np.random.Generator,
        history: Sequence[int] = (),
    ) -> Recommendation:
        self._check_user(user_id)
        allowed = self.allowed_mask(exclude, k)
        proposed = self._external_page(int(user_id), k, exclude, self.session_history(user_id, history))
        if proposed is None:
            self.fallback_users.add(int(user_id))
            proposed = []
        chosen = self.keep_valid(int(user_id), proposed, allowed, k)
        return self.fill(int(user_id), chosen, k, allowed, rng)

    def keep_valid(self, user_id: int, proposed: Sequence[Any], allowed: np.ndarray, k: int) -> list[int]:
        """The first `k` proposed ids that are in range, allowed and not repeated; the others are counted."""
        chosen: list[int] = []
        dropped: list[Any] = []
        for item in proposed:
            ok = isinstance(item, int | np.integer) and 0 <= int(item) < self.n_items and allowed[int(item)]
            if ok and int(item) not in chosen:
                chosen.append(int(item))
                if len(chosen) == k:
                    break
            else:
                dropped.append(item)
        if dropped:
            self.stats["dropped_ids"] += len(dropped)
            log.warning(
                "%s: user %s: dropped %d unknown, excluded or repeated id(s) %s",
                self.name,
                self.source_user(user_id),
                len(dropped),
                self.source_items(dropped[:5]),
            )
        return chosen

    def source_user(self, user_id: int) -> str:
        """A user as the outside source names it (its raw id when the source speaks raw ids), for messages."""
        return str(user_id) if self.id_map is None else repr(str(self.id_map.user_raw[int(user_id)]))

    def source_items(self, items: Sequence[Any]) -> list[Any]:
        """Ids as the outside source wrote them (raw ids back from dense ones; unknown ids as their markers),
        so a message's sample is something the source's author can find in their own output."""
        if self.id_map is None:
            return list(items)
        raw = self.id_map.item_raw
        return [str(raw[int(i)]) if isinstance(i, int | np.integer) and 0 <= int(i) < len(raw) else i for i in items]

    def fill(
        self, user_id: int, chosen: list[int], k: int, allowed: np.ndarray, rng: np.random.Generator
    ) -> Recommendation:
        """`chosen` plus `k - len(chosen)` fallback items; propensities only when the fallback is random
        (1.0 for the external positions: given the items above, they were certain)."""
        self.stats["pages"] += 1
        need = k - len(chosen)
        if need == 0:
            return Recommendation(item_ids=tuple(chosen))
        if self.config.fallback == "none":
            raise ValueError(
                f"{self.name}: user {user_id}: the external source gave {len(chosen)} usable ids for k={k} "
                "and fallback is 'none'"
            )
        self.stats["fallback_pages"] += 1
        self.stats["fallback_items"] += need
        rest = allowed.copy()
        rest[chosen] = False
        if self.config.fallback == "pop":
            extra = top_k(np.where(rest, self.popularity, -np.inf), need)
            return Recommendation(item_ids=as_int_tuple([*chosen, *extra]))
        pool = np.flatnonzero(rest)
        extra, props = sample_without_replacement(pool, np.ones(pool.size), need, rng)
        return Recommendation(item_ids=as_int_tuple([*chosen, *extra]), propensities=(1.0,) * len(chosen) + props)

    def report(self) -> dict[str, int]:
        """Counters for the run's log: pages served, pages and items filled by the fallback, users the
        source did not know, ids dropped (plus subclass counters)."""
        return {**dict(self.stats), "fallback_users": len(self.fallback_users)}

    # ---- persistence: the base's files plus the raw-id table when the source speaks raw ids -----------
    id_map: IdMap | None = None

    def save(self, path: Path | str) -> None:
        super().save(path)
        if self.id_map is not None:
            (Path(path) / RAW_IDS_FILE).write_text(json.dumps(self.id_map.to_json()), encoding="utf-8")

    @classmethod
    def read_id_map(cls, path: Path | str) -> IdMap | None:
        file = Path(path) / RAW_IDS_FILE
        if not file.is_file():
            return None
        data = json.loads(file.read_text(encoding="utf-8"))
        return IdMap(data["user_raw_ids"], data["item_raw_ids"])

    def _state(self) -> dict[str, torch.Tensor]:
        return {}

    @classmethod
    def load(cls, path: Path | str) -> Self:
        model = super().load(path)
        model.id_map = cls.read_id_map(path)
        return model
