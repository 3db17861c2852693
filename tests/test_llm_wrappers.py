"""Cache replay identity, budget stop, call-log rows and parts, LLMConfig/make_llm."""

from __future__ import annotations

from pathlib import Path

import pytest

from simenv.llm import (
    BudgetExceeded,
    BudgetLLM,
    CacheLLM,
    CallLogLLM,
    FaultConfig,
    LLMConfig,
    MockLLM,
    ask_json,
    ask_json_batch,
    make_llm,
    read_call_log,
)
from simenv.llm.schemas import check_page_decision
from simenv.llm.types import LLMError
from tests.fixtures_llm import ScriptedLLM, page_request


def _pages(n: int, page_index: int = 0) -> list:
    return [
        page_request(page_index=page_index, user=u, item_ids=(4 * u, 4 * u + 1, 4 * u + 2, 4 * u + 3)) for u in range(n)
    ]


def _checks(pages: list) -> list:
    return [check_page_decision(p.context["item_ids"]) for p in pages]


def _run(llm, pages: list) -> list:
    return ask_json_batch(llm, pages, _checks(pages), max_repairs=2)


def test_cache_replay_reasks_only_bad_answers_and_reproduces_results(tmp_path: Path) -> None:
    pages = _pages(80)
    mock = MockLLM(seed=9, faults=FaultConfig(rate=0.3, kinds=("malformed_json", "out_of_range", "unknown_id")))
    first = CacheLLM(mock, tmp_path / "cache")
    original = _run(first, pages)
    first.close()
    assert first.hits == 0 and first.misses > 80  # repairs were needed
    assert first.rejected > 0  # the bad answers were not kept
    assert any(r.status == "repaired" for r in original)

    replay = CacheLLM(MockLLM(seed=9, faults=mock.faults), tmp_path / "cache")
    again = _run(replay, pages)
    assert replay.misses == first.rejected and replay.hits == first.misses - first.rejected
    assert replay.stale == 0
    assert [(r.value, r.status, r.repairs) for r in again] == [(r.value, r.status, r.repairs) for r in original]
    assert [r.call_ids for r in again] == [r.call_ids for r in original]
    hits = [resp.cache_hit for r in again for resp in r.responses]
    assert sum(hits) == replay.hits
    replay.close()


def test_cache_key_depends_on_model_identity_and_request(tmp_path: Path) -> None:
    a = CacheLLM(MockLLM(seed=1), tmp_path / "c")
    b = CacheLLM(MockLLM(seed=2), tmp_path / "c")
    page = _pages(1)[0]
    assert a.key(page) != b.key(page)
    assert a.key(page) != a.key(_pages(1, page_index=1)[0])
    a.close()
    b.close()


def test_failed_calls_are_not_cached(tmp_path: Path) -> None:
    page = _pages(1)[0]
    good = MockLLM(seed=0).complete(page).text  # a valid page decision
    cache = CacheLLM(ScriptedLLM([LLMError("boom"), good]), tmp_path / "c")
    assert cache.complete_batch([page])[0].error
    assert cache.complete(page).text == good
    assert cache.complete(page).cache_hit
    cache.close()


def test_budget_stops_the_run_cleanly_with_a_clear_message() -> None:
    budget = BudgetLLM(MockLLM(seed=0), max_calls=10)
    answered = 0
    with pytest.raises(BudgetExceeded, match="max_calls=10"):
        for page in _pages(50):
            ask_json(budget, page)
            answered += 1
    assert answered == 10 and budget.calls == 10
    with pytest.raises(BudgetExceeded):  # a batch that would overrun is refused before any call
        BudgetLLM(MockLLM(), max_calls=5).complete_batch(_pages(6))

    tokens = BudgetLLM(MockLLM(seed=0), max_tokens=500)
    with pytest.raises(BudgetExceeded, match="max_tokens=500"):
        for page in _pages(50):
            tokens.complete(page)
    assert 500 <= tokens.tokens < 1000


