"""A minimal OpenAI-compatible loopback server for throughput benchmarks: every chat completion answers after a
fixed latency, with as little server CPU per request as asyncio allows.

`FaultServer` (aiohttp.web, JSON parsing, fault draws) spends ~0.2 ms of CPU per request; on a 2-core machine
shared with the client under test that is part of what is measured. This one reads each HTTP/1.1 request's
headers and `Content-Length` body without parsing the JSON, and answers a canned completion with
`loop.call_later` (no task per request): ~0.03 ms per request. Keep-alive connections, pipelined requests and
`GET /v1/models` are supported; nothing else is. Run as `python -m tests.servers.latency_server --port P
--latency 0.25`.

`--sigma S` draws each answer's latency from a lognormal of mean `--latency` and shape S (a generator seeded by
`--seed`, drawn in arrival order) instead; `GET /v1/stats` answers `{"requests": n, "busy_s": s}`, the chat
requests answered so far and the sum of their latencies: the endpoint's own account of how busy it was.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
from dataclasses import dataclass, field

_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-latency",
        "object": "chat.completion",
        "created": 0,
        "model": "latency-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": '{"ok": true}'}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
).encode()
_MODELS = json.dumps({"object": "list", "data": [{"id": "latency-model", "object": "model"}]}).encode()


def _response(body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


_CHAT_RESPONSE = _response(_COMPLETION)
_MODELS_RESPONSE = _response(_MODELS)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


@dataclass
class Latency:
    """The answers' latencies (fixed, or lognormal with mean `mean_s` when `sigma` > 0, from `rng`) and their tally."""

    mean_s: float
    sigma: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    requests: int = 0
    busy_s: float = 0.0

    def draw(self) -> float:
        if self.sigma <= 0:
            return self.mean_s
        return self.mean_s * math.exp(self.rng.gauss(-(self.sigma**2) / 2, self.sigma))

    def stats(self) -> bytes:
        return _response(json.dumps({"requests": self.requests, "busy_s": self.busy_s}).encode())


class _Connection(asyncio.Protocol):
    """One client connection: splits the byte stream into requests and schedules each answer."""

    def __init__(self, latency: Latency) -> None:
        self.latency = latency
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            method, path = head.split(" ", 2)[:2]
            if method == "POST" and path.endswith("/chat/completions"):
                delay = self.latency.draw()
                asyncio.get_running_loop().call_later(delay, self._answer, delay)
            elif path.endswith("/stats"):
                self._send(self.latency.stats())
            else:
                self._send(_MODELS_RESPONSE if path.endswith("/models") else _NOT_FOUND)

    def _answer(self, delay: float) -> None:
        self.latency.requests += 1
        self.latency.busy_s += delay
        self._send(_CHAT_RESPONSE)

    def _send(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(payload)


async def serve(port: int, latency_s: float, sigma: float = 0.0, seed: int = 0) -> None:
    loop = asyncio.get_running_loop()
    latency = Latency(latency_s, sigma, random.Random(seed))
    server = await loop.create_server(lambda: _Connection(latency), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--sigma", type=float, default=0.0, help="lognormal shape of the latency (0: fixed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latency draws")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.latency, args.sigma, args.seed))


if __name__ == "__main__":
    main()
