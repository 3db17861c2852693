"""Shared fixtures for the env, runner, log and metrics tests: a tiny synthetic world, a scripted user and a small
seeded run of the batched runner.

`ScriptedUser` is a hand-made deterministic user model: it watches an item iff the item has one of the
persona's liked genres, rates watched items 5 if it also matches a second liked genre else 4, and leaves
after `leave_after` pages (or never). Its behaviour is known exactly, so tests can assert exact values.
`NoisyUser` adds seeded randomness (watch probability) to check that seeding reproduces episodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recommenders.random_policy import RandomRecommender
from simenv.data.dataset import Dataset, Split
from simenv.data.synthetic import make_synthetic
from simenv.records import Interview, Item, ItemReaction, Page, PageFeedback, Persona
from simenv.runner import run_sessions


def tiny_world(n_users: int = 30, n_items: int = 120, seed: int = 0) -> tuple[Dataset, dict[int, Persona], Split]:
    """A synthetic dataset, a leave-last-5 split, and simple personas built from the train split."""
    ds = make_synthetic(n_users=n_users, n_items=n_items, ratings_per_user=(12, 20), seed=seed)
    inter = ds.interactions
    rank_from_end = inter.groupby("user_id").cumcount(ascending=False)
    train = inter[rank_from_end >= 5].reset_index(drop=True)
    test = inter[rank_from_end < 5].reset_index(drop=True)
    split = Split(ds, train, test.iloc[:0], test, np.arange(n_users, dtype=np.int64), "leave-last-5")
    personas = {u: simple_persona(ds, train, u) for u in range(n_users)}
    return ds, personas, split


def simple_persona(ds: Dataset, train, user_id: int) -> Persona:
    rows = train[train.user_id == user_id]
    fav = str(ds.users.loc[user_id, "favourite_genre"])
    others = [g for g in ds.genre_vocabulary if g != fav]
    return Persona(
        user_id=user_id,
        activity=1 + user_id % 3,
        conformity=1 + (user_id // 3) % 3,
        diversity=1 + (user_id // 9) % 3,
        activity_value=float(len(rows)),
        conformity_value=0.5,
        diversity_value=2.0,
        liked_genres=(fav,),
        disliked_genres=(others[user_id % len(others)],),
        liked_titles=(),
        disliked_titles=(),
        taste_text=f"likes {fav}",
        train_items=tuple(int(i) for i in rows.item_id),
        train_ratings=tuple(float(r) for r in rows.rating),
    )


@dataclass
class ScriptedSession:
    persona: Persona
    leave_after: int | None
    pages: list[PageFeedback] = field(default_factory=list)

    def react(self, page: Page, items: Sequence[Item]) -> PageFeedback:
        liked = set(self.persona.liked_genres)
        reactions = []
        for item in items:
            hits = len(liked & set(item.genres))
            watched = hits > 0
            reactions.append(
                ItemReaction(item.item_id, watched, (5 if hits > 1 else 4) if watched else None, f"seen {item.title}")
            )
        left = self.leave_after is not None and page.page_index + 1 >= self.leave_after
        fb = PageFeedback(tuple(reactions), left, "done" if left else "")
        self.pages.append(fb)
        return fb

    def interview(self) -> Interview:
        shown = sum(len(p.reactions) for p in self.pages)
        watched = sum(p.n_watched for p in self.pages)
        score = 1 + round(9 * watched / shown) if shown else 1
        return Interview(self.persona.user_id, score, "scripted")


@dataclass
class ScriptedUser:
    """Deterministic user model (see the module docstring)."""

    leave_after: int | None = None
    name: str = "scripted"

    def start_session(self, persona: Persona, episode: int, rng: np.random.Generator) -> ScriptedSession:
        return ScriptedSession(persona, self.leave_after)

    def react_batch(self, sessions, pages):
        return [s.react(p, items) for s, (p, items) in zip(sessions, pages, strict=True)]


@dataclass
class NoisySession(ScriptedSession):
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    rating_values: tuple[float | None, ...] | None = None  # None: integer stars 1..5

    def react(self, page: Page, items: Sequence[Item]) -> PageFeedback:
        liked = set(self.persona.liked_genres)
        reactions = []
        for item in items:
            p = 0.7 if liked & set(item.genres) else 0.2
            watched = bool(self.rng.random() < p)
            if not watched:
                rating = None
            elif self.rating_values is None:
                rating = int(self.rng.integers(1, 6))
            else:
                rating = self.rating_values[int(self.rng.integers(len(self.rating_values)))]
            reactions.append(ItemReaction(item.item_id, watched, rating, "noisy"))
        left = bool(self.rng.random() < 0.2)
        fb = PageFeedback(tuple(reactions), left, "bored" if left else "")
        self.pages.append(fb)
        return fb


@dataclass
class NoisyUser:
    """Seeded random user: every draw comes from the rng passed to `start_session`."""

    name: str = "noisy"
    rating_values: tuple[float | None, ...] | None = None  # e.g. half stars or unrated watches (non-default rows)

    def start_session(self, persona: Persona, episode: int, rng: np.random.Generator) -> NoisySession:
        return NoisySession(persona, None, rng=rng, rating_values=self.rating_values)

    def react_batch(self, sessions, pages):
        return [s.react(p, items) for s, (p, items) in zip(sessions, pages, strict=True)]


def run_small(run_dir, batch_size, resume=False, user=None):
    """A small seeded comparison on `tiny_world()` (random recommender, noisy users); test_runner's KILLER script
    runs it in a subprocess."""
    ds, personas, split = tiny_world()
    rec = RandomRecommender().fit(split.train, ds.n_users, ds.n_items)
    return run_sessions(
        rec,
        user or NoisyUser(),
        personas,
        ds,
        split.train,
        run_dir,
        n_pages=5,
        page_size=4,
        seed=11,
        policy_name="random",
        resume=resume,
        batch_size=batch_size,
        config={"note": "test"},
    )
