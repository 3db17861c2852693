"""Twelve recommenders the simulator has never seen, for `bench_unseen_validity` (issue 27's headline test).

Standard published recipes, written against the bring-your-own contract (`recommenders.base.BaseRecommender`)
exactly as a user would, none of them a fit source of the response model: neighbourhood (item-kNN, user-kNN),
linear (EASE), factorisation (PureSVD, implicit ALS), graph walks (P3alpha, RP3beta), heuristics (co-counts,
popularity among liked or recent ratings) and two noisy variants (EASE and item-kNN with seeded Gaussian noise
on each user's standardised scores), so the set spans strong to weak. Every model is deterministic given its
config seed; `_restore` recomputes from the saved train lists (closed forms) or from saved weights.

    PYTHONPATH=. .venv/bin/simrec validate --recommenders.names '["ease=benchmarks.unseen_recommenders:EASE"]' ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
import scipy.sparse.linalg  # noqa: F401  (sp.linalg.svds)
import torch

from recommenders.base import BaseRecommender, RecommenderConfig


def _train_matrix(model: BaseRecommender) -> sp.csr_matrix:
    """The (n_users, n_items) 0/1 train matrix of a fitted model."""
    assert model.user_items is not None
    users, items = model.user_items.pairs()
    data = np.ones(len(items), dtype=np.float32)
    return sp.csr_matrix((data, (users, items)), shape=(model.n_users, model.n_items))


def _rows(model: BaseRecommender, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None) -> sp.csr_matrix:
    """The users' train rows with this session's watched items added (0/1, CSR)."""
    x = _train_matrix_cached(model)[user_ids]
    if not histories or not any(len(h) for h in histories):
        return x
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    items = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories])
    watched = sp.csr_matrix((np.ones(len(items), dtype=np.float32), (rows, items)), shape=x.shape)
    return (x + watched).sign().tocsr()  # 0/1 however often an item was seen


def _train_matrix_cached(model: BaseRecommender) -> sp.csr_matrix:
    if getattr(model, "_x", None) is None:
        model._x = _train_matrix(model)  # type: ignore[attr-defined]
    return model._x  # type: ignore[attr-defined]


def _top_neighbours(sim: np.ndarray, k: int) -> np.ndarray:
    """Keep each row's k largest entries (ties to the lower index), zero the rest."""
    if k >= sim.shape[1]:
        return sim
    keep = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    out = np.zeros_like(sim)
    rows = np.arange(sim.shape[0])[:, None]
    out[rows, keep] = sim[rows, keep]
    return out


