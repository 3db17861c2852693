"""Shared machinery of every recommender: config handling, input checks, exclusion masking, top-k,
within-session history, and save/load of weights + config in a directory.

A model module then only says how to train (`_fit`) and how to score a batch of users (`score_batch`).
Implicit feedback: every train interaction whose rating is >= `config.min_rating` (default: all of them)
counts as a positive; the rating value itself is not used by the models here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
import pandas as pd
import torch

from simenv.records import Page, PageFeedback, PageRequest, Recommendation, as_int_tuple

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
STATE_FILE = "state.pt"
FORMAT_VERSION = 1
REQUIRED_COLUMNS = ("user_id", "item_id")

C = TypeVar("C")


@dataclass(frozen=True)
class RecommenderConfig:
    """Options every recommender has. `seed` drives all torch randomness in `fit` (never global state)."""

    seed: int = 0
    min_rating: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"{type(self).__name__}.seed must be a non-negative int, got {self.seed!r}")


def build_config(config_cls: type[C], config: C | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> C:
    """Make a config from an instance or mapping plus keyword overrides; unknown keys are a clear error."""
    known = {f.name for f in dataclasses.fields(config_cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    if isinstance(config, config_cls):
        values = dataclasses.asdict(config)  # type: ignore[call-overload]
    elif isinstance(config, Mapping):
        values = dict(config)
    elif config is not None:
        raise TypeError(f"config must be a {config_cls.__name__} or a mapping, got {type(config).__name__}")
    values.update(overrides)
    unknown = sorted(set(values) - known)
    if unknown:
        raise TypeError(f"unknown {config_cls.__name__} field(s) {unknown}; known fields: {sorted(known)}")
    return config_cls(**values)


def check_interactions(frame: pd.DataFrame, n_users: int, n_items: int, what: str) -> None:
    """Raise ValueError naming the frame, row, field and value of the first bad id."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; columns are {list(frame.columns)}")
    for field, bound in (("user_id", n_users), ("item_id", n_items)):
        values = frame[field].to_numpy()
        if values.size and not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{what}: field {field} must hold integers, got dtype {values.dtype}")
        bad = np.flatnonzero((values < 0) | (values >= bound))
        if bad.size:
            row = frame.index[bad[0]]
            raise ValueError(f"{what}: row {row} field {field} value {values[bad[0]]} is outside 0..{bound - 1}")


@dataclass(frozen=True)
class UserItems:
    """Each user's positive train items in time order, as CSR arrays (indptr, indices)."""

    indptr: np.ndarray
    indices: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, n_users: int, min_rating: float = 0.0) -> UserItems:
        if "rating" in frame.columns and min_rating > 0:
            frame = frame[frame["rating"].to_numpy() >= min_rating]
        order = ["user_id", "timestamp", "item_id"] if "timestamp" in frame.columns else ["user_id", "item_id"]
        frame = frame.sort_values(order, kind="stable").drop_duplicates(["user_id", "item_id"], keep="last")
        users = frame["user_id"].to_numpy(np.int64)
        counts = np.bincount(users, minlength=n_users)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(indptr=indptr, indices=frame["item_id"].to_numpy(np.int64))

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def items(self, user_id: int) -> np.ndarray:
        return self.indices[self.indptr[user_id] : self.indptr[user_id + 1]]

    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(user, item) arrays of every positive."""
        return np.repeat(np.arange(self.n_users), self.counts()), self.indices

    def dense(self, n_items: int) -> np.ndarray:
        """(n_users, n_items) 0/1 float32 matrix."""
        m = np.zeros((self.n_users, n_items), dtype=np.float32)
        users, items = self.pairs()
        m[users, items] = 1.0
        return m


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first; ties go to the lower id (stable, deterministic).

    The same indices as `np.argsort(-scores, kind="stable")[:k]`, found by a partition and a sort of the items
    at or above the k-th score only (a page from 3,706 items: ~25 us instead of ~230 us)."""
    neg = -np.asarray(scores)
    if k >= neg.size:
        return np.argsort(neg, kind="stable")[:k]
    kth = np.partition(neg, k - 1)[k - 1]
    candidates = np.flatnonzero(neg <= kth)  # every item tied with the k-th too, in id order
    if candidates.size < k:  # NaN scores: fewer comparable items than k
        return np.argsort(neg, kind="stable")[:k]
    return candidates[np.argsort(neg[candidates], kind="stable")[:k]]


