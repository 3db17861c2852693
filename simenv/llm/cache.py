"""A persistent response cache around any `LLM` (diskcache, i.e. sqlite on disk).

The key hashes the inner model's identity (backend, model, seed) and `request.cache_key()` (messages,
sampling settings, schema, context) — never an API key, which is in neither. A repair request holds the bad
answer and the error in its messages, so it is keyed apart from the first request.

Only good answers are stored: a failed call never; an answer to a request with a JSON schema only if it decodes
and matches the schema (an empty, prose, truncated or wrong-id answer is counted in `rejected` and not stored);
an answer to a request without one only if it is not blank. When the structured layer then reports an outcome
other than "ok" for a stored or replayed answer (its semantic check failed), the entry is deleted (`rejected`).
An entry on disk that does not match its request's schema (written by an older version, or damaged) is ignored,
deleted and counted in `stale`: the request goes to the model as a miss. So a replay of a run asks the model
again exactly for the answers that were bad, and gets every good one from disk.

The cache is a directory on the user's machine (`[data] cache_dir`); answers are JSON text, never pickles.
A store whose sqlite file is damaged is set aside (`simenv.set_aside`: renamed `cache.db.corrupt-<timestamp>`,
one warning line) and an empty one is opened in its place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simenv.llm.structured import answer_valid
from simenv.llm.types import LLM, LLMRequest, LLMResponse
from simenv.llm.wrapper import LLMWrapper
from simenv.set_aside import set_aside

logger = logging.getLogger(__name__)
_RECENT = 8192  # call ids of recently stored or replayed answers, so an outcome can withdraw their entry
_STORED_FIELDS = ("text", "backend", "model", "prompt_tokens", "completion_tokens", "latency_s", "parsed")


def open_store(directory: Path) -> Any:
    """A `diskcache.Cache` on `directory`, checked: a `cache.db` that is not a readable sqlite database is set aside
    and a new one made (shared with `agents.embedding`'s cache through `experiments.model_cache.check_caches`)."""
    import diskcache

    try:
        store = diskcache.Cache(str(directory))
        store.get("\0probe")  # reads the table: a damaged file fails here if not when opened
        return store
    except sqlite3.DatabaseError as exc:
        set_aside(directory / "cache.db", f"sqlite: {exc}")
        return diskcache.Cache(str(directory))


class CacheLLM(LLMWrapper):
    """Answers repeated requests from disk; counts `hits`, `misses`, `rejected` (answers not stored or withdrawn)
    and `stale` (entries on disk ignored because they do not match their request's schema)."""

    label = "cache"

    def __init__(self, inner: LLM, directory: str | Path) -> None:
        super().__init__(inner)
        self.directory = Path(directory)
        self._store = open_store(self.directory)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.rejected = 0
        self.stale = 0
        self._recent: OrderedDict[str, str] = OrderedDict()  # call id -> key

    def key(self, request: LLMRequest) -> str:
        return hashlib.sha256(f"{self.identity}\n{request.cache_key()}".encode()).hexdigest()

    def _lookup(self, request: LLMRequest) -> LLMResponse | None:
        start = time.perf_counter()
        key = self.key(request)
        raw = self._store.get(key)
        if raw is None:
            return None
        try:
            stored: dict[str, Any] = json.loads(raw)
            response = LLMResponse(**stored)
        except (TypeError, ValueError):
            response = None
        if response is None or not self._good(request, response):
            self._store.delete(key)
            with self._lock:
                self.stale += 1
            return None
        call_id = request.call_id()
        self._remember(call_id, key)
        return dataclasses.replace(response, cache_hit=True, call_id=call_id, latency_s=time.perf_counter() - start)

    @staticmethod
    def _good(request: LLMRequest, response: LLMResponse) -> bool:
        """An answer worth keeping: no error; with a schema, JSON that matches it; without one, not blank."""
        if response.error:
            return False
        if request.json_schema is None:
            return bool(response.text.strip())
        return answer_valid(response.text, request.json_schema)

    def _remember(self, call_id: str, key: str) -> None:
        with self._lock:
            self._recent[call_id] = key
            self._recent.move_to_end(call_id)
            while len(self._recent) > _RECENT:
                self._recent.popitem(last=False)

    def _store_response(self, request: LLMRequest, response: LLMResponse) -> None:
        if response.error:
            return
        if not self._good(request, response):
            with self._lock:
                self.rejected += 1
            return
        payload = {f: getattr(response, f) for f in _STORED_FIELDS}
        key = self.key(request)
        self._store.set(key, json.dumps(payload))
        self._remember(response.call_id, key)

    def record_outcome(self, call_id: str, parse_status: str, repairs: int, fallback: bool) -> None:
        """An answer the structured layer found unusable (its semantic check failed) leaves the cache."""
        if parse_status != "ok":
            with self._lock:
                key = self._recent.pop(call_id, None)
            if key is not None and self._store.delete(key):
                with self._lock:
                    self.rejected += 1
        super().record_outcome(call_id, parse_status, repairs, fallback)

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
        if self.stale:
            logger.warning(
                "LLM cache %s: %d stored answers did not match their request's schema; ignored and asked again",
                self.directory,
                self.stale,
            )
        self._store.close()
        super().close()

    def __repr__(self) -> str:
        return f"CacheLLM({self.inner!r}, directory={str(self.directory)!r})"
