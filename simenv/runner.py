"""The batched session runner: a recommender serves many simulated users at once, page by page.

All live sessions of a chunk get their page at the same time and react through one
`user_model.react_batch` call (an LLM user turns that into one concurrent batch of LLM calls). Episode
`e`'s randomness comes from `simenv.kernel.episode_rngs(seed, e)` (`SeedSequence([seed, e])`: one child for
the user, one for the policy), so results do not depend on chunk size or on which other users share a batch.

Logging and resume: each page step appends one `events` and one `pages` part; a finished chunk appends its
`interviews` part and a checkpoint. `resume=True` drops the parts written after the last checkpoint (the
chunk in flight when the process died), skips the finished chunks and redoes the rest, so the run
directory ends identical to an uninterrupted run's. With an LLM call log in `<run_dir>/llm_calls`, call
`rollback_to_checkpoint(run_dir)` before building the LLM stack (the call log reads its parts when built);
the runner flushes the call log at every checkpoint.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simenv import defaults
from simenv.data.dataset import Dataset
from simenv.errors import FallbackShareExceeded
from simenv.eventlog import RunLog, event_rows, interview_row, page_row
from simenv.kernel import check_feedback, episode_rngs
from simenv.protocols import PagePolicy, UserModel, UserSession
from simenv.records import Interview, Page, PageFeedback, Persona
from simenv.rewards import RewardConfig, item_rewards, page_reward, reward_config

log = logging.getLogger(__name__)
MIN_FALLBACK_PAGES = 20  # pages shown before the fallback share is held to its limit


@dataclass(frozen=True)
class RunSummary:
    """What a call to `run_sessions` did: episodes in the run, episodes skipped on resume, pages shown now."""

    run_dir: Path
    n_episodes: int
    n_skipped: int
    n_pages_shown: int


@dataclass
class _Live:
    episode: int
    persona: Persona
    session: UserSession
    rng: np.random.Generator
    exclude: set[int]
    history: list[int]
    pages: int = 0
    done: bool = False


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
) -> RunSummary:
    """Run one session per persona (episode `e` = the e-th of `users`, default all persona ids sorted).

    `recommender` (a `simenv.protocols.PagePolicy`: every `Recommender` is one) must be fitted on `train`; it is
    called as `recommend(user_id, page_size, exclude, rng,
    history)` with `exclude` = the persona's train items plus everything shown so far and `history` = the
    items watched this session, then `observe(user_id, page, feedback)`. `config` adds entries to
    config.json (they must match on resume). Users start with a fresh memory (`reset_memory=True` for
    models that keep one) unless `persistent_memory`, so one user model can serve several policies' runs.
    `progress(episodes_done, pages_shown)` is called after every page step (for progress bars).
    `only_chunks` runs only those chunk indices (of `batch_size` episodes each, numbered over all of `users`), with the
    episodes' global numbers and seeds: a sharded engine runs disjoint chunk sets in separate directories and
    concatenates their parts in chunk order, which reproduces an unsharded run's parts.
    `max_fallback_share`: once `min_fallback_pages` pages have been decided in this call, a page step after which
    more than that share of them fell back (`PageFeedback.fallback`) raises `FallbackShareExceeded`, after the
    step's logs are written; the run directory is then as a crash leaves it (resumable from its last checkpoint).
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
    catalog = dataset.catalog
    fresh = (
        {} if persistent_memory or not _accepts(user_model.start_session, "reset_memory") else {"reset_memory": True}
    )
    n_shown_pages = 0
    n_fallback_pages = 0
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for c, chunk_users in enumerate(chunks):
        if c < done_chunks or (only_chunks is not None and c not in only_chunks):
            continue
        first = c * batch_size
        lives = []
        for offset, user in enumerate(chunk_users):
            episode = first + offset
            user_rng, policy_rng = episode_rngs(seed, episode)
            persona = personas[user]
            session = user_model.start_session(persona, episode, user_rng, **fresh)
            lives.append(_Live(episode, persona, session, policy_rng, set(persona.train_items), []))
        for page_index in range(n_pages):
            alive = [lv for lv in lives if not lv.done]
            if not alive:
                break
            pages = [_next_page(recommender, lv, page_index, page_size, policy) for lv in alive]
            feedbacks = user_model.react_batch(
                [lv.session for lv in alive], [(p, [catalog[i] for i in p.item_ids]) for p in pages]
            )
            if len(feedbacks) != len(alive):
                raise ValueError(f"user model returned {len(feedbacks)} feedbacks for {len(alive)} pages")
            events: list[dict[str, Any]] = []
            page_rows: list[dict[str, Any]] = []
            for lv, page, fb in zip(alive, pages, feedbacks, strict=True):
                check_feedback(page, fb)
                recommender.observe(lv.persona.user_id, page, fb)
                _apply(lv, page, fb, n_pages)
                rewards = item_rewards(fb, rcfg)
                events.extend(event_rows(run_log.run_id, policy, lv.episode, lv.persona.user_id, page, fb, rewards))
                page_rows.append(
                    page_row(run_log.run_id, policy, lv.episode, lv.persona.user_id, page, fb, page_reward(fb, rcfg), 0)
                )
            run_log.append("events", events)
            run_log.append("pages", page_rows)
            n_shown_pages += len(alive)
            n_fallback_pages += sum(fb.fallback for fb in feedbacks)
            if progress is not None:
                progress(first, n_shown_pages)
            if (
                max_fallback_share is not None
                and n_shown_pages >= min_fallback_pages
                and n_fallback_pages > max_fallback_share * n_shown_pages
            ):
                flush_logs(user_model)  # the failed answers on record (a resume drops them with the step's parts)
                raise FallbackShareExceeded(
                    f"policy {policy}: {n_fallback_pages} of {n_shown_pages} pages fell back "
                    f"({n_fallback_pages / n_shown_pages:.0%} > [llm] max_fallback_share {max_fallback_share:.0%})"
                )
        interviews = _interviews(user_model, [lv.session for lv in lives])
        rows = [
            interview_row(run_log.run_id, policy, lv.episode, lv.pages, iv)
            for lv, iv in zip(lives, interviews, strict=True)
        ]
        run_log.append("interviews", rows)
        flush_logs(user_model)
        run_log.checkpoint({"chunks_done": c + 1, "episodes_done": first + len(chunk_users)})
        log.info("run %s: chunk %d/%d done", run_log.run_id, c + 1, len(chunks))
        if progress is not None:
            progress(first + len(chunk_users), n_shown_pages)
    skipped = min(done_chunks * batch_size, len(order))
    return RunSummary(Path(run_dir), len(order), skipped, n_shown_pages)


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


