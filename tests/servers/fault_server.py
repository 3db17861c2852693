"""A loopback OpenAI-compatible server that injects faults on a seeded, deterministic schedule.

`POST /v1/chat/completions` answers with `responder(body)` (default: `{"echo": <first user message>}`),
after `latency_s`. With probability `rate` a request instead meets one fault from `kinds`:
`429` / `500` (with a short Retry-After so retries are quick), `400` (not worth retrying; not in the default kinds),
`slow` (answers after `slow_s`, past
the client's timeout), `truncated_answer` / `invalid_answer` (HTTP 200 whose message content is cut JSON /
prose), `bad_body` (HTTP 200 whose body is cut mid-JSON). The fault for the n-th arrival of a given request
body is drawn from a generator seeded by (seed, body hash, n), so the schedule does not depend on arrival
order and a retried request can succeed. Runs in a background thread (`FaultServer`) or as
`python -m tests.servers.fault_server --port P [--latency 0.25]`.

Endpoint checks, as real servers make them: with `api_key` set, a request without `Authorization: Bearer
<api_key>` gets HTTP 401; with `models` set, a request for another model gets HTTP 404 (`model_not_found`); with
`reject_prefix_items`, a request whose `response_format` schema uses `prefixItems` gets HTTP 400 naming the schema
(as servers with older JSON-Schema support answer).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

FAULTS = ("429", "500", "slow", "truncated_answer", "invalid_answer", "bad_body")  # the default kinds
KNOWN_FAULTS = (*FAULTS, "400")
Responder = Callable[[dict[str, Any]], str]


def echo_responder(body: dict[str, Any]) -> str:
    """`{"echo": <content of the first user message>}` — lets a test match every answer to its request."""
    first_user = next((m["content"] for m in body["messages"] if m["role"] == "user"), "")
    return json.dumps({"echo": first_user})


@dataclass(frozen=True)
class FaultPlan:
    rate: float = 0.0
    kinds: tuple[str, ...] = FAULTS
    seed: int = 0
    latency_s: float = 0.0
    slow_s: float = 2.0
    retry_after_ms: int = 20


class FaultServer:
    """Start with `start()` (or as a context manager); `base_url` ends in `/v1`; `stats` counts outcomes."""

    def __init__(
        self,
        plan: FaultPlan | None = None,
        responder: Responder = echo_responder,
        port: int = 0,
        api_key: str | None = None,
        models: tuple[str, ...] | None = None,
        reject_prefix_items: bool = False,
    ) -> None:
        self.plan = plan or FaultPlan()
        self.api_key = api_key
        self.models = models
        self.reject_prefix_items = reject_prefix_items
        unknown = sorted(set(self.plan.kinds) - set(KNOWN_FAULTS))
        if unknown:
            raise ValueError(f"FaultPlan.kinds has unknown faults {unknown}; known: {list(KNOWN_FAULTS)}")
        self.responder = responder
        self.port = port
        self.stats: Counter[str] = Counter()
        self.authorizations: set[str] = set()  # Authorization headers seen (lets a test prove a key was sent)
        self.openai_headers: set[tuple[str, str]] = set()  # (OpenAI-Organization, OpenAI-Project) pairs seen
        self.user_agents: set[str] = set()
        self.peers: set[tuple[str, int]] = set()  # client (host, port) pairs seen: one per TCP connection
        self.in_flight = 0
        self.max_in_flight = 0  # most chat requests handled at once (lets a test check a concurrency bound)
        self._arrivals: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        return app

    def _fault_for(self, body: dict[str, Any]) -> str | None:
        if self.plan.rate <= 0.0:  # no draw, no hashing: keeps the benchmark server's own CPU per request low
            return None
        key = hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).hexdigest()
        n = self._arrivals[key]
        self._arrivals[key] += 1
        rng = np.random.default_rng([self.plan.seed, int(key[:15], 16), n])
        if rng.random() < self.plan.rate:
            return self.plan.kinds[int(rng.integers(len(self.plan.kinds)))]
        return None

    def _refusal(self, request: web.Request, body: dict[str, Any]) -> web.Response | None:
        """The 401 / 404 / 400 a real server answers to a wrong key, an unknown model or a schema it cannot take."""
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            error = {"message": "Incorrect API key provided", "code": "invalid_api_key"}
            return web.json_response({"error": error}, status=401)
        if self.models is not None and body.get("model") not in self.models:
            error = {"message": f"The model `{body.get('model')}` does not exist", "code": "model_not_found"}
            return web.json_response({"error": error}, status=404)
        if self.reject_prefix_items and "prefixItems" in json.dumps(body.get("response_format") or {}):
            error = {"message": "Invalid schema for response_format: 'prefixItems' is not supported", "code": None}
            return web.json_response({"error": error}, status=400)
        return None

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fault-model", "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.authorizations.add(request.headers.get("Authorization", ""))
        self.user_agents.add(request.headers.get("User-Agent", ""))
        self.openai_headers.add(
            (request.headers.get("OpenAI-Organization", ""), request.headers.get("OpenAI-Project", ""))
        )
        refused = self._refusal(request, body)
        if refused is not None:
            self.stats[f"refused_{refused.status}"] += 1
            return refused
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        if peer is not None:
            self.peers.add((peer[0], peer[1]))
        fault = self._fault_for(body)
        self.stats[fault or "ok"] += 1
        if self.plan.latency_s:
            await asyncio.sleep(self.plan.latency_s)
        retry = {"retry-after-ms": str(self.plan.retry_after_ms)}
        if fault in ("429", "500", "400"):
            error = {"error": {"message": f"injected {fault}", "type": "injected"}}
            return web.json_response(error, status=int(fault), headers=retry)
        if fault == "slow":
            await asyncio.sleep(self.plan.slow_s)
        content = self.responder(body)
        if fault == "truncated_answer":
            content = content[: len(content) // 2]
        elif fault == "invalid_answer":
            content = "Sure! Here is what I think: " + content
        payload = {
            "id": "chatcmpl-fault",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "fault-model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
        text = json.dumps(payload)
        if fault == "bad_body":
            return web.Response(text=text[: len(text) // 2], content_type="application/json")
        return web.Response(text=text, content_type="application/json")

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> FaultServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            runner = web.AppRunner(self.app(), handle_signals=False, access_log=None)
            try:
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, "127.0.0.1", self.port)
                loop.run_until_complete(site.start())
                self.port = runner.addresses[0][1]
            except BaseException as exc:  # surfaced to the starting thread below
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fault-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise RuntimeError(f"fault server failed to start: {errors[0]}") from errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None
            self._thread = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    server = FaultServer(FaultPlan(rate=args.rate, seed=args.seed, latency_s=args.latency), port=args.port)
    web.run_app(server.app(), host="127.0.0.1", port=args.port, access_log=None)


if __name__ == "__main__":
    main()
