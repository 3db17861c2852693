"""The persona user's LLM requests: the persona system prompt and one request builder per template. Each
template's schema, example, check and token budget come from its spec (`agents.llm_user.specs`); builders are pure:
callers draw the seeds and retrieve the memories.

`context` follows docs/CONTRACTS.md (the mock reads it); every request starts with the persona's byte-identical
system message, so backends can reuse the prompt prefix. `*_ask` builders also return the answer's check: the
spec's own check plus the echo check against the prompt's own words (the template rendered with its data masked).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.config import LLMUserConfig
from agents.llm_user.specs import (
    FEELING_MAX_CHARS,
    INTERVIEW,
    INTERVIEW_REASON_MAX_CHARS,
    LEAVE_OPENING,
    OPENINGS,
    PAGE_DECISION,
    PAGE_MAX_TOKENS_BASE,
    PAGE_MAX_TOKENS_PER_ITEM,
    PAGE_PICK,
    PAGE_REACTION,
    REASON_MAX_CHARS,
    REFLECTION,
    REFLECTION_MAX_TOKENS,
    TASTE_SUMMARY,
    TASTE_SUMMARY_MAX_TOKENS,
    decision_schema,
)
from agents.llm_user.views import SessionView
from agents.memory import MemoryRecord
from agents.signals import stats_interview_score
from simenv.data.dataset import Dataset
from simenv.llm.prompt_spec import PromptSpec, masked, prompt_example
from simenv.llm.templates import PromptTemplate, load_template
from simenv.llm.types import LLMRequest, Message
from simenv.records import Item, Page, Persona

Check = Callable[[Any], None]


ACTIVITY_TEXT = {1: "only now and then", 2: "fairly often", 3: "a lot"}
CONFORMITY_TEXT = {
    1: "usually agree with popular opinion",
    2: "sometimes differ from popular opinion",
    3: "often disagree with popular opinion",
}
DIVERSITY_TEXT = {1: "focused on a few genres", 2: "moderately varied", 3: "very varied"}
# Token budgets for constrained answers (specs' budgets): one token per character of capped text (the worst case:
# SmolLM2 can fall into one-character tokens) plus JSON punctuation, so every answer can close its JSON within
# budget (a cut-off answer is a failed call and a repair). Typical answers use a fraction of it.
REACTION_MAX_TOKENS_BASE = 12
REACTION_MAX_TOKENS_PER_FEELING = 6 + max(len(o) for o in OPENINGS.values()) + FEELING_MAX_CHARS
REACTION_MAX_TOKENS_REASON = 8 + len(LEAVE_OPENING) + REASON_MAX_CHARS
INTERVIEW_MAX_TOKENS = 16 + INTERVIEW_REASON_MAX_CHARS

__all__ = [
    "FEELING_MAX_CHARS", "INTERVIEW_REASON_MAX_CHARS", "PAGE_MAX_TOKENS_BASE", "PAGE_MAX_TOKENS_PER_ITEM",
    "REASON_MAX_CHARS", "REFLECTION_MAX_TOKENS", "TASTE_SUMMARY_MAX_TOKENS", "Ask", "PromptBuilder",
]  # fmt: skip


@dataclass(frozen=True)
class Ask:
    """A request and the check its answer must pass (the spec's check, then the echo check)."""

    request: LLMRequest
    check: Check


def _render(
    spec: PromptSpec, template: PromptTemplate, variables: Mapping[str, Any], context: Mapping[str, Any]
) -> tuple[tuple[Message, ...], dict[str, Any], Callable[[], str]]:
    """The rendered messages (with the spec's example), the schema, and how to render the prompt's own words."""
    schema = spec.schema(context)
    full = {**variables, "example": prompt_example(spec.example(context, schema=schema), schema)}

    def own_words() -> str:
        return _own_words(template, masked(full, spec.data_vars))

    return template.render(**full), schema, own_words


_OWN_WORDS: dict[tuple[PromptTemplate, str], str] = {}
_OWN_WORDS_MAX = 4096


def _own_words(template: PromptTemplate, variables: dict[str, Any]) -> str:
    """The template rendered with its data masked, remembered by the variables' repr (plain str, int, float, bool,
    None, lists, tuples and dicts here, so equal reprs render equal words): with the data masked, pages that differ
    only in titles, taste and memories render the same words (one render instead of one per answer)."""
    key = (template, repr(variables))
    text = _OWN_WORDS.get(key)
    if text is None:
        text = "\n".join(m.content for m in template.render(**variables))
        if len(_OWN_WORDS) >= _OWN_WORDS_MAX:
            _OWN_WORDS.clear()
        _OWN_WORDS[key] = text
    return text


def persona_system_prompt(persona: Persona, version: int = 1) -> Message:
    """The persona's system message: the same bytes on every page (backends can reuse the prefix). It holds
    only the persona's traits, never catalog or model text: the taste text (which names titles) opens each user
    message instead, so a hostile title never reaches the system role."""
    messages = load_template("agents", "persona_system", version).render(
        activity_text=ACTIVITY_TEXT[persona.activity],
        conformity_text=CONFORMITY_TEXT[persona.conformity],
        diversity_text=DIVERSITY_TEXT[persona.diversity],
    )
    if len(messages) != 1 or messages[0].role != "system":
        raise ValueError("template agents/prompts/persona_system must render exactly one system message")
    return messages[0]


def page_schema(item_ids: Sequence[int]) -> dict[str, Any]:
    """The contract's page_decision schema with each position's id fixed (`prefixItems` + `const`).

    Grammar-constrained backends then cannot write an unknown or out-of-order id; others are still checked by
    `check_page_decision`.
    """
    return decision_schema({"item_ids": [int(i) for i in item_ids]})


def taste_summary_ask(persona: Persona, version: int = 1) -> Ask:
    """The one-off `taste_summary` request for a persona (seed 0: the summary is cached with the run) and its check
    (the answer must not copy the prompt)."""
    spec = TASTE_SUMMARY
    template = spec.template(version)
    context = {"liked_genres": list(persona.liked_genres), "disliked_genres": list(persona.disliked_genres)}
    variables = {
        "liked_genres": list(persona.liked_genres),
        "disliked_genres": list(persona.disliked_genres),
        "liked_titles": list(persona.liked_titles[:5]),
        "disliked_titles": list(persona.disliked_titles[:3]),
    }
    messages, schema, own_words = _render(spec, template, variables, context)
    request = LLMRequest(
        messages=messages,
        template=spec.name,
        template_version=template.version_tag,
        purpose=spec.name,
        max_tokens=spec.budget(context, schema),
        seed=0,
        json_schema=schema,
        context=context,
    )
    return Ask(request, spec.full_check(context, own_words, schema))


def draw_seed(rng: np.random.Generator) -> int:
    """A request seed drawn from a session's (or judge's) generator."""
    return int(rng.integers(2**31 - 1))


def memory_line(rec: MemoryRecord) -> str:
    """How a retrieved memory reads in a prompt (reflections are marked as insights)."""
    return rec.text if rec.kind != "reflection" else f"(insight) {rec.text}"


class PromptBuilder:
    """Builds the session requests (page_decision, page_reaction, reflection, interview) for one config."""

    def __init__(self, dataset: Dataset, config: LLMUserConfig) -> None:
        self.dataset = dataset
        self.config = config
        self.system_messages: dict[int, Message] = {}  # user id -> the persona's system message, built once
        v = config.template_version
        self.page_template = PAGE_DECISION.template(v)
        self.pick_template = PAGE_PICK.template(v)
        self.reaction_template = PAGE_REACTION.template(v)
        self.reflection_template = REFLECTION.template(v)
        self.interview_template = INTERVIEW.template(v)

    def system_message(self, persona: Persona) -> Message:
        msg = self.system_messages.get(persona.user_id)
        if msg is None:
            msg = persona_system_prompt(persona, self.config.template_version)
            self.system_messages[persona.user_id] = msg
        return msg

    def request(
        self,
        template: PromptTemplate,
        persona: Persona,
        user: Sequence[Message],
        max_tokens: int,
        seed: int,
        schema: dict[str, Any],
        context: dict[str, Any],
    ) -> LLMRequest:
        """A session request: the persona's system message, then the template's rendered user turn."""
        return LLMRequest(
            messages=(self.system_message(persona), *user),
            template=template.name,
            template_version=template.version_tag,
            purpose=template.name,
            temperature=self.config.temperature,
            max_tokens=max_tokens,
            seed=seed,
            json_schema=schema,
            context=context,
        )

    def ask(
        self,
        spec: PromptSpec,
        template: PromptTemplate,
        persona: Persona,
        variables: dict[str, Any],
        context: dict[str, Any],
        seed: int,
    ) -> Ask:
        """The spec's request (schema, example, budget) and its check; the persona's system message counts as the
        prompt's own words too."""
        user, schema, own_words = _render(spec, template, variables, context)
        request = self.request(template, persona, user, spec.budget(context, schema), seed, schema, context)
        system = request.messages[0].content
        return Ask(request, spec.full_check(context, lambda: f"{system}\n{own_words()}", schema))

    def page_ask(
        self, persona: Persona, page_index: int, item_ids: Sequence[int], memories: Sequence[MemoryRecord], seed: int
    ) -> Ask:
        """The page_decision request: persona system prompt + page prompt; `context` per docs/CONTRACTS.md."""
        catalog = self.dataset.catalog
        shown = [catalog[i] for i in item_ids]
        variables = {
            "taste": persona.taste_text,
            "page_number": page_index + 1,
            "memories": [memory_line(m) for m in memories],
            "items": [{"id": it.item_id, "text": it.text} for it in shown],
        }
        context = {
            "item_ids": [int(i) for i in item_ids],
            "item_genres": [list(it.genres) for it in shown],
            "liked_genres": list(persona.liked_genres),
            "disliked_genres": list(persona.disliked_genres),
            "activity": int(persona.activity),
            "page_index": int(page_index),
        }
        return self.ask(PAGE_DECISION, self.page_template, persona, variables, context, seed)

    def pick_ask(self, persona: Persona, item_ids: Sequence[int], k: int, seed: int) -> Ask:
        """The page_pick request of the fidelity protocol as peers run it: told it has watched exactly `k` of the
        shown movies, the persona names them (no memories: asked outside any session)."""
        shown = [self.dataset.catalog[i] for i in item_ids]
        variables = {
            "taste": persona.taste_text,
            "items": [{"id": it.item_id, "text": it.text} for it in shown],
            "watched_count": int(k),
        }
        context = {
            "item_ids": [int(i) for i in item_ids],
            "item_genres": [list(it.genres) for it in shown],
            "liked_genres": list(persona.liked_genres),
            "disliked_genres": list(persona.disliked_genres),
            "watched_count": int(k),
        }
        return self.ask(PAGE_PICK, self.pick_template, persona, variables, context, seed)

    def page_request(
        self, persona: Persona, page_index: int, item_ids: Sequence[int], memories: Sequence[MemoryRecord], seed: int
    ) -> LLMRequest:
        return self.page_ask(persona, page_index, item_ids, memories, seed).request

    def reaction_ask(
        self,
        persona: Persona,
        page: Page,
        items: Sequence[Item],
        watched: np.ndarray,
        stars: np.ndarray,
        left: bool,
        memories: Sequence[MemoryRecord],
        seed: int,
    ) -> Ask:
        """The page_reaction request (persona system prompt + what the user did on the page, each watched movie
        with its rating) and its check: feelings that agree with their ratings, no echo of the prompt."""
        seen = [{"text": it.text, "rating": int(stars[k])} for k, it in enumerate(items) if watched[k]]
        variables = {
            "taste": persona.taste_text,
            "page_number": page.page_index + 1,
            "memories": [memory_line(m) for m in memories],
            "watched": seen,
            "skipped": [it.title for k, it in enumerate(items) if not watched[k]],
            "left": bool(left),
        }
        context = {"ratings": [s["rating"] for s in seen], "left": bool(left), "page_index": int(page.page_index)}
        watched_items = [it for k, it in enumerate(items) if watched[k]]
        if watched_items:  # read past by the sentiment check ("Star Wars", "Horror" are not feelings)
            context["data_words"] = sorted({w for it in watched_items for w in (it.title, *it.genres)})
        return self.ask(PAGE_REACTION, self.reaction_template, persona, variables, context, seed)

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
        return self.reaction_ask(persona, page, items, watched, stars, left, memories, seed).request

    def reflection_ask(self, session: SessionView, window: Sequence[MemoryRecord], seed: int) -> Ask:
        """The reflection request over `window` (the memories since the last reflection)."""
        variables = {"taste": session.persona.taste_text, "memories": [m.text for m in window]}
        context = {"n_memories": len(session.memory), "mean_rating": session.mean_rating}
        return self.ask(REFLECTION, self.reflection_template, session.persona, variables, context, seed)

    def reflection_request(self, session: SessionView, window: Sequence[MemoryRecord], seed: int) -> LLMRequest:
        return self.reflection_ask(session, window, seed).request

    def interview_ask(self, session: SessionView, memories: Sequence[MemoryRecord], seed: int) -> Ask:
        """The exit interview request: the session's counts and its retrieved memories. When the profile ignores
        the model's score (`interview_llm == 0`), the score is the counts' and fixed in the request (`context
        ["score"]`): the model only writes the reason, opened with the satisfaction the score states."""
        fixed = None
        if self.config.decision.interview_llm == 0.0:
            fixed = stats_interview_score(session.n_shown, session.n_watched, session.n_liked)
        ctx: dict[str, Any] = {
            "n_shown": session.n_shown,
            "n_watched": session.n_watched,
            "n_liked": session.n_liked,
            "mean_rating": session.mean_rating,
        }
        if fixed is not None:
            ctx["score"] = fixed
        variables = {
            "taste": session.persona.taste_text,
            "n_pages": len(session.pages),
            "memories": [memory_line(m) for m in memories],
            **ctx,
            "score": fixed,
        }
        return self.ask(INTERVIEW, self.interview_template, session.persona, variables, ctx, seed)

    def interview_request(self, session: SessionView, memories: Sequence[MemoryRecord], seed: int) -> LLMRequest:
        return self.interview_ask(session, memories, seed).request
