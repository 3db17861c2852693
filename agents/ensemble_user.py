"""A no-text user drawn per episode from an ensemble of fitted users (domain randomisation over the simulator's error).

Each member is a `SilentUserModel` deciding by a response model fitted with another seed
(`experiments.build.UserModelFactory.response_model(feature_set, member)`): same data and features, other user
folds and boosting draws, so the members agree where the data pin the answer down and disagree where they do not.
A policy trained against the ensemble cannot exploit one member's idiosyncrasies; scoring it on a member it never
saw measures how much of its simulated gain is such an idiosyncrasy.

The member of a session is drawn when its first page is decided (page index 0) from that session's generator, and
kept (per user id) for the session's later pages: every page of an episode is one member's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agents.silent_user import SilentUserModel, SilentUserSession
from simenv.records import Item, Page, PageFeedback, Persona


class EnsembleUserModel:
    """`simenv.protocols.UserModel` and `BatchDecider` over several `SilentUserModel`s, one member per episode."""

    def __init__(self, members: Sequence[SilentUserModel]) -> None:
        if not members:
            raise ValueError("EnsembleUserModel: no members")
        self.members = list(members)
        self.name = f"ensemble[{len(members)}]-{members[0].name}"
        self._member_of: dict[int, int] = {}  # user id -> member of its current session

    def _draw(self, rng: np.random.Generator) -> int:
        return int(rng.random() * len(self.members))

    def start_session(self, persona: Persona, episode: int, rng: np.random.Generator) -> SilentUserSession:
        """A session of a member drawn from `rng` (its pages are that member's)."""
        return self.members[self._draw(rng)].start_session(persona, episode, rng)

    def react_batch(
        self, sessions: Sequence[SilentUserSession], pages: Sequence[tuple[Page, Sequence[Item]]]
    ) -> list[PageFeedback]:
        out: list[PageFeedback | None] = [None] * len(sessions)
        for member in self.members:
            rows = [i for i, s in enumerate(sessions) if s.model is member]
            for i, fb in zip(
                rows, member.react_batch([sessions[i] for i in rows], [pages[i] for i in rows]), strict=True
            ):
                out[i] = fb
        if any(fb is None for fb in out):
            raise ValueError("EnsembleUserModel.react_batch: a session not started by this ensemble")
        return [fb for fb in out if fb is not None]

    def decide_batch(
        self,
        personas: Sequence[Persona],
        item_ids: np.ndarray,
        sizes: np.ndarray,
        page_index: np.ndarray,
        rngs: Sequence[np.random.Generator],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The vector env's batch: each row decided by its session's member (drawn on page 0)."""
        member = np.zeros(len(personas), dtype=np.int64)
        for i, (p, page) in enumerate(zip(personas, page_index.tolist(), strict=True)):
            if page == 0 or p.user_id not in self._member_of:
                self._member_of[p.user_id] = self._draw(rngs[i])
            member[i] = self._member_of[p.user_id]
        watched = np.zeros(item_ids.shape, dtype=bool)
        stars = np.zeros(item_ids.shape, dtype=np.int64)
        left = np.zeros(len(personas), dtype=bool)
        for m, model in enumerate(self.members):
            rows = np.flatnonzero(member == m)
            if not len(rows):
                continue
            w, s, out = model.decide_batch(
                [personas[i] for i in rows.tolist()],
                item_ids[rows],
                sizes[rows],
                page_index[rows],
                [rngs[i] for i in rows.tolist()],
            )
            watched[rows], stars[rows], left[rows] = w, s, out
        return watched, stars, left
