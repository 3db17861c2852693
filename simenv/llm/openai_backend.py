"""Any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server) through the official `openai` SDK.

Retries and timeouts are the SDK's own (bounded `max_retries` with exponential backoff on 429, 5xx,
connection errors and timeouts; it honours `Retry-After`). Each call carries a tag header; an httpx request
hook reads the SDK's attempt number (`x-stainless-retry-count`) for it, so `LLMResponse.retries` (and the call
log's `retries` column) counts the retries a call took, also when it finally failed. Every call, single or
batched, runs on one `AsyncOpenAI` client that lives on the backend's own event-loop thread (`LoopThread`), so
connections stay open between batches; at most `concurrency` requests are in flight across all batches (one semaphore).
The HTTP transport is the SDK's aiohttp one when aiohttp is installed (`pip install 'openai[aiohttp]'`;
~2x less client CPU per call than its default httpx transport), else httpx; both pools hold >= `concurrency`
connections. Structured output is asked for in one of three forms:
`json_schema` (OpenAI, vLLM), `json_object` (`{"type": "json_object", "schema": ...}`, llama.cpp server; its
server answers HTTP 500 to the `json_schema` form) or `none` (an instruction appended to the prompt).

The request body is plain JSON built here and sent with the SDK's `client.post("/chat/completions", ...)`
(its documented way to call an endpoint with a hand-made body), and the answer is read from the raw JSON
bytes: the SDK's per-call type-driven transform of the parameters and its pydantic model of the completion
cost more client CPU than the rest of a call and add nothing for a fixed body of plain strings and numbers.
The API key is read from `OPENAI_API_KEY` when the client is built and is kept only inside the SDK client:
never in this object's attributes, repr, logs or cache keys.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import itertools
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

import orjson

from simenv.llm.batching import LoopThread, failed_response
from simenv.llm.schemas import grammar_friendly
from simenv.llm.secrets import redact
from simenv.llm.structured import parse_if_json, with_json_instruction
from simenv.llm.types import LLMError, LLMRequest, LLMResponse

logger = logging.getLogger(__name__)

STRUCTURED_OUTPUT_FORMS = ("json_schema", "json_object", "none")
HTTP_CLIENTS = ("auto", "aiohttp", "httpx")
_PLACEHOLDER_KEY = "no-key"  # local servers ignore the key, but the SDK insists on one
CALL_HEADER = "x-simrec-call"  # our per-call tag, so the request hook can attribute each attempt to its call
SDK_RETRY_HEADER = "x-stainless-retry-count"  # the SDK numbers every attempt of a request (0 = first)


def _import_openai() -> Any:
    try:
        import openai
    except ImportError as exc:
        raise ImportError("the openai backend needs the openai SDK: pip install 'openai>=1.40'") from exc
    return openai


def _api_key() -> str:
    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        logger.info("OPENAI_API_KEY is not set; sending a placeholder key (fine for local servers)")
        return _PLACEHOLDER_KEY
    return key


class _Session:
    """The SDK client, the loop thread it lives on and the concurrency gate: built once per backend."""

    def __init__(self, client_args: dict[str, Any], http_client: str, concurrency: int) -> None:
        self.pid = os.getpid()  # a forked child cannot use its parent's loop thread: it builds its own session
        self.loop = LoopThread("openai-backend")
        self.client: Any = None
        self.gate: asyncio.Semaphore | None = None
        self.retries: dict[str, int] = {}  # call tag -> the SDK's retry count of its latest attempt
        self._tags = itertools.count()
        try:
            self.loop.run(self._open(client_args, http_client, concurrency))
        except BaseException:
            self.loop.close()
            raise

    async def _open(self, client_args: dict[str, Any], http_client: str, concurrency: int) -> None:
        openai = _import_openai()
        default = openai.DEFAULT_CONNECTION_LIMITS  # an httpx Limits: same class whatever httpx the SDK ships
        limits = type(default)(
            max_connections=max(concurrency, default.max_connections or 0),
            max_keepalive_connections=max(concurrency, default.max_keepalive_connections or 0),
            keepalive_expiry=default.keepalive_expiry,
        )
        cls = openai.DefaultAioHttpClient if http_client == "aiohttp" else openai.DefaultAsyncHttpxClient
        hooks = {"request": [self._on_request]}
        self.client = openai.AsyncOpenAI(**client_args, http_client=cls(limits=limits, event_hooks=hooks))
        self.gate = asyncio.Semaphore(concurrency)

    async def _on_request(self, request: Any) -> None:
        """httpx request hook, run for every attempt: the SDK numbers its retries in a header."""
        tag = request.headers.get(CALL_HEADER)
        if tag is not None:
            self.retries[tag] = int(request.headers.get(SDK_RETRY_HEADER) or 0)

    def tag(self) -> str:
        return f"{self.pid}-{next(self._tags)}"

    async def _aclose(self) -> None:
        if self.client is not None:
            await self.client.close()

    def close(self) -> None:
        if not self.loop.closed:
            try:
                self.loop.run(self._aclose())
            finally:
                self.loop.close()


class OpenAIBackend:
    """`LLM` over an OpenAI-compatible HTTP API."""

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 8,
        structured_output: str = "json_schema",
        http_client: str = "auto",
    ) -> None:
        if not model:
            raise ValueError("OpenAIBackend needs a model name (config llm.model)")
        if structured_output not in STRUCTURED_OUTPUT_FORMS:
            raise ValueError(
                f"OpenAIBackend.structured_output must be one of {STRUCTURED_OUTPUT_FORMS}, got {structured_output!r}"
            )
        if http_client not in HTTP_CLIENTS:
            raise ValueError(f"OpenAIBackend.http_client must be one of {HTTP_CLIENTS}, got {http_client!r}")
        if concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise ValueError(
                f"OpenAIBackend: need concurrency >= 1, max_retries >= 0, timeout_s > 0; got {concurrency}, "
                f"{max_retries}, {timeout_s}"
            )
        if http_client == "auto":
            http_client = "aiohttp" if importlib.util.find_spec("aiohttp") is not None else "httpx"
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.concurrency = int(concurrency)
        self.structured_output = structured_output
        self.http_client = http_client
        self._session: _Session | None = None
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickles its settings only (e.g. for subprocess workers); the copy opens its own client when used."""
        state = self.__dict__.copy()
        state.update(_session=None, _finalizer=None)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return f"openai(model={self.model},structured={self.structured_output})"

    def __repr__(self) -> str:
        return (
            f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r}, timeout_s={self.timeout_s}, "
            f"max_retries={self.max_retries}, concurrency={self.concurrency}, "
            f"structured_output={self.structured_output!r}, http_client={self.http_client!r})"
        )

    # -- request shaping ----------------------------------------------------------------------------------
    def _kwargs(self, request: LLMRequest) -> dict[str, Any]:
        """The JSON body of one chat-completions call."""
        messages = request.messages
        kwargs: dict[str, Any] = {
            "model": request.model or self.model,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.seed is not None:
            kwargs["seed"] = request.seed
        schema = request.json_schema
        if schema is not None:
            schema = grammar_friendly(schema)
            if self.structured_output == "json_schema":
                name = re.sub(r"[^A-Za-z0-9_-]", "_", request.template or "answer")[:64]
                kwargs["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": name, "schema": dict(schema), "strict": False},
                }
            elif self.structured_output == "json_object":
                kwargs["response_format"] = {"type": "json_object", "schema": dict(schema)}
            else:
                messages = with_json_instruction(messages, schema)
        kwargs["messages"] = [{"role": m.role, "content": m.content} for m in messages]
        return kwargs

    def _response(self, request: LLMRequest, body: bytes, latency_s: float) -> LLMResponse:
        """The answer text, model and usage tokens of a chat-completions response body."""
        try:
            completion = orjson.loads(body)
            choices = completion.get("choices")
            if not choices:
                raise LLMError(f"openai backend: response without choices for template {request.template!r}")
            text = choices[0]["message"].get("content") or ""
            usage = completion.get("usage") or {}
            model = completion.get("model")
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or 0)
        except (orjson.JSONDecodeError, AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise LLMError(
                f"openai backend: unreadable chat-completions response for template {request.template!r} "
                f"({type(exc).__name__}: {str(exc)[:120]}; body starts {body[:80]!r})"
            ) from exc
        return LLMResponse(
            text=text,
            backend=self.name,
            model=str(model or request.model or self.model),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=latency_s,
            parsed=parse_if_json(text, request.json_schema),
            call_id=request.call_id(),
        )

    def _client_args(self) -> dict[str, Any]:
        return {
            "api_key": _api_key(),
            "base_url": self.base_url,
            "timeout": self.timeout_s,
            "max_retries": self.max_retries,
        }

    def _error(self, request: LLMRequest, exc: Exception, retries: int = 0) -> LLMError:
        status = getattr(exc, "status_code", None)
        kind = f"HTTP {status}" if status is not None else type(exc).__name__
        detail = redact(str(exc).splitlines()[0][:200]) if str(exc) else ""
        error = LLMError(
            f"openai backend: call for template {request.template!r} failed after {retries} SDK retries "
            f"(max {self.max_retries}): {kind} {detail}"
        )
        error.retries = retries
        return error

    # -- calls ----------------------------------------------------------------------------------------------
    def _get_session(self) -> _Session:
        with self._lock:
            if self._session is None or self._session.pid != os.getpid():
                self._session = _Session(self._client_args(), self.http_client, self.concurrency)
                self._finalizer = weakref.finalize(self, self._session.close)  # if close() is never called
            return self._session

    async def _call(self, session: _Session, request: LLMRequest) -> LLMResponse:
        """One call under the concurrency gate; raises `LLMError` after the SDK's bounded retries."""
        openai = _import_openai()
        assert session.gate is not None
        body = self._kwargs(request)
        tag = session.tag()
        options = {"headers": {CALL_HEADER: tag}}
        async with session.gate:
            start = time.perf_counter()
            try:
                raw = await session.client.post("/chat/completions", body=body, cast_to=bytes, options=options)
            except openai.OpenAIError as exc:
                error = self._error(request, exc, session.retries.pop(tag, 0))
                raise error from exc
            latency_s = time.perf_counter() - start
        retries = session.retries.pop(tag, 0)
        response = self._response(request, raw, latency_s)
        return dataclasses.replace(response, retries=retries) if retries else response

    async def _batch(self, session: _Session, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        async def one(request: LLMRequest) -> LLMResponse:
            try:
                return await self._call(session, request)
            except (LLMError, ValueError) as exc:
                error = exc if isinstance(exc, LLMError) else self._error(request, exc)
                model = request.model or self.model
                return failed_response(request, self.name, model, str(error), getattr(error, "retries", 0))

        return list(await asyncio.gather(*(one(r) for r in requests)))

    def complete(self, request: LLMRequest) -> LLMResponse:
        session = self._get_session()
        try:
            return session.loop.run(self._call(session, request))
        except ValueError as exc:  # e.g. a body the SDK could not serialise
            raise self._error(request, exc) from exc

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        """All requests concurrently (at most `concurrency` in flight); results in request order."""
        if not requests:
            return []
        session = self._get_session()
        return session.loop.run(self._batch(session, requests))

    def close(self) -> None:
        """Close the client and its connections and stop the loop thread; safe to call twice."""
        with self._lock:
            if self._finalizer is not None and self._session is not None and self._session.pid == os.getpid():
                self._finalizer()  # runs `_Session.close` once
            self._finalizer = None
            self._session = None
