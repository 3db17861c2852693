"""A trained SB3 page policy (the ranking policy, or any slate model) as a recommender `--recommenders.names` accepts.

`simrec export-policy RUN` on a non-weights checkpoint writes `RUN/export/policy.json` naming the checkpoint;
`PolicyRanker(policy=DIR, dataset=...)` serves the checkpoint's model exactly as `simrec evaluate-rl` does
(`simenv.policies.SB3Recommender`: its base's candidates, the observation of the session so far, one page per
call), so `compare` and `validate` score it like any recommender. For offline metrics, `score` puts the pages the
policy would show a user who watches nothing on top, then its base's order. It needs SB3 and torch at inference
(the model) and the checkpoint's world (personas, split and base), rebuilt from the cache; unlike
`recommenders.weight_reranker` it follows the session, as the policy was trained to.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.build import build_world, train_recommender
from experiments.rl.checkpoint import Checkpoint, decisions_only
from experiments.rl.features import candidate_featurizer
from simenv.data.dataset import Dataset
from simenv.kernel import NoCandidateLeftError
from simenv.policies import SB3Recommender
from simenv.records import ItemReaction, Page, PageFeedback, Recommendation

POLICY_FILE = "policy.json"


class PolicyRanker:
    """A `simenv.protocols.Recommender` serving a `simrec train-rl` checkpoint's policy (module doc)."""

    name = "policy-rank"

    def __init__(self, policy: str | Path, dataset: Dataset | None = None) -> None:
        self.policy_dir = Path(policy)
        self.meta = json.loads((self.policy_dir / POLICY_FILE).read_text())
        self.checkpoint = Checkpoint.load(Path(self.meta["checkpoint"]))
        self.dataset = dataset
        self.base: Any = None
        self._serving: SB3Recommender | None = None
        self._scoring: SB3Recommender | None = None
        self._n_items = 0

    def fit(self, train: pd.DataFrame, n_users: int, n_items: int, valid: pd.DataFrame | None = None) -> PolicyRanker:
        """Rebuild the checkpoint's world, base and featurizer (not retrained: the policy learnt on them); `train`
        must be the checkpoint's train split (the policy's features are computed from it)."""
        config = decisions_only(self.checkpoint.experiment())
        world = build_world(config)
        mine = world.split.train[["user_id", "item_id"]].to_numpy()
        given = train[["user_id", "item_id"]].to_numpy()
        if mine.shape != given.shape or not np.array_equal(np.sort(mine, axis=0), np.sort(given, axis=0)):
            raise ValueError(
                f"{self.policy_dir}: the policy was trained on {config.data.dataset} seed {config.run.seed}'s train "
                f"split ({len(mine)} rows); this run's has {len(given)} rows: use the same dataset and seed"
            )
        return self._rebuild(config, world, n_items)

    def _rebuild(self, config: Any, world: Any, n_items: int) -> PolicyRanker:
        self.base = train_recommender(config, world, self.checkpoint.base)[0]
        featurizer = candidate_featurizer(config, world, self.base)
        model = self.checkpoint.load_model()
        page = self.checkpoint.env

        def adapter() -> SB3Recommender:
            return SB3Recommender(
                model,
                world.dataset,
                world.population,
                world.split.train,
                action_mode=self.checkpoint.action_mode,
                page_size=page["page_size"],
                max_pages=page["max_pages"],
                n_candidates=page["n_candidates"],
                explore_fraction=page["explore_fraction"],
                history_len=page["history_len"],
                candidate_recommender=self.base,
                name=self.name,
                candidate_featurizer=featurizer,
            )

        self._serving, self._scoring, self._n_items = adapter(), adapter(), n_items
        self._seed = config.run.seed
        return self

    def recommend(
        self, user_id: int, k: int, exclude: Collection[int], rng: np.random.Generator, history: Sequence[int] = ()
    ) -> Recommendation:
        """A page of the policy's page size: the policy's page for the session so far; any other `k` (or once the
        session's candidates are used up): the best `k` by `score` that are not excluded."""
        adapter = self._adapter()
        if k == adapter.page_size:
            try:
                return adapter.recommend(user_id, k, exclude, rng, history)
            except NoCandidateLeftError:  # the session's candidates are used up or excluded: continue in score order
                pass
        scores = self.score(user_id, history)
        blocked = np.asarray([i for i in exclude if 0 <= int(i) < len(scores)], dtype=np.int64)
        scores[blocked] = -np.inf
        if int(np.isfinite(scores).sum()) < k:
            raise ValueError(f"asked for k={k} items but only {int(np.isfinite(scores).sum())} are not excluded")
        return Recommendation(tuple(int(i) for i in np.argsort(-scores, kind="stable")[:k]))

    def observe(self, user_id: int, page: Page, feedback: PageFeedback) -> None:
        self._adapter().observe(user_id, page, feedback)

    def score(self, user_id: int, history: Sequence[int] = ()) -> np.ndarray:
        """Catalog scores: the policy's pages for a user who watches nothing (best first), then the base's order."""
        scoring = self._adapter(self._scoring)
        base = np.nan_to_num(np.asarray(self.base.score(int(user_id), ()), dtype=np.float64), nan=0.0)
        out = -np.argsort(np.argsort(-base, kind="stable"), kind="stable").astype(np.float64)  # base order, below 0
        rng = np.random.default_rng([self._seed, int(user_id), 24])
        shown: list[int] = []
        blocked = set(scoring.personas[int(user_id)].train_items)
        size = scoring.page_size
        for _ in range(scoring.max_pages):
            page = scoring.recommend(int(user_id), size, blocked | set(shown), rng).item_ids
            reactions = tuple(ItemReaction(item_id=i, watched=False) for i in page)
            feedback = PageFeedback(reactions=reactions, left=False)
            scoring.observe(int(user_id), Page(episode=0, page_index=len(shown) // size, item_ids=page), feedback)
            shown.extend(page)
        out[shown] = self._n_items + len(shown) - np.arange(len(shown), dtype=np.float64)
        return out  # the next call's `exclude` lacks these pages, so the adapter starts a new session

    def save(self, path: Path) -> None:
        """The policy file (it names the checkpoint the model and world are rebuilt from)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / POLICY_FILE).write_text(json.dumps(self.meta, indent=2))

    @classmethod
    def load(cls, path: Path, dataset: Dataset | None = None) -> PolicyRanker:
        """Rebuild a saved ranker from the checkpoint its policy file names (the world and base from the cache)."""
        model = cls(path, dataset)
        config = decisions_only(model.checkpoint.experiment())
        world = build_world(config)
        return model._rebuild(config, world, world.dataset.n_items)

    def _adapter(self, which: SB3Recommender | None = None) -> SB3Recommender:
        adapter = which or self._serving
        if adapter is None:
            raise RuntimeError("PolicyRanker: call fit() before recommending")
        return adapter
