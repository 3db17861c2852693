"""Fixtures for the LLM layer: contract-shaped requests, scripted models, loopback servers.

`llama_server` starts the real `python -m llama_cpp.server` with SmolLM2 on a free 127.0.0.1 port (module
scope), polls `/v1/models` until ready, and kills it by pid afterwards.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence

import pytest

from simenv.llm.schemas import page_decision_schema
from simenv.llm.types import LLMError, LLMRequest, LLMResponse, Message

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi")

ECHO_SCHEMA = {
    "type": "object",
    "properties": {"echo": {"type": "string", "maxLength": 40}},
    "required": ["echo"],
    "additionalProperties": False,
}


def echo_request(i: int) -> LLMRequest:
    return LLMRequest(
        messages=(Message("system", "Echo the request."), Message("user", f"request #{i}")),
        template="echo",
        template_version="v1",
        json_schema=ECHO_SCHEMA,
    )


def page_request(
    page_index: int = 0,
    item_ids: Sequence[int] = (3, 7, 9, 11),
    item_genres: Sequence[Sequence[str]] = (("Action",), ("Comedy", "Romance"), ("Horror",), ("Action", "Sci-Fi")),
    liked: Sequence[str] = ("Action", "Sci-Fi"),
    disliked: Sequence[str] = ("Horror",),
    activity: int = 2,
    user: int = 1,
) -> LLMRequest:
    """A page_decision request with the context keys of docs/CONTRACTS.md."""
    listing = "\n".join(f"id={i}: {', '.join(g)}" for i, g in zip(item_ids, item_genres, strict=True))
    return LLMRequest(
        messages=(
            Message("system", f"You are user {user}. You like {', '.join(liked)}."),
            Message("user", f"Page {page_index}:\n{listing}\nAnswer in JSON."),
        ),
        template="page_decision",
        template_version="v1",
        purpose="page_decision",
        json_schema=page_decision_schema(len(item_ids)),
        context={
            "item_ids": list(item_ids),
            "item_genres": [list(g) for g in item_genres],
            "liked_genres": list(liked),
            "disliked_genres": list(disliked),
            "activity": activity,
            "page_index": page_index,
        },
    )


class ScriptedLLM:
    """Returns queued answers in order (an `LLMError` instance in the queue is raised); records requests."""

    name = "scripted"
    model = "scripted"

    def __init__(self, answers: Sequence[str | LLMError]) -> None:
        self.answers = list(answers)
        self.requests: list[LLMRequest] = []

    def complete(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, LLMError):
            raise answer
        return LLMResponse(text=answer, backend=self.name, model=self.model, call_id=request.call_id())

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        out = []
        for r in requests:
            try:
                out.append(self.complete(r))
            except LLMError as exc:
                out.append(
                    LLMResponse(text="", backend=self.name, model=self.model, call_id=r.call_id(), error=str(exc))
                )
        return out


class ExplodingLLM:
    """Fails the test if called: proves a replay is served entirely from the cache."""

    name = "exploding"
    model = "exploding"

    def __init__(self, identity: str) -> None:
        self.identity = identity

    def complete(self, request: LLMRequest) -> LLMResponse:
        raise AssertionError(f"backend called on replay for {request.template}")

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        raise AssertionError(f"backend called on replay for {len(requests)} requests")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_models(base_url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(f"llama_cpp.server at {base_url} not ready after {timeout_s} s")


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    """Base URL (`http://127.0.0.1:<port>/v1`) of a real llama.cpp server serving SmolLM2-135M."""
    from simenv.llm.llama_cpp_backend import smollm2_gguf_path

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(smollm2_gguf_path()),
        "--model_alias",
        "smollm2-135m",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        "2",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for_models(base_url, proc)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
