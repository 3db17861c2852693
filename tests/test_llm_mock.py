"""MockLLM: determinism under a seed, readable rules per template, fault injection, clear errors."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

import agents.llm_user.specs  # noqa: F401  (registers the user templates the mock answers below)
import recommenders.llm_rerank_spec  # noqa: F401  (registers rerank)
from simenv.llm.mock import FAULT_KINDS, FaultConfig, MockLLM
from simenv.llm.schemas import (
    check_page_decision,
    check_rerank,
    interview_schema,
    reflection_schema,
    rerank_schema,
    taste_summary_schema,
)
from simenv.llm.structured import ask_json_batch, validate_answer
from simenv.llm.types import LLMError, LLMRequest, Message
from tests.fixtures_llm import GENRES, page_request


def _random_pages(n: int, seed: int) -> list[LLMRequest]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        ids = rng.choice(1000, size=4, replace=False).tolist()
        genres = [list(rng.choice(GENRES, size=2, replace=False)) for _ in ids]
        out.append(page_request(page_index=k % 5, item_ids=ids, item_genres=genres, user=k))
    return out


def _req(template: str, context: dict, schema: dict, text: str = "q") -> LLMRequest:
    return LLMRequest(
        messages=(Message("user", text),), template=template, template_version="v1", json_schema=schema, context=context
    )


def test_same_seed_same_answers_in_any_order_and_other_seed_differs() -> None:
    requests = _random_pages(60, seed=1)
    a = [r.text for r in MockLLM(seed=5).complete_batch(requests)]
    b = [r.text for r in MockLLM(seed=5).complete_batch(requests[::-1])][::-1]
    singles = [MockLLM(seed=5).complete(r).text for r in requests]
    c = [r.text for r in MockLLM(seed=6).complete_batch(requests)]
    assert a == b == singles
    assert a != c
    ids = [r.call_id for r in MockLLM(seed=5).complete_batch(requests)]
    assert len(set(ids)) == len(ids)


def test_page_decision_follows_genre_taste() -> None:
    """Across many pages, items of liked genres are watched more and rated higher than disliked ones."""
    liked, disliked = ("Action", "Sci-Fi"), ("Horror", "Romance")
    mock = MockLLM(seed=0)
    watched: dict[str, list[bool]] = {"liked": [], "disliked": []}
    ratings: dict[str, list[int]] = {"liked": [], "disliked": []}
    for k in range(200):
        genres = [["Action"], ["Horror"], ["Sci-Fi"], ["Romance"]]
        req = page_request(page_index=0, item_ids=[4 * k, 4 * k + 1, 4 * k + 2, 4 * k + 3], item_genres=genres)
        req = LLMRequest(
            **{**req.__dict__, "context": {**req.context, "liked_genres": liked, "disliked_genres": disliked}}
        )
        answer = json.loads(mock.complete(req).text)
        validate_answer(mock.complete(req).text, req.json_schema, check_page_decision(req.context["item_ids"]))
        for entry, g in zip(answer["items"], genres, strict=True):
            side = "liked" if g[0] in liked else "disliked"
            watched[side].append(entry["watch"])
            ratings[side].append(entry["rating"])
    assert np.mean(watched["liked"]) > np.mean(watched["disliked"]) + 0.2
    assert np.mean(ratings["liked"]) > np.mean(ratings["disliked"]) + 1.0


def test_leaving_grows_with_page_index() -> None:
    mock = MockLLM(seed=0)

    def leave_rate(page_index: int) -> float:
        pages = [page_request(page_index=page_index, user=u) for u in range(300)]
        return float(np.mean([json.loads(r.text)["leave"] for r in mock.complete_batch(pages)]))

    assert leave_rate(4) > leave_rate(0) + 0.2


RERANK_CONTEXT = {
    "candidate_ids": [5, 6, 7],
    "candidate_genres": [["Drama"], ["Action"], []],
    "history_genres": ["Action"],
}


def test_every_contract_template_answers_valid_json() -> None:
    mock = MockLLM(seed=3)
    cases = [
        (_req("reflection", {"n_memories": 25, "mean_rating": 4.2}, reflection_schema()), None),
        (
            _req("interview", {"n_shown": 20, "n_watched": 8, "n_liked": 6, "mean_rating": 4.0}, interview_schema()),
            None,
        ),
        (_req("taste_summary", {"liked_genres": ["Drama"], "disliked_genres": []}, taste_summary_schema()), None),
        (
            _req(
                "rerank",
                {
                    "candidate_ids": [5, 6, 7],
                    "candidate_genres": [["Drama"], ["Action"], []],
                    "history_genres": ["Action"],
                },
                rerank_schema(3),
            ),
            check_rerank([5, 6, 7]),
        ),
    ]
    for request, check in cases:
        value = validate_answer(mock.complete(request).text, request.json_schema, check)
        assert value
    ranking = validate_answer(mock.complete(cases[3][0]).text, rerank_schema(3), None)["ranking"]
    assert ranking[0] == 6  # the only candidate sharing a history genre comes first
    summary = json.loads(mock.complete(cases[2][0]).text)["summary"]
    assert "Drama" in summary


def test_interview_score_rises_with_liked_share() -> None:
    mock = MockLLM(seed=1)

    def score(n_liked: int, k: int) -> int:
        ctx = {"n_shown": 20, "n_watched": n_liked, "n_liked": n_liked, "mean_rating": 4.0}
        return json.loads(mock.complete(_req("interview", ctx, interview_schema(), text=f"q{k}")).text)["score"]

    low = [score(1, k) for k in range(30)]
    high = [score(18, k) for k in range(30)]
    assert min(high) > max(low)


def test_faults_are_injected_at_the_configured_rate_and_caught_by_validation() -> None:
    requests = _random_pages(400, seed=2)
    mock = MockLLM(seed=0, faults=FaultConfig(rate=0.5))
    kinds: Counter[str] = Counter()
    for request in requests:
        try:
            response = mock.complete(request)
        except LLMError:
            kinds["exception"] += 1
            continue
        try:
            validate_answer(response.text, request.json_schema, check_page_decision(request.context["item_ids"]))
            kinds["valid"] += 1
        except Exception as exc:  # _Invalid carries the kind
            kinds[exc.kind] += 1  # type: ignore[attr-defined]
    assert 150 < sum(v for k, v in kinds.items() if k != "valid") < 250
    assert kinds["exception"] > 20
    assert kinds["invalid_json"] > 20
    assert kinds["schema_error"] > 20  # out-of-range rating
    assert kinds["check_error"] > 20  # unknown id


def test_fault_kinds_can_be_restricted_and_batches_keep_every_request() -> None:
    requests = _random_pages(100, seed=4)
    mock = MockLLM(seed=0, faults=FaultConfig(rate=1.0, kinds=("exception",)))
    responses = mock.complete_batch(requests)
    assert len(responses) == 100 and all(r.error for r in responses)
    assert [r.call_id for r in responses] == [q.call_id() for q in requests]
    results = ask_json_batch(mock, requests, max_repairs=1)
    assert all(r.failed and r.error.startswith("call_error") for r in results)


def test_unknown_template_and_bad_config_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="no rule for template 'nope'"):
        MockLLM().complete(_req("nope", {}, {}))
    with pytest.raises(ValueError, match="lacks keys \\['page_index'\\]"):
        bad = page_request()
        MockLLM().complete(
            LLMRequest(**{**bad.__dict__, "context": {k: v for k, v in bad.context.items() if k != "page_index"}})
        )
    with pytest.raises(ValueError, match="unknown kinds"):
        FaultConfig(rate=0.1, kinds=("gremlins",))
    with pytest.raises(ValueError, match="rate"):
        FaultConfig(rate=1.5)
    assert set(FAULT_KINDS) == {"malformed_json", "out_of_range", "unknown_id", "exception"}


def test_custom_rule_answers_orjson_cannot_encode_still_come_back_as_json() -> None:
    """The mock encodes answers with orjson and falls back to the json module (e.g. integers beyond 64 bits)."""
    mock = MockLLM(seed=0, rules={"big": lambda ctx, rng: {"n": 2**70 + int(rng.integers(10)), "k": ctx["k"]}})
    texts = [mock.complete(_req("big", {"k": k}, {"type": "object"}, text=f"b{k}")).text for k in range(3)]
    values = [json.loads(t) for t in texts]
    assert [v["k"] for v in values] == [0, 1, 2] and all(2**70 <= v["n"] < 2**70 + 10 for v in values)
