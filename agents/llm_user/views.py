"""What the LLM persona user's steps read from the user model and from a session, as Protocols.

The steps are free functions in their own modules (page policy, reflection, interview, fallbacks, prompts); they
name these views instead of `LLMUserModel` / `LLMUserSession`, so no module of the package imports back into the
model that calls it (no import cycle, not even for type checking). `LLMUserModel` and `LLMUserSession` satisfy
them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np

from agents.config import LLMUserConfig
from agents.decision import GroundedDecider, ItemVectors, PersonaPlan
from agents.memory import MemoryStream
from simenv.llm import LLM
from simenv.records import Interview, PageFeedback, Persona


class SessionView(Protocol):
    """One episode of one persona: its counters, pages, events and memory."""

    persona: Persona
    episode: int
    rng: np.random.Generator
    text_rng: np.random.Generator
    memory: MemoryStream
    plan: PersonaPlan
    pages: list[PageFeedback]
    events: list[Any]  # agents.llm_user.fallbacks.UserEvent
    n_shown: int
    n_watched: int
    n_liked: int
    left: bool

    @property
    def mean_rating(self) -> float | None: ...


class UserView(Protocol):
    """The persona user model as its steps see it: config, LLM, prompts, the decision rule and what it records."""

    config: LLMUserConfig
    llm: LLM
    decider: GroundedDecider
    item_vectors: ItemVectors
    prompts: Any  # agents.llm_user.prompts.PromptBuilder
    events: list[Any]  # agents.llm_user.fallbacks.UserEvent
    default_texts: Counter[str]
    lock: AbstractContextManager[Any]  # guards the shared state above; never held during an LLM call

    def react_batch(self, sessions: Sequence[Any], pages: Sequence[Any]) -> list[PageFeedback]: ...

    def interview(self, session: Any) -> Interview: ...
