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
Leave: logit = base + fatigue * page + activity * (activity - 2) + satisfaction * (liked share - 0.5)
(+ llm * (+1 if the LLM said leave else -1)), sampled from the session rng (`agents.config.LeaveConfig`).

`GroundedDecider.decide_batch` is the one implementation of the rule: array operations over a batch of pages (the
plans stacked in a `PlanTable`), each session drawing from its own generator in a fixed order
(`session_draws`); a single page is a batch of one (`decide_page`), and the vectorised env, the runner, the LLM
persona user and the fidelity harness all call it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol

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
    rating_plan,
    sigmoid,
    solve_bias,
)
from simenv.data.dataset import Dataset
from simenv.records import Persona


class FittedResponse(Protocol):
    """What the rule reads from a fitted response model (`agents.response.ResponseModel`): per persona a plan with
    `watch_logit` over the catalog and a `rating` plan; `prepare` batches the predictions of many personas."""

    def prepare(self, personas: Iterable[Persona]) -> None: ...

    def plan(self, persona: Persona) -> Any: ...


@dataclass(frozen=True, eq=False)
class PersonaPlan:
    """Everything per persona the per-page rule needs, precomputed once: O(1) numpy indexing per page."""

    base_logit: np.ndarray  # (n_items,) bias + weighted non-LLM signals
    bias: float
    rating: RatingPlan


class BatchAnswers(NamedTuple):
    """The LLM's page answers for a batch of B pages padded to K items; rows with `has` False had none."""

    has: np.ndarray  # (B,) bool
    watch: np.ndarray  # (B, K) bool
    ratings: np.ndarray  # (B, K) float64 stars
    leave: np.ndarray  # (B,) bool


class PlanTable:
    """The plans of the personas decided so far, stacked into (rows, n_items) arrays (row per user id, in the
    plans' own dtypes, so gathered values equal the plan's), for one fancy index per batch of pages."""

    def __init__(self, n_items: int) -> None:
        self.index: dict[int, int] = {}
        self.n = 0
        self.base_logit = np.empty((0, n_items), dtype=np.float32)
        self.prediction = np.empty((0, n_items), dtype=np.float32)
        self.cuts = np.empty((0, 4), dtype=np.float64)
        self.noise = np.empty(0, dtype=np.float64)

    def rows(
        self, personas: Sequence[Persona], plan_of: Callable[[Persona], PersonaPlan], keys: Sequence[int]
    ) -> np.ndarray:
        """Row of each persona (`keys[i]`: the id its plan is stored under), adding the plans not seen yet
        (`plan_of` builds one)."""
        index = self.index
        new = {k: p for k, p in zip(keys, personas, strict=True) if k not in index}
        if new:
            self._add([plan_of(p) for p in new.values()])
            for key in new:
                index[key] = len(index)
        return np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))

    def _add(self, plans: list[PersonaPlan]) -> None:
        m, need = len(plans), self.n + len(plans)
        if need > len(self.noise):  # grow by doubling (upcasting if a plan's arrays are wider)
            size = max(need, 2 * len(self.noise), 16)
            logit_dtype = np.result_type(self.base_logit.dtype, *(p.base_logit.dtype for p in plans))
            pred_dtype = np.result_type(self.prediction.dtype, *(p.rating.prediction.dtype for p in plans))
            self.base_logit = _grown(self.base_logit, size, logit_dtype, self.n)
            self.prediction = _grown(self.prediction, size, pred_dtype, self.n)
            self.cuts = _grown(self.cuts, size, self.cuts.dtype, self.n)
            self.noise = _grown(self.noise, size, self.noise.dtype, self.n)
        elif any(p.base_logit.dtype != self.base_logit.dtype for p in plans) or any(
            p.rating.prediction.dtype != self.prediction.dtype for p in plans
        ):
            self.base_logit = self.base_logit.astype(
                np.result_type(self.base_logit.dtype, *(p.base_logit.dtype for p in plans))
            )
            self.prediction = self.prediction.astype(
                np.result_type(self.prediction.dtype, *(p.rating.prediction.dtype for p in plans))
            )
        at = slice(self.n, self.n + m)
        self.base_logit[at] = np.stack([p.base_logit for p in plans])
        self.prediction[at] = np.stack([p.rating.prediction for p in plans])
        self.cuts[at] = np.stack([np.asarray(p.rating.cuts, dtype=np.float64) for p in plans])
        self.noise[at] = [float(p.rating.noise) for p in plans]
        self.n += m


