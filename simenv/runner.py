"""The session runner: a recommender serves many simulated users, chunk by chunk, in one of two loops.

- Page by page (the default, and the fast path of fitted users): all live sessions of a chunk get their page at
  the same time and react through one `user_model.react_batch` call (array operations over the whole batch).
- Pipelined (`concurrency=N` and a user model with `concurrent_sessions`, i.e. an LLM user behind an endpoint):
  `simenv.pipeline` keeps N sessions in flight, each advancing on its own, and starts the chunk's next episode
  in the slot of one that ends, so the endpoint is never left waiting for a page step's slowest call.

Episode `e`'s randomness comes from `simenv.kernel.episode_rngs(seed, e)` (`SeedSequence([seed, e])`: one child
for the user, one for the policy), so results do not depend on chunk size, on which other users share a batch,
or on the loop and its concurrency: both loops write the same rows in the same order (see `simenv.pipeline`).

Logging and resume: each page step appends one `events` and one `pages` part (the pipelined loop writes page
step p of a chunk once every episode of the chunk has decided page p or left, rows in episode order: the same
parts); a finished chunk appends its `interviews` part and a checkpoint. `resume=True` drops the parts written
after the last checkpoint (the chunk in flight when the process died), skips the finished chunks and redoes the
rest, so the run directory ends identical to an uninterrupted run's. With an LLM call log in
`<run_dir>/llm_calls`, call `rollback_to_checkpoint(run_dir)` before building the LLM stack (the call log reads
its parts when built); the runner flushes the call log at every checkpoint.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from simenv import defaults
from simenv.data.dataset import Dataset
from simenv.episodes import FallbackGuard, Live, StepSettings, finish_page, interviews, next_pages, page_items, start
from simenv.errors import FallbackShareExceeded
from simenv.eventlog import RunLog, interview_row
from simenv.pipeline import run_pipelined
from simenv.protocols import PagePolicy, UserModel
from simenv.records import Interview, Persona
from simenv.rewards import RewardConfig, reward_config

log = logging.getLogger(__name__)
MIN_FALLBACK_PAGES = 20  # pages shown before the fallback share is held to its limit


@dataclass(frozen=True)
class RunSummary:
    """What a call to `run_sessions` did: episodes in the run, episodes skipped on resume, pages shown now."""

    run_dir: Path
    n_episodes: int
    n_skipped: int
    n_pages_shown: int


def run_sessions(
    recommender: PagePolicy,
    user_model: UserModel,
    personas: Mapping[int, Persona],
    dataset: Dataset,
    train: pd.DataFrame,
    run_dir: str | Path,
    n_pages: int = defaults.MAX_PAGES,
    page_size: int = defaults.PAGE_SIZE,
    seed: int = 0,
    policy_name: str | None = None,
    resume: bool = False,
    batch_size: int = 1000,
    reward: RewardConfig | str | Mapping[str, float] | None = None,
    users: Sequence[int] | None = None,
    config: Mapping[str, Any] | None = None,
    persistent_memory: bool = False,
    progress: Callable[[int, int], None] | None = None,
    only_chunks: Collection[int] | None = None,
    max_fallback_share: float | None = None,
    min_fallback_pages: int = MIN_FALLBACK_PAGES,
    concurrency: int | None = None,
) -> RunSummary:
    """Run one session per persona (episode `e` = the e-th of `users`, default all persona ids sorted).

    `recommender` (a `simenv.protocols.PagePolicy`: every `Recommender` is one) must be fitted on `train`; it is
    called as `recommend(user_id, page_size, exclude, rng,
    history)` with `exclude` = the persona's train items plus everything shown so far and `history` = the
    items watched this session, then `observe(user_id, page, feedback)`. `config` adds entries to
    config.json (they must match on resume). Users start with a fresh memory (`reset_memory=True` for
    models that keep one) unless `persistent_memory`, so one user model can serve several policies' runs.
    `progress(episodes_done, pages_shown)` is called after every page step (pipelined: every page; progress bars).
    `only_chunks` runs only those chunk indices (of `batch_size` episodes each, numbered over all of `users`), with the
    episodes' global numbers and seeds: a sharded engine runs disjoint chunk sets in separate directories and
    concatenates their parts in chunk order, which reproduces an unsharded run's parts.
    `max_fallback_share`: once `min_fallback_pages` pages have been decided in this call, a page step after which
    more than that share of them fell back (`PageFeedback.fallback`) raises `FallbackShareExceeded`, after the
    step's logs (pipelined: every decided page's) are written; the run directory is then as a crash leaves it
    (resumable from its last checkpoint).
    `concurrency`: sessions in flight at once (`simenv.pipeline`), for a user model that sets
    `concurrent_sessions` (else, and when None or 1, the chunk is stepped page by page). It is not part of
    config.json: the logs are the same at any concurrency, so a run may be resumed at another.
    """
    if n_pages < 1 or page_size < 1 or batch_size < 1:
        raise ValueError(f"n_pages={n_pages}, page_size={page_size}, batch_size={batch_size} must all be >= 1")
    policy = policy_name or getattr(recommender, "name", type(recommender).__name__)
    order = sorted(personas) if users is None else [int(u) for u in users]
    missing = [u for u in order if u not in personas]
    if missing:
        raise ValueError(f"users: ids {missing[:5]} have no persona")
    rcfg = reward_config(reward)
    run_log = RunLog(run_dir)
    full_config = {
        "policy": policy,
        "recommender": getattr(recommender, "name", type(recommender).__name__),
        "user_model": getattr(user_model, "name", type(user_model).__name__),
        "dataset": dataset.name,
        "n_episodes": len(order),
        "users_head": order[:10],
        "n_pages": n_pages,
        "page_size": page_size,
        "seed": seed,
        "batch_size": batch_size,
        "reward": rcfg.to_dict(),
        **dict(config or {}),
    }
    done_chunks = _prepare(run_log, full_config, resume)
    fresh = (
        {} if persistent_memory or not _accepts(user_model.start_session, "reset_memory") else {"reset_memory": True}
    )
    settings = StepSettings(
        recommender, user_model, dataset.catalog, policy, run_log.run_id, n_pages, page_size, rcfg, fresh
    )
    guard = FallbackGuard(policy, max_fallback_share, min_fallback_pages)
    pipelined = concurrency is not None and concurrency > 1 and bool(getattr(user_model, "concurrent_sessions", False))
    if concurrency is not None and concurrency > 1 and not pipelined:
        model = getattr(user_model, "name", type(user_model).__name__)
        log.info("run %s: user model %s steps page by page (no concurrent sessions)", run_log.run_id, model)
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for c, chunk_users in enumerate(chunks):
        if c < done_chunks or (only_chunks is not None and c not in only_chunks):
            continue
        first = c * batch_size
        episodes = [(first + offset, personas[user]) for offset, user in enumerate(chunk_users)]
        try:
            if pipelined:
                assert concurrency is not None
                lives, interviews = run_pipelined(
                    settings, episodes, seed, concurrency, run_log, guard, progress, first
                )
            else:
                lives, interviews = _run_barrier(settings, episodes, seed, run_log, guard, progress, first)
        except FallbackShareExceeded:
            flush_logs(user_model)  # the failed answers on record (a resume drops them with the chunk's parts)
            raise
        rows = [
            interview_row(run_log.run_id, policy, lv.episode, lv.pages, iv)
            for lv, iv in zip(lives, interviews, strict=True)
        ]
        run_log.append("interviews", rows)
        flush_logs(user_model)
        run_log.checkpoint({"chunks_done": c + 1, "episodes_done": first + len(chunk_users)})
        log.info("run %s: chunk %d/%d done", run_log.run_id, c + 1, len(chunks))
        if progress is not None:
            progress(first + len(chunk_users), guard.shown)
    skipped = min(done_chunks * batch_size, len(order))
    return RunSummary(Path(run_dir), len(order), skipped, guard.shown)


def _run_barrier(
    settings: StepSettings,
    episodes: Sequence[tuple[int, Persona]],
    seed: int,
    run_log: RunLog,
    guard: FallbackGuard,
    progress: Callable[[int, int], None] | None,
    first: int,
) -> tuple[list[Live], list[Interview]]:
    """One chunk page by page: every live session's page in one `react_batch`; one part per page step.
    Returns the chunk's sessions and their interviews, in episode order."""
    lives = [start(settings, persona, episode, seed) for episode, persona in episodes]
    for _ in range(settings.n_pages):
        alive = [lv for lv in lives if not lv.done]
        if not alive:
            break
        pages = next_pages(settings, alive)
        feedbacks = settings.user_model.react_batch(
            [lv.session for lv in alive], [page_items(settings, p) for p in pages]
        )
        if len(feedbacks) != len(alive):
            raise ValueError(f"user model returned {len(feedbacks)} feedbacks for {len(alive)} pages")
        steps = [finish_page(settings, lv, page, fb) for lv, page, fb in zip(alive, pages, feedbacks, strict=True)]
        run_log.append("events", [row for step in steps for row in step.events])
        run_log.append("pages", [step.page for step in steps])
        guard.count(feedbacks)
        if progress is not None:
            progress(first, guard.shown)
        if guard.exceeded:
            raise guard.error()
    return lives, interviews(settings.user_model, [lv.session for lv in lives])