class _ItemItem(BaseRecommender):
    """Score = the user's rows of an item-item matrix summed; subclasses build the matrix in `_matrix`."""

    def _fit(self, valid: pd.DataFrame | None) -> None:
        self._x = None
        # C order: a CSC product's toarray() is Fortran-ordered, and one user's sparse row @ an F-ordered matrix
        # reads it column-strided (ML-1M CoCounts: 52 ms a user against 0.7 ms)
        self.w = np.ascontiguousarray(self._matrix(_train_matrix_cached(self)), dtype=np.float32)

    def _restore(self, state: Mapping[str, torch.Tensor]) -> None:
        self._fit(None)

    def _matrix(self, x: sp.csr_matrix) -> np.ndarray:
        raise NotImplementedError

    def score_batch(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        return np.asarray(_rows(self, user_ids, histories) @ self.w, dtype=np.float32)


@dataclass(frozen=True)
class ItemKNNConfig(RecommenderConfig):
    neighbours: int = 100
    shrink: float = 10.0


class ItemKNN(_ItemItem):
    """Item-kNN: cosine similarity of item columns with shrinkage, each item's `neighbours` nearest kept."""

    name = "itemknn"
    Config: ClassVar[type[RecommenderConfig]] = ItemKNNConfig

    def _matrix(self, x: sp.csr_matrix) -> np.ndarray:
        co = (x.T @ x).toarray()
        norms = np.sqrt(np.diag(co))
        sim = co / (np.outer(norms, norms) + self.config.shrink + 1e-9)
        np.fill_diagonal(sim, 0.0)
        return _top_neighbours(sim, self.config.neighbours)


@dataclass(frozen=True)
class EASEConfig(RecommenderConfig):
    l2: float = 500.0


class EASE(_ItemItem):
    """EASE (Steck 2019): closed-form item-item regression with a zero diagonal."""

    name = "ease"
    Config: ClassVar[type[RecommenderConfig]] = EASEConfig

    def _matrix(self, x: sp.csr_matrix) -> np.ndarray:
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.config.l2
        p = np.linalg.inv(gram)
        b = p / -np.diag(p)
        np.fill_diagonal(b, 0.0)
        return b


@dataclass(frozen=True)
class P3Config(RecommenderConfig):
    alpha: float = 1.0
    beta: float = 0.0
    neighbours: int = 200


class P3alpha(_ItemItem):
    """P3alpha (Cooper et al. 2014): a user -> item -> user -> item random walk, transition probabilities ** alpha."""

    name = "p3alpha"
    Config: ClassVar[type[RecommenderConfig]] = P3Config

    def _matrix(self, x: sp.csr_matrix) -> np.ndarray:
        ui = sp.diags(1.0 / np.maximum(np.asarray(x.sum(axis=1)).ravel(), 1.0)) @ x  # user -> item
        iu = sp.diags(1.0 / np.maximum(np.asarray(x.sum(axis=0)).ravel(), 1.0)) @ x.T.tocsr()  # item -> user
        ui.data **= self.config.alpha
        iu.data **= self.config.alpha
        walk = (iu @ ui).toarray()
        if self.config.beta:
            popularity = np.maximum(np.asarray(x.sum(axis=0)).ravel(), 1.0)
            walk = walk / popularity[None, :] ** self.config.beta
        np.fill_diagonal(walk, 0.0)
        return _top_neighbours(walk, self.config.neighbours)


@dataclass(frozen=True)
class RP3Config(P3Config):
    beta: float = 0.5


class RP3beta(P3alpha):
    """RP3beta (Paudel et al. 2017): P3alpha with each target item's score divided by its popularity ** beta."""

    name = "rp3beta"
    Config: ClassVar[type[RecommenderConfig]] = RP3Config


class CoCounts(_ItemItem):
    """How often each item was consumed together with the user's items (raw co-occurrence, no normalisation)."""

    name = "cocounts"

    def _matrix(self, x: sp.csr_matrix) -> np.ndarray:
        co = (x.T @ x).toarray()
        np.fill_diagonal(co, 0.0)
        return co


@dataclass(frozen=True)
class UserKNNConfig(RecommenderConfig):
    neighbours: int = 50
    shrink: float = 10.0


class UserKNN(BaseRecommender):
    """User-kNN: the train items of the user's `neighbours` most cosine-similar users, weighted by similarity."""

    name = "userknn"
    Config: ClassVar[type[RecommenderConfig]] = UserKNNConfig

    def _fit(self, valid: pd.DataFrame | None) -> None:
        self._x = None
        x = _train_matrix_cached(self)
        self.norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel()).astype(np.float32)

    def _restore(self, state: Mapping[str, torch.Tensor]) -> None:
        self._fit(None)

    def score_batch(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        x = _train_matrix_cached(self)
        rows = _rows(self, user_ids, histories)
        row_norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1)).ravel())
        sim = np.asarray((rows @ x.T).todense(), dtype=np.float32)
        sim /= np.outer(row_norms, self.norms) + self.config.shrink + 1e-9
        sim[np.arange(len(user_ids)), user_ids] = 0.0  # not the user's own row
        sim = _top_neighbours(sim, self.config.neighbours)
        return (sp.csr_matrix(sim) @ x).toarray().astype(np.float32)


