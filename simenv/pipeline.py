"""The pipelined loop over one chunk of episodes: up to `concurrency` sessions in flight, each advancing on its own.

Why: stepping a chunk page by page makes every page step wait for its slowest LLM call, and a session that ends
leaves its slot empty until the chunk ends; against an endpoint answering in 0.25 s that used 0.44 of its
capacity at 32 concurrent requests and 0.31 at 128 (`python -m benchmarks.bench_llm`). Here, as soon as a
session's page is decided its next page is requested, and when a session ends the chunk's next episode starts in
its slot, so the endpoint always has `concurrency` sessions' calls to answer (until the chunk's last ones end).

How: the recommender, the logs and every choice of what runs next stay on the calling thread; only the user
model's reactions (`react_batch` for one session, then its exit interview when the episode ends) run on
`concurrency` worker threads (`_Workers`: daemon threads, so Ctrl-C never waits for a call in flight; after an
error, e.g. the fallback-share stop, the reactions in flight end first). Either way their pages are dropped like a
crash's: the run resumes from its last checkpoint. A user model allows this by setting `concurrent_sessions`
(`simenv.protocols.UserModel`): its sessions may react from different threads at once. A page goes to a worker and
its reaction comes back through one queue each (a `ThreadPool` passed both through a handler thread of its own:
two more thread hand-offs per page), and the calling thread handles every reaction that has arrived before it
writes and waits again.

Not done: handing one worker the pages of several sessions that became ready together (one `react_batch`, one
`complete_batch`). It cut the client CPU per call at 128 in flight (2.5 -> 1.2 ms, load 5-6) but each group waits
for its slowest call, and the busy share fell (0.70 -> 0.30; grouping only when the calling thread had fallen
behind, load 10: 2.1 -> 1.8 ms, 0.58 -> 0.45 in `bench_llm`'s runner with half its episodes).

Determinism: results do not depend on arrival order or on `concurrency`, and equal the page-by-page loop's.
- An episode draws only from its own generators (`simenv.kernel.episode_rngs(seed, episode)`), and its pages,
  reactions and interview come in the same order in both loops. The interview is asked right after the last
  page instead of at the chunk's end, which changes nothing: a session's memory is its own.
- At most one session per user id is live: an episode whose user is still in a session waits (in episode order),
  so a memory that carries over between a user's episodes and a recommender's per-user session state see one
  episode at a time. (The page-by-page loop interleaves a repeated user's episodes within a chunk; logs of runs
  whose `users` repeat an id with `persistent_memory` therefore differ between the loops.)
- Rows are written per page step, in episode order, once every episode of the chunk has decided that page or
  left before it: the same parts as the page-by-page loop's. Interviews and the checkpoint follow at the chunk's
  end, as there.
- What is not in the event logs follows arrival order: the LLM call log's row order (`seq`; its set of rows is
  the same), the user model's `events` list, the recommender's calls for different users (recommenders keep
  per-user session state only) and `progress`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from simenv.episodes import (
    FallbackGuard,
    Live,
    PageRows,
    StepSettings,
    finish_page,
    interviews,
    next_page,
    page_items,
    start,
)
from simenv.eventlog import RunLog
from simenv.protocols import UserModel
from simenv.records import Interview, Item, Page, PageFeedback, Persona


@dataclass(frozen=True)
class _Reaction:
    """What a worker returns: the session's feedback to `page` and, if that page ended the episode, its interview."""

    live: Live
    page: Page
    feedback: PageFeedback
    interview: Interview | None


def _react(user_model: UserModel, live: Live, page: Page, items: Sequence[Item], n_pages: int) -> _Reaction:
    """One page of one session (on a worker thread), then the exit interview if the page ended the episode."""
    feedbacks = user_model.react_batch([live.session], [(page, items)])
    if len(feedbacks) != 1:
        raise ValueError(f"user model returned {len(feedbacks)} feedbacks for 1 page")
    fb = feedbacks[0]
    ended = fb.left or page.page_index + 1 >= n_pages  # what `finish_page` will decide
    return _Reaction(live, page, fb, interviews(user_model, [live.session])[0] if ended else None)


class _Workers:
    """`n` daemon threads running `fn(*args)` for each `submit`; each result (or the exception raised) is put on
    `arrivals`, one per task, in completion order."""

    def __init__(self, n: int, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.inbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self.arrivals: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._serve, name=f"pipeline-{k}", daemon=True) for k in range(n)]
        for thread in self.threads:
            thread.start()

    def _serve(self) -> None:
        inbox, arrivals, fn = self.inbox, self.arrivals, self.fn
        while (args := inbox.get()) is not None:
            try:
                arrivals.put(fn(*args))
            except BaseException as exc:  # handed to the calling thread, which raises it
                arrivals.put(exc)

    def submit(self, *args: Any) -> None:
        self.inbox.put(args)

    def stop(self) -> None:
        """Ask every thread to end once it is idle (tasks already submitted run first); does not wait."""
        for _ in self.threads:
            self.inbox.put(None)


