"""Every attempt is on record in llm_calls (attempts, each failed attempt's error kind, time waited between them),
against the fault-injecting loopback server; prompts and raw answers only with `prompts="full"`."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from simenv.llm import LLMConfig, LLMError, make_backend
from simenv.llm.calllog import CALL_LOG_SCHEMA, CallLogLLM, read_call_log
from simenv.llm.openai_backend import OpenAIBackend
from tests.fixtures_llm import echo_request
from tests.servers.fault_server import FaultPlan, FaultServer


@pytest.mark.parametrize("http_client", ["aiohttp", "direct"])
def test_every_attempt_is_counted_per_call_in_the_call_log(tmp_path: Path, http_client: str) -> None:
    plan = FaultPlan(rate=0.4, kinds=("429", "500", "slow"), seed=3, slow_s=1.0, retry_after_ms=30)
    with FaultServer(plan) as server:
        backend = OpenAIBackend(
            model="m",
            base_url=server.base_url,
            max_retries=4,
            concurrency=8,
            timeout_s=0.3,
            http_client=http_client,
            backoff_s=0.05,
        )
        llm = CallLogLLM(backend, tmp_path / "llm_calls")
        responses = llm.complete_batch([echo_request(i) for i in range(60)])
        llm.close()
        backend.close()
    rows = read_call_log(tmp_path / "llm_calls")
    arrivals = sum(server.stats.values())
    faults = {kind: server.stats[kind] for kind in ("429", "500", "slow")}
    assert len(rows) == 60 and min(faults.values()) > 0
    # every request the server saw is one attempt on record, and every fault is one failed attempt's error
    assert int(rows["attempts"].sum()) == arrivals
    assert (rows["attempts"] == rows["retries"] + 1).all()
    kinds = [k for text in rows["attempt_errors"] for k in text.split(",") if k]
    assert {k: kinds.count(k) for k in ("http_429", "http_500", "timeout")} == {
        "http_429": faults["429"],
        "http_500": faults["500"],
        "timeout": faults["slow"],
    }
    assert sorted(rows["attempt_errors"]) == sorted(",".join(r.attempt_errors) for r in responses)
    # 429/500 ask for 30 ms (Retry-After); a timeout backs off >= 37 ms: waits are measured, not guessed
    retried = rows[rows["attempts"] > 1]
    assert len(retried) > 5 and (retried["retry_wait_s"] >= 0.03 * (retried["attempts"] - 1) - 1e-9).all()
    assert (rows.loc[rows["attempts"] == 1, "retry_wait_s"] == 0).all()
    assert all(r.ok for r in responses if len(r.attempt_errors) <= 4)


def test_a_call_failing_after_its_retries_records_every_attempt(tmp_path: Path) -> None:
    with FaultServer(FaultPlan(rate=1.0, kinds=("500",), retry_after_ms=10)) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, max_retries=2)
        llm = CallLogLLM(backend, tmp_path / "llm_calls")
        with pytest.raises(LLMError, match="after 2 retries") as raised:
            llm.complete(echo_request(0))
        assert raised.value.attempt_errors == ("http_500",) * 3
        failed = llm.complete_batch([echo_request(1)])[0]
        llm.close()
        backend.close()
    assert server.stats["500"] == 6 and failed.retries == 2 and not failed.ok
    rows = read_call_log(tmp_path / "llm_calls")
    assert rows["attempts"].tolist() == [3, 3]
    assert rows["attempt_errors"].tolist() == ["http_500,http_500,http_500"] * 2
    assert (rows["retry_wait_s"] >= 0.02).all()
    assert rows["error"].str.contains("http_500").all()


def test_an_error_not_worth_retrying_fails_at_once() -> None:
    with FaultServer(FaultPlan(rate=1.0, kinds=("400",))) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, max_retries=3)
        response = backend.complete_batch([echo_request(0)])[0]
        backend.close()
    assert server.stats["400"] == 1 and response.attempt_errors == ("http_400",) and response.retries == 0
    with FaultServer(FaultPlan(rate=1.0, kinds=("bad_body",))) as server:  # HTTP 200, body cut mid-JSON
        backend = OpenAIBackend(model="m", base_url=server.base_url, max_retries=3)
        response = backend.complete_batch([echo_request(0)])[0]
        backend.close()
    assert server.stats["bad_body"] == 1 and response.attempt_errors == ("bad_body",) and "unreadable" in response.error


def test_round_robin_over_several_endpoints_with_failover(tmp_path: Path) -> None:
    with FaultServer(FaultPlan(latency_s=0.02)) as good, FaultServer(FaultPlan(rate=1.0, kinds=("500",))) as bad:
        config = LLMConfig(
            backend="openai", model="m", base_url=(good.base_url, bad.base_url), max_retries=2, concurrency=4
        )
        backend = make_backend(config)  # the config path: two endpoints, each bounded by `concurrency`
        assert isinstance(backend, OpenAIBackend) and backend.base_urls == (good.base_url, bad.base_url)
        responses = backend.complete_batch([echo_request(i) for i in range(40)])
        backend.close()
    assert all(r.ok for r in responses)  # every call that met the failing endpoint was retried on the other
    assert bad.stats["500"] > 5 and good.stats["ok"] == 40
    assert good.max_in_flight <= 4
    assert sum(len(r.attempt_errors) for r in responses) == bad.stats["500"]
    direct = make_backend(
        LLMConfig(backend="openai", model="m", base_url="http://127.0.0.1:9/v1", http_client="direct")
    )
    assert isinstance(direct, OpenAIBackend) and direct.http_client == "direct"
    with pytest.raises(ValueError, match="http_client"):
        LLMConfig(backend="openai", model="m", http_client="curl")


def test_prompts_and_answers_are_stored_only_with_full_logging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-audit-NEVER-LOGGED-1234"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    with FaultServer() as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, max_retries=0)
        for mode in ("off", "full"):
            llm = CallLogLLM(backend, tmp_path / mode, prompts=mode)
            llm.complete_batch([echo_request(i) for i in range(3)])
            llm.flush()
        backend.close()
    assert f"Bearer {secret}" in server.authorizations
    off, full = read_call_log(tmp_path / "off"), read_call_log(tmp_path / "full")
    assert off["prompt"].isna().all() and off["answer"].isna().all()
    first = json.loads(full.loc[full["seq"] == 0, "prompt"].iloc[0])
    assert first == [{"role": "system", "content": "Echo the request."}, {"role": "user", "content": "request #0"}]
    assert [json.loads(a) for a in full["answer"]] == [{"echo": f"request #{i}"} for i in range(3)]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    with pytest.raises(ValueError, match="prompts must be one of"):
        CallLogLLM(backend, tmp_path / "x", prompts="some")


def test_call_log_parts_from_before_the_new_columns_still_read(tmp_path: Path) -> None:
    new = ("retries", "prompt", "attempts", "attempt_errors", "retry_wait_s", "answer")
    old_schema = pa.schema([f for f in CALL_LOG_SCHEMA if f.name not in new])
    rows = [
        {f.name: None for f in old_schema} | {"seq": k, "call_id": c, "attempt": 0, "repairs": 0, "cache_hit": hit}
        for k, (c, hit) in enumerate([("a", False), ("b", True)])
    ]
    (tmp_path / "calls").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=old_schema), tmp_path / "calls" / "part-00000.parquet")
    read = read_call_log(tmp_path / "calls")
    assert read["retries"].tolist() == [0, 0] and read["attempts"].tolist() == [1, 0]
    assert read["prompt"].isna().all() and read["retry_wait_s"].isna().all() and read["answer"].isna().all()
