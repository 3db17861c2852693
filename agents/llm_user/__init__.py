"""The LLM persona user: a stable persona system prompt, memory retrieval, one JSON answer per page, grounded
by non-LLM signals (agents.decision), reflection when importance piles up, and an exit interview.

Per page (for a whole batch of sessions at once): retrieve top-k memories (query = mean embedding of the
shown items) -> render the page prompt after the persona's byte-identical system prompt -> ONE
`ask_json_batch` call -> apply the decision rule -> write factual/emotional memories -> for the sessions whose
summed importance crossed the threshold, ONE more `ask_json_batch` with `reflection`. An answer that stays
unusable after repairs is a logged `UserEvent("fallback")`; the page is then decided by the non-LLM signals
(`PageFeedback.fallback=True`), so no page is lost.

One job per module:
- `prompts`: the requests (persona system prompt, one builder per template, schemas, token budgets);
- `session`: one episode's state and how a decided page is recorded;
- `page_decisions`: deciding pages in decide mode (`page_decision`) and narrate mode (`page_reaction`), and
  judging pages outside a session;
- `reflection`, `interview`, `taste_summary`: the other prompts' flows;
- `fallbacks`: every fallback and default text, recorded and logged;
- `model`: `LLMUserModel`, which wires them together.
"""

from agents.llm_user.fallbacks import FEELING_BY_RATING, UserEvent
from agents.llm_user.interview import INTERVIEW_QUERY
from agents.llm_user.model import LLMUserModel
from agents.llm_user.prompts import (
    ACTIVITY_TEXT,
    CONFORMITY_TEXT,
    DIVERSITY_TEXT,
    FEELING_MAX_CHARS,
    INTERVIEW_MAX_TOKENS,
    INTERVIEW_REASON_MAX_CHARS,
    PAGE_MAX_TOKENS_BASE,
    PAGE_MAX_TOKENS_PER_ITEM,
    REACTION_MAX_TOKENS_BASE,
    REACTION_MAX_TOKENS_PER_FEELING,
    REACTION_MAX_TOKENS_REASON,
    REASON_MAX_CHARS,
    page_schema,
    persona_system_prompt,
)
from agents.llm_user.session import LLMUserSession
from agents.llm_user.taste_summary import summarise_tastes

__all__ = [
    "ACTIVITY_TEXT",
    "CONFORMITY_TEXT",
    "DIVERSITY_TEXT",
    "FEELING_BY_RATING",
    "FEELING_MAX_CHARS",
    "INTERVIEW_MAX_TOKENS",
    "INTERVIEW_QUERY",
    "INTERVIEW_REASON_MAX_CHARS",
    "PAGE_MAX_TOKENS_BASE",
    "PAGE_MAX_TOKENS_PER_ITEM",
    "REACTION_MAX_TOKENS_BASE",
    "REACTION_MAX_TOKENS_PER_FEELING",
    "REACTION_MAX_TOKENS_REASON",
    "REASON_MAX_CHARS",
    "LLMUserModel",
    "LLMUserSession",
    "UserEvent",
    "page_schema",
    "persona_system_prompt",
    "summarise_tastes",
]
