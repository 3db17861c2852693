"""Any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server), through the official `openai` SDK by default.

Retries are ours, not the SDK's (its client is built with `max_retries=0`): a call makes at most
`max_retries + 1` attempts; 429, 408, 409, 5xx, timeouts and connection errors are retried after the server's
`Retry-After` (<= 60 s) or an exponential backoff (`backoff_s` * 2^n, at most 8 s, with a deterministic jitter
drawn from the call id), other errors fail at once. Each response (or `LLMError`) carries the record of its
attempts — `retries`, the error kind of every failed attempt (`attempt_errors`, e.g. `http_429`, `timeout`) and
the seconds spent waiting between them (`retry_wait_s`) — which the call log stores, so no attempt is off the record.

Several base URLs are served round-robin (an attempt goes to the next endpoint with a free slot; a retry goes to
another endpoint), with at most `concurrency` requests in flight per endpoint across all batches (one semaphore
each). Every call runs on one event-loop thread per backend (`LoopThread`) where the transports live, so
connections stay open between batches. The transport (`simenv.llm.chat_transport`) is the SDK's (`aiohttp`,
`httpx`) or `direct`, a plain aiohttp POST with ~3-4x less client CPU per call (`python -m benchmarks.bench_llm`);
`http_client` "auto" (the default) picks the SDK for OpenAI's own API and `direct` for every other server.
`schema_mode` is for servers whose JSON-Schema support predates `prefixItems` (draft 2020-12; the page decision's
schema fixes each position's id with it): `full` sends every schema as it is; `plain` sends it with `prefixItems`
turned into `items: {"anyOf": ...}` (`simenv.llm.schemas.without_prefix_items`) while answers are validated against
the full schema on the client (the structured layer, as always), so a wrong or out-of-order id is re-asked; `auto`
(the default) sends the full schema until the first HTTP 400 that names the schema, then switches to plain for
good (one warning line) and re-sends that request at once (the 400 stays on the call's record).
Structured output is asked for in one of three forms: `json_schema` (OpenAI, vLLM), `json_object`
(`{"type": "json_object", "schema": ...}`, llama.cpp server; its server answers HTTP 500 to the `json_schema`
form) or `none` (an instruction appended to the prompt).

The request body is plain JSON serialised once per call here (orjson) and the answer is read from the raw JSON
bytes: the SDK's per-call type-driven transform of the parameters and its pydantic model of the completion cost
more client CPU than the rest of a call and add nothing for a fixed body of plain strings and numbers. The API
key is read from `OPENAI_API_KEY` when the transports are built and is kept only inside them: never in this
object's attributes, repr, logs or cache keys.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
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
from simenv.llm.chat_transport import AttemptError, ChatTransport, DirectTransport, SDKTransport, is_openai_api
from simenv.llm.schemas import grammar_friendly, without_prefix_items
from simenv.llm.secrets import redact, url_userinfo
from simenv.llm.structured import parse_if_json, with_json_instruction
from simenv.llm.types import LLMError, LLMRequest, LLMResponse, Message

logger = logging.getLogger(__name__)

STRUCTURED_OUTPUT_FORMS = ("json_schema", "json_object", "none")
SCHEMA_MODES = ("auto", "full", "plain")  # see `OpenAIBackend.schema_mode`
_SCHEMA_WORDS = ("schema", "prefixitems", "response_format")  # a 400 naming one of these rejected the schema
HTTP_CLIENTS = ("auto", "aiohttp", "httpx", "direct")  # aiohttp, httpx: the openai SDK; auto: see auto_http_client
MAX_BACKOFF_S = 8.0
_PLACEHOLDER_KEY = "no-key"  # local servers ignore the key, but the SDK insists on one


def _api_key() -> str:
    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        logger.info("OPENAI_API_KEY is not set; sending a placeholder key (fine for local servers)")
        return _PLACEHOLDER_KEY
    return key


def endpoint_urls(base_url: str | Sequence[str] | None) -> tuple[str | None, ...]:
    """The endpoints a `base_url` setting names: one URL, a comma-separated list or a sequence of URLs; none means
    `$OPENAI_BASE_URL` (which may list several too), else the SDK's default (None)."""
    if base_url is None or (not isinstance(base_url, str) and not base_url):
        base_url = os.environ.get("OPENAI_BASE_URL") or None
        if base_url is None:
            return (None,)
    parts = base_url.split(",") if isinstance(base_url, str) else [p for u in base_url for p in str(u).split(",")]
    urls = tuple(p.strip() for p in parts if p.strip())
    if any(url_userinfo(u) for u in urls):  # never echoed: the message would carry the password
        raise ValueError(
            "OpenAIBackend.base_url: credentials in the URL (user:password@host) are not accepted; "
            "give the key in OPENAI_API_KEY"
        )
    bad = [u for u in urls if not re.match(r"^https?://[^/\s]+", u)]
    if not urls or bad:
        raise ValueError(f"OpenAIBackend.base_url: expected http(s):// URLs, got {redact(repr(base_url))}")
    return urls


