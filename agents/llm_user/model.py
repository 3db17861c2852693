"""`LLMUserModel`: the persona user's parts wired together (prompts, page policies, reflection, interview,
fallbacks) behind `simenv.protocols.UserModel`, plus the users' memories and their persistence."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from agents.config import LLMUserConfig, load_user
from agents.decision import GroundedDecider, ItemVectors
from agents.embedding import Embedder
from agents.llm_user.fallbacks import UserEvent
from agents.llm_user.interview import run_interview, run_interviews
from agents.llm_user.page_decisions import decide_pages, judge_pages, narrate_pages, pick_pages
from agents.llm_user.prompts import PromptBuilder
from agents.llm_user.reflection import reflect
from agents.llm_user.session import LLMUserSession
from agents.memory import MemoryRecord, MemoryStream
from simenv.data.dataset import Dataset
from simenv.llm.types import LLM, LLMRequest, Message
from simenv.records import Interview, Item, Page, PageFeedback, Persona


class LLMUserModel:
    """Agent4Rec-style LLM persona users (see `agents.llm_user`). Implements `simenv.protocols.UserModel`.

    `events` holds every `UserEvent` (fallbacks and reflections) of all sessions; `default_texts` counts the
    plain texts that stood in for ones a usable answer lacked (`"feeling"`, `"leave_reason"`).

    Sessions may react from several threads at once (`concurrent_sessions`, what `simenv.pipeline` needs): `lock`
    guards everything the sessions share (decider, memories, embedder, counters, events) and is never held
    during an LLM call, so one session's calls wait on the endpoint while others are decided.
    """

    name = "llm-user"

    def __init__(
        self,
        dataset: Dataset,
        llm: LLM,
        embedder: Embedder,
        config: LLMUserConfig | None = None,
        *,
        train: pd.DataFrame,
        decider: GroundedDecider | None = None,
    ) -> None:
        self.dataset = dataset
        self.llm = llm
        self.embedder = embedder
        # Built directly with neither, it decides by the hand-set kind: the validated `fitted` rule needs a response
        # model fitted on a split (`experiments.build.UserModelFactory`, `simrec.make_env` build that one).
        self.config = config or load_user("handset").user
        self.item_vectors = decider.item_vectors if decider and decider.item_vectors else ItemVectors(dataset, embedder)
        self.decider = decider or GroundedDecider(
            dataset, train, self.config.decision, embedder=embedder, item_vectors=self.item_vectors
        )
        self.prompts = PromptBuilder(dataset, self.config)
        self.memories: dict[int, MemoryStream] = {}
        self.events: list[UserEvent] = []
        self.default_texts: Counter[str] = Counter()
        self.lock = threading.RLock()

    @property
    def concurrent_sessions(self) -> bool:
        """True unless pages are decided from the LLM's watch answer centred on its running yes rate (a profile with
        `calibrate` and `w_llm`, none of the shipped kinds): that rate advances over all sessions' pages, so a
        page's decision would depend on which pages other sessions had answered before it."""
        rule = self.decider.config
        return self.config.narrates or not (rule.calibrate and rule.w_llm)

    # ---- sessions and memory -------------------------------------------------------------------------------
    def start_session(
        self, persona: Persona, episode: int, rng: np.random.Generator, reset_memory: bool = False
    ) -> LLMUserSession:
        """Begin an episode; the user's memory carries over from earlier episodes unless `reset_memory`."""
        with self.lock:
            if reset_memory or persona.user_id not in self.memories:
                self.memories[persona.user_id] = MemoryStream(self.embedder, self.config.memory, self.item_vectors)
            return LLMUserSession(self, persona, episode, rng, self.memories[persona.user_id])

    def save_memories(self, directory: Path) -> None:
        """One sub-directory per user id (memory.json + embeddings.npy)."""
        for user_id, stream in self.memories.items():
            stream.save(Path(directory) / f"user-{user_id}")

    def load_memories(self, directory: Path) -> None:
        for sub in sorted(Path(directory).glob("user-*")):
            try:
                user_id = int(sub.name.removeprefix("user-"))
            except ValueError as exc:
                raise ValueError(f"{sub}: memory directory name must be user-<int>") from exc
            self.memories[user_id] = MemoryStream.load(sub, self.embedder, self.config.memory, self.item_vectors)

    # ---- requests: `self.prompts` builds them all (agents.llm_user.prompts); two shortcuts ------------------
    def system_message(self, persona: Persona) -> Message:
        return self.prompts.system_message(persona)

    def page_request(
        self, persona: Persona, page_index: int, item_ids: Sequence[int], memories: Sequence[MemoryRecord], seed: int
    ) -> LLMRequest:
        return self.prompts.page_request(persona, page_index, item_ids, memories, seed)

    # ---- pages (agents.llm_user.page_decisions, then agents.llm_user.reflection) ------------------------------
    def react_batch(
        self, sessions: Sequence[LLMUserSession], pages: Sequence[tuple[Page, Sequence[Item]]]
    ) -> list[PageFeedback]:
        """One page per session; one `ask_json_batch` for all pages (+ one for any reflections)."""
        if len(sessions) != len(pages):
            raise ValueError(f"react_batch: {len(sessions)} sessions but {len(pages)} pages")
        for session, (page, items) in zip(sessions, pages, strict=True):
            ids = tuple(int(i) for i in page.item_ids)
            if tuple(it.item_id for it in items) != ids:
                who = f"page {page.page_index} of user {session.persona.user_id}"
                raise ValueError(f"{who}: items do not match ids {ids}")
            if session.left:
                raise ValueError(f"user {session.persona.user_id} already left in episode {session.episode}")
        react = narrate_pages if self.config.narrates else decide_pages
        feedback = react(self, sessions, pages)
        with self.lock:
            due = [s for s in sessions if s.memory.should_reflect()]
        reflect(self, due)
        return feedback

    # ---- interview (agents.llm_user.interview) -------------------------------------------------------------
    def interview(self, session: LLMUserSession) -> Interview:
        """Satisfaction 1..10 from the whole memory; blended with the counts-based score by `interview_llm`."""
        return run_interview(self, session)

    def interview_batch(self, sessions: Sequence[LLMUserSession]) -> list[Interview]:
        """`interview()` for many sessions with one batched call: the same interviews, in order."""
        return run_interviews(self, sessions)

    # ---- fidelity hook -------------------------------------------------------------------------------------
    def judge(
        self, persona: Persona, pages: Sequence[Sequence[int]], rng: np.random.Generator
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Answer pages outside any session (no memory read or written): per item (watch, stars as if watched).

        The fidelity harness uses this; the decision rule is the same as in `react_batch`.
        """
        return self.judge_many([(persona, p) for p in pages], rng)

    def judge_many(
        self, asks: Sequence[tuple[Persona, Sequence[int]]], rng: np.random.Generator
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Many `judge` asks with one batched call (none in narrate mode: see `page_decisions.judge_pages`)."""
        return judge_pages(self, asks, rng)

    def pick_many(
        self, asks: Sequence[tuple[Persona, Sequence[int]]], ks: Sequence[int], rng: np.random.Generator
    ) -> list[np.ndarray]:
        """The fidelity protocol as peers run it: the `ks[i]` items of each ask the persona says it watched
        (`page_decisions.pick_pages`)."""
        return pick_pages(self, asks, ks, rng)
