"""Per-candidate features for a re-ranking policy, from the train split and the base recommender only.

`TrainCandidateFeatures` implements `simenv.protocols.CandidateFeaturizer`: for a persona's candidate set it gives
what a production re-ranker could compute at serving time, and nothing the simulator predicts (the response model
is never read) and nothing held out (VALID and TEST ratings never enter):

| column        | meaning                                                                                  |
|---------------|------------------------------------------------------------------------------------------|
| `base_score`  | the base recommender's score, standardised over this candidate set (mean 0, sd 1)        |
| `base_rank`   | rank of that score among the candidates / (C - 1): 0 = the base's first choice           |
| `knn`         | item-kNN: log1p of cosine co-occurrence (each item's top 100 neighbours) summed over the |
|               | user's train items (catalog z)                                                           |
| `ease`        | EASE (Steck 2019) score from the user's train items (catalog z)                         |
| `svd`         | PureSVD low-rank score of the user's binary train row (catalog z)                        |
| `genre_lift`  | the user's genre lift: log of the user's smoothed train genre share over the population's, |
|               | averaged over the item's genres (catalog z)                                              |
| `log_pop`     | log1p(train ratings of the item) / its catalog maximum                                   |
| `mean_rating` | the item's shrunk mean train rating, centred: (mean - 3) / 2                             |
| `activity`    | the user's log train count, standardised over train users (the same for every candidate) |
| `conformity`  | the user's mean squared deviation from the items' mean train ratings (z over train users;|
|               | the same for every candidate: lets a scorer weigh popularity per user)                   |
| `rank:<name>` | one per recommender of `others` (trained on TRAIN): log1p of the item's rank among the    |
|               | user's unseen items by that recommender / log1p(n_items - 1), so 0 = its first choice    |

"catalog z": standardised over the whole catalog for this user, as the collaborative scores of
`agents.features` are, so a weight means the same for every user. The item-item matrices are computed once at
construction (dense n_items x n_items float32; ML-1M: ~55 MB each). The per-user catalog columns (the collaborative
scores, genre lift and `rank:` columns, which depend on the user's train items only) are computed on a user's first
call and kept in a least-recently-used memo bounded by `memo_mb`, so an env's later resets of that user cost a few
gathers instead of a forward pass of every rank source.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from simenv.protocols import Recommender
from simenv.records import Persona

FEATURE_NAMES = (
    "base_score",
    "base_rank",
    "knn",
    "ease",
    "svd",
    "genre_lift",
    "log_pop",
    "mean_rating",
    "activity",
    "conformity",
)
RANK_PREFIX = "rank:"  # an `others` recommender's rank column
BOUND = 5.0  # every value is clipped to [-BOUND, BOUND] (the envs' observation bound)
CATALOG_COLUMNS = (2, 3, 4, 5)  # knn, ease, svd, genre_lift: per-user catalog vectors (memoised with the rank columns)


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = float(x.std())
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def _binary_matrix(train: pd.DataFrame, n_users: int, n_items: int) -> np.ndarray:
    x = np.zeros((n_users, n_items), dtype=np.float32)
    x[train["user_id"].to_numpy(np.int64), train["item_id"].to_numpy(np.int64)] = 1.0
    return x


class TrainCandidateFeatures:
    """The featurizer of the module docstring over one train split and one base recommender (None: popularity).

    `genres` is the dataset's (n_items, G) genre matrix. `svd_rank`, `ease_l2` and `shrink` (pseudo-ratings at the
    global mean in `mean_rating`) are the usual knobs; the defaults are the response model's feature settings.
    `others` are further recommenders trained on the same split whose catalog ranks become `rank:<name>` columns.
    `memo_mb` bounds the memo of per-user catalog columns (0 = recompute on every call; the values are the same).
    """

    def __init__(
        self,
        train: pd.DataFrame,
        n_users: int,
        n_items: int,
        genres: np.ndarray,
        base: Recommender | None = None,
        svd_rank: int = 64,
        ease_l2: float = 250.0,
        shrink: float = 5.0,
        seed: int = 0,
        neighbours: int = 100,
        others: Mapping[str, Recommender] | None = None,
        memo_mb: float = 256.0,
    ) -> None:
        self.base = base
        self.n_items = n_items
        self.others = {name: others[name] for name in sorted(others or {})}
        self.names: tuple[str, ...] = FEATURE_NAMES + tuple(f"{RANK_PREFIX}{name}" for name in self.others)
        x = _binary_matrix(train, n_users, n_items)
        gram = (x.T @ x).astype(np.float64)
        degree = np.sqrt(np.maximum(np.diag(gram), 1.0))
        sim = (gram / degree[:, None] / degree[None, :]).astype(np.float32)
        np.fill_diagonal(sim, 0.0)
        if 0 < neighbours < n_items:  # keep each item's top neighbours (the usual item-kNN pruning)
            cut = np.partition(sim, n_items - neighbours, axis=1)[:, n_items - neighbours][:, None]
            sim = np.where(sim >= cut, sim, 0.0).astype(np.float32)
        self._knn = sim
        reg = gram.copy()
        reg[np.diag_indices(n_items)] += ease_l2
        p = np.linalg.inv(reg)
        ease = -p / np.diag(p)[None, :]
        np.fill_diagonal(ease, 0.0)
        self._ease = ease.astype(np.float32)
        rank = max(1, min(svd_rank, n_items - 1, n_users - 1))
        rng = np.random.default_rng([seed, 24])
        self._svd = _top_right_singular(x, rank, rng)
        counts = x.sum(axis=0).astype(np.float64)
        log_pop = np.log1p(counts)
        self._log_pop = (log_pop / log_pop.max() if log_pop.max() > 0 else log_pop).astype(np.float32)
        ratings = train["rating"].to_numpy(np.float64)
        items = train["item_id"].to_numpy(np.int64)
        global_mean = float(ratings.mean()) if len(ratings) else 3.0
        sums = np.bincount(items, weights=ratings, minlength=n_items)
        raw_counts = np.bincount(items, minlength=n_items).astype(np.float64)
        mean = (sums + shrink * global_mean) / (raw_counts + shrink)
        self._mean_rating = ((mean - 3.0) / 2.0).astype(np.float32)
        g = np.asarray(genres, dtype=np.float64)
        self._genres = g / np.maximum(g.sum(axis=1, keepdims=True), 1.0)  # each item's genres share one unit
        share = self._genres[items].sum(axis=0) + 1e-9
        self._genre_share = share / share.sum()  # the population's train genre share
        users = train["user_id"].to_numpy(np.int64)
        per_user = np.bincount(users, minlength=n_users)
        log_activity = np.log(per_user[per_user > 0].astype(np.float64))
        self._activity = (float(log_activity.mean()), float(log_activity.std() or 1.0))
        deviation = np.bincount(users, weights=(ratings - mean[items]) ** 2, minlength=n_users)
        conformity = deviation / np.maximum(per_user, 1)
        present = conformity[per_user > 0]
        sd = float(present.std() or 1.0)
        self._conformity = np.where(per_user > 0, (conformity - float(present.mean())) / sd, 0.0)
        self._pop_score = log_pop  # the base score without a base recommender
        per_user = n_items * (len(CATALOG_COLUMNS) + len(self.others)) * 4  # bytes of one user's float32 block
        self._memo_users = int(memo_mb * 2**20 // max(per_user, 1))
        self._memo: OrderedDict[tuple[int, bytes], np.ndarray] = OrderedDict()
        self._memo_lock = threading.Lock()

    def __getstate__(self) -> dict:
        """Pickled (e.g. shipped to an engine's worker) without the memo, which the copy refills."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_memo", "_memo_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._memo = OrderedDict()
        self._memo_lock = threading.Lock()

    def features(self, persona: Persona, candidate_ids: np.ndarray) -> np.ndarray:
        """(C, len(names)) float32: the module docstring's columns for `persona`'s candidates, in order."""
        ids = np.asarray(candidate_ids, dtype=np.int64)
        items = np.asarray(persona.train_items, dtype=np.int64)
        c = len(ids)
        out = np.zeros((c, len(self.names)), dtype=np.float64)
        if self.base is None:
            score = self._pop_score[ids]
        else:
            score = np.asarray(self.base.score(persona.user_id, ()), dtype=np.float64)[ids]
        score = np.nan_to_num(score, nan=0.0, posinf=0.0, neginf=0.0)
        out[:, 0] = _zscore(score)
        order = np.argsort(-score, kind="stable")
        rank = np.empty(c, dtype=np.float64)
        rank[order] = np.arange(c)
        out[:, 1] = rank / max(c - 1, 1)
        user = int(persona.user_id)
        catalog = self._user_catalog(user, items)[ids]
        out[:, list(CATALOG_COLUMNS)] = catalog[:, : len(CATALOG_COLUMNS)]
        out[:, 6] = self._log_pop[ids]
        out[:, 7] = self._mean_rating[ids]
        mean, sd = self._activity
        out[:, 8] = (np.log(max(len(items), 1)) - mean) / sd
        out[:, 9] = self._conformity[user] if 0 <= user < len(self._conformity) else 0.0
        out[:, len(FEATURE_NAMES) :] = catalog[:, len(CATALOG_COLUMNS) :]
        return np.clip(out, -BOUND, BOUND).astype(np.float32)

    @property
    def memoised_users(self) -> int:
        """How many users' catalog columns the memo holds (at most what `memo_mb` allows)."""
        return len(self._memo)

    def _user_catalog(self, user: int, items: np.ndarray) -> np.ndarray:
        """(n_items, 4 + len(others)) float32: knn, ease, svd, genre lift and the rank columns of every catalog item
        for a user with train `items` (memoised per user and train items, least recently used first out)."""
        key = (user, items.tobytes())
        with self._memo_lock:
            block = self._memo.get(key)
            if block is not None:
                self._memo.move_to_end(key)
                return block
        row = np.zeros(self.n_items, dtype=np.float32)
        row[items] = 1.0
        columns = [
            _zscore(np.log1p(self._knn[items].sum(axis=0, dtype=np.float64))),
            _zscore(self._ease[items].sum(axis=0, dtype=np.float64)),
            _zscore((row @ self._svd) @ self._svd.T),
            _zscore(self._genre_lift(items)),
        ]
        columns += [self._log_rank(recommender, user, items) for recommender in self.others.values()]
        # float32 after the float64 arithmetic: features() clips and casts to float32, so its values are unchanged
        block = np.column_stack(columns).astype(np.float32)
        if self._memo_users > 0:
            with self._memo_lock:
                self._memo[key] = block
                while len(self._memo) > self._memo_users:
                    self._memo.popitem(last=False)
        return block

    def _log_rank(self, recommender: Recommender, user: int, seen: np.ndarray) -> np.ndarray:
        """The response model's rank feature of every catalog item (`unseen_log_ranks`), scaled to [0, 1]."""
        scores = np.nan_to_num(np.asarray(recommender.score(user, ()), dtype=np.float64), nan=-np.inf)
        _, log_ranks = unseen_log_ranks(scores[None, :], [seen])
        return log_ranks[0] / np.log1p(max(self.n_items - 1, 1))

    def _genre_lift(self, items: np.ndarray, smoothing: float = 5.0) -> np.ndarray:
        """Per catalog item: its genres' mean log lift of the user's smoothed train genre share over the population."""
        counts = self._genres[items].sum(axis=0)
        share = (counts + smoothing * self._genre_share) / (len(items) + smoothing)
        return self._genres @ np.log(share / self._genre_share)


def unseen_log_ranks(scores: np.ndarray, seen: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(order, log ranks), both (B, n_items): row b's items by `scores` (B, n_items), best first, and log1p of each
    item's rank, both among the items not in `seen[b]`, ties to the lower id, seen items last. The rank features of
    the response model (`agents.features`) and of the candidate features (`rank:<name>`)."""
    scores = np.array(scores, dtype=np.float64)
    for row, items in enumerate(seen):
        scores[row, items] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")
    position = np.empty(order.shape, dtype=np.float64)
    np.put_along_axis(position, order, np.arange(scores.shape[1], dtype=np.float64)[None, :], axis=1)
    return order, np.log1p(position)


def _top_right_singular(x: np.ndarray, rank: int, rng: np.random.Generator, n_iter: int = 4) -> np.ndarray:
    """(n_items, rank) top right singular vectors of `x` by seeded randomized subspace iteration (Halko et al.)."""
    omega = rng.standard_normal((x.shape[1], rank + 8)).astype(np.float32)
    y = x @ omega
    for _ in range(n_iter):
        y, _ = np.linalg.qr(y)
        y = x @ (x.T @ y)
    q, _ = np.linalg.qr(y)
    _, _, vt = np.linalg.svd(q.T @ x, full_matrices=False)
    return vt[:rank].T.astype(np.float32)


def featurizer_for(
    train: pd.DataFrame,
    n_users: int,
    n_items: int,
    genres: np.ndarray,
    base: Recommender | None,
    seed: int = 0,
    others: Mapping[str, Recommender] | None = None,
) -> TrainCandidateFeatures:
    """The default featurizer (what `simrec.envs` and `simrec train-rl` build)."""
    return TrainCandidateFeatures(train, n_users, n_items, genres, base, seed=seed, others=others)


def column(names: Sequence[str], name: str) -> int:
    """Index of `name` in a featurizer's `names` (a clear error otherwise)."""
    try:
        return list(names).index(name)
    except ValueError:
        raise ValueError(f"candidate features {tuple(names)} have no {name!r} column") from None