def flush_logs(user_model: Any) -> None:
    """Flush buffered logs of the user model and of every layer of its LLM stack (e.g. the call log), so a
    checkpoint covers them."""
    seen: set[int] = set()
    obj = user_model
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        flush = getattr(obj, "flush", None)
        if callable(flush):
            flush()
        obj = getattr(obj, "llm", None) if obj is user_model else getattr(obj, "inner", None)


def rollback_to_checkpoint(run_dir: str | Path) -> int:
    """Drop every part written after the run's last checkpoint (all parts if none); returns finished chunks.

    Call it before building an LLM stack whose call log writes into `<run_dir>/llm_calls`, so the log
    re-reads a consistent directory; `run_sessions(resume=True)` then finds nothing more to drop.
    """
    run_log = RunLog(run_dir)
    checkpoint = run_log.read_checkpoint()
    run_log.rollback(checkpoint["parts"] if checkpoint else {})
    return int(checkpoint["state"]["chunks_done"]) if checkpoint else 0


def _accepts(fn: Any, name: str) -> bool:
    return name in inspect.signature(fn).parameters


def _prepare(run_log: RunLog, config: dict[str, Any], resume: bool) -> int:
    """Write or check config.json; on resume roll back to the last checkpoint. Returns finished chunks."""
    normalised = json.loads(json.dumps(config, sort_keys=True, default=str))
    existing = run_log.read_config()
    if existing is not None and not resume:
        raise FileExistsError(f"{run_log.run_dir}: already holds a run; pass resume=True or use a new directory")
    if existing is not None and existing != normalised:
        changed = sorted(k for k in set(existing) | set(normalised) if existing.get(k) != normalised.get(k))
        raise ValueError(f"{run_log.run_dir}/config.json: cannot resume, config differs in {changed}")
    if existing is None:
        run_log.rollback({})
        run_log.write_config(normalised)
        return 0
    checkpoint = run_log.read_checkpoint()
    parts = checkpoint["parts"] if checkpoint else {}
    run_log.rollback(parts)
    return int(checkpoint["state"]["chunks_done"]) if checkpoint else 0
