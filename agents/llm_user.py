"""The LLM persona user: a stable persona system prompt, memory retrieval, one JSON page decision per page,
grounded by non-LLM signals (agents.decision), reflection when importance piles up, and an exit interview.

Per page (for a whole batch of sessions at once): retrieve top-k memories (query = mean embedding of the
shown items) -> render `page_decision` after the persona's byte-identical system prompt -> ONE
`ask_json_batch` call -> apply the decision rule -> write factual/emotional memories -> for the sessions whose
summed importance crossed the threshold, ONE more `ask_json_batch` with `reflection`. An answer that stays
unusable after repairs is a logged `UserEvent("fallback")`; the page is then decided by the non-LLM signals
(`PageFeedback.fallback=True`), so no page is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.config import LLMUserConfig, load_llm_user_config
from agents.decision import GroundedDecider, ItemVectors, PersonaPlan
from agents.embedding import Embedder, normalise_rows
from agents.memory import MemoryRecord, MemoryStream, page_memories
from agents.signals import stats_interview_score
from simenv.data.dataset import Dataset
from simenv.llm.schemas import (
    PLACEHOLDER_TEXTS,
    check_page_decision,
    check_written_text,
    interview_schema,
    page_decision_schema,
    page_reaction_schema,
    reflection_schema,
    taste_summary_schema,
)
from simenv.llm.structured import StructuredResult, ask_json, ask_json_batch
from simenv.llm.templates import load_template
from simenv.llm.types import LLM, LLMRequest, Message
from simenv.records import Interview, Item, ItemReaction, Page, PageFeedback, Persona

logger = logging.getLogger(__name__)

ACTIVITY_TEXT = {1: "only now and then", 2: "fairly often", 3: "a lot"}
CONFORMITY_TEXT = {
    1: "usually agree with popular opinion",
    2: "sometimes differ from popular opinion",
    3: "often disagree with popular opinion",
}
DIVERSITY_TEXT = {1: "focused on a few genres", 2: "moderately varied", 3: "very varied"}
FEELING_BY_RATING = {
    1: "Did not enjoy it at all.",
    2: "Not really for me.",
    3: "It was okay.",
    4: "Enjoyed it.",
    5: "Loved it.",
}
INTERVIEW_QUERY = "How satisfied am I with the movies recommended to me?"
PAGE_MAX_TOKENS_BASE = 40
PAGE_MAX_TOKENS_PER_ITEM = 32
FEELING_MAX_CHARS = 40  # tighter than the contract's caps: short strings keep constrained decoding fast
REASON_MAX_CHARS = 60
INTERVIEW_REASON_MAX_CHARS = 100
# Token budgets for constrained answers: one token per character of capped text (the worst case: SmolLM2 can
# fall into one-character tokens) plus JSON punctuation, so every answer can close its JSON within budget (a
# cut-off answer is a failed call and a repair). Typical answers use a fraction of it (~17 tokens per page).
REACTION_MAX_TOKENS_BASE = 12
REACTION_MAX_TOKENS_PER_FEELING = 4 + FEELING_MAX_CHARS
REACTION_MAX_TOKENS_REASON = 6 + REASON_MAX_CHARS
INTERVIEW_MAX_TOKENS = 16 + INTERVIEW_REASON_MAX_CHARS


@dataclass(frozen=True, slots=True)
class UserEvent:
    """Something worth logging beside the page feedback: a fallback, or a reflection that was stored."""

    kind: str  # "fallback" | "reflection"
    user_id: int
    episode: int
    page_index: int
    template: str
    detail: str
    llm_call_ids: tuple[str, ...] = ()


def persona_system_prompt(persona: Persona, version: int = 1) -> Message:
    """The persona's system message: the same bytes on every page (backends can reuse the prefix)."""
    messages = load_template("agents", "persona_system", version).render(
        activity_text=ACTIVITY_TEXT[persona.activity],
        conformity_text=CONFORMITY_TEXT[persona.conformity],
        diversity_text=DIVERSITY_TEXT[persona.diversity],
        taste_text=persona.taste_text,
    )
    if len(messages) != 1 or messages[0].role != "system":
        raise ValueError("template agents/prompts/persona_system must render exactly one system message")
    return messages[0]