@dataclass(frozen=True)
class FactorConfig(RecommenderConfig):
    factors: int = 64


class PureSVD(BaseRecommender):
    """PureSVD (Cremonesi et al. 2010): the train matrix's top singular directions, score = x V V^T."""

    name = "puresvd"
    Config: ClassVar[type[RecommenderConfig]] = FactorConfig

    def _fit(self, valid: pd.DataFrame | None) -> None:
        self._x = None
        x = _train_matrix_cached(self)
        rng = np.random.default_rng(self.config.seed)
        v0 = rng.standard_normal(min(x.shape))
        _, _, vt = sp.linalg.svds(x.astype(np.float64), k=self.config.factors, v0=v0)
        self.v = np.ascontiguousarray(vt.T, dtype=np.float32)

    def _state(self) -> dict[str, torch.Tensor]:
        return {"v": torch.from_numpy(self.v)}

    def _restore(self, state: Mapping[str, torch.Tensor]) -> None:
        self._x = None
        self.v = state["v"].numpy()

    def score_batch(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        return np.asarray((_rows(self, user_ids, histories) @ self.v) @ self.v.T, dtype=np.float32)


@dataclass(frozen=True)
class IALSConfig(FactorConfig):
    factors: int = 32
    alpha: float = 10.0
    l2: float = 1.0
    iterations: int = 8


class IALS(BaseRecommender):
    """Implicit ALS (Hu, Koren and Volinsky 2008): confidence 1 + alpha on consumed items, alternating exact solves.

    A session's watches fold in as extra positives of the user's row (one least-squares solve per scored user)."""

    name = "ials"
    Config: ClassVar[type[RecommenderConfig]] = IALSConfig

    def _fit(self, valid: pd.DataFrame | None) -> None:
        self._x = None
        x = _train_matrix_cached(self)
        rng = np.random.default_rng(self.config.seed)
        k = self.config.factors
        self.users = (rng.standard_normal((self.n_users, k)) * 0.01).astype(np.float64)
        self.items = (rng.standard_normal((self.n_items, k)) * 0.01).astype(np.float64)
        xt = x.T.tocsr()
        for _ in range(self.config.iterations):
            self.users = self._solve(x, self.items)
            self.items = self._solve(xt, self.users)
        self.users, self.items = self.users.astype(np.float32), self.items.astype(np.float32)

    def _solve(self, rows: sp.csr_matrix, fixed: np.ndarray) -> np.ndarray:
        """Each row's factors given the other side's: (Y^T Y + alpha Y_u^T Y_u + l2 I)^-1 (1 + alpha) Y_u^T 1."""
        a, k = self.config.alpha, fixed.shape[1]
        base = fixed.T @ fixed + self.config.l2 * np.eye(k)
        out = np.zeros((rows.shape[0], k))
        for r in range(rows.shape[0]):
            idx = rows.indices[rows.indptr[r] : rows.indptr[r + 1]]
            if idx.size:
                y = fixed[idx]
                out[r] = np.linalg.solve(base + a * (y.T @ y), (1.0 + a) * y.sum(axis=0))
        return out

    def _state(self) -> dict[str, torch.Tensor]:
        return {"users": torch.from_numpy(self.users), "items": torch.from_numpy(self.items)}

    def _restore(self, state: Mapping[str, torch.Tensor]) -> None:
        self._x = None
        self.users, self.items = state["users"].numpy(), state["items"].numpy()

    def score_batch(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        factors = self.users[user_ids].astype(np.float64)
        if histories and any(len(h) for h in histories):
            rows = _rows(self, user_ids, histories)
            items = self.items.astype(np.float64)
            for row, h in enumerate(histories):
                if len(h):
                    factors[row] = self._solve(rows[row], items)[0]
        return (factors @ self.items.T).astype(np.float32)


class _Popularity(BaseRecommender):
    """The same popularity vector for everyone; `fit` keeps the ratings and timestamps a subclass counts from
    (the base class keeps only item lists, so this overrides `fit`), `_state` saves the vector."""

    def fit(self, train: pd.DataFrame, n_users: int, n_items: int, valid: pd.DataFrame | None = None):  # noqa: ANN201
        self.popularity = self._count(train, n_items).astype(np.float32)
        return super().fit(train, n_users, n_items, valid)

    def _count(self, train: pd.DataFrame, n_items: int) -> np.ndarray:
        raise NotImplementedError

    def _state(self) -> dict[str, torch.Tensor]:
        return {"popularity": torch.from_numpy(self.popularity)}

    def _restore(self, state: Mapping[str, torch.Tensor]) -> None:
        self.popularity = state["popularity"].numpy()

    def score_batch(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        return np.broadcast_to(self.popularity, (len(user_ids), self.n_items)).copy()


class LikedPop(_Popularity):
    """Popularity among liked ratings only (rating >= 4)."""

    name = "liked-pop"

    def _count(self, train: pd.DataFrame, n_items: int) -> np.ndarray:
        liked = train[train["rating"].to_numpy() >= 4]
        return np.bincount(liked["item_id"].to_numpy(), minlength=n_items).astype(np.float64)


class RecentPop(_Popularity):
    """Popularity among the most recent quarter of train ratings (by timestamp), all-time counts breaking ties."""

    name = "recent-pop"

    def _count(self, train: pd.DataFrame, n_items: int) -> np.ndarray:
        cut = np.quantile(train["timestamp"].to_numpy(), 0.75)
        recent = train[train["timestamp"].to_numpy() >= cut]
        counts = np.bincount(recent["item_id"].to_numpy(), minlength=n_items).astype(np.float64)
        return counts + np.bincount(train["item_id"].to_numpy(), minlength=n_items) / (len(train) + 1.0)


@dataclass(frozen=True)
class NoisyConfig(RecommenderConfig):
    noise: float = 1.0


class _Noisy(BaseRecommender):
    """Mixin before a model: each user's scores standardised, plus seeded N(0, noise^2) per (user, item), the same
    on every call."""

    config: NoisyConfig

    def score_batch(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        scores = super().score_batch(user_ids, histories)
        z = (scores - scores.mean(axis=1, keepdims=True)) / (scores.std(axis=1, keepdims=True) + 1e-9)
        for row, user in enumerate(user_ids):
            rng = np.random.default_rng([self.config.seed, int(user)])
            z[row] += self.config.noise * rng.standard_normal(self.n_items)
        return z.astype(np.float32)


@dataclass(frozen=True)
class NoisyEASEConfig(EASEConfig, NoisyConfig):
    noise: float = 0.5


class NoisyEASE(_Noisy, EASE):
    """EASE with seeded noise on the standardised scores (a weaker linear model)."""

    name = "ease-noise"
    Config: ClassVar[type[RecommenderConfig]] = NoisyEASEConfig


@dataclass(frozen=True)
class NoisyItemKNNConfig(ItemKNNConfig, NoisyConfig):
    noise: float = 1.5


class NoisyItemKNN(_Noisy, ItemKNN):
    """Item-kNN with seeded noise on the standardised scores (a much weaker neighbourhood model)."""

    name = "itemknn-noise"
    Config: ClassVar[type[RecommenderConfig]] = NoisyItemKNNConfig


# label -> class name, the order the benchmark runs them in
UNSEEN = {
    "itemknn": "ItemKNN",
    "userknn": "UserKNN",
    "ease": "EASE",
    "puresvd": "PureSVD",
    "ials": "IALS",
    "p3alpha": "P3alpha",
    "rp3beta": "RP3beta",
    "cocounts": "CoCounts",
    "liked-pop": "LikedPop",
    "recent-pop": "RecentPop",
    "ease-noise": "NoisyEASE",
    "itemknn-noise": "NoisyItemKNN",
}