def ranked_page(chosen: np.ndarray, scores: np.ndarray) -> Recommendation:
    """The page of the item ids `chosen` (best first), with their scores."""
    return Recommendation(item_ids=as_int_tuple(chosen), scores=tuple(float(scores[i]) for i in chosen))


def best_page(scores: np.ndarray, allowed: np.ndarray, k: int) -> Recommendation:
    """The page of the k best allowed `scores`, best first (ties to the lower id), with their scores."""
    return ranked_page(top_k(np.where(allowed, scores, -np.inf), k), scores)


def clear_page(scores: np.ndarray, allowed: np.ndarray, k: int, tie: float) -> Recommendation | None:
    """The page of the k best allowed `scores`, or None when rounding could reorder its k + 1 best (neighbours
    closer than `tie`, relative): a batched row then has to be re-served from its one-row scores."""
    masked = np.where(allowed, scores, -np.inf)
    chosen = top_k(masked, k + 1)
    return ranked_page(chosen[:k], scores) if _clearly_ordered(masked[chosen], tie) else None


def _clearly_ordered(best: np.ndarray, tie: float) -> bool:
    """Whether each of the sorted `best` scores exceeds the next by more than `tie` (relative, at least absolute):
    an order rounding cannot change."""
    best = best.astype(np.float64)
    return bool(np.all(best[:-1] - best[1:] > tie * np.maximum(1.0, np.abs(best[:-1]))))


def batched_pages(
    requests: Sequence[PageRequest],
    rows: Iterable[np.ndarray],
    allowed: Callable[[PageRequest], np.ndarray],
    tie: float,
    recommend: Callable[[PageRequest], Recommendation],
) -> list[Recommendation]:
    """Each request's page from its row of batched scores (`clear_page`), or `recommend(request)` where rounding
    could reorder the row's best items: what a `recommend_batch` built on batched scoring returns."""
    return [clear_page(row, allowed(r), r.k, tie) or recommend(r) for r, row in zip(requests, rows, strict=True)]


@contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[None]:
    """The module in eval mode for the block, its training mode restored after. Switches only when it is
    training: `Module.train` walks every submodule (~0.1 ms for SASRec, a tenth of its page)."""
    training = module.training
    if training:
        module.eval()
    try:
        yield
    finally:
        if training:
            module.train()


