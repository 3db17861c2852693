"""The common base of wrappers (cache, budget, call log): an `LLM` around an `LLM`.

It forwards the bookkeeping hooks (`record_outcome`, `close`, `identity`) to the inner model, so wrappers
compose in any order and the structured layer reaches the call log through them.
"""

from __future__ import annotations

from collections.abc import Sequence

from simenv.llm.types import LLM, LLMRequest, LLMResponse


class LLMWrapper:
    """Subclasses override `complete` / `complete_batch`; everything else is forwarded."""

    label = "wrapper"

    def __init__(self, inner: LLM) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return f"{self.label}({self.inner.name})"

    @property
    def model(self) -> str:
        return str(getattr(self.inner, "model", ""))

    @property
    def identity(self) -> str:
        """What determines the inner model's answers (backend, model, seed): part of cache keys, never secrets."""
        return str(getattr(self.inner, "identity", self.inner.name))

    def complete(self, request: LLMRequest) -> LLMResponse:
        return self.inner.complete(request)

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        return self.inner.complete_batch(requests)

    def record_outcome(self, call_id: str, parse_status: str, repairs: int, fallback: bool) -> None:
        hook = getattr(self.inner, "record_outcome", None)
        if callable(hook):
            hook(call_id, parse_status, repairs, fallback)

    def close(self) -> None:
        hook = getattr(self.inner, "close", None)
        if callable(hook):
            hook()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"