def _grown(a: np.ndarray, rows: int, dtype: np.dtype, used: int) -> np.ndarray:
    out = np.empty((rows, *a.shape[1:]), dtype=dtype)
    out[:used] = a[:used]
    return out


def session_draws(
    rngs: Sequence[np.random.Generator], sizes: np.ndarray, width: int, sample: bool, logistic: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each session's draws for one page of `sizes[i]` items, in the order the page-by-page rule makes them:
    watch uniforms (if `sample`), logistic rating noise (rows where `logistic`; the logit of uniforms), the leave
    uniform. Returns (watch (B, width), noise (B, width), leave (B,)), padded with 0.5 / 0 past each page's size.

    One generator call per session when every page is full and the rows agree on `logistic`: consecutive
    `random(k)` calls then `random()` are one `random(total)`.
    """
    b = len(rngs)
    watch = np.full((b, width), 0.5)
    noise = np.zeros((b, width))
    leave = np.empty(b)
    with_noise = bool(logistic.all()) if b else False
    if (sizes == width).all() and (with_noise or not logistic.any()):
        k_watch = width if sample else 0
        k_noise = width if with_noise else 0
        total = k_watch + k_noise + 1
        block = np.stack([rng.random(total) for rng in rngs]) if b else np.empty((0, total))
        if sample:
            watch = block[:, :width]
        if with_noise:
            noise = _logit(block[:, k_watch : k_watch + width])
        return watch, noise, block[:, -1]
    for i, (rng, k) in enumerate(zip(rngs, sizes.tolist(), strict=True)):
        if sample:
            watch[i, :k] = rng.random(k)
        if logistic[i]:
            noise[i, :k] = _logit(rng.random(k))
        leave[i] = rng.random()
    return watch, noise, leave


def _logit(u: np.ndarray) -> np.ndarray:
    """Standard logistic draws from uniforms in [0, 1) (the inverse CDF; 0 is nudged to the smallest float)."""
    u = np.maximum(u, np.finfo(np.float64).tiny)
    return np.log(u) - np.log1p(-u)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the `k` highest scores (ties broken by position: a stable sort)."""
    scores = np.asarray(scores, dtype=np.float64)
    if not 0 <= k <= scores.size:
        raise ValueError(f"top_k: k = {k} for {scores.size} items")
    mask = np.zeros(scores.size, dtype=bool)
    mask[np.argsort(-scores, kind="stable")[:k]] = True
    return mask


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
        response: FittedResponse | None = None,
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
        self._sources: dict[int, int] = {}  # member id -> the real user id whose plan it uses (`use_sources`)
        self.table = PlanTable(self.stats.n_items)
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
        if self._sources:  # one plan per source
            personas = list({p.user_id: p for p in map(self._source_of, personas)}.values())
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

    def use_sources(self, sources: Mapping[int, int]) -> None:
        """Members of a synthetic population (`simenv.synthetic_population`, member id -> source id) decide with
        their source's plan: computed once per source, under the source's id (so a fitted response model scores
        it with the source's fold, as for the source itself)."""
        self._sources.update((int(m), int(s)) for m, s in sources.items())

    def _source_of(self, persona: Persona) -> Persona:
        """The record a persona's plan is computed from: its source's (same fields, the source's id) for a member."""
        source = self._sources.get(persona.user_id)
        return persona if source is None else replace(persona, user_id=source)

    def plan(self, persona: Persona) -> PersonaPlan:
        cached = self._plans.get(self._sources.get(persona.user_id, persona.user_id))
        if cached is not None:
            return cached
        persona = self._source_of(persona)
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

    def complete(self, personas: Sequence[Persona], item_ids: Sequence[np.ndarray]) -> None:
        """Make sure the plans hold the given items (a lazy response model predicts them now, `ResponseModel.fill`),
        and copy what was filled into the plan table's rows. A no-op for complete plans."""
        if self.response is None or not self.response.lazy:
            return
        sources = [self._source_of(p) for p in personas]
        filled = self.response.fill([(p, ids) for p, ids in zip(sources, item_ids, strict=True)])
        for persona, new in zip(sources, filled, strict=True):
            row = self.table.index.get(persona.user_id)
            if new.size and row is not None:
                plan = self.plan(persona)
                self.table.base_logit[row, new] = plan.base_logit[new]
                self.table.prediction[row, new] = plan.rating.prediction[new]

    def base_logits(self, persona: Persona, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The plan's watch logits of items (no LLM term), completing a lazy plan first."""
        ids = np.asarray(item_ids, dtype=np.int64)
        self.complete([persona], [ids])
        return self.plan(persona).base_logit[ids]

    def watch_probability(self, persona: Persona, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """P(watch) of items on a page with no LLM term (what `simrec validate` scores at item level)."""
        return sigmoid(self.base_logits(persona, item_ids))

    def expected_rating(self, persona: Persona, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The mean of the stars the persona would give items if watched (no LLM term): the rating plan's point
        prediction, what the fidelity harness measures rating RMSE on."""
        ids = np.asarray(item_ids, dtype=np.int64)
        self.complete([persona], [ids])
        rating = self.plan(persona).rating
        return rating.expected(rating.prediction[ids])

    def pick_many(
        self, asks: Sequence[tuple[Persona, Sequence[int]]], ks: Sequence[int], rng: np.random.Generator
    ) -> list[np.ndarray]:
        """Agent4Rec's protocol as peers run it: told that `ks[i]` of ask i's items are ones it has watched, the
        persona picks the `ks[i]` items with the highest watch probability (ties in page order). Deterministic:
        `rng` is unused (LLM users draw their request seeds from it)."""
        return [top_k(self.watch_probability(persona, ids), k) for (persona, ids), k in zip(asks, ks, strict=True)]

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

    def decide_page(
        self,
        persona: Persona,
        item_ids: np.ndarray,
        page_index: int,
        rng: np.random.Generator,
        llm_watch: np.ndarray | None = None,
        llm_ratings: np.ndarray | None = None,
        llm_leave: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """(watched, stars, left) of one page: `decide_batch` for a batch of one (the LLM's answer, if any, is
        given as all three of watch, ratings and leave)."""
        ids = np.asarray(item_ids, dtype=np.int64)[None]
        answers = None
        if llm_watch is not None:
            answers = BatchAnswers(
                np.ones(1, dtype=bool),
                np.asarray(llm_watch, dtype=bool)[None],
                np.asarray(llm_ratings, dtype=np.float64)[None],
                np.array([bool(llm_leave)]),
            )
        size = np.array([ids.shape[1]], dtype=np.int64)
        watched, stars, left = self.decide_batch([persona], ids, size, np.array([page_index]), [rng], answers)
        return watched[0], stars[0], bool(left[0])

    def page_logits(
        self, personas: Sequence[Persona], ids: np.ndarray, valid: np.ndarray, rows: np.ndarray
    ) -> np.ndarray:
        """(B, K) watch logits of the pages before any LLM term: the plans' base logits (one fancy index over the
        stacked plans; `rows` are the personas' rows in the plan table)."""
        return self.table.base_logit[rows, ids].astype(np.float64)

    def decide_batch(
        self,
        personas: Sequence[Persona],
        item_ids: np.ndarray,
        sizes: np.ndarray,
        page_index: np.ndarray,
        rngs: Sequence[np.random.Generator],
        answers: BatchAnswers | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(watched (B, K) bool, stars (B, K) int64, left (B,) bool) for B pages at once: page i shows
        `item_ids[i, :sizes[i]]` (padding after) to `personas[i]` on page `page_index[i]`, drawing from `rngs[i]`.

        The page rule, the only copy: watch ~ Bernoulli(sigmoid(logit)) (or logit > 0), stars from the rating
        plan's cut points (the LLM's stars blended by `rating_llm`), leave ~ Bernoulli(sigmoid(leave logit)).
        Rows are independent: a page decides the same in any batch (its generator's draws come in a fixed order,
        `session_draws`), except for the LLM's running yes rate, which advances in row order. Entries past a
        page's size are False / 0.
        """
        cfg, table = self.config, self.table
        b, width = item_ids.shape
        valid = np.arange(width) < sizes[:, None]
        ids = np.where(valid, item_ids, 0)
        sources = self._sources
        keys = [sources.get(p.user_id, p.user_id) for p in personas] if sources else [p.user_id for p in personas]
        rows = table.rows(personas, self.plan, keys)[:, None]
        self.complete(personas, [ids[i, valid[i]] for i in range(b)])
        has = np.zeros(b, dtype=bool) if answers is None else answers.has
        logits = self.page_logits(personas, ids, valid, rows)
        if answers is not None and has.any():
            # observe_llm after each answered page, in row order: the centre each page saw (integer sums, exact)
            yes = np.cumsum(np.concatenate(([self._yes], np.where(has, (answers.watch & valid).sum(axis=1), 0))))
            asked = np.cumsum(np.concatenate(([self._asked], np.where(has, sizes, 0))))
            if cfg.w_llm:
                centre = yes[:-1] / asked[:-1] if cfg.calibrate else np.full(b, 0.5)
                term = cfg.w_llm * 2.0 * (answers.watch.astype(np.float64) - centre[:, None])
                logits = np.where(has[:, None], logits + term, logits)
            self._yes, self._asked = float(yes[-1]), float(asked[-1])
        lam = cfg.rating_llm
        llm_stars = has & (lam >= 1.0)
        logistic = (table.noise[rows[:, 0]] > 0) & ~llm_stars
        sample = cfg.decide != "threshold"
        u_watch, noise, u_leave = session_draws(rngs, sizes, width, sample, logistic)
        watched = (u_watch < sigmoid(logits) if sample else logits > 0) & valid
        values = table.prediction[rows, ids].astype(np.float64)
        if answers is not None and 0 < lam < 1:
            values = np.where(has[:, None], (1 - lam) * values + lam * answers.ratings, values)
        values = np.where(logistic[:, None], values + table.noise[rows] * noise, values)
        stars = 1 + (values[:, :, None] > table.cuts[rows]).sum(axis=-1)
        if answers is not None and llm_stars.any():
            stars = np.where(llm_stars[:, None], np.clip(answers.ratings.astype(np.int64), 1, 5), stars)
        stars = np.where(valid, stars, 0)
        liked_share = (watched & (stars >= 4)).sum(axis=1) / sizes
        activity = np.fromiter((p.activity for p in personas), dtype=np.int64, count=b)
        c = cfg.leave
        x = c.base + c.fatigue * page_index + c.activity * (activity - 2) + c.satisfaction * (liked_share - 0.5)
        if answers is not None:
            x = np.where(has, x + c.llm * np.where(answers.leave, 1.0, -1.0), x)
        return watched, stars, u_leave < sigmoid(x)

    def judge_many(
        self, asks: Sequence[tuple[Persona, Sequence[int]]], rng: np.random.Generator
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Fidelity-harness hook without any LLM: each ask decided as a first page (the leave draw is discarded)."""
        if self.config.w_llm or self.config.rating_llm:
            raise ValueError(f"profile {self.config.name!r} uses the LLM; judge through LLMUserModel instead")
        return [self.decide_page(persona, np.asarray(ids, dtype=np.int64), 0, rng)[:2] for persona, ids in asks]