class BaseRecommender:
    """Common parts of the recommenders. Subclasses set `name`, `Config`, and implement `_fit`, `score_batch`.

    Exclusions are explicit: `recommend` masks exactly the ids in `exclude` (the caller passes the items
    already shown or consumed, e.g. the persona's train items plus this session's pages). Session history
    is the watched items reported through `observe` plus any ids passed as `history`.
    """

    name: ClassVar[str] = "base"
    Config: ClassVar[type[RecommenderConfig]] = RecommenderConfig
    stochastic: ClassVar[bool] = False
    # relative gap between neighbouring best scores below which `recommend_batch` re-scores a user alone (75x the
    # largest batched-vs-one-row difference measured)
    BATCH_TIE: ClassVar[float] = 1e-4

    def __init__(self, config: RecommenderConfig | Mapping[str, Any] | None = None, **overrides: Any) -> None:
        self.config = build_config(self.Config, config, overrides)
        self.n_users = 0
        self.n_items = 0
        self.user_items: UserItems | None = None
        self.train_report: dict[str, Any] = {}
        self._sessions: dict[int, list[int]] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"

    # ---- training -------------------------------------------------------------------------------------
    def fit(self, train: pd.DataFrame, n_users: int, n_items: int, valid: pd.DataFrame | None = None) -> Self:
        """Train on `train` (one positive per row); `valid` drives early stopping where a model has it."""
        if n_users <= 0 or n_items <= 0:
            raise ValueError(f"n_users and n_items must be positive, got {n_users}, {n_items}")
        check_interactions(train, n_users, n_items, "train")
        if valid is not None:
            check_interactions(valid, n_users, n_items, "valid")
        self.n_users, self.n_items = int(n_users), int(n_items)
        self.user_items = UserItems.from_frame(train, self.n_users, self.config.min_rating)
        if self.user_items.indices.size == 0:
            raise ValueError(f"train: no interactions with rating >= min_rating={self.config.min_rating}")
        self._sessions.clear()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self._fit(valid)
        return self

    def _fit(self, valid: pd.DataFrame | None) -> None:
        """Train the model on `self.user_items`; torch's global RNG is seeded from config.seed here."""

    def torch_generator(self, offset: int = 0) -> torch.Generator:
        """A fresh generator derived from the config seed (for negative sampling, shuffling, init)."""
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + offset)

    # ---- scoring --------------------------------------------------------------------------------------
    def score_batch(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """(len(user_ids), n_items) float32 scores; `histories[b]` are session items of user b."""
        raise NotImplementedError

    def score(self, user_id: int, history: Sequence[int] = ()) -> np.ndarray:
        """Scores for all items (higher is better) given the user's session history."""
        self._check_fitted()
        self._check_user(user_id)
        hist = self._check_items(history, "history")
        return self.score_batch(np.array([user_id], dtype=np.int64), [hist])[0]

    def recommend(
        self,
        user_id: int,
        k: int,
        exclude: Collection[int],
        rng: np.random.Generator,
        history: Sequence[int] = (),
    ) -> Recommendation:
        """The k best-scored items not in `exclude`, best first (deterministic; `rng` unused here)."""
        allowed = self.allowed_mask(exclude, k)
        scores = self.score(user_id, self.session_history(user_id, history))
        return best_page(scores, allowed, k)

    def recommend_batch(self, requests: Sequence[PageRequest]) -> list[Recommendation]:
        """`recommend` for many users with one `score_batch` call (`simenv.protocols.BatchPagePolicy`).

        The pages are `recommend`'s: batched and one-row arithmetic differ by rounding (<= 1.3e-6 relative,
        measured for MF, LightGCN, MultVAE and SASRec on ML-1M), so a user whose k + 1 best scores are closer
        than `BATCH_TIE` (relative) anywhere is served by `recommend` alone. A subclass that overrides
        `recommend` or `score` is served one request at a time."""

        def one(r: PageRequest) -> Recommendation:
            return self.recommend(r.user_id, r.k, r.exclude, r.rng, r.history)

        scores = self.batch_scores(requests) if type(self).recommend is BaseRecommender.recommend else None
        if scores is None:
            return [one(r) for r in requests]
        return batched_pages(requests, scores, lambda r: self.allowed_mask(r.exclude, r.k), self.BATCH_TIE, one)

    def batch_scores(self, requests: Sequence[PageRequest]) -> np.ndarray | None:
        """`score(user, session history)` of every request's user in one `score_batch` call, or None when batching
        cannot stand in for `score` (a subclass overrides it, or fewer than two requests). Rows equal `score`'s up
        to rounding; callers serve near ties one by one (`clear_page`)."""
        if type(self).score is not BaseRecommender.score or len(requests) < 2:
            return None
        self._check_fitted()
        for r in requests:
            self._check_user(r.user_id)
        histories = [self._check_items(self.session_history(r.user_id, r.history), "history") for r in requests]
        return self.score_batch(np.array([r.user_id for r in requests], dtype=np.int64), histories)

    def allowed_mask(self, exclude: Collection[int], k: int) -> np.ndarray:
        """Boolean mask of recommendable items; errors if fewer than k remain."""
        self._check_fitted()
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        allowed = np.ones(self.n_items, dtype=bool)
        ids = self._check_items(exclude, "exclude")
        allowed[ids] = False
        if int(allowed.sum()) < k:
            raise ValueError(f"asked for k={k} items but only {int(allowed.sum())} are not excluded")
        return allowed

    # ---- session --------------------------------------------------------------------------------------
    def observe(self, user_id: int, page: Page, feedback: PageFeedback) -> None:
        """Append the watched items of a page to the user's session history."""
        self._check_user(user_id)
        shown = set(page.item_ids)
        for reaction in feedback.reactions:
            if reaction.item_id not in shown:
                raise ValueError(f"feedback for user {user_id}: item {reaction.item_id} was not on the page")
            if reaction.watched:
                self._sessions.setdefault(user_id, []).append(int(reaction.item_id))

    def session_history(self, user_id: int, history: Sequence[int] = ()) -> list[int]:
        """Observed watched items, then any ids of `history` not already among them (order kept)."""
        observed = list(self._sessions.get(user_id, ()))
        seen = set(observed)
        return observed + [int(i) for i in history if int(i) not in seen]

    def end_session(self, user_id: int | None = None) -> None:
        """Forget the session history of one user (or of all users)."""
        if user_id is None:
            self._sessions.clear()
        else:
            self._sessions.pop(user_id, None)

    # ---- persistence ----------------------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        """Tensors beyond the train matrix that scoring needs (weights); subclasses extend."""
        return {}

    def _restore(self, state: Mapping[str, torch.Tensor]) -> None:
        """Rebuild the model from `_state()` output after load."""

    def save(self, path: Path | str) -> None:
        """Write `config.json` and `state.pt` into directory `path` (created if needed)."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        assert self.user_items is not None
        meta = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "config": dataclasses.asdict(self.config),
            "n_users": self.n_users,
            "n_items": self.n_items,
            "train_report": self.train_report,
        }
        (path / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
        state = {
            "train_indptr": torch.tensor(self.user_items.indptr),
            "train_indices": torch.tensor(self.user_items.indices),
            **self._state(),
        }
        torch.save(state, path / STATE_FILE)

    @classmethod
    def load(cls, path: Path | str) -> Self:
        """Rebuild a fitted recommender saved by `save`; scores are identical to the saved model's."""
        meta, state = cls.read_saved(path)
        model = cls(meta["config"])
        model.apply_saved(meta, state)
        return model

    @classmethod
    def read_saved(cls, path: Path | str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The checked config.json and the tensors of a saved model of this class."""
        path = Path(path)
        meta = read_meta(path)
        if cls.name != BaseRecommender.name and meta["name"] != cls.name:
            raise ValueError(f"{path / CONFIG_FILE}: field name is {meta['name']!r}, expected {cls.name!r}")
        return meta, torch.load(path / STATE_FILE, weights_only=True)

    def apply_saved(self, meta: Mapping[str, Any], state: dict[str, torch.Tensor]) -> None:
        """Restore sizes, train lists and weights read by `read_saved`."""
        self.n_users, self.n_items = int(meta["n_users"]), int(meta["n_items"])
        self.train_report = dict(meta.get("train_report", {}))
        state = dict(state)
        self.user_items = UserItems(state.pop("train_indptr").numpy(), state.pop("train_indices").numpy())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self._restore(state)

    # ---- checks ---------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.user_items is None:
            raise RuntimeError(f"{self.name}: call fit() (or load()) before scoring")

    def _check_user(self, user_id: int) -> None:
        if not 0 <= int(user_id) < self.n_users:
            raise ValueError(f"{self.name}: user_id {user_id} is outside 0..{self.n_users - 1}")

    def _check_items(self, ids: Collection[int], what: str) -> np.ndarray:
        arr = np.fromiter(ids, dtype=np.int64, count=len(ids))
        bad = arr[(arr < 0) | (arr >= self.n_items)]
        if bad.size:
            raise ValueError(f"{self.name}: {what} holds item id {bad[0]} outside 0..{self.n_items - 1}")
        return arr


def read_meta(path: Path) -> dict[str, Any]:
    """Read and check a saved model's config.json."""
    file = path / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"no saved recommender at {path} (missing {CONFIG_FILE})")
    meta = json.loads(file.read_text(encoding="utf-8"))
    for key in ("format_version", "name", "config", "n_users", "n_items"):
        if key not in meta:
            raise ValueError(f"{file}: missing field {key!r}")
    if meta["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{file}: field format_version is {meta['format_version']}, expected {FORMAT_VERSION}")
    return meta
