"""In-process backends on the SmolLM2-135M GGUF: embedded llama.cpp (grammar, prefix cache) and transformers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simenv.llm import LlamaCppBackend, TransformersBackend, ask_json, make_llm
from simenv.llm.factory import LLMConfig
from simenv.llm.structured import validate_answer
from simenv.llm.types import LLMRequest, Message
from tests.fixtures_llm import page_request

PERSONA = (
    "You are a simulated movie watcher. You love Action and Sci-Fi films, dislike Horror, rate honestly, "
    "and watch only what fits your taste. You answer every question as this person would."
)


SMALL_SCHEMA = {
    "type": "object",
    "properties": {"watch": {"type": "boolean"}, "rating": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["watch", "rating"],
    "additionalProperties": False,
}


def _page(page_index: int, max_tokens: int = 1, schema: dict | None = None) -> LLMRequest:
    """A persona system prompt (the shared prefix) and one page question (the suffix)."""
    base = page_request(page_index=page_index, item_ids=(10 * page_index + 1,), item_genres=(("Action",),))
    return LLMRequest(
        messages=(Message("system", PERSONA), base.messages[1]),
        template=base.template,
        template_version=base.template_version,
        json_schema=schema,
        max_tokens=max_tokens,
    )


@pytest.fixture(scope="module")
def embedded() -> Iterator[LlamaCppBackend]:
    backend = make_llm(LLMConfig(backend="llama-cpp"))
    assert isinstance(backend, LlamaCppBackend)
    yield backend
    backend.close()


def test_embedded_answers_are_grammar_constrained_json(embedded: LlamaCppBackend) -> None:
    request = _page(0, max_tokens=24, schema=SMALL_SCHEMA)
    response = embedded.complete(request)
    value = validate_answer(response.text, SMALL_SCHEMA, None)  # the grammar guarantees the shape
    assert response.parsed == value and isinstance(value["watch"], bool) and 1 <= value["rating"] <= 5
    assert response.backend == "llama-cpp" and 0 < response.completion_tokens <= 24
    result = ask_json(embedded, request, max_repairs=0)
    assert result.status == "ok"  # small integer ranges are enforced by the grammar too (as enums)


def test_embedded_reuses_the_persona_prefix_across_calls(embedded: LlamaCppBackend) -> None:
    """The second page with the same system prompt evaluates only the new suffix, not the whole prompt."""
    embedded.complete(_page(1))
    llama = embedded._llama
    evaluated: list[int] = []
    original_eval = llama.eval

    def counting_eval(tokens):  # noqa: ANN001, ANN202
        evaluated.append(len(tokens))
        return original_eval(tokens)

    llama.eval = counting_eval
    try:
        response = embedded.complete(_page(2))
    finally:
        del llama.eval
    prompt_evaluated = evaluated[0]
    assert response.prompt_tokens > 60
    assert prompt_evaluated < response.prompt_tokens - 40  # the shared system prefix was not re-evaluated
    assert embedded._llama is llama  # one model instance for the backend's life


def test_transformers_backend_runs_the_gguf_offline() -> None:
    backend = TransformersBackend(seed=0, torch_threads=2)
    request = LLMRequest(
        messages=(Message("user", "Name one movie genre."),), template="probe", template_version="v1", max_tokens=6
    )
    first = backend.complete(request)
    second = backend.complete(request)
    assert first.text.strip() and first.text == second.text  # greedy decoding is deterministic
    assert 0 < first.completion_tokens <= 6 and first.prompt_tokens > 5
    assert first.backend == "transformers" and first.model == "SmolLM2-135M-Instruct.Q4_1"
