"""Issue 14 item 13: llm-only SmolLM2 users behind the real llama.cpp server (`json_object`). Ratings are sent as
an `enum` (the server's grammar ignores `minimum`/`maximum`: answers had ratings of -5 and 8), and raw control
characters inside JSON strings are tolerated. Prints the measured fallback rate."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest

from agents.config import load_user
from agents.embedding import HashingEmbedder
from agents.llm_user import LLMUserModel
from agents.persona import build_personas
from simenv.data import agent4rec_split, load_dataset
from simenv.llm.openai_backend import OpenAIBackend
from simenv.llm.types import LLMRequest, LLMResponse
from simenv.records import Page
from tests.fixtures_llm import llama_server  # noqa: F401  (pytest fixture)

N_PERSONAS = 2  # a page and an interview each: enough to check what the server answers (8 ratings)


class Recording:
    """Keeps every raw answer of the wrapped backend."""

    name = "recording"

    def __init__(self, inner: OpenAIBackend) -> None:
        self.inner = inner
        self.answers: list[tuple[str, str]] = []

    def complete(self, request: LLMRequest) -> LLMResponse:
        return self.complete_batch([request])[0]

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        responses = self.inner.complete_batch(requests)
        self.answers += [(r.template, resp.text) for r, resp in zip(requests, responses, strict=True)]
        return responses


@pytest.mark.slow
def test_llm_only_users_behind_the_real_server_rate_within_range(llama_server: str, capsys) -> None:  # noqa: F811
    dataset = load_dataset("ml-100k")
    split = agent4rec_split(dataset, n_users=100, seed=0)
    personas = build_personas(split)
    backend = OpenAIBackend(
        model="smollm2-135m", base_url=llama_server, structured_output="json_object", timeout_s=300, concurrency=2
    )
    llm = Recording(backend)
    users = LLMUserModel(dataset, llm, HashingEmbedder(), load_user("llm-only").user, train=split.train)
    rng = np.random.default_rng(0)
    sessions, pages = [], []
    for k, user in enumerate(sorted(personas)[:N_PERSONAS]):
        persona = personas[user]
        seen = set(persona.train_items)
        ids = tuple(int(i) for i in rng.permutation(dataset.n_items) if int(i) not in seen)[:4]
        sessions.append(users.start_session(persona, k, np.random.default_rng([0, k])))
        pages.append((Page(k, 0, ids), [dataset.item(i) for i in ids]))
    feedback = users.react_batch(sessions, pages)
    interviews = [users.interview(s) for s in sessions]
    backend.close()
    ratings = []
    for template, text in llm.answers:
        if template != "page_decision":
            continue
        try:
            value = json.loads(text, strict=False)
        except json.JSONDecodeError:
            continue
        ratings += [item.get("rating") for item in value.get("items", []) if isinstance(item, dict)]
    assert ratings, "the server answered page decisions"
    assert all(r in (1, 2, 3, 4, 5) for r in ratings), ratings  # the enum is enforced by the server's grammar
    fallbacks = [e for e in users.events if e.kind == "fallback"]
    page_fb = sum(e.template == "page_decision" for e in fallbacks) / len(sessions)
    interview_fb = sum(i.fallback for i in interviews) / len(interviews)  # no usable score
    placeholder = sum(e.template == "interview" and "placeholder" in e.detail for e in fallbacks) / len(interviews)
    with capsys.disabled():
        print(
            f"\nllama.cpp server, SmolLM2 llm-only: fallback page {page_fb:.0%}, interview {interview_fb:.0%} "
            f"(placeholder reason, score kept: {placeholder:.0%})"
        )
    assert len(feedback) == len(interviews) == N_PERSONAS
    assert all(1 <= i.score <= 10 for i in interviews)
