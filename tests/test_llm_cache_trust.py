"""Issue 26 item 2: the LLM response cache keeps only answers that parsed and validated, against a real loopback
server: empty, prose, truncated and wrong-id answers are never replayed; repairs are keyed apart from first asks;
an entry on disk that fails validation (an older version's) is ignored, deleted and counted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simenv.llm import CacheLLM, OpenAIBackend, ask_json_batch
from simenv.llm.cache import open_store
from simenv.llm.structured import repair_request
from simenv.llm.types import LLMRequest, LLMResponse, Message
from tests.servers.fault_server import FaultServer

SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "integer"}},
    "required": ["id"],
    "additionalProperties": False,
}
BAD = {0: "", 1: "Sure, I would pick the first one.", 2: '{"id": ', 3: "wrong-id"}  # by i % 5; 4: a good answer


def request(i: int) -> LLMRequest:
    return LLMRequest(
        messages=(Message("system", "Answer with the id."), Message("user", f"item {i}")),
        template="pick", template_version="v1", json_schema=SCHEMA, max_tokens=16,
    )  # fmt: skip


def check(i: int):
    def fn(value: Any) -> None:
        if value["id"] != i:
            raise ValueError(f"id must be {i}, got {value['id']}")

    return fn


def responder(body: dict[str, Any]) -> str:
    """First asks: a bad answer for i % 5 in 0..3 (wrong-id: another item's id), a good one for 4; repairs (the
    request carries the previous answer): always good."""
    i = int(next(m["content"] for m in body["messages"] if m["role"] == "user").split()[1])
    kind = BAD.get(i % 5)
    if len(body["messages"]) > 2 or kind is None:
        return json.dumps({"id": i})
    return json.dumps({"id": i + 1000}) if kind == "wrong-id" else kind


def _ask(cache: CacheLLM, n: int) -> list:
    return ask_json_batch(cache, [request(i) for i in range(n)], [check(i) for i in range(n)], max_repairs=1)


def test_only_validated_answers_are_cached_and_replayed(tmp_path: Path) -> None:
    n = 20
    with FaultServer(responder=responder) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, max_retries=0)
        first = CacheLLM(backend, tmp_path / "llm")
        results = _ask(first, n)
        assert [r.value for r in results] == [{"id": i} for i in range(n)]
        assert [r.status for r in results] == ["ok" if i % 5 == 4 else "repaired" for i in range(n)]
        assert first.misses == n + 16 and first.hits == 0
        assert first.rejected == 16  # 12 empty/prose/truncated never stored + 4 wrong-id withdrawn on their outcome
        first.close()
        sent = server.stats["ok"]
        again = CacheLLM(OpenAIBackend(model="m", base_url=server.base_url, max_retries=0), tmp_path / "llm")
        replay = _ask(again, n)
        again.close()
        # the 16 bad first answers were not kept: asked again (same bad answers), their repairs come from disk
        assert server.stats["ok"] - sent == 16
        assert again.misses == 16 and again.hits == n
        assert [(r.value, r.status) for r in replay] == [(r.value, r.status) for r in results]


def test_repairs_are_keyed_apart_and_stale_entries_are_ignored_and_counted(tmp_path: Path) -> None:
    with FaultServer(responder=responder) as server:
        cache = CacheLLM(OpenAIBackend(model="m", base_url=server.base_url, max_retries=0), tmp_path / "llm")
        older = open_store(tmp_path / "llm")  # a second handle on the same store: what an older version wrote
        first = request(4)
        bad = LLMResponse(text="not json", backend="openai", model="m")
        assert cache.key(repair_request(first, bad, "it is not valid JSON", 1)) != cache.key(first)
        for i, text in enumerate(("", "prose, not JSON", '{"id": 7', '{"id": "seven"}')):  # what older versions kept
            req = request(100 + 5 * i + 4)  # answered well by the server
            stored = {"text": text, "backend": "openai", "model": "m", "prompt_tokens": 1, "completion_tokens": 1,
                      "latency_s": 0.0, "parsed": None}  # fmt: skip
            older.set(cache.key(req), json.dumps(stored))
            response = cache.complete(req)
            assert not response.cache_hit and json.loads(response.text) == {"id": 100 + 5 * i + 4}
            assert cache.complete(req).cache_hit  # the good answer replaced the stale entry
        assert cache.stale == 4 and cache.misses == 4 and cache.hits == 4
        cache.close()
        older.close()