def page_schema(item_ids: Sequence[int]) -> dict[str, Any]:
    """The contract's page_decision schema with each position's id fixed (`prefixItems` + `const`).

    Grammar-constrained backends then cannot write an unknown or out-of-order id; others are still checked by
    `check_page_decision`.
    """
    schema = page_decision_schema(len(item_ids))
    item = schema["properties"]["items"]["items"]
    item["properties"]["feeling"] = {"type": "string", "maxLength": FEELING_MAX_CHARS}
    schema["properties"]["reason"] = {"type": "string", "maxLength": REASON_MAX_CHARS}
    tuple_items = []
    for i in item_ids:
        fixed = {**item, "properties": {**item["properties"], "id": {"type": "integer", "const": int(i)}}}
        tuple_items.append(fixed)
    schema["properties"]["items"] = {
        "type": "array",
        "prefixItems": tuple_items,
        "items": False,
        "minItems": len(item_ids),
        "maxItems": len(item_ids),
    }
    return schema


def summarise_tastes(
    llm: LLM, personas: Sequence[Persona], max_repairs: int = 2, version: int = 1
) -> dict[int, tuple[str, bool]]:
    """One-off LLM taste summaries (template `taste_summary`), one batched call; cache the result with the run.

    Returns user id -> (summary, fallback); a failed answer keeps the persona's templated `taste_text` and is
    logged, so callers can still `dataclasses.replace(persona, taste_text=summary)` for every persona.
    """
    template = load_template("agents", "taste_summary", version)
    requests = [
        LLMRequest(
            messages=template.render(
                liked_genres=list(p.liked_genres),
                disliked_genres=list(p.disliked_genres),
                liked_titles=list(p.liked_titles[:5]),
                disliked_titles=list(p.disliked_titles[:3]),
            ),
            template="taste_summary",
            template_version=template.version_tag,
            purpose="taste_summary",
            max_tokens=120,
            seed=0,
            json_schema=taste_summary_schema(),
            context={"liked_genres": list(p.liked_genres), "disliked_genres": list(p.disliked_genres)},
        )
        for p in personas
    ]
    out: dict[int, tuple[str, bool]] = {}
    for p, result in zip(personas, ask_json_batch(llm, requests, max_repairs=max_repairs), strict=True):
        summary = "" if result.failed else _text(result.value["summary"])
        if not summary:
            logger.warning("fallback: taste_summary user=%s unusable (%s); kept taste_text", p.user_id, result.error)
            out[p.user_id] = (p.taste_text, True)
        else:
            out[p.user_id] = (summary, False)
    return out


def _text(value: Any) -> str:
    """An answer string, or "" when the model just echoed the prompt's placeholder."""
    text = str(value).strip()
    return "" if text in PLACEHOLDER_TEXTS else text


def _memory_line(rec: MemoryRecord) -> str:
    return rec.text if rec.kind != "reflection" else f"(insight) {rec.text}"


class LLMUserSession:
    """One episode of one persona. Memory lives in the model (it persists across a user's episodes)."""

    def __init__(
        self, model: LLMUserModel, persona: Persona, episode: int, rng: np.random.Generator, memory: MemoryStream
    ) -> None:
        self.model = model
        self.persona = persona
        self.episode = episode
        self.rng = rng
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

    def react(self, page: Page, items: Sequence[Item]) -> PageFeedback:
        return self.model.react_batch([self], [(page, items)])[0]

    def interview(self) -> Interview:
        return self.model.interview(self)


