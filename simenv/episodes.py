"""One episode's page step, shared by the runner's two loops (`simenv.runner` steps a chunk page by page,
`simenv.pipeline` lets each session advance on its own): the live session's state, the page it is served, what
its feedback changes, the log rows of one page, and the fallback-share stop.

Both loops call the same functions in the same per-episode order, which is why they write the same logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simenv.errors import FallbackShareExceeded
from simenv.eventlog import event_rows, page_row
from simenv.kernel import check_feedback, episode_rngs
from simenv.protocols import PagePolicy, UserModel, UserSession
from simenv.records import Interview, Item, Page, PageFeedback, PageRequest, Persona, Recommendation
from simenv.rewards import RewardConfig, item_rewards, page_reward


@dataclass
class Live:
    """A session in progress: its episode, persona, the user model's session, the policy's generator, the items
    it may no longer be shown (train items and everything shown) and what it watched."""

    episode: int
    persona: Persona
    session: UserSession
    rng: np.random.Generator
    exclude: set[int]
    history: list[int]
    pages: int = 0
    done: bool = False


@dataclass(frozen=True)
class StepSettings:
    """What every page step of a run shares: the parts, the catalog and the run's page and reward settings."""

    recommender: PagePolicy
    user_model: UserModel
    catalog: Mapping[int, Item]
    policy: str
    run_id: str
    n_pages: int
    page_size: int
    reward: RewardConfig
    start_kwargs: Mapping[str, Any]  # passed to `start_session` (e.g. reset_memory=True)


def start(settings: StepSettings, persona: Persona, episode: int, seed: int) -> Live:
    """Begin episode `episode`: its user and policy generators from `episode_rngs(seed, episode)`."""
    user_rng, policy_rng = episode_rngs(seed, episode)
    session = settings.user_model.start_session(persona, episode, user_rng, **settings.start_kwargs)
    return Live(episode, persona, session, policy_rng, set(persona.train_items), [])


def next_page(settings: StepSettings, lv: Live) -> Page:
    """The recommender's next page for `lv` (checked: k distinct ids, none excluded)."""
    return next_pages(settings, [lv])[0]


def next_pages(settings: StepSettings, lives: Sequence[Live]) -> list[Page]:
    """`next_page` for every session in `lives`, in one `recommend_batch` call when the recommender has one
    (`BatchPagePolicy`: the same pages, one scoring pass for all sessions instead of one per session)."""
    requests = [
        PageRequest(lv.persona.user_id, settings.page_size, lv.exclude, lv.rng, tuple(lv.history)) for lv in lives
    ]
    recs = serve_pages(settings.recommender, requests, settings.policy)
    return [_checked_page(settings, lv, rec) for lv, rec in zip(lives, recs, strict=True)]


def serve_pages(policy: PagePolicy, requests: Sequence[PageRequest], name: str) -> list[Recommendation]:
    """Each request's page, in order: one `recommend_batch` call when `policy` has one, else one `recommend` call
    per request. `name` labels the error when a batch returns the wrong number of pages."""
    batch = getattr(policy, "recommend_batch", None)
    if batch is None:
        return [policy.recommend(r.user_id, r.k, r.exclude, r.rng, r.history) for r in requests]
    recs = list(batch(requests))
    if len(recs) != len(requests):
        raise ValueError(f"recommender {name!r}: recommend_batch returned {len(recs)} pages for {len(requests)}")
    return recs


def _checked_page(settings: StepSettings, lv: Live, rec: Recommendation) -> Page:
    """The page of `rec` for `lv`, checked: k distinct ids, none excluded."""
    user, page_index, page_size = lv.persona.user_id, lv.pages, settings.page_size
    ids = tuple(int(i) for i in rec.item_ids)
    bad = [i for i in ids if i in lv.exclude]
    if len(ids) != page_size or len(set(ids)) != page_size or bad:
        raise ValueError(
            f"recommender {settings.policy!r}, user {user}, page {page_index}: returned {ids} for k={page_size} "
            f"(excluded ids {bad[:5]}, duplicates or wrong length)"
        )
    props = None if rec.propensities is None else tuple(float(p) for p in rec.propensities)
    return Page(episode=lv.episode, page_index=page_index, item_ids=ids, propensities=props)


def page_items(settings: StepSettings, page: Page) -> tuple[Page, list[Item]]:
    """A page with the catalog records of its items (what `react_batch` takes)."""
    return page, [settings.catalog[i] for i in page.item_ids]


@dataclass(frozen=True)
class PageRows:
    """The log rows of one decided page."""

    events: list[dict[str, Any]]
    page: dict[str, Any]


def finish_page(settings: StepSettings, lv: Live, page: Page, fb: PageFeedback) -> PageRows:
    """Check the feedback, tell the recommender, advance the session and return the page's log rows."""
    check_feedback(page, fb)
    settings.recommender.observe(lv.persona.user_id, page, fb)
    lv.exclude.update(page.item_ids)
    lv.history.extend(r.item_id for r in fb.reactions if r.watched)
    lv.pages += 1
    lv.done = fb.left or lv.pages >= settings.n_pages
    rewards = item_rewards(fb, settings.reward)
    user, run, policy = lv.persona.user_id, settings.run_id, settings.policy
    return PageRows(
        event_rows(run, policy, lv.episode, user, page, fb, rewards),
        page_row(run, policy, lv.episode, user, page, fb, page_reward(fb, settings.reward), 0),
    )


def interviews(user_model: UserModel, sessions: Sequence[UserSession]) -> list[Interview]:
    """The exit interviews of `sessions`, batched when the user model can (`interview_batch`)."""
    batch = getattr(user_model, "interview_batch", None)
    if callable(batch):
        out = list(batch(sessions))
        if len(out) != len(sessions):
            raise ValueError(f"interview_batch returned {len(out)} interviews for {len(sessions)} sessions")
        return out
    return [s.interview() for s in sessions]


@dataclass
class FallbackGuard:
    """Counts the pages decided in a `run_sessions` call and the ones that fell back; `check` raises
    `FallbackShareExceeded` once `min_pages` were decided and more than `max_share` of them fell back."""

    policy: str
    max_share: float | None
    min_pages: int
    shown: int = 0
    fallback: int = 0

    def count(self, feedbacks: Sequence[PageFeedback]) -> None:
        self.shown += len(feedbacks)
        self.fallback += sum(fb.fallback for fb in feedbacks)

    @property
    def exceeded(self) -> bool:
        return (
            self.max_share is not None and self.shown >= self.min_pages and self.fallback > self.max_share * self.shown
        )

    def error(self) -> FallbackShareExceeded:
        assert self.max_share is not None
        return FallbackShareExceeded(
            f"policy {self.policy}: {self.fallback} of {self.shown} pages fell back "
            f"({self.fallback / self.shown:.0%} > [llm] max_fallback_share {self.max_share:.0%})"
        )
