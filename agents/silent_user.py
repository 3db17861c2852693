"""The user that decides and writes no text: the grounded decision rule with no LLM behind it.

Every decision comes from one `agents.decision.GroundedDecider` — the same object, config and rule the LLM persona
user decides by — so a `fitted` silent user and a `persona` user with the same seed watch, rate and leave alike;
the persona only adds memory and words. A page is `GroundedDecider.decide_batch` over a batch of one, and the
vectorised env calls `decide_batch` over many sessions at once: the rule exists once. The interview score comes
from the session's counts (`agents.signals.stats_interview_score`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from agents.decision import GroundedDecider
from agents.signals import stats_interview_score
from simenv.records import Interview, Item, ItemReaction, Page, PageFeedback, Persona


def leave_reason(left: bool, n_liked: int) -> str:
    """The fixed leave reason of a silent user (empty when it stays)."""
    if not left:
        return ""
    return "Nothing here for me." if n_liked == 0 else "Seen enough for now."


class SilentUserSession:
    """One episode: the persona, its generator and the running counts the interview is scored from."""

    __slots__ = ("model", "persona", "episode", "rng", "n_shown", "n_watched", "n_liked", "n_pages", "left")

    def __init__(self, model: SilentUserModel, persona: Persona, episode: int, rng: np.random.Generator) -> None:
        self.model = model
        self.persona = persona
        self.episode = episode
        self.rng = rng
        self.n_shown = self.n_watched = self.n_liked = self.n_pages = 0
        self.left = False

    def react(self, page: Page, items: Sequence[Item] = ()) -> PageFeedback:
        return self.model.react_batch([self], [(page, items)])[0]

    def interview(self) -> Interview:
        score = stats_interview_score(self.n_shown, self.n_watched, self.n_liked)
        return Interview(self.persona.user_id, score, f"Watched {self.n_watched} and liked {self.n_liked}.")

    def record(self, n_shown: int, n_watched: int, n_liked: int, left: bool) -> None:
        self.n_shown += n_shown
        self.n_watched += n_watched
        self.n_liked += n_liked
        self.n_pages += 1
        self.left = left


class SilentUserModel:
    """Implements `simenv.protocols.UserModel` (and `BatchDecider` for the vectorised env) over one decider."""

    def __init__(self, decider: GroundedDecider, personas: Iterable[Persona] = ()) -> None:
        config = decider.config
        if config.uses_page_answer or config.llm_feature:
            raise ValueError(f"user kind {config.name!r} decides with the LLM's answer: it needs the LLM persona user")
        self.decider = decider
        self.dataset = decider.dataset
        self.name = f"silent-{config.name}"
        personas = list(personas)
        if personas:
            decider.prepare(personas)

    @property
    def config(self):  # noqa: ANN201 - the decision config
        return self.decider.config

    def start_session(self, persona: Persona, episode: int, rng: np.random.Generator) -> SilentUserSession:
        return SilentUserSession(self, persona, episode, rng)

    def prepare(self, personas: Sequence[Persona]) -> None:
        """Precompute the personas' plans (batched response-model predictions)."""
        self.decider.prepare(personas)

    def use_sources(self, sources: Mapping[int, int]) -> None:
        """Synthetic-population members decide as their source persona (`GroundedDecider.use_sources`)."""
        self.decider.use_sources(sources)

    def decide_batch(
        self,
        personas: Sequence[Persona],
        item_ids: np.ndarray,
        sizes: np.ndarray,
        page_index: np.ndarray,
        rngs: Sequence[np.random.Generator],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(watched (B, K), stars (B, K), left (B,)) of B pages: the decider's rule, no LLM answer."""
        return self.decider.decide_batch(personas, item_ids, sizes, page_index, rngs)

    def react_batch(
        self, sessions: Sequence[SilentUserSession], pages: Sequence[tuple[Page, Sequence[Item]]]
    ) -> list[PageFeedback]:
        if len(sessions) != len(pages):
            raise ValueError(f"react_batch: {len(sessions)} sessions but {len(pages)} pages")
        if not sessions:
            return []
        sizes = np.array([len(page.item_ids) for page, _ in pages], dtype=np.int64)
        if (sizes < 1).any():
            raise ValueError("react_batch: a page with no items")
        ids = np.zeros((len(pages), int(sizes.max())), dtype=np.int64)
        for row, (page, _) in enumerate(pages):
            ids[row, : sizes[row]] = page.item_ids
        index = np.array([page.page_index for page, _ in pages], dtype=np.int64)
        watched, stars, left = self.decide_batch(
            [s.persona for s in sessions], ids, sizes, index, [s.rng for s in sessions]
        )
        out = []
        for row, session in enumerate(sessions):
            k = int(sizes[row])
            reactions = tuple(
                ItemReaction(int(ids[row, j]), bool(watched[row, j]), int(stars[row, j]) if watched[row, j] else None)
                for j in range(k)
            )
            n_watched = int(watched[row, :k].sum())
            n_liked = int((watched[row, :k] & (stars[row, :k] >= 4)).sum())
            session.record(k, n_watched, n_liked, bool(left[row]))
            out.append(PageFeedback(reactions, bool(left[row]), leave_reason(bool(left[row]), n_liked)))
        return out

    def judge_many(
        self, asks: Sequence[tuple[Persona, Sequence[int]]], rng: np.random.Generator
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """For the fidelity harness: (watch, stars as if watched) of each ask's items, shown as page 0."""
        return self.decider.judge_many(asks, rng)

    def pick_many(
        self, asks: Sequence[tuple[Persona, Sequence[int]]], ks: Sequence[int], rng: np.random.Generator
    ) -> list[np.ndarray]:
        """For the fidelity harness's protocol as peers run it: the `ks[i]` items of each ask it would pick."""
        return self.decider.pick_many(asks, ks, rng)

    def watch_probability(self, persona: Persona, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """P(watch) of each item on a page (what `simrec validate` scores at item level)."""
        return self.decider.watch_probability(persona, item_ids)

    def expected_rating(self, persona: Persona, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The mean of the stars each item would get if watched (the rating model's point prediction)."""
        return self.decider.expected_rating(persona, item_ids)
