"""Reflection: when a session's summed memory importance crosses `[memory] reflection_threshold`, the persona
writes insights over its recent memories (ONE `ask_json_batch` for all such sessions). Insights are stored as
`reflection` memories citing their evidence and logged as `UserEvent("reflection")`."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from agents.llm_user.fallbacks import NO_INSIGHT, UserEvent, counts_insight, record_event, record_fallback
from agents.llm_user.prompts import draw_seed
from agents.llm_user.session import LLMUserSession
from agents.llm_user.views import UserView
from agents.memory import MemoryRecord
from simenv.llm.structured import StructuredResult, ask_json_batch

logger = logging.getLogger(__name__)


def insights_from(model: UserView, session: LLMUserSession, result: StructuredResult) -> list[str]:
    """The answer's non-blank insights; an unusable answer, or one with none, is a recorded fallback."""
    page_index = session.last_page_index
    if result.failed:
        record_fallback(model.events, session, page_index, "reflection", result)
        return [counts_insight(session)]
    insights = [str(t).strip() for t in result.value["insights"] if str(t).strip()]
    if not insights:
        detail = f"no insight text: stored {NO_INSIGHT!r}"
        record_fallback(model.events, session, page_index, "reflection", result, logging.INFO, detail)
        return [NO_INSIGHT]
    return insights


def reflect(model: UserView, sessions: Sequence[LLMUserSession]) -> None:
    """One batched reflection call for `sessions`; each stores its insights in its memory."""
    if not sessions:
        return
    asks, windows = [], []
    with model.lock:
        for s in sessions:
            window = s.memory.since_last_reflection()[-model.config.memory.reflection_window :]
            windows.append(window)
            asks.append(model.prompts.reflection_ask(s, window, draw_seed(s.text_rng)))
    requests, checks = [a.request for a in asks], [a.check for a in asks]  # checks: no echo of the prompt
    results = ask_json_batch(model.llm, requests, checks, max_repairs=model.config.max_repairs)
    with model.lock:
        for s, window, result in zip(sessions, windows, results, strict=True):
            _store_insights(model, s, window, result)


def _store_insights(
    model: UserView, s: LLMUserSession, window: Sequence[MemoryRecord], result: StructuredResult
) -> None:
    """Store a reflection's insights in the session's memory (citing `window`) and record the event."""
    insights = insights_from(model, s, result)
    evidence = tuple(m.memory_id for m in window)
    importance = float(np.mean([m.importance for m in window])) if window else 5.0
    s.memory.add_many([("reflection", t, importance, evidence) for t in insights], time=s.memory.clock)
    event = UserEvent(
        "reflection", s.persona.user_id, s.episode, s.last_page_index, "reflection", " | ".join(insights),
        result.call_ids,
    )  # fmt: skip
    record_event(model.events, s, event)
    logger.info("reflection: user=%s episode=%s insights=%s", event.user_id, event.episode, event.detail)
