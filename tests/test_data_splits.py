"""Splits: Agent4Rec's protocol and leave-last-k, checked for their invariants and seeded reproducibility."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simenv.data import Dataset, Split, agent4rec_split, make_synthetic, temporal_split
from tests.fixtures_data import (  # noqa: F401  (the *_fixture names register pytest fixtures)
    data_cache_dir_fixture,
    ml100k_fixture,
    toy_dataset,
)

KEY = ["user_id", "item_id"]


def _keys(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(map(tuple, frame[KEY].to_numpy().tolist()))


def _check_agent4rec(ds: Dataset, split: Split, min_liked: int) -> None:
    train, valid, test = split.train, split.valid, split.test
    # Only sampled users, each eligible.
    liked = ds.interactions[ds.interactions["rating"] > 3].groupby("user_id").size()
    assert (liked.reindex(split.users).fillna(0) >= min_liked).all()
    for part in (train, valid, test):
        assert set(part["user_id"].unique()) <= set(split.users.tolist())
        order = np.lexsort((part["item_id"], part["timestamp"], part["user_id"]))
        assert np.array_equal(order, np.arange(len(part)))
    # Disjoint parts, all real ratings of the sampled users.
    parts = [_keys(train), _keys(valid), _keys(test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    sampled = ds.interactions[ds.interactions["user_id"].isin(split.users)]
    assert parts[0] | parts[1] | parts[2] <= _keys(sampled)
    # No held-out item is unknown to train; exactly the rows with such items were dropped.
    train_items = set(train["item_id"].tolist())
    assert set(valid["item_id"]) <= train_items and set(test["item_id"]) <= train_items
    dropped = _keys(sampled) - parts[0] - parts[1] - parts[2]
    assert all(item not in train_items for _, item in dropped)
    # 40 % of every user's ratings are in train (rounded half up).
    n = sampled.groupby("user_id").size()
    n_train = train.groupby("user_id").size().reindex(n.index)
    assert (n_train == np.floor(0.4 * n + 0.5)).all()


def test_agent4rec_split_on_ml100k(ml100k: Dataset) -> None:
    split = agent4rec_split(ml100k, n_users=300, seed=0)
    assert len(split.users) == 300 and np.all(np.diff(split.users) > 0)
    _check_agent4rec(ml100k, split, 20)
    assert split.protocol.startswith("agent4rec(")


def test_agent4rec_split_is_seeded(ml100k: Dataset) -> None:
    a = agent4rec_split(ml100k, n_users=200, seed=7)
    b = agent4rec_split(ml100k, n_users=200, seed=7)
    c = agent4rec_split(ml100k, n_users=200, seed=8)
    assert np.array_equal(a.users, b.users)
    for part in ("train", "valid", "test"):
        pd.testing.assert_frame_equal(getattr(a, part), getattr(b, part))
    assert not np.array_equal(a.users, c.users)


def test_agent4rec_all_eligible_users_and_other_ratios() -> None:
    ds = make_synthetic(n_users=60, n_items=120, seed=3)
    split = agent4rec_split(ds, n_users=None, seed=1, min_liked=5, ratios=(0.5, 0.25, 0.25))
    liked = ds.interactions[ds.interactions["rating"] > 3].groupby("user_id").size()
    assert split.users.tolist() == sorted(liked[liked >= 5].index.tolist())
    n = ds.interactions[ds.interactions["user_id"].isin(split.users)].groupby("user_id").size()
    assert (split.train.groupby("user_id").size() == np.floor(0.5 * n + 0.5)).all()


def test_agent4rec_rejects_impossible_requests(ml100k: Dataset) -> None:
    with pytest.raises(ValueError, match="only .* users of ml-100k have >= 20 ratings above 3"):
        agent4rec_split(ml100k, n_users=5000)
    with pytest.raises(ValueError, match="ratios"):
        agent4rec_split(ml100k, ratios=(0.5, 0.5, 0.5))


def test_temporal_split_leaves_the_last_k() -> None:
    # user 0: 6 ratings; user 1: 4 ratings (< 2k+1 for k=2: all train); ties at t=5 broken by item id.
    rows = [(0, i, 4.0, t) for i, t in zip([5, 1, 2, 3, 4, 0], [1, 2, 3, 5, 5, 9], strict=True)]
    rows += [(1, i, 3.0, 10 + i) for i in range(4)]
    ds = toy_dataset(rows, [("Drama",)] * 6)
    split = temporal_split(ds, k=2)
    assert split.test[KEY].values.tolist() == [[0, 4], [0, 0]]
    assert split.valid[KEY].values.tolist() == [[0, 2], [0, 3]]
    assert split.train[KEY].values.tolist() == [[0, 5], [0, 1], [1, 0], [1, 1], [1, 2], [1, 3]]
    assert split.users.tolist() == [0, 1]


def test_temporal_split_on_ml100k(ml100k: Dataset) -> None:
    split = temporal_split(ml100k, k=1)
    assert len(split.test) == len(split.valid) == ml100k.n_users  # every user has >= 20 ratings
    assert len(split.train) + 2 * ml100k.n_users == len(ml100k.interactions)
    last_train = split.train.groupby("user_id")["timestamp"].max()
    assert (split.valid.set_index("user_id")["timestamp"] >= last_train).all()
    assert (split.test.set_index("user_id")["timestamp"] >= split.valid.set_index("user_id")["timestamp"]).all()
