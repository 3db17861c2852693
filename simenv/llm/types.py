"""The request/response records and the backend protocol of the LLM layer.

One `LLMRequest` object travels through every wrapper (cache, budget, call log, retry) to a backend, so
wrappers never re-list keyword arguments. `context` carries the structured facts a prompt was rendered
from (ids, genres, traits); the mock backend answers from it, real backends ignore it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import orjson

_KEY_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _key_default(value: Any) -> Any:
    """What `cache_key` hashes for a value JSON has no form for: mappings as dicts, arrays as lists, else str."""
    if isinstance(value, Mapping):
        return dict(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return str(value)


@dataclass(frozen=True, slots=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class LLMRequest:
    """Everything that determines an answer (plus bookkeeping tags that do not).

    `json_schema` is a JSON-schema dict when a structured answer is wanted. `template`/`template_version`
    name the prompt file it was rendered from; `purpose` is a free tag (e.g. "page_decision").
    """

    messages: tuple[Message, ...]
    template: str
    template_version: str
    purpose: str = ""
    model: str | None = None
    temperature: float = 0.0
    max_tokens: int = 256
    seed: int | None = None
    json_schema: Mapping[str, Any] | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    attempt: int = 0  # 0 = first ask; n = n-th re-ask by the structured layer (not part of cache_key)

    def prompt_text(self) -> str:
        """The rendered messages as JSON (what the call log stores so an answer can be audited)."""
        return json.dumps([{"role": m.role, "content": m.content} for m in self.messages], ensure_ascii=False)

    def prompt_hash(self) -> str:
        """Hash of the rendered messages only (what the call log records)."""
        text = json.dumps([[m.role, m.content] for m in self.messages], ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def cache_key(self) -> str:
        """Hash of everything that determines the answer. Never includes secrets (they are not in requests).

        Computed once per request object and remembered (requests are immutable; wrappers and backends each
        ask for it), so do not mutate `context` or `json_schema` after building a request. The payload is
        serialised with orjson (sorted keys, compact): ~7x cheaper than `json.dumps(sort_keys=True)`, which was
        the largest cost of a mock call.
        """
        memo = self.__dict__.get("_cache_key")
        if memo is not None:
            return memo
        payload = {
            "messages": [[m.role, m.content] for m in self.messages],
            "template": self.template,
            "template_version": self.template_version,
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "json_schema": self.json_schema,
            "context": self.context,
        }
        try:
            text = orjson.dumps(payload, default=_key_default, option=_KEY_OPTIONS)
        except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits: the slower encoder has no such limit
            text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=_key_default).encode()
        key = hashlib.sha256(text).hexdigest()
        object.__setattr__(self, "_cache_key", key)
        return key

    def call_id(self, key: str | None = None) -> str:
        """Deterministic id of one call of this request (key + attempt); wrappers make repeats unique.

        Pass `key` when `cache_key()` was already computed, to skip hashing twice.
        """
        key = self.cache_key() if key is None else key
        return hashlib.sha256(f"{key}:{self.attempt}".encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class LLMResponse:
    """A backend's answer. `parsed` is the decoded JSON when the request had a schema and it decoded.

    Slotted: built once per call on every hot path, and slots halve the frozen constructor's cost."""

    text: str
    backend: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cache_hit: bool = False
    parsed: Any = None
    call_id: str = ""
    error: str = ""  # non-empty when the call failed after the backend's bounded retries (batch results)
    retries: int = 0  # transport-level retries the backend made for this call (429/5xx/timeouts/connection errors)
    attempt_errors: tuple[str, ...] = ()  # the error kind of each failed attempt, in order (e.g. "http_429")
    retry_wait_s: float = 0.0  # seconds spent waiting between attempts (backoff or the server's Retry-After)

    @property
    def ok(self) -> bool:
        return not self.error


@runtime_checkable
class LLM(Protocol):
    """The whole interface agents and rankers see. Wrappers implement it around another `LLM`."""

    name: str

    def complete(self, request: LLMRequest) -> LLMResponse: ...

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        """Run many requests concurrently; results in request order."""
        ...


class LLMError(RuntimeError):
    """A call failed after the backend's bounded retries: `retries` made, the kind of each failed attempt's error
    (`attempt_errors`) and the seconds waited between attempts (`retry_wait_s`)."""

    retries: int = 0
    attempt_errors: tuple[str, ...] = ()
    retry_wait_s: float = 0.0


class BudgetExceeded(LLMError):
    """The run's call or token budget is used up; the run stops cleanly."""
