"""Every fallback of the LLM persona user, and every text that stands in for one the LLM did not write.

Two kinds, both named here and both logged:

- **Fallbacks**: an answer still unusable after its repairs (including text that copies the prompt or a feeling
  that contradicts its rating: `simenv.llm.echo`, `simenv.llm.sentiment`). `record_fallback` appends a
  `UserEvent("fallback")` to the session and the model and logs it (WARNING; INFO for text-only answers, whose
  fallback changes no decision). The page or interview is then marked `fallback=True`, which the run's event
  log and report count. What replaces the answer: a page is decided by the non-LLM signals
  (`GroundedDecider.fallback_decider`), a page's texts by `default_feeling` / `default_leave_reason`, a
  reflection by `counts_insight`, an interview score by `stats_interview_score` with
  `INTERVIEW_NO_ANSWER_REASON`, a taste summary by the persona's templated `taste_text`.
- **Default texts**: a usable answer that has no text for something the user did (in decide mode the grounded
  rule may watch an item the LLM skipped or leave when it stayed, and the LLM's reason is then not the user's;
  or a decide-mode text is a bare placeholder). `fill_texts` fills them in and says how many; the page policy
  logs that at DEBUG and counts it in `LLMUserModel.default_texts`. They are not fallbacks: the decision used
  the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from agents.llm_user.views import SessionView
from simenv.llm.schemas import PLACEHOLDER_TEXTS
from simenv.llm.structured import StructuredResult

logger = logging.getLogger(__name__)

FEELING_BY_RATING = {
    1: "Did not enjoy it at all.",
    2: "Not really for me.",
    3: "It was okay.",
    4: "Enjoyed it.",
    5: "Loved it.",
}
LEAVE_REASON_NOTHING_LIKED = "Nothing here holds my interest."
LEAVE_REASON_SEEN_ENOUGH = "I have seen enough."
NO_INSIGHT = "(no insight)"
INTERVIEW_NO_ANSWER_REASON = "Scored from what I watched and liked (no usable answer)."
INTERVIEW_PLACEHOLDER_REASON = "Scored from what I watched and liked."  # stored by runs before issue 16


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


def answer_text(value: Any) -> str:
    """An answer string, or "" when the model just echoed the prompt's placeholder."""
    text = str(value).strip()
    return "" if text in PLACEHOLDER_TEXTS else text


def default_feeling(rating: int) -> str:
    """The plain feeling for a watched movie the answer wrote none for."""
    return FEELING_BY_RATING[rating]


def default_leave_reason(n_liked: int) -> str:
    """The plain reason for leaving when the answer gave none that fits the decision."""
    return LEAVE_REASON_NOTHING_LIKED if n_liked == 0 else LEAVE_REASON_SEEN_ENOUGH


class FilledTexts(NamedTuple):
    feelings: list[str]  # one per item: "" for an unwatched item
    reason: str
    n_default_feelings: int
    default_reason: bool


def fill_texts(watched: np.ndarray, stars: np.ndarray, left: bool, feelings: Sequence[str], reason: str) -> FilledTexts:
    """The page's texts made complete: a default feeling for each watched item without one, a default reason
    when the user left without one. Unwatched items keep no feeling; a stay keeps the reason it was given."""
    out, n_default = [], 0
    for k, watch in enumerate(watched):
        if not watch:
            out.append("")
        elif feelings[k]:
            out.append(feelings[k])
        else:
            out.append(default_feeling(int(stars[k])))
            n_default += 1
    default_reason = bool(left and not reason)
    if default_reason:
        n_liked = sum(1 for k, watch in enumerate(watched) if watch and int(stars[k]) >= 4)
        reason = default_leave_reason(n_liked)
    return FilledTexts(out, reason, n_default, default_reason)


def counts_insight(session: SessionView) -> str:
    """The reflection that replaces an unusable one: what the session's counters say."""
    mean = session.mean_rating
    return f"So far I watched {session.n_watched} of {session.n_shown} movies shown" + (
        f", mean rating {mean:.1f}." if mean is not None else "."
    )


def record_event(sink: list[UserEvent], session: SessionView, event: UserEvent) -> None:
    """Keep `event` on the session and in the model's `sink`."""
    session.events.append(event)
    sink.append(event)


def record_fallback(
    sink: list[UserEvent],
    session: SessionView,
    page_index: int,
    template: str,
    result: StructuredResult,
    level: int = logging.WARNING,
    detail: str | None = None,
) -> UserEvent:
    """Record an unusable answer as a `UserEvent` and log it (`level`: INFO for text-only answers, whose
    fallback changes no decision; the run's report counts every fallback either way). `detail` defaults to
    the result's error."""
    event = UserEvent(
        "fallback", session.persona.user_id, session.episode, page_index, template,
        detail or f"{result.error} (after {result.repairs} repairs)", result.call_ids,
    )  # fmt: skip
    record_event(sink, session, event)
    logger.log(
        level, "fallback: user=%s episode=%s page=%s template=%s error=%s",
        event.user_id, event.episode, page_index, template, event.detail,
    )  # fmt: skip
    return event


def record_judge_fallback(sink: list[UserEvent], user_id: int, result: StructuredResult) -> None:
    """A `judge` answer (outside any session: episode -1, page 0) that stayed unusable."""
    sink.append(UserEvent("fallback", user_id, -1, 0, "page_decision", str(result.error), result.call_ids))
    logger.warning("fallback (judge): user=%s error=%s", user_id, result.error)
