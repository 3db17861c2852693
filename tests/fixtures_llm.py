"""Fixtures for the LLM layer: contract-shaped requests, scripted models, loopback servers.

`llama_server` starts the real `python -m llama_cpp.server` with SmolLM2 on a free 127.0.0.1 port (module
scope), polls `/v1/models` until ready, and kills it by pid afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

import agents.llm_user.specs  # noqa: F401  (registers page_decision, which `page_request` asks, for the mock)
from simenv.llm.local_server import llama_server as local_llama_server
from simenv.llm.schemas import page_decision_schema
from simenv.llm.types import LLMError, LLMRequest, LLMResponse, Message

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi")

ECHO_SCHEMA = {
    "type": "object",
    "properties": {"echo": {"type": "string", "maxLength": 40}},
    "required": ["echo"],
    "additionalProperties": False,
}


def echo_request(i: int) -> LLMRequest:
    return LLMRequest(
        messages=(Message("system", "Echo the request."), Message("user", f"request #{i}")),
        template="echo",
        template_version="v1",
        json_schema=ECHO_SCHEMA,
    )


def page_request(
    page_index: int = 0,
    item_ids: Sequence[int] = (3, 7, 9, 11),
    item_genres: Sequence[Sequence[str]] = (("Action",), ("Comedy", "Romance"), ("Horror",), ("Action", "Sci-Fi")),
    liked: Sequence[str] = ("Action", "Sci-Fi"),
    disliked: Sequence[str] = ("Horror",),
    activity: int = 2,
    user: int = 1,
) -> LLMRequest:
    """A page_decision request with the context keys of docs/CONTRACTS.md."""
    listing = "\n".join(f"id={i}: {', '.join(g)}" for i, g in zip(item_ids, item_genres, strict=True))
    return LLMRequest(
        messages=(
            Message("system", f"You are user {user}. You like {', '.join(liked)}."),
            Message("user", f"Page {page_index}:\n{listing}\nAnswer in JSON."),
        ),
        template="page_decision",
        template_version="v1",
        purpose="page_decision",
        json_schema=page_decision_schema(len(item_ids)),
        context={
            "item_ids": list(item_ids),
            "item_genres": [list(g) for g in item_genres],
            "liked_genres": list(liked),
            "disliked_genres": list(disliked),
            "activity": activity,
            "page_index": page_index,
        },
    )


class ScriptedLLM:
    """Returns queued answers in order (an `LLMError` instance in the queue is raised); records requests."""

    name = "scripted"
    model = "scripted"

    def __init__(self, answers: Sequence[str | LLMError]) -> None:
        self.answers = list(answers)
        self.requests: list[LLMRequest] = []

    def complete(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, LLMError):
            raise answer
        return LLMResponse(text=answer, backend=self.name, model=self.model, call_id=request.call_id())

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        out = []
        for r in requests:
            try:
                out.append(self.complete(r))
            except LLMError as exc:
                out.append(
                    LLMResponse(text="", backend=self.name, model=self.model, call_id=r.call_id(), error=str(exc))
                )
        return out


class ExplodingLLM:
    """Fails the test if called: proves a replay is served entirely from the cache."""

    name = "exploding"
    model = "exploding"

    def __init__(self, identity: str) -> None:
        self.identity = identity

    def complete(self, request: LLMRequest) -> LLMResponse:
        raise AssertionError(f"backend called on replay for {request.template}")

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        raise AssertionError(f"backend called on replay for {len(requests)} requests")


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    """Base URL (`http://127.0.0.1:<port>/v1`) of a real llama.cpp server serving SmolLM2-135M."""
    with local_llama_server() as base_url:
        yield base_url