def _next_page(recommender: PagePolicy, lv: _Live, page_index: int, page_size: int, policy: str) -> Page:
    user = lv.persona.user_id
    rec = recommender.recommend(user, page_size, lv.exclude, lv.rng, tuple(lv.history))
    ids = tuple(int(i) for i in rec.item_ids)
    bad = [i for i in ids if i in lv.exclude]
    if len(ids) != page_size or len(set(ids)) != page_size or bad:
        raise ValueError(
            f"recommender {policy!r}, user {user}, page {page_index}: returned {ids} for k={page_size} "
            f"(excluded ids {bad[:5]}, duplicates or wrong length)"
        )
    props = None if rec.propensities is None else tuple(float(p) for p in rec.propensities)
    return Page(episode=lv.episode, page_index=page_index, item_ids=ids, propensities=props)


def _apply(lv: _Live, page: Page, fb: PageFeedback, n_pages: int) -> None:
    lv.exclude.update(page.item_ids)
    lv.history.extend(r.item_id for r in fb.reactions if r.watched)
    lv.pages += 1
    lv.done = fb.left or lv.pages >= n_pages


def _interviews(user_model: UserModel, sessions: Sequence[UserSession]) -> list[Interview]:
    batch = getattr(user_model, "interview_batch", None)
    if callable(batch):
        out = list(batch(sessions))
        if len(out) != len(sessions):
            raise ValueError(f"interview_batch returned {len(out)} interviews for {len(sessions)} sessions")
        return out
    return [s.interview() for s in sessions]
