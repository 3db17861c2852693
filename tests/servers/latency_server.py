"""A minimal OpenAI-compatible loopback server for throughput benchmarks: every chat completion answers after a
fixed latency, with as little server CPU per request as asyncio allows.

`FaultServer` (aiohttp.web, JSON parsing, fault draws) spends ~0.2 ms of CPU per request; on a 2-core machine
shared with the client under test that is part of what is measured. This one reads each HTTP/1.1 request's
headers and `Content-Length` body without parsing the JSON, and answers a canned completion with
`loop.call_later` (no task per request): ~0.03 ms per request. Keep-alive connections, pipelined requests and
`GET /v1/models` are supported; nothing else is. Run as `python -m tests.servers.latency_server --port P
--latency 0.25`.
"""

from __future__ import annotations

import argparse
import asyncio
import json

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


class _Connection(asyncio.Protocol):
    """One client connection: splits the byte stream into requests and schedules each answer."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
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
                asyncio.get_running_loop().call_later(self.latency_s, self._send, _CHAT_RESPONSE)
            else:
                self._send(_MODELS_RESPONSE if path.endswith("/models") else _NOT_FOUND)

    def _send(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(payload)


async def serve(port: int, latency_s: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(latency_s), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.25)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.latency))


if __name__ == "__main__":
    main()
