"""Frozen records shared by every layer: items, personas, pages, reactions, feedback, interviews.

These are the nouns of the simulator. They hold data only; behaviour lives in the modules that use them.
Everything is immutable so a record can be logged, cached and compared safely.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Item:
    """One catalog item with the text a prompt shows for it."""

    item_id: int
    title: str
    year: int | None
    genres: tuple[str, ...]
    text: str


@dataclass(frozen=True, slots=True)
class Persona:
    """A simulated user's profile, computed from the training split only (Agent4Rec's traits).

    Trait groups are 1 (low), 2 (mid), 3 (high); the raw values they were cut from are kept beside them.
    """

    user_id: int
    activity: int
    conformity: int
    diversity: int
    activity_value: float
    conformity_value: float
    diversity_value: float
    liked_genres: tuple[str, ...]
    disliked_genres: tuple[str, ...]
    liked_titles: tuple[str, ...]
    disliked_titles: tuple[str, ...]
    taste_text: str
    train_items: tuple[int, ...]
    train_ratings: tuple[float, ...]
    demographics: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Page:
    """One page shown to a user: ordered item ids, with per-item propensities when the policy is stochastic."""

    episode: int
    page_index: int
    item_ids: tuple[int, ...]
    propensities: tuple[float, ...] | None = None

    @property
    def positions(self) -> tuple[int, ...]:
        return tuple(range(len(self.item_ids)))


@dataclass(frozen=True, slots=True)
class ItemReaction:
    """A user's reaction to one shown item. `rating` is 1..5 when watched, else None."""

    item_id: int
    watched: bool
    rating: int | None = None
    feeling: str = ""

    @property
    def liked(self) -> bool:
        return self.rating is not None and self.rating >= 4


@dataclass(frozen=True, slots=True)
class PageFeedback:
    """A user's reaction to a whole page: per-item reactions in page order, then stay or leave.

    `fallback` is True when the LLM answer was unusable and the decision came from non-LLM signals;
    `llm_call_ids` link the feedback to rows of the run's llm_calls log.
    """

    reactions: tuple[ItemReaction, ...]
    left: bool
    reason: str = ""
    fallback: bool = False
    llm_call_ids: tuple[str, ...] = ()

    @property
    def n_watched(self) -> int:
        return sum(r.watched for r in self.reactions)

    @property
    def n_liked(self) -> int:
        return sum(r.liked for r in self.reactions)


@dataclass(frozen=True, slots=True)
class Interview:
    """The satisfaction interview a user answers when the session ends (score 1..10)."""

    user_id: int
    score: int
    reason: str = ""
    fallback: bool = False
    llm_call_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Recommendation:
    """What a recommender returns for one page: item ids best first, plus propensities if stochastic."""

    item_ids: tuple[int, ...]
    propensities: tuple[float, ...] | None = None
    scores: tuple[float, ...] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class PageRequest:
    """The arguments of one `recommend` call, for a policy that serves several sessions' pages in one call
    (`simenv.protocols.BatchPagePolicy`)."""

    user_id: int
    k: int
    exclude: Collection[int]
    rng: np.random.Generator
    history: tuple[int, ...] = ()


def as_int_tuple(values: np.ndarray | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """Convert any integer sequence to a tuple of Python ints (numpy ints do not JSON-serialise)."""
    return tuple(int(v) for v in values)
