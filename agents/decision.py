"""The grounded decision rule: combine the LLM's answer with non-LLM signals into watch, rating and leave.

watch logit(persona, item) = bias(persona) + sum_s w_s * z_s(persona, item)           (s in agents.signals)
                             + w_llm * llm(item)
- `llm` is +1/-1 from the LLM's watch answer. When the bias is calibrated, the LLM term is centred on the
  LLM's running yes-rate (2 * (watch - yes_rate)), so a model that says yes to everything adds no bias.
- bias: with `calibrate`, solved per persona so the mean watch probability over the whole catalog (LLM term
  excluded) equals `watch_rate[activity - 1]`: an activity-1 persona watches fewer random items than an
  activity-3 one. Without `calibrate` the bias is 0 (the `llm-only` profile: watch iff the LLM said so).
- `decide = "sample"` draws watch ~ Bernoulli(sigmoid(logit)) from the session rng; "threshold" is logit > 0.
Rating: r = (1 - rating_llm) * baseline + rating_llm * llm_rating, mapped to stars by the persona's cut points
(agents.signals.rating_plan); rating_llm == 1 takes the LLM's stars as given.
Leave: the logistic rule in `agents.signals.leave_logit`, sampled from the session rng.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from agents.config import DecisionConfig
from agents.embedding import Embedder
from agents.signals import (
    CollabPrior,
    RatingPlan,
    TrainStats,
    embedding_signal,
    genre_signal,
    leave_logit,
    rating_plan,
    sigmoid,
    solve_bias,
)
from simenv.data.dataset import Dataset
from simenv.records import Persona

if TYPE_CHECKING:
    from agents.response import ResponseModel


@dataclass(frozen=True, eq=False)
class PersonaPlan:
    """Everything per persona the per-page rule needs, precomputed once: O(1) numpy indexing per page."""

    base_logit: np.ndarray  # (n_items,) bias + weighted non-LLM signals
    bias: float
    rating: RatingPlan


class ItemVectors:
    """Catalog item-text embeddings, computed lazily (all at once when a signal needs the whole catalog)."""

    def __init__(self, dataset: Dataset, embedder: Embedder) -> None:
        self.embedder = embedder
        self._texts = [it.text for it in dataset.catalog]
        self._vectors = np.zeros((len(self._texts), embedder.dim), dtype=np.float32)
        self._done = np.zeros(len(self._texts), dtype=bool)

    def get(self, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Vectors of `item_ids`; the first miss embeds the whole catalog in one call (many small per-page calls
        were what limited a first run's speed; the catalog is small and the embedder caches it on disk)."""
        ids = np.asarray(item_ids, dtype=np.int64)
        if not self._done[ids].all():
            todo = np.flatnonzero(~self._done)
            self._vectors[todo] = self.embedder.embed([self._texts[i] for i in todo])
            self._done[todo] = True
        return self._vectors[ids]

    def all(self) -> np.ndarray:
        return self.get(np.arange(len(self._texts)))


