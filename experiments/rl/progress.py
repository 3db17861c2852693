"""Progress of `simrec evaluate-rl` on stderr: users done, rate and time left, so a long evaluation is not silent."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import numpy as np


class EvalProgress:
    """Progress of the persona-env evaluation on stderr: users done, rate and an estimate of the time left
    (over every policy), at most every `every_s` seconds and once at the end of each policy."""

    def __init__(self, n_policies: int, n_users: int, stream: TextIO | None = None, every_s: float = 2.0) -> None:
        self.total = n_policies * n_users
        self.n_users = n_users
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.start = time.perf_counter()
        self.finished = 0  # users of the policies already done
        self._last = -float("inf")
        self.lines = 0

    def __call__(self, name: str, done: int, final: bool = False) -> None:
        now = time.perf_counter()
        if not final and now - self._last < self.every_s:
            return
        self._last = now
        elapsed = max(now - self.start, 1e-9)
        overall = self.finished + done
        rate = overall / elapsed
        left = (self.total - overall) / rate if rate > 0 else float("nan")
        eta = f"~{left:.0f} s left" if np.isfinite(left) else "estimating"
        print(
            f"eval {name}: {done}/{self.n_users} users; all policies {overall}/{self.total} "
            f"({rate:.2f} users/s, {elapsed:.0f} s, {eta})",
            file=self.stream,
            flush=True,
        )
        self.lines += 1
        if final:
            self.finished += done
