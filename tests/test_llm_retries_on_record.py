"""Issue 14 items 8-9: every SDK retry is on record in llm_calls (`retries`), and so is the rendered prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from simenv.llm import LLMError
from simenv.llm.calllog import CALL_LOG_SCHEMA, CallLogLLM, read_call_log
from simenv.llm.openai_backend import OpenAIBackend
from tests.servers.fault_server import FaultPlan, FaultServer
from tests.test_llm_openai import _echo_request


def test_sdk_retries_are_counted_per_call_in_the_call_log(tmp_path: Path) -> None:
    plan = FaultPlan(rate=0.4, kinds=("429", "500"), seed=3)
    with FaultServer(plan) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, max_retries=4, concurrency=8)
        llm = CallLogLLM(backend, tmp_path / "llm_calls")
        responses = llm.complete_batch([_echo_request(i) for i in range(60)])
        llm.close()
        backend.close()
    rows = read_call_log(tmp_path / "llm_calls")
    arrivals = sum(server.stats.values())
    assert len(rows) == 60
    assert server.stats["429"] + server.stats["500"] > 10
    # every request the server saw is either a call's first attempt or one of its recorded retries
    assert int(rows["retries"].sum()) == arrivals - 60
    assert sorted(rows["retries"].tolist()) == sorted(r.retries for r in responses)
    assert (rows["retries"] > 0).sum() > 5
    first = json.loads(rows.loc[rows["seq"] == 0, "prompt"].iloc[0])
    assert first == [{"role": "system", "content": "Echo the request."}, {"role": "user", "content": "request #0"}]


def test_a_call_failing_after_its_retries_records_them(tmp_path: Path) -> None:
    with FaultServer(FaultPlan(rate=1.0, kinds=("500",))) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, max_retries=2)
        llm = CallLogLLM(backend, tmp_path / "llm_calls")
        with pytest.raises(LLMError, match="after 2 SDK retries"):
            llm.complete(_echo_request(0))
        failed = llm.complete_batch([_echo_request(1)])[0]
        llm.close()
        backend.close()
    assert server.stats["500"] == 6 and failed.retries == 2 and not failed.ok
    rows = read_call_log(tmp_path / "llm_calls")
    assert rows["retries"].tolist() == [2, 2]
    assert rows["error"].str.contains("HTTP 500").all()


def test_call_log_parts_from_before_the_new_columns_still_read(tmp_path: Path) -> None:
    old_schema = pa.schema([f for f in CALL_LOG_SCHEMA if f.name not in ("retries", "prompt")])
    row = {f.name: None for f in old_schema} | {"seq": 0, "call_id": "a", "attempt": 0, "repairs": 0}
    (tmp_path / "calls").mkdir()
    pq.write_table(pa.Table.from_pylist([row], schema=old_schema), tmp_path / "calls" / "part-00000.parquet")
    rows = read_call_log(tmp_path / "calls")
    assert rows["retries"].tolist() == [0] and rows["prompt"].isna().all()
