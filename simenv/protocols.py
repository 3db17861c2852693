"""Protocols for the pluggable parts: user models, user sessions, page policies, recommenders and candidate
featurizers.

Like SB3's `type_aliases`, this is the one place a newcomer reads to learn what each component must
provide. `simenv` depends only on these protocols; `agents` and `recommenders` implement them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from simenv.records import Interview, Item, Page, PageFeedback, PageRequest, Persona, Recommendation


@runtime_checkable
class UserSession(Protocol):
    """One simulated user's live session (an episode): reacts to pages, then answers the interview."""

    persona: Persona

    def react(self, page: Page, items: Sequence[Item]) -> PageFeedback:
        """React to one page; `items` are the catalog records of `page.item_ids`, in order."""
        ...

    def interview(self) -> Interview:
        """Satisfaction interview (1..10) at the end of the session."""
        ...


@runtime_checkable
class UserModel(Protocol):
    """A factory of user sessions. All randomness comes from the generator passed in.

    Optional: `concurrent_sessions` (a bool attribute or property, default False). True promises that
    `react_batch` (and `interview_batch`) may be called from several threads at once for different sessions, and
    that a session's results do not depend on what other sessions do meanwhile; `simenv.runner.run_sessions`
    then runs it pipelined (`simenv.pipeline`). A user model that calls an endpoint sets it; one that decides by
    array operations does not (its page-by-page batches are its fast path).
    """

    name: str

    def start_session(self, persona: Persona, episode: int, rng: np.random.Generator) -> UserSession:
        """Begin a session for `persona`; memory may persist across a user's sessions."""
        ...

    def react_batch(
        self, sessions: Sequence[UserSession], pages: Sequence[tuple[Page, Sequence[Item]]]
    ) -> list[PageFeedback]:
        """React to one page per session at once (LLM users batch their calls); results in input order."""
        ...


@runtime_checkable
class BatchDecider(Protocol):
    """A user model that decides many pages at once from arrays (the vectorised env's user; no text)."""

    def decide_batch(
        self,
        personas: Sequence[Persona],
        item_ids: np.ndarray,
        sizes: np.ndarray,
        page_index: np.ndarray,
        rngs: Sequence[np.random.Generator],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(watched (B, K) bool, stars (B, K) int, left (B,) bool) for B pages: page i shows
        `item_ids[i, :sizes[i]]` to `personas[i]` on page `page_index[i]`, drawing from `rngs[i]`."""
        ...


@runtime_checkable
class PagePolicy(Protocol):
    """What serves pages to simulated users: all `simenv.runner.run_sessions` calls. Every `Recommender` is one;
    so is `simenv.policies.SB3Recommender`, which chooses among its session's candidates and cannot score the
    catalog. Item and user ids are the dataset's dense integer ids.

    `recommend` never returns an id in `exclude` (items already shown or consumed).
    """

    name: str

    def recommend(
        self,
        user_id: int,
        k: int,
        exclude: Collection[int],
        rng: np.random.Generator,
        history: Sequence[int] = (),
    ) -> Recommendation: ...

    def observe(self, user_id: int, page: Page, feedback: PageFeedback) -> None:
        """Within-session feedback (sequential models append watched items)."""
        ...


@runtime_checkable
class BatchPagePolicy(PagePolicy, Protocol):
    """A page policy that serves several sessions' next pages in one call; the runner's page-by-page loop uses
    it when present. `recommend_batch(requests)[b]` must be the page `recommend` returns for `requests[b]`
    (same ids, same order): batching is a speed-up, never a change of outcome. Every `BaseRecommender` is one.
    """

    def recommend_batch(self, requests: Sequence[PageRequest]) -> list[Recommendation]: ...


@runtime_checkable
class Recommender(PagePolicy, Protocol):
    """A page policy that is trained on data and scores the whole catalog (offline metrics, degraded variants
    and rerankers need `score`).

    `fit` trains on interactions (columns user_id, item_id, rating, timestamp) of the train split.
    """

    def fit(
        self,
        train: pd.DataFrame,
        n_users: int,
        n_items: int,
        valid: pd.DataFrame | None = None,
    ) -> Recommender: ...

    def score(self, user_id: int, history: Sequence[int]) -> np.ndarray:
        """Scores for all `n_items` items (higher is better); `history` is the user's session so far."""
        ...

    def save(self, path: Path) -> None: ...


@runtime_checkable
class CandidateFeaturizer(Protocol):
    """Per-candidate features a production recommender could compute (train split and base scores only; never
    held-out data, never the simulator's predictions), injected into the envs and `simenv.policies.SB3Recommender`
    like the candidate recommender. The envs append the session flags (shown, watched, liked) themselves.

    `names` are the columns of `features`; a column named `base_score` is the prior the `weights` action mode adds
    its weighted sum to (`simenv.kernel.rank_by_weights`). Values must be finite; the envs clip them to
    [-`simenv.spaces.FEATURE_BOUND`, +`FEATURE_BOUND`].
    """

    names: tuple[str, ...]

    def features(self, persona: Persona, candidate_ids: np.ndarray) -> np.ndarray:
        """(len(candidate_ids), len(names)) float32 features of `persona`'s candidates, in the given order."""
        ...
