"""Any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server) through the official `openai` SDK.

Retries and timeouts are the SDK's own (bounded `max_retries` with exponential backoff on 429, 5xx,
connection errors and timeouts; it honours `Retry-After`). Batches run on the async client with at most
`concurrency` requests in flight. Structured output is asked for in one of three forms:
`json_schema` (OpenAI, vLLM), `json_object` (`{"type": "json_object", "schema": ...}`, llama.cpp server; its
server answers HTTP 500 to the `json_schema` form) or `none` (an instruction appended to the prompt).
The API key is read from `OPENAI_API_KEY` when a client is built and is kept only inside the SDK client:
never in this object's attributes, repr, logs or cache keys.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Sequence
from typing import Any

from simenv.llm.batching import failed_response, run_coroutine
from simenv.llm.structured import parse_if_json, with_json_instruction
from simenv.llm.types import LLMError, LLMRequest, LLMResponse

logger = logging.getLogger(__name__)

STRUCTURED_OUTPUT_FORMS = ("json_schema", "json_object", "none")
_PLACEHOLDER_KEY = "no-key"  # local servers ignore the key, but the SDK insists on one


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
    ) -> None:
        if not model:
            raise ValueError("OpenAIBackend needs a model name (config llm.model)")
        if structured_output not in STRUCTURED_OUTPUT_FORMS:
            raise ValueError(
                f"OpenAIBackend.structured_output must be one of {STRUCTURED_OUTPUT_FORMS}, got {structured_output!r}"
            )
        if concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise ValueError(
                f"OpenAIBackend: need concurrency >= 1, max_retries >= 0, timeout_s > 0; got {concurrency}, "
                f"{max_retries}, {timeout_s}"
            )
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.concurrency = int(concurrency)
        self.structured_output = structured_output
        self._client: Any = None

    @property
    def identity(self) -> str:
        return f"openai(model={self.model},structured={self.structured_output})"

    def __repr__(self) -> str:
        return (
            f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r}, timeout_s={self.timeout_s}, "
            f"max_retries={self.max_retries}, concurrency={self.concurrency}, "
            f"structured_output={self.structured_output!r})"
        )

    # -- request shaping ----------------------------------------------------------------------------------
    def _kwargs(self, request: LLMRequest) -> dict[str, Any]:
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

    def _response(self, request: LLMRequest, completion: Any, latency_s: float) -> LLMResponse:
        choices = getattr(completion, "choices", None)
        if not choices:
            raise LLMError(f"openai backend: response without choices for template {request.template!r}")
        text = choices[0].message.content or ""
        usage = getattr(completion, "usage", None)
        return LLMResponse(
            text=text,
            backend=self.name,
            model=str(getattr(completion, "model", None) or request.model or self.model),
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
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

    def _error(self, request: LLMRequest, exc: Exception) -> LLMError:
        status = getattr(exc, "status_code", None)
        kind = f"HTTP {status}" if status is not None else type(exc).__name__
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        return LLMError(
            f"openai backend: call for template {request.template!r} failed "
            f"(SDK retries: up to {self.max_retries}): {kind} {detail}"
        )

    # -- LLM ------------------------------------------------------------------------------------------------
    def complete(self, request: LLMRequest) -> LLMResponse:
        openai = _import_openai()
        if self._client is None:
            self._client = openai.OpenAI(**self._client_args())
        start = time.perf_counter()
        try:
            completion = self._client.chat.completions.create(**self._kwargs(request))
        except (openai.OpenAIError, ValueError) as exc:
            raise self._error(request, exc) from exc
        return self._response(request, completion, time.perf_counter() - start)

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        """All requests concurrently (at most `concurrency` in flight); results in request order."""
        if not requests:
            return []
        return run_coroutine(self._batch(list(requests)))

    async def _batch(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        openai = _import_openai()
        client = openai.AsyncOpenAI(**self._client_args())
        gate = asyncio.Semaphore(self.concurrency)

        async def one(request: LLMRequest) -> LLMResponse:
            async with gate:
                start = time.perf_counter()
                try:
                    completion = await client.chat.completions.create(**self._kwargs(request))
                    return self._response(request, completion, time.perf_counter() - start)
                except (openai.OpenAIError, LLMError, ValueError) as exc:
                    error = exc if isinstance(exc, LLMError) else self._error(request, exc)
                    return failed_response(request, self.name, request.model or self.model, str(error))

        try:
            return list(await asyncio.gather(*(one(r) for r in requests)))
        finally:
            await client.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
