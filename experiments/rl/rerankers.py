"""Page policies that re-rank each session's candidate set by a per-candidate score (no SB3 involved).

`CandidateReranker` builds, per user session, the same candidate set as the env and `SB3Recommender` (the base
recommender's top unseen items plus the seeded exploration sample, drawn from the runner's generator, so every
policy of an evaluation sees the same sets) and shows the best-scored candidates not yet shown. Two scores:
- `greedy_score(decider)`: the fitted response model's watch probability ("sim-greedy"): a yardstick of what the
  simulator itself would rank first, never a deployable policy (it reads the simulator);
- `weights_score(featurizer, weights)`: base score + w . x over the train-only candidate features, the page rule of
  the weights action mode with a fixed weight vector (what `simrec export-policy` ships).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from simenv import kernel
from simenv.candidates import candidate_set
from simenv.data.dataset import Dataset
from simenv.protocols import CandidateFeaturizer, Recommender
from simenv.records import Page, PageFeedback, Persona, Recommendation
from simenv.spaces import ItemFeatures, prior_column

Score = Callable[[Persona, np.ndarray], np.ndarray]


class CandidateReranker:
    """A `simenv.protocols.PagePolicy` showing each session's best-scored unshown candidates (module docstring).

    `page` holds the env's page settings (`n_candidates`, `explore_fraction`) as a checkpoint stores them.
    """

    def __init__(
        self,
        name: str,
        score: Score,
        dataset: Dataset,
        personas: Mapping[int, Persona],
        train: pd.DataFrame,
        base: Recommender | None,
        page: Mapping[str, Any],
    ) -> None:
        self.name = name
        self.score = score
        self.personas = personas
        self.base = base
        self.features = ItemFeatures.from_train(dataset, train)
        self.n_candidates = int(page["n_candidates"])
        self.n_explore = int(round(float(page["explore_fraction"]) * self.n_candidates))
        self._sessions: dict[int, tuple[np.ndarray, np.ndarray, set[int]]] = {}  # user -> (ids, scores, shown)

    def recommend(
        self, user_id: int, k: int, exclude: Collection[int], rng: np.random.Generator, history: Sequence[int] = ()
    ) -> Recommendation:
        session = self._sessions.get(user_id)
        if session is None or not all(i in exclude for i in session[2]):  # a new session
            persona = self.personas[user_id]
            ids = candidate_set(persona, self.n_candidates, self.n_explore, rng, self.features, self.base)
            session = (ids, np.asarray(self.score(persona, ids), dtype=np.float64), set())
            self._sessions[user_id] = session
        ids, scores, shown = session
        blocked = set(exclude) | shown
        order = [int(ids[j]) for j in np.argsort(-scores, kind="stable") if int(ids[j]) not in blocked]
        page = tuple(order[:k])
        shown.update(page)
        return Recommendation(page)

    def observe(self, user_id: int, page: Page, feedback: PageFeedback) -> None:
        return None


def greedy_score(decider: Any) -> Score:
    """The response model's watch probability of each candidate (`decider.watch_probability`)."""
    return lambda persona, ids: decider.watch_probability(persona, ids)


def weights_score(featurizer: CandidateFeaturizer, weights: np.ndarray) -> Score:
    """base score + w . x: the weights action mode's rule (`simenv.kernel.rank_by_weights`) with fixed weights."""
    w = np.asarray(weights, dtype=np.float64)
    prior = prior_column(featurizer)

    def score(persona: Persona, ids: np.ndarray) -> np.ndarray:
        x = np.asarray(featurizer.features(persona, ids), dtype=np.float64)[None]
        page = kernel.rank_by_weights(w[None], x, np.ones((1, len(ids)), dtype=bool), len(ids), prior)[0]
        out = np.empty(len(ids), dtype=np.float64)
        out[page] = -np.arange(len(ids), dtype=np.float64)  # the rule's order (ties by base rank) as scores
        return out

    return score
