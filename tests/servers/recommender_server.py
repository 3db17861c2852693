"""A loopback recommender service speaking the HTTP contract of `recommenders.http_client`, with faults
injected by arrival number.

It ranks items in one fixed order (`order`, raw ids) and answers each POST with the first `k` of them not in
`exclude`. `faults` maps the n-th request (0-based, counting retries) to a fault: `500` / `429` / `404`
(that status), `timeout` (answers after `slow_s`), `garbage` (HTTP 200, body not JSON), `excluded` (an
excluded id put first), `unknown` (an unknown id put first), `short` (k - 1 ids). `excluded` and `unknown`
keep the k good ids after the bad one, so a client that drops the bad id shows the same page. Runs in a
background thread on 127.0.0.1 (`with RecommenderServer(...) as server: server.url`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("500", "429", "404", "timeout", "garbage", "excluded", "unknown", "short")


class RecommenderServer:
    def __init__(
        self,
        order: Sequence[str],
        faults: dict[int, str] | None = None,
        slow_s: float = 0.5,
        latency_s: float = 0.0,
        always: str | None = None,
    ) -> None:
        unknown = sorted({*(faults or {}).values(), *([always] if always else [])} - set(FAULTS))
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known {list(FAULTS)}")
        self.order = [str(i) for i in order]
        self.faults = dict(faults or {})
        self.always = always
        self.slow_s = slow_s
        self.latency_s = latency_s
        self.bodies: list[dict[str, Any]] = []
        self.injected: list[tuple[int, str]] = []  # (arrival, fault) actually served
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/recommend"

    def answer(self, body: dict[str, Any], fault: str | None) -> tuple[int, bytes]:
        k = int(body["k"])
        excluded = {str(i) for i in body["exclude"]}
        page = [i for i in self.order if i not in excluded][:k]
        if fault in ("500", "429", "404"):
            return int(fault), b'{"error": "injected"}'
        if fault == "garbage":
            return 200, b'{"item_ids": [1, 2'
        if fault == "excluded" and excluded:
            page = [sorted(excluded)[0], *page]
        if fault == "unknown":
            page = ["no-such-item", *page]
        if fault == "short":
            page = page[:-1]
        return 200, json.dumps({"item_ids": page}).encode()

    def __enter__(self) -> RecommenderServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length))
                with server._lock:
                    arrival = len(server.bodies)
                    server.bodies.append(body)
                    fault = server.always or server.faults.get(arrival)
                    if fault:
                        server.injected.append((arrival, fault))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.slow_s if fault == "timeout" else server.latency_s)
                    status, payload = server.answer(body, fault)
                finally:
                    # Done before the answer is sent: once the client has it, it may send its next request at
                    # once, and that one must not count next to the finished one.
                    with server._lock:
                        server.in_flight -= 1
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    if status == 429:
                        self.send_header("retry-after", "0.01")
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): expected

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
