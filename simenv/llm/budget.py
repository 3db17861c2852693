"""Caps on LLM calls and tokens per run, as a wrapper: exceeding a cap raises `BudgetExceeded`.

The check happens before a call is sent (a batch reserves all its calls at once), so a run stops cleanly
between steps with a message saying which cap was hit and how to raise it. Place it inside the cache so
replayed calls cost nothing. Failed calls count: they were paid for.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from simenv.llm.types import LLM, BudgetExceeded, LLMRequest, LLMResponse
from simenv.llm.wrapper import LLMWrapper


class BudgetLLM(LLMWrapper):
    """Counts `calls` and `tokens` (prompt + completion) and refuses work past `max_calls` / `max_tokens`."""

    label = "budget"

    def __init__(self, inner: LLM, max_calls: int | None = None, max_tokens: int | None = None) -> None:
        super().__init__(inner)
        for field, value in (("max_calls", max_calls), ("max_tokens", max_tokens)):
            if value is not None and value < 0:
                raise ValueError(f"BudgetLLM.{field} must be >= 0 or None, got {value!r}")
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        self.calls = 0
        self.tokens = 0
        self._lock = threading.Lock()

    def _reserve(self, n: int) -> None:
        with self._lock:
            if self.max_calls is not None and self.calls + n > self.max_calls:
                raise BudgetExceeded(
                    f"LLM call budget exhausted: {self.calls} of max_calls={self.max_calls} used and {n} more "
                    "requested; the run stops here (raise llm.max_calls in the config to go further)"
                )
            if self.max_tokens is not None and self.tokens >= self.max_tokens:
                raise BudgetExceeded(
                    f"LLM token budget exhausted: {self.tokens} of max_tokens={self.max_tokens} used; "
                    "the run stops here (raise llm.max_tokens in the config to go further)"
                )
            self.calls += n

    def _spend(self, responses: Sequence[LLMResponse]) -> None:
        with self._lock:
            self.tokens += sum(r.prompt_tokens + r.completion_tokens for r in responses)

    def complete(self, request: LLMRequest) -> LLMResponse:
        self._reserve(1)
        response = self.inner.complete(request)
        self._spend([response])
        return response

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        self._reserve(len(requests))
        responses = self.inner.complete_batch(requests)
        self._spend(responses)
        return responses

    def __repr__(self) -> str:
        return f"BudgetLLM({self.inner!r}, max_calls={self.max_calls}, max_tokens={self.max_tokens})"
