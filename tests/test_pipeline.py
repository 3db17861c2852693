"""The pipelined runner (simenv.pipeline): the same logs as the page-by-page loop at any concurrency, resume after a
crash, a new session in the slot of one that ends, the fallback-share stop, and fitted users kept on batches."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agents.config import load_user
from agents.embedding import HashingEmbedder
from agents.llm_user import LLMUserModel
from recommenders.random_policy import RandomRecommender
from simenv.errors import FallbackShareExceeded
from simenv.eventlog import read_table
from simenv.llm import CallLogLLM, LLMWrapper, MockLLM
from simenv.runner import rollback_to_checkpoint, run_sessions
from tests.fixtures_env import NoisyUser, tiny_world

DS, PERSONAS, SPLIT = tiny_world()


class JitterLLM(LLMWrapper):
    """The inner model's answers after a delay drawn from the request (0-6 ms), so sessions' answers arrive out of
    order; `peak` is the most calls that were in flight at once."""

    label = "jitter"

    def __init__(self, inner: MockLLM) -> None:
        super().__init__(inner)
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def complete_batch(self, requests):
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            delay = max(int(r.call_id()[:4], 16) % 7 for r in requests) / 1000
            time.sleep(delay)
            return self.inner.complete_batch(requests)
        finally:
            with self._lock:
                self.now -= 1

    def complete(self, request):
        return self.complete_batch([request])[0]


class _Crash(RuntimeError):
    pass


def _llm_run(run_dir: Path, kind: str, concurrency: int | None, crash_on: int | None = None, resume: bool = False):
    """LLM persona users (mock answers, jittered) with the call log in the run directory; returns the jitter layer."""
    jitter = JitterLLM(MockLLM(seed=0))
    llm = CallLogLLM(jitter, Path(run_dir) / "llm_calls")
    user = LLMUserModel(DS, llm, HashingEmbedder(), load_user(kind).user, train=SPLIT.train)
    if crash_on is not None:
        calls, inner, lock = [0], user.react_batch, threading.Lock()

        def react_batch(sessions, pages):
            with lock:
                calls[0] += 1
                n = calls[0]
            if n == crash_on:
                raise _Crash("simulated crash")
            return inner(sessions, pages)

        user.react_batch = react_batch
    rec = RandomRecommender().fit(SPLIT.train, DS.n_users, DS.n_items)
    run_sessions(
        rec, user, PERSONAS, DS, SPLIT.train, run_dir, n_pages=4, seed=3, policy_name="random", resume=resume,
        batch_size=8, concurrency=concurrency,
    )  # fmt: skip
    return jitter


def _files(run_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(Path(run_dir).rglob("*"))
        if p.is_file() and "llm_calls" not in p.parts
    }


def _calls(run_dir: Path):
    """The call log's rows as a set: without `seq` (arrival order) and the measured latency."""
    calls = read_table(run_dir, "llm_calls").drop(columns=["seq", "latency_s"])
    return calls.sort_values("call_id", ignore_index=True)


@pytest.mark.parametrize("kind", ["handset", "llm-only"])  # narrate mode, decide mode
def test_pipelined_runs_write_the_page_by_page_logs_at_any_concurrency(tmp_path: Path, kind: str) -> None:
    _llm_run(tmp_path / "barrier" / "run", kind, None)
    reference, calls = _files(tmp_path / "barrier" / "run"), _calls(tmp_path / "barrier" / "run")
    assert len(read_table(tmp_path / "barrier" / "run", "interviews")) == len(PERSONAS)
    for concurrency in (2, 5, 32):
        run_dir = tmp_path / f"c{concurrency}" / "run"  # same run id: the directory's name
        jitter = _llm_run(run_dir, kind, concurrency)
        assert jitter.peak > 1  # sessions' calls really overlapped
        assert _files(run_dir) == reference, concurrency
        assert _calls(run_dir).equals(calls), concurrency


def test_resume_after_a_crash_in_a_pipelined_run_is_identical(tmp_path: Path) -> None:
    clean, crashed = tmp_path / "a" / "run", tmp_path / "b" / "run"
    _llm_run(clean, "llm-only", 4)
    with pytest.raises(_Crash):
        _llm_run(crashed, "llm-only", 4, crash_on=40)  # 30 users in chunks of 8, <= 4 pages each: chunk 1 or 2
    done = rollback_to_checkpoint(crashed)
    assert 1 <= done < 4
    _llm_run(crashed, "llm-only", 4, resume=True)
    assert _files(crashed) == _files(clean)
    assert _calls(crashed).equals(_calls(clean))


