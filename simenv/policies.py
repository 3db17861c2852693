"""Adapters between recommenders and the env: a recommender driving `RecEnv`, and an SB3 model as a recommender.

- `RecommenderPolicy`: any `simenv.protocols.Recommender` chooses each page among the env's available
  candidates (everything else is passed as `exclude`), then `observe`s the feedback.
- `RandomPolicy`: uniformly random valid pages (benchmarks, baselines).
- `SB3Recommender`: a trained SB3 model (PPO on the slate env, DQN on the sequential one) as a page policy
  (`recommend` + `observe`, all the comparison runner `simenv.runner.run_sessions` calls), so it can be
  evaluated next to the classic recommenders. It rebuilds the env's observation with the same `SessionState`.
- `rollout`: run episodes of any policy in an env (used by the Minari export and the RL scripts).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from simenv import defaults, kernel
from simenv.candidates import candidate_set
from simenv.data.dataset import Dataset
from simenv.env import RecEnv
from simenv.protocols import CandidateFeaturizer, Recommender
from simenv.records import Page, PageFeedback, Persona, Recommendation
from simenv.spaces import ItemFeatures, SessionState, persona_features, prior_column


class EnvPolicy(Protocol):
    """Chooses actions for a `RecEnv` (the unwrapped env is passed so policies can read the session state)."""

    name: str

    def act(self, env: RecEnv, obs: Mapping[str, np.ndarray], info: Mapping[str, Any]) -> Any: ...

    def observe(self, env: RecEnv, info: Mapping[str, Any]) -> None: ...


def _slate_to_action(env: RecEnv, indices: list[int]) -> Any:
    return np.asarray(indices, dtype=np.int64)


class RandomPolicy:
    """Uniformly random distinct available candidates; seeded by the generator passed in."""

    name = "random-valid"

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def act(self, env: RecEnv, obs: Mapping[str, np.ndarray], info: Mapping[str, Any]) -> Any:
        if env.action_mode == "weights":
            return self.rng.uniform(-1.0, 1.0, env.action_space.shape).astype(np.float32)
        available = np.flatnonzero(info["action_mask"])
        if env.action_mode == "sequential":
            return int(available[self.rng.integers(len(available))])
        return self.rng.choice(available, size=env.page_size, replace=False).astype(np.int64)

    def observe(self, env: RecEnv, info: Mapping[str, Any]) -> None:
        return None


class RecommenderPolicy:
    """A `Recommender` driving the env: it ranks the available candidates; in sequential mode the page it
    chose is fed one slot per step."""

    def __init__(self, recommender: Recommender, rng: np.random.Generator) -> None:
        self.recommender = recommender
        self.rng = rng
        self.name = getattr(recommender, "name", type(recommender).__name__)
        self._queue: list[int] = []

    def act(self, env: RecEnv, obs: Mapping[str, np.ndarray], info: Mapping[str, Any]) -> Any:
        state = env.state
        if env.action_mode == "weights":
            raise ValueError(f"RecommenderPolicy {self.name!r}: a weights-mode env takes feature weights, not pages")
        if env.action_mode == "sequential" and self._queue:
            return self._queue.pop(0)
        mask = state.action_mask()
        allowed = set(state.candidate_ids[mask].tolist())
        exclude = set(range(env.dataset.n_items)) - allowed
        k = env.page_size - len(state.pending)
        rec = self.recommender.recommend(state.persona.user_id, k, exclude, self.rng, tuple(state.watched_items))
        indices = []
        for item in rec.item_ids:
            index = state.candidate_index(int(item))
            if index is None or not mask[index]:
                raise ValueError(f"recommender {self.name!r} returned item {item}, not an available candidate")
            indices.append(index)
        if env.action_mode == "sequential":
            self._queue = indices[1:]
            return indices[0]
        return _slate_to_action(env, indices)

    def observe(self, env: RecEnv, info: Mapping[str, Any]) -> None:
        if "feedback" in info:
            page = Page(env.episode, env.state.page_index - 1, tuple(info["page_items"].tolist()))
            self.recommender.observe(env.state.persona.user_id, page, info["feedback"])


def rollout(env: Any, policy: EnvPolicy, n_episodes: int, seed: int) -> list[float]:
    """Run `n_episodes` (episode e reset with seed `seed + e`); returns the episode returns."""
    inner: RecEnv = env.unwrapped
    returns = []
    for e in range(n_episodes):
        obs, info = env.reset(seed=seed + e)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy.act(inner, obs, info))
            policy.observe(inner, info)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


class SB3Recommender:
    """A trained SB3 model as a page policy for the comparison runner.

    It is a `simenv.protocols.PagePolicy` (`name`, `recommend`, `observe`: what the runner calls) with `save`,
    but not `fit` or `score`: it is trained in the env, and it chooses pages among its session's candidate
    set, so it has no score for every item of the catalog. It is therefore not a `Recommender` (`isinstance`
    is False) and offline metrics or `recommenders.degraded` cannot wrap it.

    For each user's session it builds the same candidate set and observation as `RecEnv` (same
    `n_candidates`, `explore_fraction`, `history_len`, candidate recommender and featurizer) and asks the model
    for a page: one `predict` for a slate model, `page_size` predicts for a sequential (DQN) model, one
    `predict` of feature weights for a weights model (the env's `simenv.kernel.rank_by_weights` page rule).
    Picks that are excluded or repeated are replaced by the best available candidate (the env's repair rule). A new
    session starts when the runner's `exclude` no longer contains what this adapter has shown the user.
    """

    def __init__(
        self,
        model: Any,
        dataset: Dataset,
        personas: Mapping[int, Persona],
        train: pd.DataFrame,
        action_mode: str = "slate",
        page_size: int = defaults.PAGE_SIZE,
        max_pages: int = defaults.MAX_PAGES,
        n_candidates: int | None = None,
        explore_fraction: float = defaults.EXPLORE_FRACTION,
        history_len: int = defaults.HISTORY_LEN,
        candidate_recommender: Recommender | None = None,
        name: str = "sb3",
        deterministic: bool = True,
        candidate_featurizer: CandidateFeaturizer | None = None,
    ) -> None:
        if action_mode == "weights" and candidate_featurizer is None:
            raise ValueError(
                f"SB3Recommender {name!r}: a weights model needs the candidate featurizer it was trained with"
            )
        self.model = model
        self.name = name
        self.dataset = dataset
        self.personas = personas
        self.action_mode = action_mode
        self.page_size = page_size
        self.max_pages = max_pages
        self.n_candidates = n_candidates or kernel.default_n_candidates(page_size, max_pages)
        self.n_explore = int(round(explore_fraction * self.n_candidates))
        self.history_len = history_len
        self.candidate_recommender = candidate_recommender
        self.candidate_featurizer = candidate_featurizer
        self._prior = prior_column(candidate_featurizer)
        self.deterministic = deterministic
        self.features = ItemFeatures.from_train(dataset, train)
        self._states: dict[int, SessionState] = {}

    @classmethod
    def from_env(cls, model: Any, env: Any, name: str = "sb3", action_mode: str | None = None) -> SB3Recommender:
        """Mirror an env's settings (the env it is evaluated in); `action_mode` = the mode it was trained in."""
        e: RecEnv = env.unwrapped
        return cls(
            model,
            e.dataset,
            e.personas,
            e.train,
            action_mode=action_mode or e.action_mode,
            page_size=e.page_size,
            max_pages=e.max_pages,
            n_candidates=e.n_candidates,
            explore_fraction=e.n_explore / e.n_candidates,
            history_len=e.history_len,
            candidate_recommender=e.candidate_recommender,
            name=name,
            candidate_featurizer=e.candidate_featurizer,
        )

    def _state(self, user_id: int, exclude: Collection[int], rng: np.random.Generator) -> SessionState:
        state = self._states.get(user_id)
        if state is None or not all(i in exclude for i in state.shown_items):
            persona = self.personas[user_id]
            candidates = candidate_set(
                persona, self.n_candidates, self.n_explore, rng, self.features, self.candidate_recommender
            )
            vector = persona_features(persona, self.features.genre_vocabulary)
            featurizer = self.candidate_featurizer
            table = None if featurizer is None else featurizer.features(persona, candidates)
            state = SessionState(
                persona, vector, candidates, self.features, self.page_size, self.max_pages, self.history_len, table
            )
            self._states[user_id] = state
        return state

    def recommend(
        self,
        user_id: int,
        k: int,
        exclude: Collection[int],
        rng: np.random.Generator,
        history: Sequence[int] = (),
    ) -> Recommendation:
        if k != self.page_size:
            raise ValueError(f"SB3Recommender {self.name!r}: trained for pages of {self.page_size}, asked for k={k}")
        state = self._state(user_id, exclude, rng)
        blocked = set(exclude)
        # The env's invalid-action rule, with the runner's excluded items counted as shown.
        unavailable = state.shown | np.fromiter((int(i) in blocked for i in state.candidate_ids), bool)
        ids = state.candidate_ids[None]

        def repair(page: list[int]) -> list[int]:
            return kernel.repair_slates(np.array([page], dtype=np.int64), unavailable[None], ids, "repair")[0][
                0
            ].tolist()

        if self.action_mode == "weights":
            action, _ = self.model.predict(state.observation(), deterministic=self.deterministic)
            weights = kernel.check_weights(np.asarray(action).reshape(-1), (len(self.candidate_featurizer.names),))
            assert state.feature_table is not None
            page = kernel.rank_by_weights(weights[None], state.feature_table[None], ~unavailable[None], k, self._prior)
            chosen = page[0].tolist()
        elif self.action_mode == "slate":
            action, _ = self.model.predict(state.observation(), deterministic=self.deterministic)
            chosen = repair([int(a) for a in np.asarray(action).reshape(-1)])
        else:
            chosen = []
            for _ in range(k):
                state.set_pending(chosen)
                action, _ = self.model.predict(state.observation(), deterministic=self.deterministic)
                chosen = repair(chosen + [int(np.asarray(action).reshape(()))])
        state.set_pending([])
        return Recommendation(tuple(int(state.candidate_ids[i]) for i in chosen))

    def observe(self, user_id: int, page: Page, feedback: PageFeedback) -> None:
        state = self._states.get(user_id)
        if state is None:
            return
        indices = [state.candidate_index(i) for i in page.item_ids]
        if any(i is None for i in indices):
            raise ValueError(f"SB3Recommender {self.name!r}: page {page.item_ids} has items outside its candidates")
        state.record_page([int(i) for i in indices if i is not None], feedback)

    def save(self, path: Path) -> None:
        self.model.save(str(path))