class _StepLog:
    """A chunk's rows per page step, each step written (events part, pages part) once every episode of the chunk
    has decided that page or left before it, rows in episode order: the page-by-page loop's parts."""

    def __init__(self, n_episodes: int, n_pages: int) -> None:
        self.n_episodes = n_episodes
        self.steps: list[dict[int, PageRows]] = [{} for _ in range(n_pages)]
        self.resolved = [0] * n_pages  # episodes that decided page p or ended before it
        self.next = 0  # the first step not written yet

    def add(self, live: Live, page_index: int, rows: PageRows) -> None:
        self.steps[page_index][live.episode] = rows
        self.resolved[page_index] += 1
        if live.done:
            for p in range(live.pages, len(self.steps)):
                self.resolved[p] += 1

    def write_ready(self, run_log: RunLog) -> None:
        while self.next < len(self.steps) and self.resolved[self.next] == self.n_episodes:
            self._write_next(run_log)

    def write_rest(self, run_log: RunLog) -> None:
        """Every decided page not written yet, step by step (a stopped run's pages on record for inspection; they
        follow the last checkpoint, so a resume drops them with the chunk)."""
        while self.next < len(self.steps):
            self._write_next(run_log)

    def _write_next(self, run_log: RunLog) -> None:
        step = self.steps[self.next]
        if step:  # empty once every episode left before this page (or, when stopped, none got to it)
            ordered = [step[e] for e in sorted(step)]
            run_log.append("events", [row for rows in ordered for row in rows.events])
            run_log.append("pages", [rows.page for rows in ordered])
        self.steps[self.next] = {}
        self.next += 1


def run_pipelined(
    settings: StepSettings,
    episodes: Sequence[tuple[int, Persona]],
    seed: int,
    concurrency: int,
    run_log: RunLog,
    guard: FallbackGuard,
    progress: Callable[[int, int], None] | None,
    first: int,
) -> tuple[list[Live], list[Interview]]:
    """Run a chunk's `episodes` ((episode, persona), in episode order) with up to `concurrency` in flight; write
    its page steps as they complete. Returns the sessions and their interviews in episode order. `guard` counts
    every decided page and raises when the fallback share is exceeded; `progress(episodes_done, pages_shown)`
    after every page (`first`: episodes done before this chunk)."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    steps = _StepLog(len(episodes), settings.n_pages)
    waiting = list(episodes)
    busy: set[int] = set()  # user ids with a live session
    lives: dict[int, Live] = {}
    done: dict[int, Interview] = {}
    workers = _Workers(concurrency, _react)
    in_flight = 0

    def submit(live: Live) -> None:
        nonlocal in_flight
        page, items = page_items(settings, next_page(settings, live))
        workers.submit(settings.user_model, live, page, items, settings.n_pages)
        in_flight += 1

    def fill() -> None:
        k = 0
        while in_flight < concurrency and k < len(waiting):
            episode, persona = waiting[k]
            if persona.user_id in busy:
                k += 1
                continue
            del waiting[k]
            busy.add(persona.user_id)
            lives[episode] = start(settings, persona, episode, seed)
            submit(lives[episode])

    def handle(arrived: Any) -> None:
        nonlocal in_flight
        in_flight -= 1
        if isinstance(arrived, BaseException):
            raise arrived
        live = arrived.live
        steps.add(live, arrived.page.page_index, finish_page(settings, live, arrived.page, arrived.feedback))
        guard.count([arrived.feedback])
        if not live.done:
            submit(live)
        else:
            if arrived.interview is None:
                raise RuntimeError(f"episode {live.episode}: ended without an interview")  # cannot happen
            done[live.episode] = arrived.interview
            busy.discard(live.persona.user_id)
            fill()
        if progress is not None:
            progress(first + len(done), guard.shown)
        if guard.exceeded:
            steps.write_rest(run_log)
            raise guard.error()

    try:
        fill()
        while in_flight:
            handle(workers.arrivals.get())
            while in_flight:  # every reaction that arrived meanwhile, before writing and waiting again
                try:
                    arrived = workers.arrivals.get_nowait()
                except queue.Empty:
                    break
                handle(arrived)
            steps.write_ready(run_log)
    except Exception:
        while in_flight:  # an error (a crash, the fallback stop): let the reactions in flight end, so nothing of
            workers.arrivals.get()  # this run writes (e.g. to the call log) after the caller has moved on;
            in_flight -= 1  # they are dropped
        raise
    finally:
        workers.stop()  # Ctrl-C: at once; workers still waiting on a call are daemon threads, left behind
    order = sorted(lives)
    return [lives[e] for e in order], [done[e] for e in order]
