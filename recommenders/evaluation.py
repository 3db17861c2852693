"""Offline top-k accuracy: Recall@k and NDCG@k over held-out interactions, full ranking, vectorised.

Conventions (those of the LightGCN and RecBole code): every catalog item is ranked; items the user is
known to have consumed (train, and valid when scoring test) are masked to -inf; Recall@k = hits / |target|;
NDCG@k = DCG / ideal DCG with binary gains, the ideal over min(|target|, k) hits. Per-user values are
averaged over users with at least one target item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from recommenders.base import UserItems
from simenv.data.dataset import Split


class BatchScorer(Protocol):
    n_items: int

    def score_batch(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class EvalResult:
    """Mean Recall@k and NDCG@k over `n_users` users."""

    recall: float
    ndcg: float
    n_users: int
    k: int

    def as_dict(self) -> dict[str, float | int]:
        return {f"recall@{self.k}": self.recall, f"ndcg@{self.k}": self.ndcg, "n_users": self.n_users}


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """Per-user recall from a (users, k) 0/1 hit matrix and each user's number of relevant items."""
    return hits.sum(axis=1) / np.maximum(n_relevant, 1)


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """Per-user NDCG with binary gains from a (users, k) 0/1 hit matrix."""
    k = hits.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    ideal_cum = np.concatenate([[0.0], np.cumsum(discounts)])
    idcg = ideal_cum[np.minimum(n_relevant, k)]
    return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)


def _user_lists(frame: pd.DataFrame | UserItems, n_users: int) -> UserItems:
    return frame if isinstance(frame, UserItems) else UserItems.from_frame(frame, n_users)


def evaluate(
    model: BatchScorer,
    target: pd.DataFrame | UserItems,
    known: Sequence[pd.DataFrame | UserItems],
    n_users: int,
    k: int = 20,
    history: pd.DataFrame | UserItems | None = None,
    batch_size: int = 512,
) -> EvalResult:
    """Rank all items for each user with a target item; mask `known` items; score hits against `target`.

    `history` (e.g. the valid interactions when scoring test on a temporal split) is passed to the model
    as each user's session history, in time order, so sequential models see it; it is masked too.
    """
    n_items = model.n_items
    targets = _user_lists(target, n_users)
    masks = [_user_lists(f, n_users) for f in known]
    hist = _user_lists(history, n_users) if history is not None else None
    if hist is not None:
        masks.append(hist)
    users = np.flatnonzero(targets.counts() > 0)
    if users.size == 0:
        raise ValueError("evaluate: the target frame has no interactions")
    recalls, ndcgs = [], []
    for start in range(0, users.size, batch_size):
        batch = users[start : start + batch_size]
        histories = [hist.items(u).tolist() for u in batch] if hist is not None else None
        scores = np.array(model.score_batch(batch, histories), dtype=np.float32, copy=True)
        for m in masks:
            rows, cols = _rows_cols(m, batch)
            scores[rows, cols] = -np.inf
        truth = np.zeros((batch.size, n_items), dtype=bool)
        rows, cols = _rows_cols(targets, batch)
        truth[rows, cols] = True
        kk = min(k, n_items)
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        ranked = np.take_along_axis(part, order, axis=1)
        hits = np.take_along_axis(truth, ranked, axis=1).astype(np.float64)
        n_rel = targets.counts()[batch]
        recalls.append(recall_at_k(hits, n_rel))
        ndcgs.append(ndcg_at_k(hits, n_rel))
    return EvalResult(
        recall=float(np.concatenate(recalls).mean()),
        ndcg=float(np.concatenate(ndcgs).mean()),
        n_users=int(users.size),
        k=k,
    )


def _rows_cols(lists: UserItems, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row (batch position) and column (item id) indices of every listed item of the batch users."""
    starts, ends = lists.indptr[batch], lists.indptr[batch + 1]
    lengths = ends - starts
    rows = np.repeat(np.arange(batch.size), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    cols = lists.indices[np.repeat(starts, lengths) + offsets]
    return rows, cols


def evaluate_split(
    model: BatchScorer, split: Split, on: str = "test", k: int = 20, valid_as_history: bool = False
) -> EvalResult:
    """Evaluate on `split.valid` or `split.test`. For test, valid items are masked too, and with
    `valid_as_history` fed to the model as session history (the leave-one-out protocol of SASRec)."""
    n_users = split.dataset.n_users
    if on == "valid":
        return evaluate(model, split.valid, [split.train], n_users, k)
    if on != "test":
        raise ValueError(f"evaluate_split: on must be 'valid' or 'test', got {on!r}")
    if valid_as_history:
        return evaluate(model, split.test, [split.train], n_users, k, history=split.valid)
    return evaluate(model, split.test, [split.train, split.valid], n_users, k)
