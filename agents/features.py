"""Features of a (persona, item) pair for the fitted response model, all computed from the TRAIN split only.

Each feature is one column of the matrix `PairFeatures.matrix(persona)` (n_items x n_features). Per-persona
scores are standardised over the catalog (mean 0, sd 1 across items), so a tree split means the same thing
for every persona:
- log_pop:          log1p(train ratings of the item), the same for every persona;
- genre:            the persona's genre lift (agents.signals.genre_signal);
- knn:              item-item cosine co-occurrence summed over the persona's train items (collaborative);
- svd:              the persona's row of the binary train matrix projected on its top `svd_rank` right singular
                    vectors (a pure-SVD / PureSVD score, collaborative);
- ease:             EASE (Steck 2019) closed-form item-item regression score (collaborative);
- embedding:        cosine of the persona's taste text and the item text (needs an injected embedder);
- item_mean:        the item's shrunk mean train rating;
- activity:         log of the persona's train ratings (the Agent4Rec activity trait, continuous);
- conformity:       the persona's mean squared deviation from item means (the conformity trait, continuous);
- diversity:        the number of genres covering 80% of the persona's genre counts (the diversity trait);
- pop_x_activity:   log_pop x standardised activity;
- pop_x_conformity: log_pop x standardised conformity (mavericks care less about popularity);
- rank:<source>:    log1p of the item's rank among the persona's unseen items by a recommender trained on TRAIN
                    (the response model's fit sources, `ResponseConfig.source_ranks`): what the strong CF models
                    know beyond the hand-made scores. Without them the fit under-rates the policies that rank
                    well and over-rates weak ones (ML-100K: -14..-17% for MF/LightGCN/MultVAE, +15..+25% for
                    Random and popularity bands, relative to the median policy).
`COLLAB` features share the train split with the CF recommenders being judged (the circularity risk); the
`nocollab` feature set leaves them out. Position on the page and page index are not features: rating logs hold
no impressions, so their effect cannot be identified from this data (see agents.response).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.decomposition import TruncatedSVD

from agents.signals import CollabPrior, TrainStats, embedding_signal, genre_signal, standardise
from simenv.data.dataset import Dataset
from simenv.records import Persona

if TYPE_CHECKING:  # agents.decision imports this module's users; only the type is needed here
    from agents.decision import ItemVectors

ALL_FEATURES = (
    "log_pop",
    "genre",
    "knn",
    "svd",
    "ease",
    "embedding",
    "item_mean",
    "activity",
    "conformity",
    "diversity",
    "pop_x_activity",
    "pop_x_conformity",
)
COLLAB = frozenset({"knn", "svd", "ease"})
RANK_PREFIX = "rank:"  # a recommender's rank feature (`rankings`), named after its source
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "full": tuple(f for f in ALL_FEATURES if f != "embedding"),
    "full+embedding": ALL_FEATURES,
    "nocollab": tuple(f for f in ALL_FEATURES if f not in COLLAB and f != "embedding"),
    "nocollab+embedding": tuple(f for f in ALL_FEATURES if f not in COLLAB),
}


def feature_names(feature_set: str) -> tuple[str, ...]:
    """The columns of a named feature set; a clear error lists the known names."""
    try:
        return FEATURE_SETS[feature_set]
    except KeyError:
        raise ValueError(f"unknown feature set {feature_set!r}; known: {', '.join(FEATURE_SETS)}") from None


def ease_weights(train: pd.DataFrame, n_users: int, n_items: int, l2: float = 250.0) -> np.ndarray:
    """EASE item-item weights B = I - P / diag(P), P = (X^T X + l2 I)^-1, with a zero diagonal."""
    x = np.zeros((n_users, n_items), dtype=np.float64)
    x[train["user_id"].to_numpy(np.int64), train["item_id"].to_numpy(np.int64)] = 1.0
    gram = x.T @ x
    gram[np.diag_indices(n_items)] += l2
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


def svd_items(train: pd.DataFrame, n_users: int, n_items: int, rank: int, seed: int) -> np.ndarray:
    """(n_items, rank) right singular vectors of the binary train matrix (seeded randomized SVD)."""
    from scipy.sparse import csr_matrix

    users = train["user_id"].to_numpy(np.int64)
    items = train["item_id"].to_numpy(np.int64)
    x = csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items))
    x.sum_duplicates()
    x.data[:] = 1.0
    rank = max(1, min(rank, n_items - 1, n_users - 1))
    svd = TruncatedSVD(n_components=rank, random_state=seed).fit(x)
    return svd.components_.T.astype(np.float32)


class PairFeatures:
    """Builds the feature matrix of every catalog item for a persona (see module docstring)."""

    def __init__(
        self,
        dataset: Dataset,
        train: pd.DataFrame,
        names: Sequence[str],
        item_vectors: ItemVectors | None = None,
        svd_rank: int = 64,
        seed: int = 0,
        rankings: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        unknown = sorted(set(names) - set(ALL_FEATURES))
        if unknown:
            raise ValueError(f"unknown response features {unknown}; known: {', '.join(ALL_FEATURES)}")
        if "embedding" in names and item_vectors is None:
            raise ValueError("the 'embedding' response feature needs item vectors (an embedder)")
        self.rankings = {source: rankings[source] for source in sorted(rankings or {})}
        self.names = tuple(names) + tuple(f"{RANK_PREFIX}{source}" for source in self.rankings)
        self.dataset = dataset
        self.stats = TrainStats.from_train(dataset, train)
        self.item_vectors = item_vectors
        n_users, n_items = dataset.n_users, dataset.n_items
        self.log_pop = np.log1p(self.stats.counts).astype(np.float32)
        self.item_mean = self.stats.item_mean.astype(np.float32)
        self.knn = CollabPrior.from_train(train, n_users, n_items) if "knn" in names else None
        self.svd = svd_items(train, n_users, n_items, svd_rank, seed) if "svd" in names else None
        self.ease = ease_weights(train, n_users, n_items) if "ease" in names else None
        # trait scales for the interactions, from the train users (population mean and sd)
        per_user = train.groupby("user_id")["item_id"].size()
        log_activity = np.log(per_user.to_numpy(np.float64))
        self._activity_mean, self._activity_sd = float(log_activity.mean()), float(log_activity.std() or 1.0)
        self._conformity: tuple[float, float] | None = None
        self._taste: dict[int, np.ndarray] = {}

    def with_rankings(self, rankings: Mapping[str, np.ndarray] | None) -> PairFeatures:
        """These features with other sources' rank columns: the train-only scorers (kNN, SVD, EASE, statistics)
        are shared, not recomputed (a leave-one-source-out fit differs from the main fit only in its sources)."""
        clone = copy.copy(self)
        clone.rankings = {source: rankings[source] for source in sorted(rankings or {})}
        base = tuple(name for name in self.names if not name.startswith(RANK_PREFIX))
        clone.names = base + tuple(f"{RANK_PREFIX}{source}" for source in clone.rankings)
        clone._taste = {}
        return clone

    def set_conformity_scale(self, personas: Sequence[Persona]) -> None:
        """Mean and sd of the conformity trait over a population, for pop_x_conformity."""
        values = np.array([p.conformity_value for p in personas], dtype=np.float64)
        self._conformity = (float(values.mean()), float(values.std() or 1.0))

    def _taste_vector(self, persona: Persona) -> np.ndarray:
        vec = self._taste.get(persona.user_id)
        if vec is None:
            assert self.item_vectors is not None
            vec = self._taste[persona.user_id] = self.item_vectors.embedder.embed([persona.taste_text])[0]
        return vec

    def matrix(self, persona: Persona) -> np.ndarray:
        """(n_items, n_features) float32 features of every catalog item for `persona` (train split only)."""
        return np.stack([self._column(name, persona) for name in self.names], axis=1)

    def _column(self, name: str, persona: Persona) -> np.ndarray:
        """One feature column of every catalog item for `persona`."""
        items = np.asarray(persona.train_items, dtype=np.int64)
        n = self.dataset.n_items
        if name.startswith(RANK_PREFIX):
            col = self.rankings[name.removeprefix(RANK_PREFIX)][persona.user_id]
        elif name == "log_pop":
            col = self.log_pop
        elif name == "genre":
            col = genre_signal(self.stats, persona)
        elif name == "knn":
            assert self.knn is not None
            col = self.knn.signal(persona)
        elif name == "svd":
            assert self.svd is not None
            row = np.zeros(n, dtype=np.float32)
            row[items] = 1.0
            col = standardise((row @ self.svd) @ self.svd.T)
        elif name == "ease":
            assert self.ease is not None
            col = standardise(self.ease[items].sum(axis=0))
        elif name == "embedding":
            assert self.item_vectors is not None
            col = embedding_signal(self.item_vectors.all(), self._taste_vector(persona))
        elif name == "item_mean":
            col = self.item_mean
        elif name == "activity":
            col = np.full(n, np.log(max(len(items), 1)), dtype=np.float32)
        elif name == "conformity":
            col = np.full(n, persona.conformity_value, dtype=np.float32)
        elif name == "diversity":
            col = np.full(n, persona.diversity_value, dtype=np.float32)
        elif name in ("pop_x_activity", "pop_x_conformity"):
            col = self.log_pop * np.float32(self._z_trait(name, persona, len(items)))
        else:  # pragma: no cover - guarded in __init__
            raise AssertionError(name)
        return np.asarray(col, dtype=np.float32)

    def _z_trait(self, name: str, persona: Persona, n_train: int) -> float:
        """The standardised activity or conformity trait an interaction feature multiplies log_pop by."""
        if name == "pop_x_activity":
            return (np.log(max(n_train, 1)) - self._activity_mean) / self._activity_sd
        conf_mean, conf_sd = self._conformity or (persona.conformity_value, 1.0)
        return (persona.conformity_value - conf_mean) / conf_sd
