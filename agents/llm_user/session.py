"""One episode of one persona: the session's counters, its page feedback and events, and how a decided page is
recorded (feedback, counters, memories)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from agents.decision import PersonaPlan
from agents.llm_user.fallbacks import UserEvent
from agents.llm_user.views import UserView
from agents.memory import MemoryStream, page_memories
from simenv.records import Interview, Item, ItemReaction, Page, PageFeedback, Persona


def request_rng(rng: np.random.Generator) -> np.random.Generator:
    """The session's generator of LLM request seeds, derived from the decision generator's state without drawing
    from it: a persona decides exactly as the no-text user of its kind, whatever text it writes."""
    state = hashlib.sha256(repr(rng.bit_generator.state).encode()).digest()
    return np.random.default_rng(int.from_bytes(state[:16], "little"))


class LLMUserSession:
    """One episode of one persona. Memory lives in the model (it persists across a user's episodes)."""

    def __init__(
        self, model: UserView, persona: Persona, episode: int, rng: np.random.Generator, memory: MemoryStream
    ) -> None:
        self.model = model
        self.persona = persona
        self.episode = episode
        self.rng = rng  # decisions only: the same draws as the no-text user of the same kind
        self.text_rng = request_rng(rng)  # LLM request seeds
        self.memory = memory
        self.plan: PersonaPlan = model.decider.plan(persona)
        self.pages: list[PageFeedback] = []
        self.events: list[UserEvent] = []
        self.n_shown = 0
        self.n_watched = 0
        self.n_liked = 0
        self.rating_sum = 0.0
        self.left = False

    @property
    def mean_rating(self) -> float | None:
        return self.rating_sum / self.n_watched if self.n_watched else None

    @property
    def last_page_index(self) -> int:
        """The index of the latest page reacted to (-1 before the first)."""
        return len(self.pages) - 1

    def react(self, page: Page, items: Sequence[Item]) -> PageFeedback:
        return self.model.react_batch([self], [(page, items)])[0]

    def interview(self) -> Interview:
        return self.model.interview(self)

    def record_page(
        self,
        page: Page,
        items: Sequence[Item],
        watched: np.ndarray,
        stars: np.ndarray,
        left: bool,
        feelings: Sequence[str],
        reason: str,
        fallback: bool,
        call_ids: tuple[str, ...],
    ) -> PageFeedback:
        """Turn a decided page (its texts already complete, see `fallbacks.fill_texts`) into `PageFeedback`,
        update the counters and write the page's memories."""
        ids = [int(i) for i in page.item_ids]
        reactions = []
        for k, item_id in enumerate(ids):
            if watched[k]:
                reactions.append(ItemReaction(item_id, True, int(stars[k]), feelings[k]))
            else:
                reactions.append(ItemReaction(item_id, False, None, ""))
        fb = PageFeedback(tuple(reactions), left, reason, fallback, call_ids)
        self.n_shown += len(ids)
        self.n_watched += fb.n_watched
        self.n_liked += sum(r.liked for r in reactions)
        self.rating_sum += sum(r.rating for r in reactions if r.rating is not None)
        self.left = left
        self.pages.append(fb)
        stream = self.memory
        entries = page_memories(
            self.model.config.memory,
            page.page_index + 1,
            [it.title for it in items],
            ids,
            [r.rating for r in reactions],
            [r.feeling for r in reactions],
            left,
            reason,
        )
        stream.add_many(entries, time=stream.clock)
        stream.clock += 1.0
        return fb
