"""Train/valid/test splits. Persona statistics and recommender training must use `Split.train` only.

- `agent4rec_split`: Agent4Rec's protocol - sample users who liked (rated > 3) at least `min_liked` items,
  shuffle each sampled user's ratings and cut them 40/30/30; held-out rows whose item never occurs in
  train are dropped (no model could score them).
- `temporal_split`: leave-last-k for sequential models - per user, the last k ratings by time are test,
  the k before them valid, the rest train.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simenv import defaults
from simenv.data.dataset import DataError, Dataset, Split

LIKED_ABOVE = 3.0


def _positions(user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows grouped by user (contiguous), each row's 0-based position within its user and its user's count."""
    starts = np.flatnonzero(np.r_[True, user_ids[1:] != user_ids[:-1]])
    counts = np.diff(np.r_[starts, user_ids.size])
    position = np.arange(user_ids.size) - np.repeat(starts, counts)
    return position, np.repeat(counts, counts)


def _frame(interactions: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    return interactions[mask].sort_values(["user_id", "timestamp", "item_id"], kind="stable", ignore_index=True)


def agent4rec_split(
    dataset: Dataset,
    n_users: int | None = 1000,
    seed: int = 0,
    min_liked: int = defaults.MIN_LIKED,
    ratios: tuple[float, float, float] = (0.4, 0.3, 0.3),
) -> Split:
    """Sample `n_users` users with >= `min_liked` ratings above 3 and split each one's ratings at random.

    Each user's ratings are shuffled with `np.random.default_rng(seed)` and cut at round(0.4 n) and
    round(0.7 n) (for the default ratios). `n_users=None` keeps every eligible user. Only the sampled
    users' ratings appear in the split; `users` lists them in ascending id order.
    """
    if len(ratios) != 3 or min(ratios) < 0 or not np.isclose(sum(ratios), 1.0):
        raise ValueError(f"ratios must be three non-negative fractions summing to 1, got {ratios}")
    frame = dataset.interactions
    liked_rows = frame["rating"].to_numpy() > LIKED_ABOVE
    liked = np.bincount(frame["user_id"].to_numpy()[liked_rows], minlength=dataset.n_users)
    eligible = np.flatnonzero(liked >= min_liked)
    rng = np.random.default_rng(seed)
    if eligible.size == 0:
        best = int(liked.max()) if liked.size else 0
        raise DataError(
            f"{dataset.name}: no user qualifies for the Agent4Rec split: it needs >= {min_liked} ratings above "
            f"{LIKED_ABOVE:g} per user, and the most any of its {dataset.n_users} users has is {best}"
        )
    if n_users is None:
        users = eligible
    elif not 0 < n_users <= eligible.size:
        raise DataError(
            f"[data.split_users] {n_users}: only {eligible.size} users of {dataset.name} have >= {min_liked} "
            f"ratings above {LIKED_ABOVE:g}"
        )
    else:
        users = np.sort(rng.choice(eligible, size=n_users, replace=False))
    sample = frame[np.isin(frame["user_id"].to_numpy(), users)].reset_index(drop=True)
    user_ids = sample["user_id"].to_numpy()
    # A random rank within each user: sort by (user, random key) and read the position off.
    shuffle = np.lexsort((rng.random(len(sample)), user_ids))
    position, count = _positions(user_ids[shuffle])
    cut_train = np.floor(ratios[0] * count + 0.5)
    cut_valid = np.floor((ratios[0] + ratios[1]) * count + 0.5)
    part = np.empty(len(sample), dtype=np.int8)
    part[shuffle] = np.where(position < cut_train, 0, np.where(position < cut_valid, 1, 2))
    train_items = np.unique(sample["item_id"].to_numpy()[part == 0])
    known = np.isin(sample["item_id"].to_numpy(), train_items)
    return Split(
        dataset=dataset,
        train=_frame(sample, part == 0),
        valid=_frame(sample, (part == 1) & known),
        test=_frame(sample, (part == 2) & known),
        users=users.astype(np.int64),
        protocol=f"agent4rec(n_users={n_users}, seed={seed}, min_liked={min_liked}, ratios={tuple(ratios)})",
    )


def temporal_split(dataset: Dataset, k: int = 1) -> Split:
    """Leave-last-k: per user, the last k ratings by timestamp are test, the k before them valid, the rest train.

    Users with fewer than 2k + 1 ratings keep all of them in train (so nobody has an empty history).
    Ties in timestamp are broken by item id, the order of `Dataset.interactions`. `users` = all users.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    frame = dataset.interactions
    position, count = _positions(frame["user_id"].to_numpy())
    from_end = count - 1 - position
    enough = count >= 2 * k + 1
    test = enough & (from_end < k)
    valid = enough & (from_end >= k) & (from_end < 2 * k)
    return Split(
        dataset=dataset,
        train=_frame(frame, ~(test | valid)),
        valid=_frame(frame, valid),
        test=_frame(frame, test),
        users=np.arange(dataset.n_users, dtype=np.int64),
        protocol=f"temporal(k={k})",
    )