def test_budget_sits_inside_the_cache_so_replays_are_free(tmp_path: Path) -> None:
    pages = _pages(5)
    llm = CacheLLM(BudgetLLM(MockLLM(seed=0), max_calls=5), tmp_path / "c")
    llm.complete_batch(pages)
    assert [r.cache_hit for r in llm.complete_batch(pages)] == [True] * 5
    with pytest.raises(BudgetExceeded):
        llm.complete(_pages(6)[5])
    llm.close()


def test_call_log_rows_record_outcomes_and_link_ids(tmp_path: Path) -> None:
    pages = _pages(40)
    mock = MockLLM(seed=4, faults=FaultConfig(rate=0.5))
    log = CallLogLLM(mock, tmp_path / "llm_calls", flush_every=16)
    results = _run(log, pages)
    log.close()
    rows = read_call_log(tmp_path / "llm_calls")
    assert len(rows) == sum(len(r.responses) for r in results)
    assert rows["call_id"].is_unique
    assert list(rows["seq"]) == list(range(len(rows)))
    assert len(list((tmp_path / "llm_calls").glob("part-*.parquet"))) > 1
    by_id = rows.set_index("call_id")
    for result in results:
        last = by_id.loc[result.call_ids[-1]]
        assert bool(last["fallback"]) == result.failed
        assert last["repairs"] == result.repairs
        expected_last = "ok" if not result.failed else result.error.split(":")[0]
        assert last["parse_status"] == expected_last
    assert set(rows["parse_status"]) >= {"ok", "invalid_json", "schema_error", "check_error", "call_error"}
    assert (rows["template"] == "page_decision").all() and (rows["template_version"] == "v1").all()
    assert rows["prompt_hash"].str.len().eq(16).all()


def test_call_log_ids_stay_unique_for_repeated_requests_and_across_resume(tmp_path: Path) -> None:
    page = _pages(1)[0]
    with CallLogLLM(MockLLM(), tmp_path / "log") as log:
        ids = [log.complete(page).call_id for _ in range(3)]
    with CallLogLLM(MockLLM(), tmp_path / "log") as log:
        ids.append(log.complete(page).call_id)
    assert len(set(ids)) == 4 and ids[0] == page.call_id()
    rows = read_call_log(tmp_path / "log")
    assert list(rows["call_id"]) == ids and list(rows["seq"]) == [0, 1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "log").glob("*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
    assert set(rows["parse_status"]) == {"unchecked"}  # plain complete: nobody validated


def test_empty_call_log_reads_as_empty_frame(tmp_path: Path) -> None:
    frame = read_call_log(tmp_path / "missing")
    assert len(frame) == 0 and "parse_status" in frame.columns


def test_config_errors_name_the_field_and_value() -> None:
    with pytest.raises(ValueError, match="unknown backend 'gpt'"):
        LLMConfig(backend="gpt")
    with pytest.raises(ValueError, match="concurrency must be >= 1, got 0"):
        LLMConfig(concurrency=0)
    with pytest.raises(ValueError, match="model is required for the openai backend"):
        LLMConfig(backend="openai")
    with pytest.raises(ValueError, match=r"llm.toml: unknown llm field\(s\) \['api_key'\].*OPENAI_API_KEY"):
        LLMConfig.from_mapping({"backend": "mock", "api_key": "x"}, source="llm.toml")


def test_make_llm_stacks_call_log_over_cache_over_budget(tmp_path: Path) -> None:
    config = LLMConfig(
        backend="mock", seed=3, cache_dir=str(tmp_path / "c"), call_log_dir=str(tmp_path / "log"), max_calls=100
    )
    llm = make_llm(config)
    assert llm.name == "calllog(cache(budget(mock)))"
    result = ask_json(llm, _pages(1)[0], check_page_decision([0, 1, 2, 3]))
    assert result.status == "ok"
    llm.close()
    assert read_call_log(tmp_path / "log")["parse_status"].tolist() == ["ok"]
    assert make_llm(LLMConfig()).name == "mock"