class GroundedDecider:
    """Applies one `DecisionConfig` (see module docstring) for any persona of one dataset."""

    def __init__(
        self,
        dataset: Dataset,
        train: pd.DataFrame,
        config: DecisionConfig,
        embedder: Embedder | None = None,
        item_vectors: ItemVectors | None = None,
        stats: TrainStats | None = None,
        collab: CollabPrior | None = None,
        response: ResponseModel | None = None,
    ) -> None:
        self.dataset = dataset
        self.config = config
        if config.response and response is None:
            raise ValueError(f"profile {config.name!r} uses the fitted response model but none was given")
        self.response = response if config.response else None
        self.stats = stats or TrainStats.from_train(dataset, train)
        if config.w_embedding and embedder is None and item_vectors is None:
            raise ValueError(f"profile {config.name!r} uses the embedding signal but no embedder was given")
        self.embedder = embedder
        self.item_vectors = item_vectors or (ItemVectors(dataset, embedder) if embedder is not None else None)
        if config.w_collab and collab is None:
            collab = CollabPrior.from_train(train, dataset.n_users, dataset.n_items)
        self.collab = collab
        self._plans: dict[int, PersonaPlan] = {}
        self._fallback: GroundedDecider | None = None
        self._taste: dict[int, np.ndarray] = {}
        self._yes = 5.0  # running LLM yes count (prior 5 of 10 = 0.5)
        self._asked = 10.0

    def taste_vectors(self, personas: Sequence[Persona]) -> np.ndarray:
        """Embeddings of the personas' taste texts (one batched embed call for the ones not seen yet)."""
        todo = [p for p in personas if p.user_id not in self._taste]
        if todo:
            assert self.embedder is not None
            for p, vec in zip(todo, self.embedder.embed([p.taste_text for p in todo]), strict=True):
                self._taste[p.user_id] = vec
        return np.stack([self._taste[p.user_id] for p in personas])

    def prepare(self, personas: Sequence[Persona]) -> None:
        """Precompute every persona's plan (batching the taste-text embeddings and response predictions)."""
        if self.response is not None:
            self.response.prepare(personas)
        elif self.config.w_embedding:
            self.taste_vectors(personas)
        for p in personas:
            self.plan(p)

    @property
    def llm_yes_rate(self) -> float:
        return self._yes / self._asked

    def signal_scores(self, persona: Persona) -> dict[str, np.ndarray]:
        """The standardised non-LLM signals this config switches on, over the whole catalog."""
        cfg = self.config
        out: dict[str, np.ndarray] = {}
        if cfg.w_genre:
            out["genre"] = genre_signal(self.stats, persona)
        if cfg.w_popularity:
            out["popularity"] = self.stats.popularity
        if cfg.w_embedding:
            assert self.item_vectors is not None
            out["embedding"] = embedding_signal(self.item_vectors.all(), self.taste_vectors([persona])[0])
        if cfg.w_collab:
            assert self.collab is not None
            out["collab"] = self.collab.signal(persona)
        return out

    def plan(self, persona: Persona) -> PersonaPlan:
        cached = self._plans.get(persona.user_id)
        if cached is not None:
            return cached
        cfg = self.config
        if self.response is not None:  # the fitted model decides watch and rating (agents.response)
            fitted = self.response.plan(persona)
            plan = PersonaPlan(base_logit=fitted.watch_logit, bias=0.0, rating=fitted.rating)
            self._plans[persona.user_id] = plan
            return plan
        score = np.zeros(self.stats.n_items, dtype=np.float64)
        for name, z in self.signal_scores(persona).items():
            score += cfg.weight(name) * z
        if not 1 <= persona.activity <= 3:
            raise ValueError(f"persona {persona.user_id}: activity must be 1..3, got {persona.activity!r}")
        bias = solve_bias(score, cfg.watch_rate[persona.activity - 1]) if cfg.calibrate else 0.0
        plan = PersonaPlan(
            base_logit=(score + bias).astype(np.float32),
            bias=bias,
            rating=rating_plan(self.stats, persona, noise=cfg.rating_noise, spread=cfg.rating_spread),
        )
        self._plans[persona.user_id] = plan
        return plan

    def watch_probability(self, persona: Persona, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """P(watch) of items on a page with no LLM term (what `simrec validate` scores at item level)."""
        return sigmoid(self.plan(persona).base_logit[np.asarray(item_ids, dtype=np.int64)])

    def watch_logits(self, plan: PersonaPlan, item_ids: np.ndarray, llm_watch: np.ndarray | None) -> np.ndarray:
        logits = plan.base_logit[item_ids].astype(np.float64)
        if llm_watch is not None and self.config.w_llm:
            llm = llm_watch.astype(np.float64)
            centre = self.llm_yes_rate if self.config.calibrate else 0.5
            logits += self.config.w_llm * 2.0 * (llm - centre)
        return logits

    def observe_llm(self, llm_watch: np.ndarray) -> None:
        """Update the running yes-rate after a page (after deciding, so a page never centres on itself)."""
        self._yes += float(llm_watch.sum())
        self._asked += float(llm_watch.size)

    @property
    def has_signals(self) -> bool:
        """True when some non-LLM signal is switched on (else a failed LLM answer leaves nothing to decide by)."""
        c = self.config
        return bool(c.response) or any((c.w_genre, c.w_embedding, c.w_collab, c.w_popularity))

    def fallback_decider(self) -> GroundedDecider:
        """The decider used for a page whose LLM answer failed: this one if it has non-LLM signals, else the
        calibrated genre signal alone (so an `llm-only` profile still decides every page)."""
        if self.has_signals:
            return self
        if self._fallback is None:
            name = f"{self.config.name}+fallback"
            cfg = replace(self.config, name=name, w_llm=0.0, w_genre=1.0, calibrate=True, decide="sample")
            self._fallback = GroundedDecider(self.dataset, pd.DataFrame(), cfg, stats=self.stats)
        return self._fallback

    def watch(
        self, plan: PersonaPlan, item_ids: np.ndarray, llm_watch: np.ndarray | None, rng: np.random.Generator
    ) -> np.ndarray:
        logits = self.watch_logits(plan, item_ids, llm_watch)
        if self.config.decide == "threshold":
            return logits > 0
        return rng.random(len(logits)) < sigmoid(logits)

    def ratings(
        self, plan: PersonaPlan, item_ids: np.ndarray, llm_ratings: np.ndarray | None, rng: np.random.Generator
    ) -> np.ndarray:
        lam = self.config.rating_llm
        if llm_ratings is not None and lam >= 1.0:
            return np.clip(llm_ratings.astype(np.int64), 1, 5)
        values = plan.rating.prediction[item_ids].astype(np.float64)
        if llm_ratings is not None and lam > 0:
            values = (1 - lam) * values + lam * llm_ratings
        return plan.rating.stars(values, rng)

    def leave(
        self,
        page_index: int,
        activity: int,
        liked_share: float,
        llm_leave: bool | None,
        rng: np.random.Generator,
    ) -> tuple[bool, float]:
        c = self.config.leave
        p = float(
            sigmoid(
                leave_logit(
                    c.base, c.fatigue, c.activity, c.satisfaction, c.llm, page_index, activity, liked_share, llm_leave
                )
            )
        )
        return bool(rng.random() < p), p

    def judge_many(
        self, asks: Sequence[tuple[Persona, Sequence[int]]], rng: np.random.Generator
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Fidelity-harness hook without any LLM: only for profiles whose decisions do not use the LLM."""
        if self.config.w_llm or self.config.rating_llm:
            raise ValueError(f"profile {self.config.name!r} uses the LLM; judge through LLMUserModel instead")
        out = []
        for persona, ids in asks:
            plan = self.plan(persona)
            arr = np.asarray(ids, dtype=np.int64)
            out.append((self.watch(plan, arr, None, rng), self.ratings(plan, arr, None, rng)))
        return out