class SlowUser(NoisyUser):
    """A noisy user that takes `delay_s` per page (a stand-in for an endpoint) and may react from several threads:
    even episodes leave after their first page, odd ones stay to the last. Records when each episode started and
    ended and how many reactions were in flight at once."""

    concurrent_sessions = True

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.started: dict[int, float] = {}
        self.ended: dict[int, float] = {}

    def start_session(self, persona, episode, rng):
        self.started[episode] = time.perf_counter()
        return super().start_session(persona, episode, rng)

    def react_batch(self, sessions, pages):
        with self.lock:
            self.now += len(sessions)
            self.peak = max(self.peak, self.now)
        time.sleep(self.delay_s)
        out = []
        for s, (page, items) in zip(sessions, pages, strict=True):
            fb = s.react(page, items)
            leave = page.episode % 2 == 0
            out.append(dataclasses.replace(fb, left=leave))
            if leave or page.page_index == 4:
                self.ended[page.episode] = time.perf_counter()
        with self.lock:
            self.now -= len(sessions)
        return out


def _slow_run(run_dir: Path, user, concurrency: int | None, **kwargs):
    rec = RandomRecommender().fit(SPLIT.train, DS.n_users, DS.n_items)
    users = sorted(PERSONAS)[:12]
    return run_sessions(
        rec, user, PERSONAS, DS, SPLIT.train, run_dir, n_pages=5, seed=0, users=users, batch_size=12,
        concurrency=concurrency, **kwargs,
    )  # fmt: skip


def test_a_new_session_starts_in_the_slot_of_one_that_ends(tmp_path: Path) -> None:
    user = SlowUser(0.03)
    summary = _slow_run(tmp_path / "run", user, concurrency=4)
    assert summary.n_pages_shown == 6 * 1 + 6 * 5
    assert user.peak == 4  # never more than `concurrency` sessions in flight, and that many at once
    # Episodes 0 and 2 leave after one page; 4 and 6 take their slots while 1 and 3 are still on their pages.
    assert min(user.ended[0], user.ended[2]) <= user.started[4] < user.ended[1]
    assert user.started[6] < user.ended[3]
    assert max(user.started.values()) < max(user.ended.values())


class FallingBackUser(NoisyUser):
    """Every page falls back; may react from several threads."""

    concurrent_sessions = True

    def react_batch(self, sessions, pages):
        return [dataclasses.replace(fb, fallback=True) for fb in super().react_batch(sessions, pages)]


def test_fallback_share_stop_works_in_a_pipelined_run(tmp_path: Path) -> None:
    with pytest.raises(FallbackShareExceeded, match="pages fell back"):
        _slow_run(tmp_path / "run", FallingBackUser(), concurrency=3, max_fallback_share=0.5, min_fallback_pages=5)
    assert read_table(tmp_path / "run", "pages")["fallback"].sum() >= 5  # the decided pages are on record
    assert rollback_to_checkpoint(tmp_path / "run") == 0  # nothing checkpointed: the chunk is redone on resume
    summary = _slow_run(tmp_path / "run", NoisyUser(), concurrency=3, resume=True)
    assert summary.n_episodes == 12 and summary.n_skipped == 0


class BatchRecordingUser(NoisyUser):
    """A fitted-style user (no `concurrent_sessions`) that records its batch sizes."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def react_batch(self, sessions, pages):
        self.sizes.append(len(sessions))
        return super().react_batch(sessions, pages)


def test_users_without_concurrent_sessions_keep_their_page_by_page_batches(tmp_path: Path) -> None:
    user = BatchRecordingUser()
    _slow_run(tmp_path / "run", user, concurrency=8)
    assert user.sizes[0] == 12 and len(user.sizes) <= 5  # one react_batch per page step for the whole chunk
    assert np.sum(user.sizes) == len(read_table(tmp_path / "run", "pages"))


def test_llm_users_whose_rule_reads_the_running_yes_rate_step_page_by_page(tmp_path: Path) -> None:
    """The yes rate advances over all sessions' pages in the order they are decided: such a user is not run
    pipelined (the shipped kinds never centre on it and are)."""
    spec = load_user("llm-only").user
    assert LLMUserModel(DS, MockLLM(seed=0), HashingEmbedder(), spec, train=SPLIT.train).concurrent_sessions
    calibrated = dataclasses.replace(spec, decision=dataclasses.replace(spec.decision, calibrate=True))
    user = LLMUserModel(DS, JitterLLM(MockLLM(seed=0)), HashingEmbedder(), calibrated, train=SPLIT.train)
    assert not user.concurrent_sessions
    _slow_run(tmp_path / "run", user, concurrency=8)
    assert user.llm.peak == 1  # one react_batch per page step: its calls in one batch
