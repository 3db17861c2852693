"""Batch helpers shared by the backends: a serial loop for in-process models, event-loop runners for async.

Both batch forms keep request order and turn a failed call into a failed response (`error` set), so a batch
never loses or duplicates a request. `LoopThread` keeps one event loop alive across batches, so an async client
built on it keeps its open connections instead of reconnecting (and rebuilding itself) for every batch.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from simenv.llm.types import BudgetExceeded, LLMError, LLMRequest, LLMResponse

T = TypeVar("T")


def failed_response(request: LLMRequest, backend: str, model: str, error: str | LLMError) -> LLMResponse:
    """The placeholder a batch returns for a request whose call failed after the backend's retries (an `LLMError`
    passes on its attempt record: retries, each failed attempt's error kind, time waited between attempts)."""
    return LLMResponse(
        text="",
        backend=backend,
        model=model,
        call_id=request.call_id(),
        error=str(error) or type(error).__name__,
        retries=getattr(error, "retries", 0),
        attempt_errors=tuple(getattr(error, "attempt_errors", ())),
        retry_wait_s=float(getattr(error, "retry_wait_s", 0.0)),
    )


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
            out.append(failed_response(request, backend, model, exc))
    return out


class LoopThread:
    """An event loop running in a daemon thread; `run(coro)` blocks the calling thread until `coro` finishes.

    Works the same whether or not the caller runs an event loop of its own. Objects bound to a loop (async
    clients, semaphores) must be created by a coroutine passed to `run`. `close()` is safe to call twice.
    """

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    @property
    def closed(self) -> bool:
        return not self._thread.is_alive()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(f"LoopThread {self._thread.name}: run() called from its own loop would deadlock")
        if self.closed:
            coro.close()
            raise RuntimeError(f"LoopThread {self._thread.name} is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt while waiting: do not leave the work running
            raise

    def close(self) -> None:
        if self.closed:
            return
        if threading.current_thread() is self._thread:  # e.g. a finalizer the garbage collector ran on this thread
            self._loop.stop()  # the loop ends after this callback; a thread cannot join itself
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def is_current(self) -> bool:
        """True on the loop's own thread (where `run` would deadlock)."""
        return threading.current_thread() is self._thread
