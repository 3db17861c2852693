"""The exit interview: satisfaction 1..10 from the session's memories, blended with the counts-based score by
`[decision] interview_llm` (at 0 the counts' score is fixed in the request and the model writes only the reason),
and written back to the user's memory. A reason that copies the prompt fails the answer's check (`Ask.check`):
after the repairs it is a recorded fallback (`Interview.fallback`), never a stored answer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agents.llm_user.fallbacks import INTERVIEW_NO_ANSWER_REASON, record_fallback
from agents.llm_user.prompts import Ask, draw_seed
from agents.llm_user.session import LLMUserSession
from agents.llm_user.views import UserView
from agents.signals import stats_interview_score
from simenv.llm.structured import StructuredResult, ask_json, ask_json_batch
from simenv.records import Interview

INTERVIEW_QUERY = "How satisfied am I with the movies recommended to me?"


def interview_ask(model: UserView, session: LLMUserSession) -> Ask:
    memories = session.memory.retrieve(INTERVIEW_QUERY, now=session.memory.clock)
    return model.prompts.interview_ask(session, memories, draw_seed(session.text_rng))


def run_interview(model: UserView, session: LLMUserSession) -> Interview:
    with model.lock:
        ask = interview_ask(model, session)
    result = ask_json(model.llm, ask.request, ask.check, max_repairs=model.config.max_repairs)
    with model.lock:
        return finish_interview(model, session, result)


def run_interviews(model: UserView, sessions: Sequence[LLMUserSession]) -> list[Interview]:
    """`run_interview` for many sessions with one concurrent `ask_json_batch`: the same interviews, in order.

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
        with model.lock:  # never held during the LLM call (`LLMUserModel.lock`)
            asks = [interview_ask(model, s) for s in chunk]
        requests, checks = [a.request for a in asks], [a.check for a in asks]
        results = ask_json_batch(model.llm, requests, checks, max_repairs=model.config.max_repairs)
        with model.lock:
            out.extend(finish_interview(model, s, r) for s, r in zip(chunk, results, strict=True))
        start = end
    return out


def finish_interview(model: UserView, session: LLMUserSession, result: StructuredResult) -> Interview:
    """Score and reason from the answer (or, when it failed, from the session's counts); remember the episode."""
    stats_score = stats_interview_score(session.n_shown, session.n_watched, session.n_liked)
    w = model.config.decision.interview_llm
    page_index = session.last_page_index
    if result.failed:
        record_fallback(model.events, session, page_index, "interview", result)
        score, reason = stats_score, INTERVIEW_NO_ANSWER_REASON
    else:
        score = int(np.clip(round(w * int(result.value["score"]) + (1 - w) * stats_score), 1, 10))
        reason = str(result.value["reason"]).strip()
    session.memory.add(
        "factual",
        f"Episode {session.episode} ended; satisfaction {score}/10: {reason}",
        time=session.memory.clock,
        importance=model.config.memory.importance_factual,
    )
    return Interview(session.persona.user_id, score, reason, result.failed, result.call_ids)
