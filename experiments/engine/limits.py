"""A per-endpoint limit on LLM requests in flight that holds across every worker of a Ray cluster.

`EndpointSlots` is a counting semaphore run as one named Ray actor per endpoint (created by the driver, found by
name by the workers); `ClusterLimitedLLM` wraps a worker's LLM so that every request holds a slot while it is
in flight. A worker that dies holding slots gets them back: its restarted actor calls `release_all(holder)`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from simenv.llm import LLM, LLMRequest, LLMResponse, LLMWrapper

NAMESPACE = "simrec"


def slots_name(endpoint: str) -> str:
    """The named actor of an endpoint (a hash: the URL itself is not needed to find it)."""
    return "simrec-llm-slots-" + hashlib.sha256(endpoint.encode()).hexdigest()[:16]


class EndpointSlots:
    """`limit` slots; `acquire(holder)` waits for one, `release(holder)` frees one (an async Ray actor)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"endpoint concurrency must be >= 1, got {limit}")
        self.limit = limit
        self._free = asyncio.Semaphore(limit)
        self._held: Counter[str] = Counter()
        self._peak = 0
        self._granted = 0

    async def acquire(self, holder: str) -> None:
        await self._free.acquire()
        self._held[holder] += 1
        self._granted += 1
        self._peak = max(self._peak, sum(self._held.values()))

    async def release(self, holder: str) -> None:
        if self._held[holder] > 0:
            self._held[holder] -= 1
            self._free.release()

    async def release_all(self, holder: str) -> int:
        """Free every slot `holder` still holds (a worker restarted after dying mid-request)."""
        n = self._held.pop(holder, 0)
        for _ in range(n):
            self._free.release()
        return n

    async def stats(self) -> dict[str, int]:
        in_flight = sum(self._held.values())
        return {"limit": self.limit, "in_flight": in_flight, "peak": self._peak, "granted": self._granted}


class ClusterLimitedLLM(LLMWrapper):
    """Each request takes a slot of the endpoint's `EndpointSlots` actor for as long as it is in flight; a batch
    runs its requests on up to `concurrency` threads, results in request order."""

    label = "cluster-limit"

    def __init__(self, inner: LLM, slots: Any, holder: str, concurrency: int) -> None:
        super().__init__(inner)
        self.slots = slots
        self.holder = holder
        self.concurrency = max(1, concurrency)

    def complete(self, request: LLMRequest) -> LLMResponse:
        import ray

        ray.get(self.slots.acquire.remote(self.holder))
        try:
            return self.inner.complete(request)
        finally:
            ray.get(self.slots.release.remote(self.holder))

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        if len(requests) <= 1:
            return [self.complete(r) for r in requests]
        with ThreadPoolExecutor(min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self.complete, requests))

    def __repr__(self) -> str:
        return f"ClusterLimitedLLM({self.inner!r}, holder={self.holder!r})"
