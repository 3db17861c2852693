"""A learned re-ranker as an ordinary recommender: a base recommender's top candidates re-ranked with fixed weights.

`simrec export-policy RUN` writes a policy directory: `policy.json` (the feature weights, the featurizer's column
names, the base's name and how many of its top unseen items are re-ranked) and `base/` (the exact base model the
policy was trained on, saved by the registry). `WeightReranker(policy=DIR, dataset=...)` serves it for any user:
its candidates are the base's top `n_base` unseen items, ranked by `base_score + w . x` over the train-only features
of `recommenders.candidate_features` (the weights action mode's page rule, `simenv.kernel.rank_by_weights`, with the
policy's weights held fixed); items outside the candidates follow, in the base's order. No SB3 or torch policy is
needed at inference: numpy and the saved recommenders only.

Use: `--recommenders.names rl=recommenders.weight_reranker:WeightReranker` with
`--recommenders.config-file RUN/export/recommenders.toml` (which holds `[models.rl] policy = ".../export"`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recommenders import registry
from recommenders.candidate_features import TrainCandidateFeatures, column
from simenv.data.dataset import Dataset
from simenv.records import Page, PageFeedback, Recommendation

POLICY_FILE = "policy.json"
BASE_DIR = "base"
RANK_DIR = "rank"  # rank/<name>/: the recommenders of the rank:<name> feature columns
TRAIN_FILE = "train.npz"


@dataclass(frozen=True)
class _User:
    """What the featurizer reads of a user: the id (for the base score) and the train items."""

    user_id: int
    train_items: tuple[int, ...]


class WeightReranker:
    """A `simenv.protocols.Recommender` re-ranking its base's top candidates with a policy's weights (module doc)."""

    name = "weight-rerank"

    def __init__(self, policy: str | Path, dataset: Dataset | None = None) -> None:
        self.policy_dir = Path(policy)
        meta = json.loads((self.policy_dir / POLICY_FILE).read_text())
        self.meta = meta
        self.weights = np.asarray(meta["weights"], dtype=np.float64)
        self.names = tuple(meta["names"])
        self.n_base = int(meta["n_base"])
        if len(self.weights) != len(self.names):
            raise ValueError(
                f"{self.policy_dir / POLICY_FILE}: {len(self.weights)} weights for {len(self.names)} names"
            )
        self.dataset = dataset
        self.base: Any = None
        self.features: TrainCandidateFeatures | None = None
        self._train: dict[int, tuple[int, ...]] = {}
        self._frame: pd.DataFrame | None = None

    def fit(self, train: pd.DataFrame, n_users: int, n_items: int, valid: pd.DataFrame | None = None) -> WeightReranker:
        """Load the exported base (not retrained: the policy's weights were learnt on its scores) and build the
        train-only features from `train`."""
        if self.dataset is None:
            raise ValueError("WeightReranker needs the dataset (its genres are candidate features)")
        self.base = registry.load(self.policy_dir / BASE_DIR)
        others = {name: registry.load(self.policy_dir / RANK_DIR / name) for name in self.meta.get("rank_sources", [])}
        frame = train[["user_id", "item_id", "rating"]].reset_index(drop=True)
        self._frame = frame
        self.features = TrainCandidateFeatures(
            frame,
            n_users,
            n_items,
            self.dataset.genre_matrix,
            self.base,
            seed=int(self.meta.get("seed", 0)),
            others=others,
        )
        if tuple(self.features.names) != self.names:
            raise ValueError(f"policy features {self.names} differ from the featurizer's {self.features.names}")
        self._train = {int(u): tuple(g.tolist()) for u, g in frame.groupby("user_id")["item_id"]}
        self._n_items = n_items
        return self

    def score(self, user_id: int, history: Sequence[int] = ()) -> np.ndarray:
        """Catalog scores: the re-ranked candidates first (highest), then every other item in the base's order."""
        if self.features is None:
            raise RuntimeError("WeightReranker: call fit() (or load()) before scoring")
        base = np.asarray(self.base.score(int(user_id), ()), dtype=np.float64)
        base = np.nan_to_num(base, nan=0.0, posinf=0.0, neginf=0.0)
        user = _User(int(user_id), self._train.get(int(user_id), ()))
        blocked = np.zeros(len(base), dtype=bool)
        blocked[list(user.train_items)] = True
        order = np.argsort(-np.where(blocked, -np.inf, base), kind="stable")
        candidates = order[: self.n_base]
        x = self.features.features(user, candidates).astype(np.float64)  # type: ignore[arg-type]
        rerank = x[:, column(self.names, "base_score")] + x @ self.weights
        ranked = candidates[np.argsort(-rerank, kind="stable")]
        out = np.empty(len(base), dtype=np.float64)
        out[order] = -np.arange(len(base), dtype=np.float64)  # the base's order below ...
        out[ranked] = len(base) - np.arange(len(ranked), dtype=np.float64)  # ... the re-ranked candidates on top
        return out

    def recommend(
        self, user_id: int, k: int, exclude: Collection[int], rng: np.random.Generator, history: Sequence[int] = ()
    ) -> Recommendation:
        """The k best-scored items not in `exclude` (deterministic; `rng` unused)."""
        scores = self.score(user_id, history)
        ids = np.asarray(sorted(int(i) for i in exclude), dtype=np.int64)
        scores[ids[(ids >= 0) & (ids < len(scores))]] = -np.inf
        if int(np.isfinite(scores).sum()) < k:
            raise ValueError(f"asked for k={k} items but only {int(np.isfinite(scores).sum())} are not excluded")
        chosen = np.argsort(-scores, kind="stable")[:k]
        return Recommendation(tuple(int(i) for i in chosen))

    def observe(self, user_id: int, page: Page, feedback: PageFeedback) -> None:
        return None

    def save(self, path: Path) -> None:
        """The policy (weights, base model) and the train interactions the features are rebuilt from."""
        if self._frame is None:
            raise RuntimeError("WeightReranker: nothing to save before fit()")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / POLICY_FILE).write_text(json.dumps(self.meta, indent=2))
        for sub in (BASE_DIR, RANK_DIR):
            if (path / sub).exists():
                shutil.rmtree(path / sub)
        self.base.save(path / BASE_DIR)
        for name, recommender in (self.features.others if self.features else {}).items():
            recommender.save(path / RANK_DIR / name)
        f = self._frame
        np.savez(
            path / TRAIN_FILE,
            user_id=f["user_id"].to_numpy(np.int64),
            item_id=f["item_id"].to_numpy(np.int64),
            rating=f["rating"].to_numpy(np.float64),
            shape=np.array([self.features.n_items if self.features else 0, self._n_users()], dtype=np.int64),
        )

    def _n_users(self) -> int:
        return int(getattr(self.base, "n_users", 0))

    @classmethod
    def load(cls, path: Path, dataset: Dataset | None = None) -> WeightReranker:
        """Rebuild a saved re-ranker (scores identical to the saved one's)."""
        model = cls(path, dataset)
        data = np.load(Path(path) / TRAIN_FILE)
        train = pd.DataFrame({"user_id": data["user_id"], "item_id": data["item_id"], "rating": data["rating"]})
        n_items, n_users = (int(v) for v in data["shape"])
        return model.fit(train, n_users, n_items)
