"""A persistent response cache around any `LLM` (diskcache, i.e. sqlite on disk).

The key hashes the inner model's identity (backend, model, seed) and `request.cache_key()` (messages,
sampling settings, schema, context) — never an API key, which is in neither. Only successful responses are
stored, including answers that later fail validation, so replaying a run reproduces every step, repairs
included, with a 100% hit rate and identical results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simenv.llm.types import LLM, LLMRequest, LLMResponse
from simenv.llm.wrapper import LLMWrapper

_STORED_FIELDS = ("text", "backend", "model", "prompt_tokens", "completion_tokens", "latency_s", "parsed")


class CacheLLM(LLMWrapper):
    """Answers repeated requests from disk; counts `hits` and `misses`."""

    label = "cache"

    def __init__(self, inner: LLM, directory: str | Path) -> None:
        super().__init__(inner)
        try:
            import diskcache
        except ImportError as exc:  # pragma: no cover - diskcache is a core dependency
            raise ImportError("the LLM cache needs diskcache: pip install diskcache") from exc
        self.directory = Path(directory)
        self._store = diskcache.Cache(str(self.directory))
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def key(self, request: LLMRequest) -> str:
        return hashlib.sha256(f"{self.identity}\n{request.cache_key()}".encode()).hexdigest()

    def _lookup(self, request: LLMRequest) -> LLMResponse | None:
        start = time.perf_counter()
        raw = self._store.get(self.key(request))
        if raw is None:
            return None
        stored: dict[str, Any] = json.loads(raw)
        return dataclasses.replace(
            LLMResponse(**stored), cache_hit=True, call_id=request.call_id(), latency_s=time.perf_counter() - start
        )

    def _store_response(self, request: LLMRequest, response: LLMResponse) -> None:
        if response.error:
            return
        payload = {f: getattr(response, f) for f in _STORED_FIELDS}
        self._store.set(self.key(request), json.dumps(payload))

    def _count(self, hits: int, misses: int) -> None:
        with self._lock:
            self.hits += hits
            self.misses += misses

    def complete(self, request: LLMRequest) -> LLMResponse:
        cached = self._lookup(request)
        if cached is not None:
            self._count(1, 0)
            return cached
        self._count(0, 1)
        response = self.inner.complete(request)
        self._store_response(request, response)
        return response

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        """Hits from disk, misses sent to the inner model as one batch; results in request order."""
        results: list[LLMResponse | None] = [self._lookup(r) for r in requests]
        missing = [i for i, r in enumerate(results) if r is None]
        self._count(len(requests) - len(missing), len(missing))
        if missing:
            fresh = self.inner.complete_batch([requests[i] for i in missing])
            for i, response in zip(missing, fresh, strict=True):
                self._store_response(requests[i], response)
                results[i] = response
        done = [r for r in results if r is not None]
        if len(done) != len(requests):
            raise RuntimeError(f"cache: {len(requests) - len(done)} responses missing from the inner batch")
        return done

    def close(self) -> None:
        self._store.close()
        super().close()

    def __repr__(self) -> str:
        return f"CacheLLM({self.inner!r}, directory={str(self.directory)!r})"
