"""Batch helpers shared by the backends: a serial loop for in-process models, an event-loop runner for async.

Both keep request order and turn a failed call into a failed response (`error` set), so a batch never loses
or duplicates a request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from simenv.llm.types import BudgetExceeded, LLMError, LLMRequest, LLMResponse

T = TypeVar("T")


def failed_response(request: LLMRequest, backend: str, model: str, error: str) -> LLMResponse:
    """The placeholder a batch returns for a request whose call failed after the backend's retries."""
    return LLMResponse(text="", backend=backend, model=model, call_id=request.call_id(), error=error)


def run_serially(
    complete: Callable[[LLMRequest], LLMResponse], requests: Sequence[LLMRequest], backend: str, model: str
) -> list[LLMResponse]:
    """One request after another (in-process models are not thread-safe); failures become failed responses."""
    out = []
    for request in requests:
        try:
            out.append(complete(request))
        except BudgetExceeded:
            raise
        except LLMError as exc:
            out.append(failed_response(request, backend, model, str(exc)))
    return out


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion from sync code, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
