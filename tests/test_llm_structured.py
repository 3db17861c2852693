"""ask_json / ask_json_batch: validation order, bounded repairs with the error shown, failed calls, order."""

from __future__ import annotations

import json

import pytest

from simenv.llm.mock import FaultConfig, MockLLM
from simenv.llm.schemas import check_page_decision, interview_schema
from simenv.llm.structured import ask_json, ask_json_batch, decode_json
from simenv.llm.types import BudgetExceeded, LLMError, LLMRequest, Message
from tests.fixtures_llm import ScriptedLLM, page_request

GOOD = json.dumps({"score": 7, "reason": "fine"})


def _interview() -> LLMRequest:
    return LLMRequest(
        messages=(Message("system", "You are user 1."), Message("user", "Rate your session.")),
        template="interview",
        template_version="v1",
        json_schema=interview_schema(),
    )


def test_valid_first_answer_is_ok_with_no_repairs() -> None:
    llm = ScriptedLLM([GOOD])
    result = ask_json(llm, _interview())
    assert result.status == "ok" and result.repairs == 0 and result.error is None
    assert result.value == {"score": 7, "reason": "fine"}
    assert result.call_ids == (_interview().call_id(),)


def test_repair_shows_previous_answer_and_error_then_succeeds() -> None:
    bad = json.dumps({"score": 11, "reason": "too high"})
    llm = ScriptedLLM([bad, GOOD])
    result = ask_json(llm, _interview())
    assert result.status == "repaired" and result.repairs == 1 and result.value["score"] == 7
    repair = llm.requests[1]
    assert repair.attempt == 1
    assert repair.messages[: len(_interview().messages)] == _interview().messages
    assert repair.messages[-2] == Message("assistant", bad)
    assert "score" in repair.messages[-1].content and "11" in repair.messages[-1].content
    assert len(set(result.call_ids)) == 2


def test_failure_after_max_repairs_is_typed_and_bounded() -> None:
    llm = ScriptedLLM(["not json", '{"score": 3}', "```json\n{oops\n```", GOOD])
    result = ask_json(llm, _interview(), max_repairs=2)
    assert result.failed and result.value is None and result.repairs == 2
    assert result.error.startswith("invalid_json")
    assert len(llm.requests) == 3 and len(result.responses) == 3  # never a fourth call
    assert llm.answers == [GOOD]


def test_semantic_check_failure_is_repaired_with_its_message() -> None:
    request = page_request(item_ids=(3, 7), item_genres=(("Action",), ("Drama",)))
    wrong = {"items": [{"id": 1, "watch": True, "rating": 4, "feeling": "ok"}] * 2, "leave": False, "reason": ""}
    right = {
        "items": [
            {"id": 3, "watch": True, "rating": 4, "feeling": "ok"},
            {"id": 7, "watch": False, "rating": 1, "feeling": ""},
        ],
        "leave": False,
        "reason": "",
    }
    llm = ScriptedLLM([json.dumps(wrong), json.dumps(right)])
    result = ask_json(llm, request, check=check_page_decision([3, 7]))
    assert result.status == "repaired" and result.value == right
    assert "[3, 7]" in llm.requests[1].messages[-1].content


def test_failed_call_is_resent_unchanged_and_budget_stops_propagate() -> None:
    llm = ScriptedLLM([LLMError("HTTP 500"), GOOD])
    result = ask_json(llm, _interview())
    assert result.status == "repaired" and llm.requests[1].messages == _interview().messages
    assert llm.requests[1].attempt == 1
    with pytest.raises(BudgetExceeded):
        ask_json(ScriptedLLM([BudgetExceeded("cap")]), _interview())


def test_batch_keeps_request_order_with_mixed_outcomes() -> None:
    pages = [
        page_request(user=u, item_ids=(10 * u, 10 * u + 1), item_genres=(("Action",), ("Drama",))) for u in range(60)
    ]
    checks = [check_page_decision(p.context["item_ids"]) for p in pages]
    mock = MockLLM(seed=3, faults=FaultConfig(rate=0.4))
    results = ask_json_batch(mock, pages, checks, max_repairs=1)
    assert len(results) == 60
    statuses = {r.status for r in results}
    assert statuses == {"ok", "repaired", "failed"}
    for page, result in zip(pages, results, strict=True):
        if not result.failed:
            assert [e["id"] for e in result.value["items"]] == page.context["item_ids"]
        assert 1 <= len(result.responses) <= 2


def test_recorder_receives_one_outcome_per_response() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.rows: list[tuple[str, str, int, bool]] = []

        def record_outcome(self, call_id: str, parse_status: str, repairs: int, fallback: bool) -> None:
            self.rows.append((call_id, parse_status, repairs, fallback))

    recorder = Recorder()
    result = ask_json(ScriptedLLM(["{", "[]", "{}"]), _interview(), max_repairs=2, recorder=recorder)
    assert result.failed
    assert [r[1:] for r in recorder.rows] == [
        ("invalid_json", 0, False),
        ("schema_error", 1, False),
        ("schema_error", 2, True),
    ]
    assert [r[0] for r in recorder.rows] == list(result.call_ids)


def test_decode_json_accepts_fences_but_not_prose() -> None:
    assert decode_json(' ```json\n{"a": 1}\n``` ') == {"a": 1}
    with pytest.raises(json.JSONDecodeError):
        decode_json('Sure: {"a": 1}')
    with pytest.raises(ValueError, match="max_repairs"):
        ask_json(ScriptedLLM([GOOD]), _interview(), max_repairs=-1)


def test_decode_json_reads_what_the_json_module_reads_with_its_error_messages() -> None:
    """orjson decodes first; what it refuses (NaN, integers beyond 64 bits) is still read as the json module
    reads it, and invalid JSON fails with the json module's message and position."""
    for text in ('{"a": NaN}', '{"big": 123456789012345678901234567890}', '{"s": "caf\\u00e9", "x": [1.5e3]}'):
        assert repr(decode_json(text)) == repr(json.loads(text))
    with pytest.raises(json.JSONDecodeError) as err:
        decode_json('{"a": [1, }')
    with pytest.raises(json.JSONDecodeError) as reference:
        json.loads('{"a": [1, }')
    assert (err.value.msg, err.value.pos) == (reference.value.msg, reference.value.pos)
