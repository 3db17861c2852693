"""The fitted response model: the one decision core every simulated user draws its watch and rating from.

What it is (RecSim's "response model", fitted to real consumption instead of set by hand):
- Features of (persona, item) come from the TRAIN split only (agents.features).
- watch: a gradient-boosted classifier (scikit-learn's HistGradientBoostingClassifier, seeded) of "the item is
  among the user's VALIDATION ratings", fitted on candidate impressions: the items recommenders actually show
  (each candidate source's top-`top_n` unseen items per user — standard recommenders when the caller passes
  them, else the train-only scorers themselves) plus `n_random` random unseen items.
- Cross-fitting: users are dealt into `folds` folds; a persona's probabilities come from the model fitted on
  the OTHER folds' users, so no persona is scored by a model that saw its own validation ratings.
- Level: the classifier's probability is P(in valid | shown). `level = "heldout"` (default) scales it by
  `heldout_scale` (valid and test are equal random shares of the held-out ratings in the Agent4Rec split, so
  2.0) to the held-out consumption level, P(in valid or test | shown); `level = "valid"` keeps it.
- rating (given watch): agents.rating_model: a like classifier of "the VALIDATION rating is >= 4" on the same
  features plus the rating baseline (agents.signals.rating_plan) and, with `rating_factors` > 0, the persona's
  predicted rating by a factorisation of the TRAIN ratings (agents.rating_factors); stars are drawn from an
  ordinal distribution on its logit whose cut points are fitted by maximum likelihood on the fit users'
  out-of-fold logits, so P(stars >= 4) is the like classifier's probability. like = stars >= 4.
- Position on the page and page index are not identifiable from rating logs (no impressions); they enter the
  user models as documented priors, not fitted weights.
Scores on TEST are never read here; `simrec validate` (experiments.validate) does that.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier

from agents.config import ResponseConfig
from agents.features import COLLAB, PairFeatures, feature_names
from agents.rating_factors import RatingFactors, fit_rating_factors
from agents.rating_model import ORDINAL_SCALE, fit_like_classifier, fit_ordinal_cuts, like_logit
from agents.signals import RatingPlan, TrainStats, persona_arrays, rating_plan
from simenv.data.cache import mark_used
from simenv.data.dataset import Split
from simenv.records import Persona

if TYPE_CHECKING:
    from agents.decision import ItemVectors

log = logging.getLogger(__name__)
MODEL_VERSION = 4  # 3: like classifier + ordinal stars (agents.rating_model); 4: + the rating-factors column
# Watch probabilities are clipped to [1 - MAX_WATCH, MAX_WATCH] before the logit. The floor must sit below the
# real consumption rate of the least likely items (ML-100K: ~0.006 for the bottom half of unseen items); a floor
# of 0.02 lifted random and under-trained policies' P_view by ~10% and their sim/real ratio with it.
MAX_WATCH = 0.999


@dataclass(frozen=True, eq=False)
class ResponsePlan:
    """One persona's fitted responses over the whole catalog."""

    watch_probability: np.ndarray  # (n_items,) float32, P(watch | shown) at the configured level
    watch_logit: np.ndarray  # (n_items,) float32, logit of the clipped probability
    rating: RatingPlan  # like logit per item, the star distribution's cut points, noise = its logistic scale


@dataclass
class FoldModel:
    """The watch and like classifiers fitted on the users outside one fold."""

    watch: HistGradientBoostingClassifier
    rating: HistGradientBoostingClassifier  # P(rating >= 4 | watched), agents.rating_model
    n_rows: int
    positive_rate: float


@dataclass
class FitReport:
    """What the fit saw: rows, positives, per-fold sizes (written next to the cache entry)."""

    n_users: int
    n_rows: int
    positive_rate: float
    n_rating_rows: int
    features: tuple[str, ...]
    sources: tuple[str, ...]
    cuts: list[float] = field(default_factory=list)


Candidates = Mapping[str, Mapping[int, np.ndarray]]  # source name -> user id -> ranked unseen item ids


