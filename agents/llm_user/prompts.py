"""The persona user's LLM requests: the persona system prompt, one request builder per template, answer schemas
and token budgets. Builders are pure: callers draw the seeds and retrieve the memories.

`context` follows docs/CONTRACTS.md (the mock reads it); every request starts with the persona's byte-identical
system message, so backends can reuse the prompt prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.config import LLMUserConfig
from agents.memory import MemoryRecord
from simenv.data.dataset import Dataset
from simenv.llm.schemas import (
    interview_schema,
    page_decision_schema,
    page_reaction_schema,
    reflection_schema,
    taste_summary_schema,
)
from simenv.llm.templates import PromptTemplate, load_template
from simenv.llm.types import LLMRequest, Message
from simenv.records import Item, Page, Persona

if TYPE_CHECKING:
    from agents.llm_user.session import LLMUserSession

ACTIVITY_TEXT = {1: "only now and then", 2: "fairly often", 3: "a lot"}
CONFORMITY_TEXT = {
    1: "usually agree with popular opinion",
    2: "sometimes differ from popular opinion",
    3: "often disagree with popular opinion",
}
DIVERSITY_TEXT = {1: "focused on a few genres", 2: "moderately varied", 3: "very varied"}
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
REFLECTION_MAX_TOKENS = 160
TASTE_SUMMARY_MAX_TOKENS = 120


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


def taste_summary_request(persona: Persona, version: int = 1) -> LLMRequest:
    """The one-off `taste_summary` request for a persona (seed 0: the summary is cached with the run)."""
    template = load_template("agents", "taste_summary", version)
    return LLMRequest(
        messages=template.render(
            liked_genres=list(persona.liked_genres),
            disliked_genres=list(persona.disliked_genres),
            liked_titles=list(persona.liked_titles[:5]),
            disliked_titles=list(persona.disliked_titles[:3]),
        ),
        template="taste_summary",
        template_version=template.version_tag,
        purpose="taste_summary",
        max_tokens=TASTE_SUMMARY_MAX_TOKENS,
        seed=0,
        json_schema=taste_summary_schema(),
        context={"liked_genres": list(persona.liked_genres), "disliked_genres": list(persona.disliked_genres)},
    )


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
        self.page_template = load_template("agents", "page_decision", v)
        self.reaction_template = load_template("agents", "page_reaction", v)
        self.reflection_template = load_template("agents", "reflection", v)
        self.interview_template = load_template("agents", "interview", v)

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

    def page_request(
        self, persona: Persona, page_index: int, item_ids: Sequence[int], memories: Sequence[MemoryRecord], seed: int
    ) -> LLMRequest:
        """The page_decision request: persona system prompt + page prompt; `context` per docs/CONTRACTS.md."""
        catalog = self.dataset.catalog
        shown = [catalog[i] for i in item_ids]
        user = self.page_template.render(
            taste=persona.taste_text,
            page_number=page_index + 1,
            memories=[memory_line(m) for m in memories],
            items=[{"id": it.item_id, "text": it.text} for it in shown],
        )
        context = {
            "item_ids": [int(i) for i in item_ids],
            "item_genres": [list(it.genres) for it in shown],
            "liked_genres": list(persona.liked_genres),
            "disliked_genres": list(persona.disliked_genres),
            "activity": int(persona.activity),
            "page_index": int(page_index),
        }
        max_tokens = PAGE_MAX_TOKENS_BASE + PAGE_MAX_TOKENS_PER_ITEM * len(shown)
        return self.request(self.page_template, persona, user, max_tokens, seed, page_schema(item_ids), context)

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
        user = self.reaction_template.render(
            taste=persona.taste_text,
            page_number=page.page_index + 1,
            memories=[memory_line(m) for m in memories],
            watched=seen,
            skipped=[it.title for k, it in enumerate(items) if not watched[k]],
            left=bool(left),
        )
        max_tokens = (
            REACTION_MAX_TOKENS_BASE
            + REACTION_MAX_TOKENS_PER_FEELING * len(seen)
            + (REACTION_MAX_TOKENS_REASON if left else 0)
        )
        schema = page_reaction_schema(len(seen), bool(left), FEELING_MAX_CHARS, REASON_MAX_CHARS)
        context = {"ratings": [s["rating"] for s in seen], "left": bool(left), "page_index": int(page.page_index)}
        return self.request(self.reaction_template, persona, user, max_tokens, seed, schema, context)

    def reflection_request(self, session: LLMUserSession, window: Sequence[MemoryRecord], seed: int) -> LLMRequest:
        """The reflection request over `window` (the memories since the last reflection)."""
        user = self.reflection_template.render(taste=session.persona.taste_text, memories=[m.text for m in window])
        context = {"n_memories": len(session.memory), "mean_rating": session.mean_rating}
        template = self.reflection_template
        return self.request(template, session.persona, user, REFLECTION_MAX_TOKENS, seed, reflection_schema(), context)

    def interview_request(self, session: LLMUserSession, memories: Sequence[MemoryRecord], seed: int) -> LLMRequest:
        """The exit interview request: the session's counts and its retrieved memories."""
        ctx: dict[str, Any] = {
            "n_shown": session.n_shown,
            "n_watched": session.n_watched,
            "n_liked": session.n_liked,
            "mean_rating": session.mean_rating,
        }
        user = self.interview_template.render(
            taste=session.persona.taste_text,
            n_pages=len(session.pages),
            memories=[memory_line(m) for m in memories],
            **ctx,
        )
        schema = interview_schema(INTERVIEW_REASON_MAX_CHARS)
        return self.request(self.interview_template, session.persona, user, INTERVIEW_MAX_TOKENS, seed, schema, ctx)