def auto_http_client(urls: Sequence[str | None]) -> str:
    """What `http_client="auto"` means for these endpoints: the SDK (on aiohttp) for OpenAI's own API, where its
    headers and environment handling are worth its ~1 ms of client CPU per call; `direct` for any other server
    (vLLM, llama.cpp, gateways), where that CPU is what bounds a fast endpoint's throughput at high concurrency."""
    has_aiohttp = importlib.util.find_spec("aiohttp") is not None
    if not has_aiohttp:
        return "httpx"
    return "aiohttp" if any(is_openai_api(url) for url in urls) else "direct"


@dataclasses.dataclass
class _Endpoint:
    """One base URL: its transport and its concurrency gate."""

    url: str | None
    transport: ChatTransport
    gate: asyncio.Semaphore


class _Session:
    """The transports, the loop thread they live on and the per-endpoint gates: built once per backend."""

    def __init__(self, urls: Sequence[str | None], http_client: str, concurrency: int) -> None:
        self.pid = os.getpid()  # a forked child cannot use its parent's loop thread: it builds its own session
        self.loop = LoopThread("openai-backend")
        self.endpoints: list[_Endpoint] = []
        self._turn = itertools.count()
        try:
            self.loop.run(self._open(urls, http_client, concurrency))
        except BaseException:
            self.close()
            raise

    async def _open(self, urls: Sequence[str | None], http_client: str, concurrency: int) -> None:
        key = _api_key()
        for url in urls:
            if http_client == "direct":
                transport: ChatTransport = DirectTransport(url, key, concurrency)
            else:
                transport = SDKTransport(url, key, concurrency, http_client)
            self.endpoints.append(_Endpoint(url, transport, asyncio.Semaphore(concurrency)))

    def pick(self, avoid: _Endpoint | None = None) -> _Endpoint:
        """Round-robin: the next endpoint in turn that has a free slot (the one in turn if none has); a retry
        passes the endpoint that just failed as `avoid`, so it goes elsewhere when there is anywhere else."""
        choices = [e for e in self.endpoints if e is not avoid] or self.endpoints
        n = len(choices)
        first = next(self._turn) % n
        for k in range(n):
            endpoint = choices[(first + k) % n]
            if not endpoint.gate.locked():
                return endpoint
        return choices[first]

    async def _aclose(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.transport.aclose()

    def close(self) -> None:
        if not self.loop.closed and self.loop.is_current:  # collected on the loop thread: no await possible here
            self.loop.close()
        elif not self.loop.closed:
            try:
                self.loop.run(self._aclose())
            finally:
                self.loop.close()


class OpenAIBackend:
    """`LLM` over OpenAI-compatible HTTP APIs (one or several endpoints serving the same model)."""

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | Sequence[str] | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 8,
        structured_output: str = "json_schema",
        http_client: str = "auto",
        backoff_s: float = 0.5,
        schema_mode: str = "auto",
    ) -> None:
        if not model:
            raise ValueError("OpenAIBackend needs a model name (config llm.model)")
        if structured_output not in STRUCTURED_OUTPUT_FORMS:
            raise ValueError(
                f"OpenAIBackend.structured_output must be one of {STRUCTURED_OUTPUT_FORMS}, got {structured_output!r}"
            )
        if http_client not in HTTP_CLIENTS:
            raise ValueError(f"OpenAIBackend.http_client must be one of {HTTP_CLIENTS}, got {http_client!r}")
        if schema_mode not in SCHEMA_MODES:
            raise ValueError(f"OpenAIBackend.schema_mode must be one of {SCHEMA_MODES}, got {schema_mode!r}")
        if concurrency < 1 or max_retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise ValueError(
                f"OpenAIBackend: need concurrency >= 1, max_retries >= 0, timeout_s > 0, backoff_s >= 0; got "
                f"{concurrency}, {max_retries}, {timeout_s}, {backoff_s}"
            )
        self.model = model
        self.base_urls = endpoint_urls(base_url)
        if http_client == "auto":
            http_client = auto_http_client(self.base_urls)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.concurrency = int(concurrency)
        self.structured_output = structured_output
        self.http_client = http_client
        self.backoff_s = float(backoff_s)
        self.schema_mode = schema_mode
        self.plain_schemas = schema_mode == "plain"  # auto turns it on at the first 400 that names the schema
        self._session: _Session | None = None
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str | None:
        """The first endpoint (None: the SDK's default)."""
        return self.base_urls[0]

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
        urls = self.base_urls[0] if len(self.base_urls) == 1 else list(self.base_urls)
        return (
            f"OpenAIBackend(model={self.model!r}, base_url={urls!r}, timeout_s={self.timeout_s}, "
            f"max_retries={self.max_retries}, concurrency={self.concurrency}, "
            f"structured_output={self.structured_output!r}, http_client={self.http_client!r}, "
            f"schema_mode={self.schema_mode!r})"
        )

    # -- request shaping ----------------------------------------------------------------------------------
    def _kwargs(self, request: LLMRequest) -> dict[str, Any]:
        """The JSON body of one chat-completions call, as a dict."""
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
            if self.plain_schemas:
                schema = without_prefix_items(schema)
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

    def _body(self, request: LLMRequest) -> bytes:
        """The serialised body; a value JSON cannot hold is an `LLMError` before any attempt."""
        try:
            return orjson.dumps(self._kwargs(request))
        except TypeError as exc:
            raise LLMError(
                f"openai backend: the request for template {request.template!r} is not JSON-serialisable: {exc}"
            ) from exc

    def _error(self, request: LLMRequest, last: AttemptError, kinds: Sequence[str], waited: float) -> LLMError:
        """The `LLMError` of a call whose attempts all failed (or whose error is not worth another attempt)."""
        retries = len(kinds) - 1
        error = LLMError(
            f"openai backend: call for template {request.template!r} failed after {retries} retries "
            f"(max {self.max_retries}; attempts: {', '.join(kinds)}): {redact(str(last))[:240]}"
        )
        error.retries = retries
        error.attempt_errors = tuple(kinds)
        error.retry_wait_s = waited
        return error

    def backoff(self, request: LLMRequest, retry: int, retry_after_s: float | None) -> float:
        """Seconds before retry number `retry` (0-based): the server's Retry-After, else `backoff_s` * 2^retry
        (at most 8 s) times a jitter in [0.75, 1) drawn from the call id (deterministic, spreads a burst)."""
        if retry_after_s is not None:
            return retry_after_s
        digest = hashlib.blake2b(f"{request.call_id()}:{retry}".encode(), digest_size=2).digest()
        jitter = 1.0 - 0.25 * int.from_bytes(digest, "big") / 65536
        return min(self.backoff_s * 2**retry, MAX_BACKOFF_S) * jitter

    def _schema_rejected(self, request: LLMRequest, error: AttemptError) -> bool:
        """schema_mode auto: an HTTP 400 that names the schema switches every later request to the plain schema
        (one warning); True when this request should be sent again that way."""
        if self.schema_mode != "auto" or error.kind != "http_400" or request.json_schema is None:
            return False
        if not any(word in error.detail.lower() for word in _SCHEMA_WORDS):
            return False
        if "prefixItems" not in orjson.dumps(request.json_schema).decode():
            return False  # plain would send the same schema: the 400 is about something else
        switched, self.plain_schemas = not self.plain_schemas, True  # on the loop thread; a bool, no lock needed
        if switched:
            logger.warning(
                "openai backend: the server rejected a JSON schema (%s); sending schemas without prefixItems from "
                "now on and validating answers against the full schema here (schema_mode auto)",
                redact(error.detail)[:160],
            )
        return True

    # -- calls ----------------------------------------------------------------------------------------------
    def _get_session(self) -> _Session:
        with self._lock:
            if self._session is None or self._session.pid != os.getpid():
                self._session = _Session(self.base_urls, self.http_client, self.concurrency)
                self._finalizer = weakref.finalize(self, self._session.close)  # if close() is never called
            return self._session

    async def _call(self, session: _Session, request: LLMRequest) -> LLMResponse:
        """One call: up to `max_retries + 1` attempts, each under its endpoint's gate; raises `LLMError`."""
        body = self._body(request)
        plain = self.plain_schemas
        kinds: list[str] = []
        waited = 0.0
        start: float | None = None
        endpoint: _Endpoint | None = None
        while True:
            endpoint = session.pick(avoid=endpoint)
            async with endpoint.gate:
                if plain != self.plain_schemas:  # schema_mode auto switched while this call waited for a slot
                    body, plain = self._body(request), self.plain_schemas
                start = time.perf_counter() if start is None else start  # latency: first attempt sent -> answer
                try:
                    raw = await endpoint.transport.post(body, self.timeout_s)
                    break
                except AttemptError as exc:
                    kinds.append(exc.kind)
                    last = exc
                except (ValueError, TypeError) as exc:  # e.g. a URL or header the HTTP library refuses
                    kinds.append(type(exc).__name__)
                    last = AttemptError(type(exc).__name__, str(exc), retryable=False)
            if self._schema_rejected(request, last):
                body, plain = self._body(request), True  # the same request with the plain schema, at once
                continue
            if not last.retryable or len(kinds) > self.max_retries:
                raise self._error(request, last, kinds, waited)
            delay = self.backoff(request, len(kinds) - 1, last.retry_after_s)
            logger.debug("openai backend: %s on %s; retry %d in %.2f s", last.kind, endpoint.url, len(kinds), delay)
            await asyncio.sleep(delay)
            waited += delay
        try:
            response = self._response(request, raw, time.perf_counter() - start)
        except LLMError as exc:  # an unreadable body is a failed attempt too (the structured layer re-asks)
            exc.retries, exc.attempt_errors, exc.retry_wait_s = len(kinds), (*kinds, "bad_body"), waited
            raise
        if not kinds:
            return response
        return dataclasses.replace(response, retries=len(kinds), attempt_errors=tuple(kinds), retry_wait_s=waited)

    async def _one(self, session: _Session, request: LLMRequest) -> LLMResponse:
        """One call of a batch: a failed call becomes a failed response."""
        try:
            return await self._call(session, request)
        except LLMError as exc:
            return failed_response(request, self.name, request.model or self.model, exc)

    async def _batch(self, session: _Session, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        return list(await asyncio.gather(*(self._one(session, r) for r in requests)))

    def complete(self, request: LLMRequest) -> LLMResponse:
        session = self._get_session()
        return session.loop.run(self._call(session, request))

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        """All requests concurrently (at most `concurrency` in flight per endpoint); results in request order."""
        if not requests:
            return []
        session = self._get_session()
        if len(requests) == 1:  # a pipelined session's call: no gather (one task fewer per call)
            return [session.loop.run(self._one(session, requests[0]))]
        return session.loop.run(self._batch(session, requests))

    # -- pre-flight -------------------------------------------------------------------------------------------
    def probe(self) -> list[tuple[str | None, AttemptError | None]]:
        """One minimal chat request (the configured model, `max_tokens` 1, no schema) to every endpoint, with the
        call's retry rules; per endpoint its URL and the last failed attempt (None: it answered). Used before a
        run writes anything, so a wrong key, model or address fails in a second, not as a run of fallbacks."""
        session = self._get_session()
        return session.loop.run(self._probe_all(session))

    async def _probe_all(self, session: _Session) -> list[tuple[str | None, AttemptError | None]]:
        request = LLMRequest(
            messages=(Message("user", "Reply with OK."),), template="preflight", template_version="v1", max_tokens=1
        )
        body = self._body(request)

        async def one(endpoint: _Endpoint) -> AttemptError | None:
            tries = 0
            while True:
                try:
                    async with endpoint.gate:
                        await endpoint.transport.post(body, self.timeout_s)
                    return None
                except AttemptError as exc:
                    last = exc
                except (ValueError, TypeError) as exc:
                    last = AttemptError(type(exc).__name__, str(exc), retryable=False)
                tries += 1
                if not last.retryable or tries > self.max_retries:
                    return last
                await asyncio.sleep(self.backoff(request, tries - 1, last.retry_after_s))

        errors = await asyncio.gather(*(one(e) for e in session.endpoints))
        return [(e.url, err) for e, err in zip(session.endpoints, errors, strict=True)]

    def close(self) -> None:
        """Close the transports and their connections and stop the loop thread; safe to call twice."""
        with self._lock:
            if self._finalizer is not None and self._session is not None and self._session.pid == os.getpid():
                self._finalizer()  # runs `_Session.close` once
            self._finalizer = None
            self._session = None