@dataclass(frozen=True)
class FitSources:
    """What the fit takes from the recommenders: each source's top unseen items per user (fit impressions) and,
    with `ResponseConfig.source_ranks`, each source's (n_users, n_items) log rank of every item (features)."""

    candidates: Candidates
    rankings: Mapping[str, np.ndarray] = field(default_factory=dict)


def user_folds(users: np.ndarray, folds: int, seed: int) -> dict[int, int]:
    """Deal users into folds with a seeded permutation (the same users and seed give the same folds)."""
    rng = np.random.default_rng([seed, 17])
    order = rng.permutation(np.asarray(users, dtype=np.int64))
    return {int(u): i % folds for i, u in enumerate(order)}


def scorer_candidates(features: PairFeatures, matrix: np.ndarray, seen: np.ndarray, top_n: int) -> list[np.ndarray]:
    """The top-`top_n` unseen items by each train-only scorer (popularity and the collaborative scores):
    the default impressions when no recommender's candidates are given."""
    out = []
    for name in ("log_pop", *sorted(COLLAB & set(features.names)), "genre"):
        if name in features.names:
            score = matrix[:, features.names.index(name)].astype(np.float64).copy()
            score[seen] = -np.inf
            out.append(np.argsort(-score, kind="stable")[:top_n])
    return out


