"""The openai backend through the real SDK and the direct transport (what "auto" picks for any server but OpenAI's):
fault-injecting loopback server, request shapes, secrets, llama.cpp server."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import pickle
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from simenv.llm import LLMConfig, OpenAIBackend, ask_json, ask_json_batch, make_llm, read_call_log
from simenv.llm.schemas import grammar_friendly, interview_schema
from simenv.llm.types import LLMError, LLMRequest, Message
from tests.fixtures_llm import (
    echo_request,
    llama_server,  # noqa: F401  (pytest fixture)
)
from tests.servers.fault_server import FAULTS, FaultPlan, FaultServer


def _echo_check(i: int):
    def check(value: Any) -> None:
        if value["echo"] != f"request #{i}":
            raise ValueError(f"echo must be exactly 'request #{i}', got {value['echo']!r}")

    return check


@pytest.mark.parametrize("http_client", ["aiohttp", "direct"])
def test_batch_of_200_through_faults_loses_and_duplicates_nothing(tmp_path: Path, http_client: str) -> None:
    plan = FaultPlan(rate=0.3, seed=7, slow_s=1.2)
    with FaultServer(plan) as server:
        config = LLMConfig(
            backend="openai",
            model="fault-model",
            base_url=server.base_url,
            http_client=http_client,
            timeout_s=0.4,
            max_retries=2,
            concurrency=32,
            call_log_dir=str(tmp_path / "llm_calls"),
        )
        llm = make_llm(config)
        n = 200
        results = ask_json_batch(llm, [echo_request(i) for i in range(n)], [_echo_check(i) for i in range(n)])
        llm.close()
    assert len(results) == n
    assert all(server.stats[kind] > 0 for kind in FAULTS)
    for i, result in enumerate(results):
        if result.failed:
            assert result.value is None and result.error
        else:
            assert result.value == {"echo": f"request #{i}"}
    statuses = Counter(r.status for r in results)
    assert statuses["repaired"] > 0 and statuses["ok"] > 100
    rows = read_call_log(tmp_path / "llm_calls")
    assert rows["call_id"].is_unique
    assert len(rows) == sum(len(r.responses) for r in results)
    last_rows = rows.set_index("call_id").loc[[r.call_ids[-1] for r in results]]
    assert last_rows["fallback"].tolist() == [r.failed for r in results]  # every failure is a recorded fallback
    assert (last_rows.loc[~last_rows["fallback"], "parse_status"] == "ok").all()


def test_structured_output_forms_reach_the_server() -> None:
    seen: list[dict[str, Any]] = []

    def capture(body: dict[str, Any]) -> str:
        seen.append(body)
        return json.dumps({"score": 5, "reason": "ok"})

    request = LLMRequest(
        messages=(Message("user", "Rate it."),),
        template="interview",
        template_version="v1",
        json_schema=interview_schema(),
        seed=3,
        max_tokens=20,
    )
    with FaultServer(responder=capture) as server:
        for form in ("json_schema", "json_object", "none"):
            backend = OpenAIBackend(model="m", base_url=server.base_url, structured_output=form, max_retries=0)
            response = backend.complete(request)
            assert response.parsed == {"score": 5, "reason": "ok"}
            assert response.prompt_tokens == 10 and response.completion_tokens == 5
            backend.close()
    assert seen[0]["response_format"]["type"] == "json_schema"
    sent = grammar_friendly(interview_schema())  # the 1..10 score also as an enum (grammars enforce that)
    assert sent["properties"]["score"]["enum"] == list(range(1, 11))
    assert seen[0]["response_format"]["json_schema"]["schema"] == sent
    assert seen[1]["response_format"] == {"type": "json_object", "schema": sent}
    assert "response_format" not in seen[2] and "JSON schema" in seen[2]["messages"][-1]["content"]
    assert seen[0]["seed"] == 3 and seen[0]["max_tokens"] == 20


def test_sync_call_failing_after_retries_raises_llm_error() -> None:
    with FaultServer(FaultPlan(rate=1.0, kinds=("500",))) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, max_retries=1)
        with pytest.raises(LLMError, match="http_500"):
            backend.complete(echo_request(0))
        assert server.stats["500"] == 2  # first try + one bounded retry
        backend.close()


@pytest.mark.parametrize("http_client", ["aiohttp", "direct"])
def test_api_key_never_reaches_logs_cache_or_reprs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, http_client: str
) -> None:
    secret = "sk-test-DO-NOT-LEAK-4f9a1c"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    caplog.set_level(logging.DEBUG)
    with FaultServer(FaultPlan(rate=0.3, seed=1, kinds=("500", "invalid_answer"))) as server:
        config = LLMConfig(
            backend="openai",
            model="fault-model",
            base_url=server.base_url,
            http_client=http_client,
            max_retries=1,
            cache_dir=str(tmp_path / "cache"),
            call_log_dir=str(tmp_path / "llm_calls"),
        )
        llm = make_llm(config)
        ask_json_batch(llm, [echo_request(i) for i in range(10)])
        ask_json(llm, echo_request(99))
        texts = [repr(llm), repr(config), str(config), caplog.text, llm.inner.key(echo_request(0)), llm.identity]
        llm.close()
    assert f"Bearer {secret}" in server.authorizations  # the key was used ...
    for text in texts:
        assert secret not in text  # ... but never written down
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(("http_client", "transport"), [("aiohttp", "aiohttp"), ("auto", "direct")])
def test_real_llama_cpp_server_schema_constrained_call(
    llama_server: str,  # noqa: F811
    http_client: str,
    transport: str,
) -> None:
    backend = OpenAIBackend(
        model="smollm2-135m",
        base_url=llama_server,
        structured_output="json_object",
        timeout_s=120,
        http_client=http_client,
    )
    assert backend.http_client == transport  # the SDK on request; "auto" goes direct to a local server
    schema = {
        "type": "object",
        "properties": {"score": {"type": "integer"}, "liked": {"type": "boolean"}},
        "required": ["score", "liked"],
        "additionalProperties": False,
    }

    def check(value: Any) -> None:
        if not 0 <= value["score"] <= 100:
            raise ValueError(f"score must be between 0 and 100, got {value['score']}")

    request = LLMRequest(
        messages=(
            Message("system", "You are a movie fan answering a survey."),
            Message("user", "Score the films you saw from 1 to 10 and say if you liked them. Answer in JSON."),
        ),
        template="survey",
        template_version="v1",
        json_schema=schema,
        max_tokens=24,
    )
    result = ask_json(backend, request, check=check, max_repairs=1)
    backend.close()
    assert result.status in ("ok", "repaired"), result.error
    assert set(result.value) == {"score", "liked"} and isinstance(result.value["liked"], bool)
    response = result.responses[-1]
    assert response.backend == "openai" and response.prompt_tokens > 10 and 0 < response.completion_tokens <= 24


@pytest.mark.parametrize("http_client", ["aiohttp", "httpx"])
def test_batches_share_one_client_its_connections_and_one_concurrency_bound(http_client: str) -> None:
    """Connections stay open between batches; two threads' batches together never exceed `concurrency`; the
    backend also works when called from code that runs its own event loop; close() is safe twice."""
    with FaultServer(FaultPlan(latency_s=0.05)) as server:
        backend = OpenAIBackend(
            model="m", base_url=server.base_url, concurrency=4, max_retries=0, http_client=http_client
        )
        for _ in range(3):
            assert all(r.ok for r in backend.complete_batch([echo_request(i) for i in range(12)]))
        assert len(server.peers) <= 4  # 36 calls over at most `concurrency` kept-alive connections
        two_batches = [[echo_request(i) for i in range(k, k + 8)] for k in (0, 8)]
        with ThreadPoolExecutor(2) as pool:
            batches = list(pool.map(backend.complete_batch, two_batches))
        assert [json.loads(r.text)["echo"] for b in batches for r in b] == [f"request #{i}" for i in range(16)]
        assert server.max_in_flight == 4

        async def caller_with_a_loop() -> str:
            return backend.complete(echo_request(5)).text

        assert json.loads(asyncio.run(caller_with_a_loop())) == {"echo": "request #5"}
        backend.close()
        backend.close()
        assert backend.complete(echo_request(6)).ok  # a closed backend opens a fresh client when used again
        backend.close()


def _echo_in_child(backend: OpenAIBackend, queue: Any) -> None:
    queue.put(backend.complete(echo_request(8)).text)


def test_backend_survives_pickling_and_a_forked_child() -> None:
    """A pickled copy and a forked child each open their own client (the loop thread does not cross either)."""
    with FaultServer() as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, max_retries=0)
        assert backend.complete(echo_request(1)).ok  # the parent's session exists before the copy / fork
        copy = pickle.loads(pickle.dumps(backend))
        assert json.loads(copy.complete(echo_request(2)).text) == {"echo": "request #2"}
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_echo_in_child, args=(backend, queue))
        child.start()
        child.join(20)
        assert child.exitcode == 0 and json.loads(queue.get(timeout=5)) == {"echo": "request #8"}
        assert backend.complete(echo_request(3)).ok  # the parent's own session still works
        copy.close()
        backend.close()
