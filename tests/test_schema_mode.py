"""Issue 26 item 9: servers without JSON-Schema `prefixItems` (a real loopback server that answers HTTP 400 to a
schema using it, as such servers do). `schema_mode` auto switches to the plain schema after the first such 400;
plain never sends prefixItems; the full schema is still enforced on the client (an out-of-order id is re-asked)."""

from __future__ import annotations

import json
import re
from typing import Any

from agents.llm_user.specs import decision_schema
from simenv.llm import OpenAIBackend, ask_json_batch
from simenv.llm.schemas import check_page_decision, without_prefix_items
from simenv.llm.types import LLMRequest, Message
from tests.servers.fault_server import FaultServer

N = 200


def page(k: int) -> LLMRequest:
    ids = [4 * k + j for j in range(4)]
    listing = "\n".join(f"id={i}" for i in ids)
    return LLMRequest(
        messages=(Message("system", "You are a movie watcher."), Message("user", f"Page:\n{listing}\nAnswer in JSON.")),
        template="page_decision", template_version="v1", purpose="page_decision",
        json_schema=decision_schema({"item_ids": ids}), context={"item_ids": ids},
    )  # fmt: skip


def answer(body: dict[str, Any]) -> str:
    """A valid decision for the ids listed in the prompt; every 10th first ask swaps two ids (a plain schema
    allows that; the client's full schema does not) and its repair answers in order."""
    text = body["messages"][1]["content"]
    ids = [int(i) for i in re.findall(r"id=(\d+)", text)]
    if ids[0] % 40 == 0 and len(body["messages"]) == 2:
        ids[0], ids[1] = ids[1], ids[0]
    items = [{"id": i, "watch": i % 2 == 0, "rating": 4, "feeling": "Looks good."} for i in ids]
    return json.dumps({"items": items, "leave": False, "reason": "Still curious."})


def run(mode: str) -> tuple[list, FaultServer, list[dict]]:
    seen: list[dict] = []

    def responder(body: dict[str, Any]) -> str:
        seen.append(body)
        return answer(body)

    with FaultServer(responder=responder, reject_prefix_items=True) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, schema_mode=mode, max_retries=1, concurrency=16)
        requests = [page(k) for k in range(N)]
        results = ask_json_batch(backend, requests, [check_page_decision(r.context["item_ids"]) for r in requests])
        backend.close()
    return results, server, seen


def test_auto_switches_to_plain_after_the_first_schema_400_and_keeps_fallbacks_under_2_percent() -> None:
    results, server, seen = run("auto")
    fallbacks = sum(r.failed for r in results) / N
    assert fallbacks <= 0.02, fallbacks
    assert all(r.value["items"][0]["id"] == 4 * k for k, r in enumerate(results))  # ids in page order
    assert 1 <= server.stats["refused_400"] <= 16  # the requests in flight before the switch, no more
    assert all("prefixItems" not in json.dumps(b["response_format"]) for b in seen)
    assert sum(r.status == "repaired" for r in results) == N // 10  # swapped ids caught by the full schema here
    print(f"\nschema_mode auto: {server.stats['refused_400']} HTTP 400 before the switch, fallbacks {fallbacks:.1%}")


def test_plain_never_sends_prefix_items_and_full_fails_on_such_a_server() -> None:
    results, server, _ = run("plain")
    assert server.stats["refused_400"] == 0 and sum(r.failed for r in results) == 0
    results, server, _ = run("full")
    assert all(r.failed for r in results) and server.stats["refused_400"] >= N
    assert "http_400" in results[0].error


def test_plain_schema_keeps_items_and_bounds() -> None:
    schema = decision_schema({"item_ids": [3, 5]})
    plain = without_prefix_items(schema)
    items = plain["properties"]["items"]
    assert "prefixItems" not in json.dumps(plain) and items["minItems"] == items["maxItems"] == 2
    assert [s["properties"]["id"]["const"] for s in items["items"]["anyOf"]] == [3, 5]
