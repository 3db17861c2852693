"""Offline metrics: Recall@k / NDCG@k by their definitions, masking of known items, the history protocol."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from recommenders.evaluation import evaluate, ndcg_at_k, recall_at_k


def frame(pairs: list[tuple[int, int]]) -> pd.DataFrame:
    users, items = zip(*pairs, strict=True) if pairs else ((), ())
    return pd.DataFrame(
        {"user_id": np.array(users, dtype=np.int64), "item_id": np.array(items, dtype=np.int64), "timestamp": 0}
    )


class FixedScorer:
    """Scores item i as `order[i]` for every user; records the histories it was given."""

    def __init__(self, scores: Sequence[float]) -> None:
        self.scores = np.asarray(scores, dtype=np.float32)
        self.n_items = len(scores)
        self.seen_histories: list[list[int]] = []

    def score_batch(self, user_ids: np.ndarray, histories=None) -> np.ndarray:
        if histories is not None:
            self.seen_histories.extend(list(h) for h in histories)
        return np.tile(self.scores, (len(user_ids), 1))


def test_metric_functions_follow_their_definitions() -> None:
    hits = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=float)
    n_rel = np.array([2, 4, 5])
    np.testing.assert_allclose(recall_at_k(hits, n_rel), [1.0, 0.0, 1 / 5])
    d = [1 / math.log2(r + 2) for r in range(3)]
    np.testing.assert_allclose(ndcg_at_k(hits, n_rel), [(d[0] + d[2]) / (d[0] + d[1]), 0.0, d[1] / sum(d)])


def test_known_items_are_masked_before_ranking() -> None:
    # Item 0 scores best but user 0 consumed it in train: the top-1 must be item 1, a hit.
    model = FixedScorer([9, 8, 7, 6])
    masked = evaluate(model, frame([(0, 1)]), [frame([(0, 0)])], n_users=1, k=1)
    assert (masked.recall, masked.ndcg, masked.n_users) == (1.0, 1.0, 1)
    unmasked = evaluate(model, frame([(0, 1)]), [], n_users=1, k=1)
    assert unmasked.recall == 0.0


def test_average_over_users_with_targets_and_history_is_passed() -> None:
    model = FixedScorer([5, 4, 3, 2, 1])
    history = frame([(1, 0), (1, 4)])
    result = evaluate(model, frame([(0, 0), (0, 3), (1, 1)]), [], n_users=3, k=2, history=history)
    # user 0: top-2 = [0, 1], one of two targets -> recall 0.5; user 1: 0 masked (history) -> [1, 2] -> 1.0
    assert result.n_users == 2
    assert result.recall == pytest.approx((0.5 + 1.0) / 2)
    assert model.seen_histories == [[], [0, 4]]


def test_empty_target_is_an_error() -> None:
    with pytest.raises(ValueError, match="no interactions"):
        evaluate(FixedScorer([1, 2]), frame([]), [], n_users=1)
