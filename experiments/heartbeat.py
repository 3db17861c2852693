"""A long command is never silent: while it runs, a progress line whenever nothing was written for a few seconds.

The CLI wraps every command in `Heartbeat`. Phases that report their own progress (recommender epochs, response
folds, sessions) reset the clock with each line they print; a phase that has no progress of its own (a fold of
the response model, predicting plans, a long batch) gets `  … 14 s since: <its last progress line>` instead of
minutes of nothing (stderr output restarts the clock but is never quoted). The line goes to stdout with the other
progress lines (stderr keeps the one-line errors). `SIMREC_HEARTBEAT_S` sets the quiet time before a line
(default 7 s; 0 turns it off).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from types import TracebackType
from typing import Any, TextIO

DEFAULT_AFTER_S = 7.0
MAX_LINE = 100


class _Tap:
    """A text stream that forwards everything to `stream` and tells the heartbeat it was written to (`quote`: its
    lines may be quoted; stderr's are not, as libraries write there what a command may silence at the fd level)."""

    def __init__(self, stream: TextIO, beat: Heartbeat, quote: bool) -> None:
        self._stream = stream
        self._beat = beat
        self._quote = quote

    def write(self, text: str) -> int:
        self._beat.saw(text if self._quote else "")
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class Heartbeat:
    """Context manager: taps stdout and stderr; a daemon thread writes a line to the real stdout after `after_s`
    seconds without output (and every `after_s` seconds while the quiet lasts)."""

    def __init__(self, after_s: float | None = None, poll_s: float = 0.5) -> None:
        if after_s is None:
            after_s = float(os.environ.get("SIMREC_HEARTBEAT_S", DEFAULT_AFTER_S))
        self.after_s = after_s
        self.poll_s = poll_s
        self.last_line = ""
        self.beats = 0
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._streams: tuple[Any, Any] | None = None

    def saw(self, text: str) -> None:
        """Output happened: restart the quiet clock and remember the last non-empty line of `text`."""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        with self._lock:
            self._last = time.monotonic()
            if lines:
                self.last_line = lines[-1][:MAX_LINE]

    def __enter__(self) -> Heartbeat:
        if self.after_s <= 0:
            return self
        self._streams = (sys.stdout, sys.stderr)
        sys.stdout = _Tap(sys.stdout, self, quote=True)  # type: ignore[assignment]
        sys.stderr = _Tap(sys.stderr, self, quote=False)  # type: ignore[assignment]
        self._thread = threading.Thread(target=self._run, name="simrec-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if self._thread is None or self._streams is None:
            return
        self._stop.set()
        self._thread.join()
        sys.stdout, sys.stderr = self._streams

    def _run(self) -> None:
        assert self._streams is not None
        out = self._streams[0]
        since_beat = time.monotonic()
        while not self._stop.wait(self.poll_s):
            now = time.monotonic()
            with self._lock:
                quiet, line = now - self._last, self.last_line
            if quiet >= self.after_s and now - since_beat >= self.after_s:
                out.write(f"  … {quiet:.0f} s since: {line or 'start'}\n")
                out.flush()
                since_beat = now
                self.beats += 1