class ResponseModel:
    """Cross-fitted watch and rating models (see module docstring); `plan(persona)` is what user models read."""

    def __init__(
        self,
        config: ResponseConfig,
        features: PairFeatures,
        folds: dict[int, int],
        models: list[FoldModel],
        cuts: np.ndarray,
        report: FitReport,
        factors: RatingFactors | None = None,
    ) -> None:
        self.config = config
        self.features = features
        self.folds = folds
        self.models = models
        self.cuts = cuts
        self.report = report
        self.factors = factors  # the rating factorisation (None when `rating_factors` = 0)
        self._plans: dict[int, ResponsePlan] = {}
        # lazy: plans start empty (NaN) and `fill` predicts only the items asked for (see `fill`)
        self.lazy = False
        # fill's feature rows of the personas asked last: a session asks page after page, and a runner step asks
        # for every session it steps (validate's STEP_BATCH), so this must hold at least one step's personas (ML-1M:
        # ~0.3 MB a persona)
        self.feature_cache = 1024
        self._rows: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    @property
    def name(self) -> str:
        return f"response[{self.config.feature_set}]"

    def fold_of(self, persona: Persona) -> int:
        """The fold whose model does NOT score this persona is the persona's own; unknown users get fold 0's
        model's complement deterministically (user id modulo folds)."""
        return self.folds.get(persona.user_id, persona.user_id % self.config.folds)

    def plan(self, persona: Persona) -> ResponsePlan:
        cached = self._plans.get(persona.user_id)
        if cached is None:
            self.prepare([persona])
            cached = self._plans[persona.user_id]
        return cached

    def prepare(self, personas: Iterable[Persona], chunk: int = 64) -> None:
        """Compute the plans of personas not seen yet, predicting in chunks per fold model (a lazy model only
        allocates them: `fill` predicts what is asked for)."""
        todo: dict[int, list[Persona]] = {}
        for p in personas:
            if p.user_id not in self._plans:
                todo.setdefault(self.fold_of(p), []).append(p)
        n = self.features.dataset.n_items
        if self.lazy:
            for p in (p for group in todo.values() for p in group):
                empty = np.full(n, np.nan, dtype=np.float32)
                self._plans[p.user_id] = ResponsePlan(
                    empty, empty.copy(), RatingPlan(empty.copy(), self.cuts, ORDINAL_SCALE)
                )
            return
        for fold, group in todo.items():
            model = self.models[fold]
            for start in range(0, len(group), chunk):
                part = group[start : start + chunk]
                x = np.concatenate([self.features.matrix(p) for p in part])
                extra = np.concatenate([rating_columns(self.features.stats, self.factors, p) for p in part])
                prob, logit, rating = self._predict(model, x, extra)
                for i, persona in enumerate(part):
                    rows = slice(i * n, (i + 1) * n)
                    self._plans[persona.user_id] = ResponsePlan(
                        prob[rows], logit[rows], RatingPlan(rating[rows], self.cuts, ORDINAL_SCALE)
                    )

    def _predict(self, model: FoldModel, x: np.ndarray, extra: np.ndarray) -> tuple[np.ndarray, ...]:
        """(watch probability, its logit, like logit) as float32 for feature rows `x` (and the rating columns
        `extra`): the one place plans are predicted, so `fill` gives exactly what `prepare` gives (rows are
        independent in the boosted trees)."""
        prob = np.clip(self.config.scale * model.watch.predict_proba(x)[:, 1], 1.0 - MAX_WATCH, MAX_WATCH)
        rating = like_logit(model.rating, np.column_stack([x, extra]))
        return prob.astype(np.float32), np.log(prob / (1.0 - prob)).astype(np.float32), rating.astype(np.float32)

    def fill(self, asks: Sequence[tuple[Persona, np.ndarray]]) -> list[np.ndarray]:
        """Predict the items of each (persona, item ids) ask that its plan lacks, one call per fold model; returns
        the item ids newly filled per ask. A no-op for complete plans, so callers may always call it.

        Why lazy: `simrec validate`'s leave-one-source-out users score a few policies, whose sessions show each
        persona tens of items; predicting the whole catalog for every persona was most of each refit's time."""
        todo: dict[int, list[tuple[Persona, ResponsePlan, np.ndarray]]] = {}
        out = []
        for persona, ids in asks:
            plan = self.plan(persona)
            ids = np.unique(np.asarray(ids, dtype=np.int64))
            missing = ids[np.isnan(plan.watch_logit[ids])]
            out.append(missing)
            if missing.size:
                todo.setdefault(self.fold_of(persona), []).append((persona, plan, missing))
        for fold, group in todo.items():
            rows = [self._feature_rows(persona) for persona, _, _ in group]
            x = np.concatenate([r[0][missing] for r, (_, _, missing) in zip(rows, group, strict=True)])
            extra = np.concatenate([r[1][missing] for r, (_, _, missing) in zip(rows, group, strict=True)])
            prob, logit, rating = self._predict(self.models[fold], x, extra)
            start = 0
            for _, plan, missing in group:
                at = slice(start, start + missing.size)
                plan.watch_probability[missing] = prob[at]
                plan.watch_logit[missing] = logit[at]
                plan.rating.prediction[missing] = rating[at]
                start += missing.size
        return out

    def _feature_rows(self, persona: Persona) -> tuple[np.ndarray, np.ndarray]:
        """The persona's catalog feature matrix and rating columns, kept for the last `feature_cache` personas
        asked."""
        rows = self._rows.get(persona.user_id)
        if rows is None:
            rows = (self.features.matrix(persona), rating_columns(self.features.stats, self.factors, persona))
            self._rows[persona.user_id] = rows
            if len(self._rows) > self.feature_cache:
                self._rows.popitem(last=False)
        else:
            self._rows.move_to_end(persona.user_id)
        return rows

    def watch_probability(self, persona: Persona, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(item_ids, dtype=np.int64)
        if self.lazy:
            self.fill([(persona, ids)])
        return self.plan(persona).watch_probability[ids]


def rating_columns(stats: TrainStats, factors: RatingFactors | None, persona: Persona) -> np.ndarray:
    """The like model's columns beyond the pair features, (n_items, 1 or 2) float32: the rating baseline
    (agents.signals.rating_plan) and, with `factors`, the persona's factorisation prediction; TRAIN only."""
    columns = [rating_plan(stats, persona).prediction.astype(np.float32)]
    if factors is not None:
        columns.append(factors.predict(*persona_arrays(persona)))
    return np.column_stack(columns)


def fit_response_model(
    split: Split,
    personas: Mapping[int, Persona],
    config: ResponseConfig | None = None,
    candidates: Candidates | None = None,
    item_vectors: ItemVectors | None = None,
    rankings: Mapping[str, np.ndarray] | None = None,
    base: ResponseModel | None = None,
) -> ResponseModel:
    """Fit the cross-fitted response model on `personas` (features from split.train, targets from split.valid).

    `candidates` maps a source name (e.g. a recommender) to each user's ranked unseen items; the first `top_n`
    of each become fit impressions. Without it, the train-only scorers' top items stand in. `rankings` (source
    -> (n_users, n_items) log rank among unseen items) adds one rank feature per source. `base`: a model fitted on
    the same split and personas with the same feature set, seed and rating factors but other sources (validate's
    main fit, for its leave-one-source-out fits): its train-only scorers and rating factorisation are reused.
    """
    config = config or ResponseConfig()
    population = [personas[u] for u in sorted(personas)]
    if not population:
        raise ValueError("fit_response_model: no personas to fit on")
    if base is not None and _train_parts_key(base.config) == _train_parts_key(config):
        features, factors = base.features.with_rankings(rankings), base.factors
        if item_vectors is not None:
            features.item_vectors = item_vectors
    else:
        features = PairFeatures(
            split.dataset,
            split.train,
            feature_names(config.feature_set),
            item_vectors=item_vectors,
            seed=config.seed,
            rankings=rankings,
        )
        factors = None
        if config.rating_factors:
            factors = fit_rating_factors(split.train, split.dataset.n_items, config.rating_factors, seed=config.seed)
    features.set_conformity_scale(population)
    folds = user_folds(np.array(sorted(personas)), config.folds, config.seed)
    blocks = _fit_blocks(features, factors, population, _user_items(split.valid), folds, config, candidates)
    models = [_fit_fold(blocks, fold, config) for fold in range(config.folds)]
    cuts = _fit_star_cuts(blocks, models)
    x_rows = sum(len(b.label) for b in blocks)
    report = FitReport(
        n_users=len(population),
        n_rows=x_rows,
        positive_rate=float(sum(b.label.sum() for b in blocks) / max(x_rows, 1)),
        n_rating_rows=sum(len(b.stars) for b in blocks),
        features=features.names,
        sources=tuple(sorted(candidates)) if candidates else ("scorers",),
        cuts=[float(c) for c in cuts],
    )
    log.info("response model fitted: %s", report)
    return ResponseModel(config, features, folds, models, cuts, report, factors)


def _train_parts_key(config: ResponseConfig) -> tuple:
    """What the train-only parts of a fit (pair-feature scorers, rating factorisation) depend on besides the data."""
    return (config.feature_set, config.seed, config.rating_factors)


class _Block(NamedTuple):
    """One fit user's rows: its fold, watch features and labels of its impressions, rating features and stars."""

    fold: int
    x: np.ndarray
    label: np.ndarray
    rating_x: np.ndarray
    stars: np.ndarray


def _fit_blocks(
    features: PairFeatures,
    factors: RatingFactors | None,
    population: Sequence[Persona],
    valid: Mapping[int, Mapping[int, float]],
    folds: Mapping[int, int],
    config: ResponseConfig,
    candidates: Candidates | None,
) -> list[_Block]:
    """Each fit user's impressions (candidate sources' top items plus random unseen ones, one seeded draw per user
    in user order), labelled by the VALIDATION ratings, and its rated items' features and stars."""
    rng = np.random.default_rng([config.seed, 23])
    n = features.dataset.n_items
    blocks = []
    for persona in population:
        matrix = features.matrix(persona)
        seen = np.asarray(persona.train_items, dtype=np.int64)
        if candidates:
            lists = [
                np.asarray(c.get(persona.user_id, ()), dtype=np.int64)[: config.top_n] for c in candidates.values()
            ]
        else:
            lists = scorer_candidates(features, matrix, seen, config.top_n)
        unseen = np.setdiff1d(np.arange(n), seen)
        lists.append(rng.choice(unseen, size=min(config.n_random, unseen.size), replace=False))
        shown = np.setdiff1d(np.unique(np.concatenate(lists)), seen)
        held = valid.get(persona.user_id, {})
        label = np.array([i in held for i in shown.tolist()], dtype=np.int8)
        rated = np.fromiter(held.keys(), dtype=np.int64, count=len(held))
        stars = np.fromiter(held.values(), dtype=np.float64, count=len(held))
        rating_x = np.column_stack([matrix[rated], rating_columns(features.stats, factors, persona)[rated]])
        blocks.append(_Block(folds[persona.user_id], matrix[shown], label, rating_x, stars))
    return blocks


def _fit_fold(blocks: Sequence[_Block], fold: int, config: ResponseConfig) -> FoldModel:
    """The watch and like classifiers fitted on the users of every fold but `fold` (which they will score)."""
    rows = [b for b in blocks if b.fold != fold]
    x = np.concatenate([b.x for b in rows])
    y = np.concatenate([b.label for b in rows])
    rx = np.concatenate([b.rating_x for b in rows])
    ry = np.concatenate([b.stars for b in rows])
    if y.min() == y.max():
        raise ValueError(f"response fit: fold {fold} has no {'positive' if y.max() == 0 else 'negative'} rows")
    watch = HistGradientBoostingClassifier(**_boosting(config)).fit(x, y)
    rating = fit_like_classifier(rx, ry, _boosting(config))
    return FoldModel(watch, rating, len(y), float(y.mean()))


def _boosting(config: ResponseConfig) -> dict:
    """The shared, seeded settings of both gradient-boosted models (no early stopping: no holdout is drawn)."""
    return {
        "max_iter": config.max_iter,
        "learning_rate": config.learning_rate,
        "max_leaf_nodes": config.max_leaf_nodes,
        "min_samples_leaf": config.min_samples_leaf,
        "l2_regularization": config.l2_regularization,
        "early_stopping": False,
        "random_state": config.seed,
    }


def _fit_star_cuts(blocks: Sequence[_Block], models: list[FoldModel]) -> np.ndarray:
    """Cut points of the star distribution, fitted on the fit users' out-of-fold like logits and real stars.

    One predict call per fold model, not per user: a call costs ~70 us per tree whatever its rows (ML-1M: 63 s of
    a 109 s fit per user, 1 s per fold); the logits are put back in user order, as the cut fit reads them."""
    rated = [b for b in blocks if len(b.stars)]
    logits: list[np.ndarray] = [np.empty(0)] * len(rated)
    for fold, model in enumerate(models):
        mine = [i for i, b in enumerate(rated) if b.fold == fold]
        if not mine:
            continue
        fold_logits = like_logit(model.rating, np.concatenate([rated[i].rating_x for i in mine]))
        ends = np.cumsum([len(rated[i].stars) for i in mine])
        for i, part in zip(mine, np.split(fold_logits, ends[:-1]), strict=True):
            logits[i] = part
    return fit_ordinal_cuts(np.concatenate(logits), np.concatenate([b.stars for b in rated]))


def _user_items(frame: pd.DataFrame) -> dict[int, dict[int, float]]:
    out: dict[int, dict[int, float]] = {}
    for u, i, r in zip(
        frame["user_id"].to_numpy(np.int64).tolist(),
        frame["item_id"].to_numpy(np.int64).tolist(),
        frame["rating"].to_numpy(np.float64).tolist(),
        strict=True,
    ):
        out.setdefault(u, {})[i] = r
    return out


def response_cache_key(split: Split, config: ResponseConfig, candidate_key: str, users: Sequence[int]) -> str:
    """Cache key: dataset, split protocol and sizes, fitted users, config and candidate sources."""
    data = {
        "version": MODEL_VERSION,
        "dataset": split.dataset.name,
        "protocol": split.protocol,
        "sizes": [len(split.train), len(split.valid)],
        "valid_hash": hashlib.sha256(
            np.ascontiguousarray(split.valid[["user_id", "item_id", "rating"]].to_numpy(np.float64)).tobytes()
        ).hexdigest()[:16],
        "users": hashlib.sha256(np.asarray(sorted(users), dtype=np.int64).tobytes()).hexdigest()[:16],
        "config": asdict(config),
        "candidates": candidate_key,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_or_fit(
    cache_dir: Path | None,
    split: Split,
    personas: Mapping[int, Persona],
    config: ResponseConfig,
    candidates: Callable[[], FitSources] | None = None,
    candidate_key: str = "scorers",
    item_vectors: ItemVectors | None = None,
    progress: Callable[[str], None] | None = None,
    lazy: bool = False,
    base: Callable[[], ResponseModel] | None = None,
) -> ResponseModel:
    """`fit_response_model`, cached as a pickle under `cache_dir` keyed by `response_cache_key`.

    `candidates` and `base` (a model whose train-only parts a fit may reuse, see `fit_response_model`) are called
    only on a cache miss (building them may mean training recommenders); `progress` receives one line per phase of
    a fit (nothing on a cache hit). A fresh fit predicts and caches every fitted user's plan, unless `lazy`: then
    plans are predicted item by item as sessions ask (`ResponseModel.fill`) and the cache holds the model alone
    (the same model: a later non-lazy load predicts whole plans from it)."""
    say = progress or (lambda message: None)

    def fit() -> ResponseModel:
        sources = candidates() if candidates else FitSources({})
        say(f"fit impressions ready ({time.perf_counter() - start:.0f} s); fitting {config.folds} folds")
        return fit_response_model(
            split,
            personas,
            config,
            sources.candidates or None,
            item_vectors,
            sources.rankings or None,
            base() if base else None,
        )

    start = time.perf_counter()
    if cache_dir is None:
        model = fit()
        model.lazy = lazy
        return model
    key = response_cache_key(split, config, candidate_key, list(personas))
    path = Path(cache_dir) / f"{split.dataset.name}-{config.feature_set}-{key}.pkl"
    if path.is_file():
        model = _load_fitted(path, config, item_vectors)
        mark_used(path)
        model.lazy = lazy
        return model
    say(f"fitting the {config.feature_set} response model on {len(personas)} users (once; cached in {path.parent})")
    start = time.perf_counter()
    model = fit()
    model.lazy = lazy
    if lazy:
        say(f"folds fitted ({time.perf_counter() - start:.0f} s); plans are predicted as sessions ask")
    else:
        say(f"folds fitted ({time.perf_counter() - start:.0f} s); predicting every user's plan")
        model.prepare(personas.values())  # every fitted user's plan is cached too: predicting is the slow part
        say(f"response model ready ({time.perf_counter() - start:.0f} s)")
    _save_fitted(path, model)
    return model


def _load_fitted(path: Path, config: ResponseConfig, item_vectors: ItemVectors | None) -> ResponseModel:
    """A model `_save_fitted` wrote, with its users' plans; `item_vectors` (never pickled) put back."""
    with path.open("rb") as fh:
        fitted = pickle.load(fh)
    model = ResponseModel(
        config,
        fitted["features"],
        fitted["folds"],
        fitted["models"],
        fitted["cuts"],
        fitted["report"],
        fitted["factors"],
    )
    model._plans.update(fitted["plans"])
    if item_vectors is not None:
        model.features.item_vectors = item_vectors
    return model


def _save_fitted(path: Path, model: ResponseModel) -> None:
    """Pickle the fitted model and its plans to `path` (written aside, then moved: a reader never sees half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    vectors, model.features.item_vectors = model.features.item_vectors, None  # the embedder is not pickled
    tmp = path.with_suffix(".tmp")
    try:
        with tmp.open("wb") as fh:
            pickle.dump(
                {
                    "features": model.features,
                    "folds": model.folds,
                    "models": model.models,
                    "cuts": model.cuts,
                    "report": model.report,
                    "factors": model.factors,
                    "plans": model._plans,
                },
                fh,
                protocol=pickle.HIGHEST_PROTOCOL,
            )
        tmp.replace(path)
    finally:
        model.features.item_vectors = vectors


__all__ = [
    "FitReport",
    "FitSources",
    "ResponseConfig",
    "ResponseModel",
    "ResponsePlan",
    "TrainStats",
    "fit_response_model",
    "load_or_fit",
    "user_folds",
]