class LLMUserModel:
    """Agent4Rec-style LLM persona users (see module docstring). Implements `simenv.protocols.UserModel`."""

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
        self.config = config or load_llm_user_config()
        self.item_vectors = decider.item_vectors if decider and decider.item_vectors else ItemVectors(dataset, embedder)
        self.decider = decider or GroundedDecider(
            dataset, train, self.config.decision, embedder=embedder, item_vectors=self.item_vectors
        )
        self.memories: dict[int, MemoryStream] = {}
        self.events: list[UserEvent] = []
        self._system: dict[int, Message] = {}
        v = self.config.template_version
        self._page_template = load_template("agents", "page_decision", v)
        self._reaction_template = load_template("agents", "page_reaction", v)
        self._reflection_template = load_template("agents", "reflection", v)
        self._interview_template = load_template("agents", "interview", v)

    # ---- sessions and memory -------------------------------------------------------------------------------
    def start_session(
        self, persona: Persona, episode: int, rng: np.random.Generator, reset_memory: bool = False
    ) -> LLMUserSession:
        """Begin an episode; the user's memory carries over from earlier episodes unless `reset_memory`."""
        if reset_memory or persona.user_id not in self.memories:
            self.memories[persona.user_id] = MemoryStream(self.embedder, self.config.memory)
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
            self.memories[user_id] = MemoryStream.load(sub, self.embedder, self.config.memory)

    def system_message(self, persona: Persona) -> Message:
        msg = self._system.get(persona.user_id)
        if msg is None:
            msg = persona_system_prompt(persona, self.config.template_version)
            self._system[persona.user_id] = msg
        return msg

    # ---- page decisions ------------------------------------------------------------------------------------
    def page_request(
        self, persona: Persona, page_index: int, item_ids: Sequence[int], memories: Sequence[MemoryRecord], seed: int
    ) -> LLMRequest:
        """The page_decision request: persona system prompt + page prompt; `context` per docs/CONTRACTS.md."""
        catalog = self.dataset.catalog
        shown = [catalog[i] for i in item_ids]
        user = self._page_template.render(
            page_number=page_index + 1,
            memories=[_memory_line(m) for m in memories],
            items=[{"id": it.item_id, "text": it.text} for it in shown],
        )
        return LLMRequest(
            messages=(self.system_message(persona), *user),
            template="page_decision",
            template_version=self._page_template.version_tag,
            purpose="page_decision",
            temperature=self.config.temperature,
            max_tokens=PAGE_MAX_TOKENS_BASE + PAGE_MAX_TOKENS_PER_ITEM * len(shown),
            seed=seed,
            json_schema=page_schema(item_ids),
            context={
                "item_ids": [int(i) for i in item_ids],
                "item_genres": [list(it.genres) for it in shown],
                "liked_genres": list(persona.liked_genres),
                "disliked_genres": list(persona.disliked_genres),
                "activity": int(persona.activity),
                "page_index": int(page_index),
            },
        )

    def _query(self, item_ids: Sequence[int]) -> np.ndarray:
        return normalise_rows(self.item_vectors.get(item_ids).mean(axis=0, keepdims=True))[0]

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
        react = self._narrate_pages if self.config.narrates else self._decide_pages
        feedback = react(sessions, pages)
        self._reflect([s for s in sessions if s.memory.should_reflect()])
        return feedback

    def _memories(self, session: LLMUserSession, page: Page) -> list[MemoryRecord]:
        return session.memory.retrieve(self._query(page.item_ids), now=session.memory.clock)

    def _decide_pages(
        self, sessions: Sequence[LLMUserSession], pages: Sequence[tuple[Page, Sequence[Item]]]
    ) -> list[PageFeedback]:
        """`page_decision`: the LLM answers watch/rating/leave per item; the grounded rule blends them in."""
        requests, checks = [], []
        for session, (page, _) in zip(sessions, pages, strict=True):
            ids = [int(i) for i in page.item_ids]
            seed = int(session.rng.integers(2**31 - 1))
            memories = self._memories(session, page)
            requests.append(self.page_request(session.persona, page.page_index, ids, memories, seed))
            checks.append(check_page_decision(ids))
        results = ask_json_batch(self.llm, requests, checks, max_repairs=self.config.max_repairs)
        return [
            self._apply(session, page, items, result)
            for session, (page, items), result in zip(sessions, pages, results, strict=True)
        ]

    def _narrate_pages(
        self, sessions: Sequence[LLMUserSession], pages: Sequence[tuple[Page, Sequence[Item]]]
    ) -> list[PageFeedback]:
        """`page_reaction`: the grounded rule decides each page first; the LLM writes the feelings of the watched
        movies and the leave reason. A page with nothing watched and no exit has no text to write: no call."""
        decided, requests, asked = [], [], []
        for k, (session, (page, items)) in enumerate(zip(sessions, pages, strict=True)):
            decision = self._decide_grounded(session, page, self.decider, None, None, None)
            decided.append(decision)
            watched, stars, left = decision
            if watched.any() or left:
                seed = int(session.rng.integers(2**31 - 1))
                memories = self._memories(session, page)
                persona = session.persona
                requests.append(self.reaction_request(persona, page, items, watched, stars, left, memories, seed))
                asked.append(k)
        results: list[StructuredResult | None] = [None] * len(sessions)
        checks = [check_written_text] * len(requests)
        answers = ask_json_batch(self.llm, requests, checks, max_repairs=self.config.text_repairs)
        for k, result in zip(asked, answers, strict=True):
            results[k] = result
        feedback = []
        for session, (page, items), decision, result in zip(sessions, pages, decided, results, strict=True):
            watched, stars, left = decision
            feelings, reason, failed, call_ids = [""] * len(items), "", False, ()
            if result is not None:
                failed, call_ids = result.failed, result.call_ids
                if result.failed:
                    self._fallback(session, page.page_index, "page_reaction", result, logging.INFO)
                else:
                    texts = iter(_text(t) for t in result.value["feelings"])
                    feelings = [next(texts) if w else "" for w in watched]
                    reason = _text(result.value.get("reason", "")) if left else ""
            fb = self._record(session, page, items, watched, stars, left, feelings, reason, failed, call_ids)
            feedback.append(fb)
        return feedback

    def reaction_request(
        self,
        persona: Persona,
        page: Page,
        items: Sequence[Item],
        watched: np.ndarray,
        stars: np.ndarray,
        left: bool,
        memories: Sequence[MemoryRecord],
        seed: int,
    ) -> LLMRequest:
        """The page_reaction request: persona system prompt + what the user did on the page; `context` for the mock."""
        seen = [{"text": it.text, "rating": int(stars[k])} for k, it in enumerate(items) if watched[k]]
        user = self._reaction_template.render(
            page_number=page.page_index + 1,
            memories=[_memory_line(m) for m in memories],
            watched=seen,
            skipped=[it.title for k, it in enumerate(items) if not watched[k]],
            left=bool(left),
        )
        return LLMRequest(
            messages=(self.system_message(persona), *user),
            template="page_reaction",
            template_version=self._reaction_template.version_tag,
            purpose="page_reaction",
            temperature=self.config.temperature,
            max_tokens=REACTION_MAX_TOKENS_BASE
            + REACTION_MAX_TOKENS_PER_FEELING * len(seen)
            + (REACTION_MAX_TOKENS_REASON if left else 0),
            seed=seed,
            json_schema=page_reaction_schema(len(seen), bool(left), FEELING_MAX_CHARS, REASON_MAX_CHARS),
            context={"ratings": [s["rating"] for s in seen], "left": bool(left), "page_index": int(page.page_index)},
        )

    def _fallback(
        self,
        session: LLMUserSession,
        page_index: int,
        template: str,
        result: StructuredResult,
        level: int = logging.WARNING,
        detail: str | None = None,
    ) -> None:
        """Record an unusable answer as a `UserEvent` and log it (`level`: INFO for text-only answers, whose
        fallback changes no decision; the run's report counts every fallback either way). `detail` defaults to
        the result's error."""
        event = UserEvent(
            "fallback", session.persona.user_id, session.episode, page_index, template,
            detail or f"{result.error} (after {result.repairs} repairs)", result.call_ids,
        )  # fmt: skip
        session.events.append(event)
        self.events.append(event)
        logger.log(
            level, "fallback: user=%s episode=%s page=%s template=%s error=%s",
            event.user_id, event.episode, page_index, template, event.detail,
        )  # fmt: skip

    def _apply(
        self, session: LLMUserSession, page: Page, items: Sequence[Item], result: StructuredResult
    ) -> PageFeedback:
        """Blend a page_decision answer (or, when it failed, the non-LLM signals alone) into the page's feedback."""
        llm_watch = llm_ratings = llm_leave = None
        feelings = [""] * len(items)
        reason = ""
        if result.failed:
            self._fallback(session, page.page_index, "page_decision", result)
        else:
            answer = result.value["items"]
            llm_watch = np.array([bool(a["watch"]) for a in answer])
            llm_ratings = np.array([int(a["rating"]) for a in answer], dtype=np.float64)
            feelings = [_text(a["feeling"]) if a["watch"] else "" for a in answer]
            llm_leave = bool(result.value["leave"])
            reason = _text(result.value["reason"])
        decider = self.decider if llm_watch is not None else self.decider.fallback_decider()
        watched, stars, left = self._decide_grounded(session, page, decider, llm_watch, llm_ratings, llm_leave)
        if llm_leave is None or llm_leave != left:
            reason = ""
        return self._record(
            session, page, items, watched, stars, left, feelings, reason, result.failed, result.call_ids
        )

    def _decide_grounded(
        self,
        session: LLMUserSession,
        page: Page,
        decider: GroundedDecider,
        llm_watch: np.ndarray | None,
        llm_ratings: np.ndarray | None,
        llm_leave: bool | None,
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """(watched, stars, left) for one page by the grounded rule; draws from the session rng."""
        ids = np.asarray(page.item_ids, dtype=np.int64)
        rng = session.rng
        plan = decider.plan(session.persona)
        watched = decider.watch(plan, ids, llm_watch, rng)
        if llm_watch is not None:
            decider.observe_llm(llm_watch)
        stars = decider.ratings(plan, ids, llm_ratings, rng)
        liked_share = float(np.sum(watched & (stars >= 4))) / len(ids)
        left, _ = decider.leave(page.page_index, session.persona.activity, liked_share, llm_leave, rng)
        return watched, stars, left

    def _record(
        self,
        session: LLMUserSession,
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
        """Turn a decided page into `PageFeedback`, update the session's counters and write its memories.
        Missing text gets a plain default (a feeling by rating; a reason by whether anything was liked)."""
        ids = [int(i) for i in page.item_ids]
        reactions = []
        for k, item_id in enumerate(ids):
            if watched[k]:
                r = int(stars[k])
                reactions.append(ItemReaction(item_id, True, r, feelings[k] or FEELING_BY_RATING[r]))
            else:
                reactions.append(ItemReaction(item_id, False, None, ""))
        n_liked = sum(r.liked for r in reactions)
        if left and not reason:
            reason = "Nothing here holds my interest." if n_liked == 0 else "I have seen enough."
        fb = PageFeedback(tuple(reactions), left, reason, fallback, call_ids)
        session.n_shown += len(ids)
        session.n_watched += fb.n_watched
        session.n_liked += n_liked
        session.rating_sum += sum(r.rating for r in reactions if r.rating is not None)
        session.left = left
        session.pages.append(fb)
        stream = session.memory
        entries = page_memories(
            self.config.memory,
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

    # ---- reflection ----------------------------------------------------------------------------------------
    def _reflect(self, sessions: Sequence[LLMUserSession]) -> None:
        if not sessions:
            return
        requests, windows = [], []
        for s in sessions:
            window = s.memory.since_last_reflection()[-self.config.memory.reflection_window :]
            windows.append(window)
            user = self._reflection_template.render(memories=[m.text for m in window])
            requests.append(
                LLMRequest(
                    messages=(self.system_message(s.persona), *user),
                    template="reflection",
                    template_version=self._reflection_template.version_tag,
                    purpose="reflection",
                    temperature=self.config.temperature,
                    max_tokens=160,
                    seed=int(s.rng.integers(2**31 - 1)),
                    json_schema=reflection_schema(),
                    context={"n_memories": len(s.memory), "mean_rating": s.mean_rating},
                )
            )
        results = ask_json_batch(self.llm, requests, max_repairs=self.config.max_repairs)
        for s, window, result in zip(sessions, windows, results, strict=True):
            page_index = len(s.pages) - 1
            if result.failed:
                self._fallback(s, page_index, "reflection", result)
                mean = s.mean_rating
                insights = [
                    f"So far I watched {s.n_watched} of {s.n_shown} movies shown"
                    + (f", mean rating {mean:.1f}." if mean is not None else ".")
                ]
            else:
                insights = [str(t).strip() for t in result.value["insights"] if str(t).strip()] or ["(no insight)"]
            evidence = tuple(m.memory_id for m in window)
            importance = float(np.mean([m.importance for m in window])) if window else 5.0
            s.memory.add_many([("reflection", t, importance, evidence) for t in insights], time=s.memory.clock)
            event = UserEvent(
                "reflection", s.persona.user_id, s.episode, page_index, "reflection", " | ".join(insights),
                result.call_ids,
            )  # fmt: skip
            s.events.append(event)
            self.events.append(event)
            logger.info("reflection: user=%s episode=%s insights=%s", event.user_id, event.episode, event.detail)

    # ---- interview -----------------------------------------------------------------------------------------
    def interview(self, session: LLMUserSession) -> Interview:
        """Satisfaction 1..10 from the whole memory; blended with the counts-based score by `interview_llm`."""
        request = self._interview_request(session)
        return self._finish_interview(session, ask_json(self.llm, request, max_repairs=self.config.max_repairs))

    def interview_batch(self, sessions: Sequence[LLMUserSession]) -> list[Interview]:
        """`interview()` for many sessions with one concurrent `ask_json_batch`: the same interviews, in order.

        An interview reads and then writes its user's memory, so sessions sharing a memory stream (the same user
        with carried-over memory) go to later batches, exactly as if they were interviewed one by one.
        """
        out: list[Interview] = []
        start = 0
        while start < len(sessions):
            end, seen = start, set()
            while end < len(sessions) and id(sessions[end].memory) not in seen:
                seen.add(id(sessions[end].memory))
                end += 1
            chunk = sessions[start:end]
            requests = [self._interview_request(s) for s in chunk]
            results = ask_json_batch(self.llm, requests, max_repairs=self.config.max_repairs)
            out.extend(self._finish_interview(s, r) for s, r in zip(chunk, results, strict=True))
            start = end
        return out

    def _interview_request(self, session: LLMUserSession) -> LLMRequest:
        memories = session.memory.retrieve(INTERVIEW_QUERY, now=session.memory.clock)
        ctx: dict[str, Any] = {
            "n_shown": session.n_shown,
            "n_watched": session.n_watched,
            "n_liked": session.n_liked,
            "mean_rating": session.mean_rating,
        }
        user = self._interview_template.render(
            n_pages=len(session.pages), memories=[_memory_line(m) for m in memories], **ctx
        )
        return LLMRequest(
            messages=(self.system_message(session.persona), *user),
            template="interview",
            template_version=self._interview_template.version_tag,
            purpose="interview",
            temperature=self.config.temperature,
            max_tokens=INTERVIEW_MAX_TOKENS,
            seed=int(session.rng.integers(2**31 - 1)),
            json_schema=interview_schema(INTERVIEW_REASON_MAX_CHARS),
            context=ctx,
        )

    def _finish_interview(self, session: LLMUserSession, result: StructuredResult) -> Interview:
        stats_score = stats_interview_score(session.n_shown, session.n_watched, session.n_liked)
        w = self.config.decision.interview_llm
        if result.failed:
            self._fallback(session, len(session.pages) - 1, "interview", result)
            score, reason = stats_score, "Scored from what I watched and liked (no usable answer)."
        else:
            score = int(np.clip(round(w * int(result.value["score"]) + (1 - w) * stats_score), 1, 10))
            reason = _text(result.value["reason"])
            if not reason:  # the prompt's "..." echoed back: say so, and keep a plain reason
                detail = "placeholder reason: kept the score, wrote a plain reason"
                self._fallback(session, len(session.pages) - 1, "interview", result, logging.INFO, detail)
                reason = "Scored from what I watched and liked."
        session.memory.add(
            "factual",
            f"Episode {session.episode} ended; satisfaction {score}/10: {reason}",
            time=session.memory.clock,
            importance=self.config.memory.importance_factual,
        )
        return Interview(session.persona.user_id, score, reason, result.failed, result.call_ids)

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
        """Many `judge` asks with one batched page_decision call; in narrate mode the LLM's answer would not change
        a decision, so the grounded rule answers alone (no LLM call)."""
        if self.config.narrates:
            return self.decider.judge_many(asks, rng)
        requests = [self.page_request(p, 0, [int(i) for i in ids], (), int(rng.integers(2**31 - 1))) for p, ids in asks]
        checks = [check_page_decision([int(i) for i in ids]) for _, ids in asks]
        results = ask_json_batch(self.llm, requests, checks, max_repairs=self.config.max_repairs)
        out = []
        for (persona, ids), result in zip(asks, results, strict=True):
            arr = np.asarray(ids, dtype=np.int64)
            llm_watch = llm_ratings = None
            if result.failed:
                detail = str(result.error)
                event = UserEvent("fallback", persona.user_id, -1, 0, "page_decision", detail, result.call_ids)
                self.events.append(event)
                logger.warning("fallback (judge): user=%s error=%s", persona.user_id, result.error)
            else:
                llm_watch = np.array([bool(a["watch"]) for a in result.value["items"]])
                llm_ratings = np.array([int(a["rating"]) for a in result.value["items"]], dtype=np.float64)
            decider = self.decider if llm_watch is not None else self.decider.fallback_decider()
            plan = decider.plan(persona)
            watch = decider.watch(plan, arr, llm_watch, rng)
            if llm_watch is not None:
                decider.observe_llm(llm_watch)
            out.append((watch, decider.ratings(plan, arr, llm_ratings, rng)))
        return out
