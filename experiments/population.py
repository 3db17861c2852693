"""A Mesa population of personas facing one recommender, with closed-loop retraining between rounds.

Each round, every persona logs in with a probability set by its activity trait, gets one page from the
current recommender and reacts through the shared `UserModel` protocol (one batched call for all active
users). Each log-in is a new session (a new episode id) of the same user model, so a persona who left in one
round comes back in a later one with its memory carried over, as in Agent4Rec. Between rounds the recommender
is refit on the real train split plus every simulated positive so far: the feedback loop Agent4Rec ran by hand
with shell scripts. A `DataCollector` records per-round
P_view, P_like, catalog coverage, genre entropy of watched items (filter-bubble signal) and the
popularity of what was recommended (popularity bias).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mesa
import numpy as np
import pandas as pd

from experiments.config import DEFAULTS
from simenv import defaults
from simenv.data.dataset import Dataset
from simenv.protocols import Recommender, UserModel, UserSession
from simenv.records import Page, PageFeedback, Persona


@dataclass(frozen=True)
class PopulationConfig:
    """Knobs of the population model. `login_prob[g-1]` is the chance a persona of activity group g logs in.
    Defaults are the `[population]` section's (`simrec population` passes the section and `[simulation]`)."""

    rounds: int = DEFAULTS.population.rounds
    page_size: int = defaults.PAGE_SIZE
    login_prob: tuple[float, float, float] = DEFAULTS.population.login_prob
    retrain: bool = DEFAULTS.population.retrain
    positive_rating: int = 4


class PersonaAgent(mesa.Agent):
    """One persona in the population: its current session (None before its first log-in) and everything it has
    been shown so far."""

    def __init__(self, model: PopulationModel, persona: Persona) -> None:
        super().__init__(model)
        self.persona = persona
        self.session: UserSession | None = None
        self.seen: set[int] = set(persona.train_items)
        self.history: list[int] = []


class PopulationModel(mesa.Model):
    """Rounds of log-in, recommend, react and remember; the recommender is retrained between rounds."""

    def __init__(
        self,
        dataset: Dataset,
        train: pd.DataFrame,
        personas: list[Persona],
        user_model: UserModel,
        make_recommender: Callable[[], Recommender],
        config: PopulationConfig,
        rng: np.random.Generator,
    ) -> None:
        super().__init__(rng=rng)
        self.dataset = dataset
        self.train = train
        self.user_model = user_model
        self.make_recommender = make_recommender
        self.config = config
        self.recommender = make_recommender().fit(train, dataset.n_users, dataset.n_items)
        self.simulated: list[tuple[int, int, float, int]] = []
        self.round_stats: dict[str, float] = {}
        self.recommended_counts = np.zeros(dataset.n_items, dtype=np.int64)
        popularity = np.bincount(train["item_id"].to_numpy(), minlength=dataset.n_items).astype(np.float64)
        self.item_popularity = popularity / max(popularity.max(), 1.0)
        self.n_sessions = 0  # episode ids: one per log-in, in log-in order
        for persona in personas:
            PersonaAgent(self, persona)
        self.datacollector = mesa.DataCollector(
            model_reporters={
                name: (lambda m, key=name: m.round_stats.get(key, float("nan")))
                for name in ("active_users", "P_view", "P_like", "coverage", "genre_entropy", "popularity_bias")
            }
        )

    def step(self) -> None:
        """One round: active personas get a page each, react in one batch, and the loop closes by retraining."""
        agents = [a for a in self.agents if self.rng.random() < self.config.login_prob[a.persona.activity - 1]]
        agents.sort(key=lambda a: a.persona.user_id)
        pages: list[tuple[Page, list]] = []
        for agent in agents:
            agent.session = self.user_model.start_session(agent.persona, self.n_sessions, self.rng)
            rec = self.recommender.recommend(
                agent.persona.user_id, self.config.page_size, agent.seen, self.rng, history=tuple(agent.history)
            )
            page = Page(episode=self.n_sessions, page_index=0, item_ids=rec.item_ids)
            self.n_sessions += 1
            pages.append((page, [self.dataset.item(i) for i in rec.item_ids]))
        sessions = [a.session for a in agents if a.session is not None]
        feedbacks = self.user_model.react_batch(sessions, pages) if agents else []
        for agent, (page, _), feedback in zip(agents, pages, feedbacks, strict=True):
            self._remember(agent, page, feedback)
        self.round_stats = self._round_stats(pages, feedbacks)
        self.datacollector.collect(self)
        if self.config.retrain and self.simulated:
            self._retrain()

    def _remember(self, agent: PersonaAgent, page: Page, feedback: PageFeedback) -> None:
        self.recommender.observe(agent.persona.user_id, page, feedback)
        agent.seen.update(page.item_ids)
        for reaction in feedback.reactions:
            self.recommended_counts[reaction.item_id] += 1
            if reaction.watched:
                agent.history.append(reaction.item_id)
                if reaction.rating is not None and reaction.rating >= self.config.positive_rating:
                    self.simulated.append(
                        (agent.persona.user_id, reaction.item_id, float(reaction.rating), 10**12 + self.steps)
                    )

    def _retrain(self) -> None:
        extra = pd.DataFrame(self.simulated, columns=["user_id", "item_id", "rating", "timestamp"]).astype(
            self.train.dtypes.to_dict()
        )
        combined = pd.concat([self.train, extra], ignore_index=True)
        self.recommender = self.make_recommender().fit(combined, self.dataset.n_users, self.dataset.n_items)

    def _round_stats(self, pages: list[tuple[Page, list]], feedbacks: list[PageFeedback]) -> dict[str, float]:
        shown = [r for f in feedbacks for r in f.reactions]
        watched = [r.item_id for r in shown if r.watched]
        n_shown = max(len(shown), 1)
        genres = self.dataset.genre_matrix[watched].sum(axis=0) if watched else np.zeros(1)
        shown_ids = [i for page, _ in pages for i in page.item_ids]
        return {
            "active_users": float(len(pages)),
            "P_view": len(watched) / n_shown,
            "P_like": sum(r.liked for r in shown) / n_shown,
            "coverage": float((self.recommended_counts > 0).mean()),
            "genre_entropy": genre_entropy(genres),
            "popularity_bias": float(self.item_popularity[shown_ids].mean()) if shown_ids else float("nan"),
        }


def genre_entropy(genre_counts: np.ndarray) -> float:
    """Shannon entropy (bits) of a genre count vector; 0 when everything watched is one genre."""
    total = genre_counts.sum()
    if total <= 0:
        return 0.0
    p = genre_counts[genre_counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def run_population(model: PopulationModel, rounds: int) -> pd.DataFrame:
    """Run `rounds` steps and return the DataCollector's per-round table (round numbers from 1)."""
    for _ in range(rounds):
        model.step()
    table = model.datacollector.get_model_vars_dataframe().reset_index(drop=True)
    table.insert(0, "round", np.arange(1, len(table) + 1))
    return table
