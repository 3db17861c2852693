"""Parts that engine workers import by name in tests/test_ray_engine.py and tests/test_process_engine.py: a
popularity recommender that fails inside a worker (a Ray worker or a spawned worker process: kills its own process
once, or raises until a marker file exists) and a slow LLM that records when each of its calls was in flight."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from simenv.llm import LLMRequest, LLMResponse
from simenv.records import Page, PageFeedback, Recommendation


def in_ray_worker() -> bool:
    import ray

    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


def in_engine_worker() -> bool:
    """In a Ray worker or a worker process of the processes engine (a child `multiprocessing` started)."""
    return multiprocessing.parent_process() is not None or in_ray_worker()


class FaultyPop:
    """Train popularity (the registry `pop`'s ranking); in an engine worker, on the second page of the 17th user it
    serves (so inside the shard's second chunk, after a checkpoint): `mode="kill"` creates `marker` and kills its
    own process (once: not again while the marker exists); `mode="raise"` raises while `marker` does not exist."""

    name = "faulty-pop"

    def __init__(self, marker: str, mode: str = "kill", after_users: int = 16) -> None:
        self.marker = Path(marker)
        self.mode = mode
        self.after_users = after_users
        self.counts = np.zeros(0)
        self.calls: Counter[int] = Counter()

    def fit(self, train: pd.DataFrame, n_users: int, n_items: int, valid: pd.DataFrame | None = None) -> FaultyPop:
        self.counts = np.bincount(train["item_id"].to_numpy(), minlength=n_items).astype(np.float64)
        return self

    def score(self, user_id: int, history: Sequence[int] = ()) -> np.ndarray:
        return self.counts.copy()

    def recommend(self, user_id, k, exclude: Collection[int], rng, history=()) -> Recommendation:
        self.calls[user_id] += 1
        if len(self.calls) > self.after_users and self.calls[user_id] == 2 and in_engine_worker():
            if self.mode == "kill" and not self.marker.exists():
                self.marker.touch()
                os._exit(1)
            if self.mode == "raise" and not self.marker.exists():
                raise RuntimeError(f"faulty-pop: planted failure for user {user_id}")
        scores = self.counts.copy()
        scores[list(exclude)] = -np.inf
        page = np.argsort(-scores, kind="stable")[:k]
        return Recommendation(item_ids=tuple(int(i) for i in page))

    def observe(self, user_id: int, page: Page, feedback: PageFeedback) -> None:
        pass

    def save(self, path) -> None:
        raise NotImplementedError  # never cached: every worker fits it with its settings (the marker)

    @classmethod
    def load(cls, path) -> FaultyPop:
        raise NotImplementedError


class SleepLLM:
    """Answers after `delay_s`, appending "start end" (wall clock) of each call to `log_path`."""

    name = "sleep"
    model = "sleep"

    def __init__(self, delay_s: float, log_path: str) -> None:
        self.delay_s = delay_s
        self.log_path = log_path

    def complete(self, request: LLMRequest) -> LLMResponse:
        start = time.time()
        time.sleep(self.delay_s)
        end = time.time()
        with open(self.log_path, "a") as fh:
            fh.write(f"{start} {end}\n")
        return LLMResponse(text="{}", backend="sleep", model="sleep")

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        return [self.complete(r) for r in requests]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals in flight at one instant."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    best = live = 0
    for _, step in edges:
        live += step
        best = max(best, live)
    return best
