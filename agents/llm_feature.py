"""The LLM's watch answer as a fitted feature of the response model: what the LLM adds is measured, not assumed.

- The feature: the LLM's watch answer (1 yes / 0 no) for a (persona, item), asked as the persona's first page
  with no memories (template page_decision, `probe_page_size` items per call), cached per (persona, item) for
  the run; the [llm] cache keeps the answers on disk. A probe the structured layer cannot use after its repairs
  is counted and filled with the fit sample's yes rate (the feature's expected value).
- The stack (second-stage logistic regression, scikit-learn):
      logit P(valid | shown) = a * logit P_response(valid | shown) + b * llm_watch + c
  fitted on VALIDATION membership over a seeded sample of split users' fit impressions (the response model's
  candidate impressions: recommenders' top items plus random unseen ones). Per user at most `max_positives`
  valid items and `n_negatives` others are probed, weighted by the inverse of their sampling rate so the fit
  sees the impression distribution. P_response is already out of fold (agents.response cross-fits over users);
  the stack is cross-fitted over the same user folds: a persona is scored with the weights fitted on the other
  folds' users. b is the LLM's weight given the response model's score; a and c (the response model's
  recalibration on this sample) are reported but not applied, so the decision changes only by the LLM's term:
      logit P_stacked(valid | shown) = logit P_response(valid | shown) + b * (llm_watch - yes_rate)
  with yes_rate the fit sample's (weighted) share of yes answers: an answer that is always the same adds nothing,
  and with b = 0 the decisions are exactly the `fitted` profile's. The probability is scaled to the response
  model's level as the response model's is: clip(scale * sigmoid(logit)).
- The LLM earns its place: the fitted b is applied only when, out of fold on the validation sample, this rule
  lowers the weighted log-loss of the response model alone with a user-bootstrap 95% interval above 0; otherwise
  decisions are the response model's and ask the LLM nothing (the fitted values and the candidate rule's scores
  are still reported). Answers that are noise fail this test.
- `StackedDecider` is the grounded decider whose watch logits are the stacked ones (the LLM user's page policy
  calls `watch_logits`; the fidelity harness and `simrec validate` read `watch_probability`).
Test answers are never read here; `simrec validate` scores the stacked probability on TEST.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

from agents.config import LLMFeatureConfig
from agents.decision import GroundedDecider
from agents.llm_user.prompts import PromptBuilder
from agents.response import MAX_WATCH, ResponseModel, scorer_candidates
from simenv.data.dataset import Split
from simenv.llm.schemas import check_page_decision
from simenv.llm.structured import ask_json_batch
from simenv.llm.types import LLM
from simenv.records import Persona

log = logging.getLogger(__name__)
Candidates = Mapping[str, Mapping[int, np.ndarray]]  # source name -> user id -> ranked unseen item ids
LOGIT_EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(p / (1.0 - p))


def response_logit_valid(response: ResponseModel, persona: Persona, items: np.ndarray) -> np.ndarray:
    """logit P_response(valid | shown): the response plan's probability taken back to the valid level (a fit
    user's plan is out of fold: agents.response cross-fits over users)."""
    prob = response.plan(persona).watch_probability[items].astype(np.float64)
    return logit(prob / response.config.scale)


class LLMAnswers:
    """The LLM's cached watch answers per (persona, item): page_decision asked as page 1 with no memories."""

    def __init__(
        self, llm: LLM, prompts: PromptBuilder, page_size: int = 4, max_repairs: int = 1, seed: int = 0, chunk: int = 32
    ) -> None:
        self.llm = llm
        self.chunk = chunk  # requests per batched call
        self.prompts = prompts
        self.page_size = page_size
        self.max_repairs = max_repairs
        self.seed = seed
        self._answers: dict[tuple[int, int], float] = {}  # 1.0 yes, 0.0 no, NaN unusable
        self.n_calls = 0
        self.n_failed_calls = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def n_failed_items(self) -> int:
        return int(sum(np.isnan(v) for v in self._answers.values()))

    def yes_rate(self) -> float:
        values = np.array([v for v in self._answers.values() if not np.isnan(v)])
        return float(values.mean()) if values.size else float("nan")

    def get(self, asks: Sequence[tuple[Persona, Sequence[int]]]) -> list[np.ndarray]:
        """Per ask, the answers (1/0, NaN unusable) for its items; the missing ones asked in `chunk`-request batches."""
        todo: dict[int, tuple[Persona, list[int]]] = {}
        for persona, ids in asks:
            missing = todo.setdefault(persona.user_id, (persona, []))[1]
            for i in ids:
                if (persona.user_id, int(i)) not in self._answers and int(i) not in missing:
                    missing.append(int(i))
        requests, pages = [], []
        for persona, missing in todo.values():
            for start in range(0, len(missing), self.page_size):
                page = missing[start : start + self.page_size]
                seed = int(np.random.default_rng([self.seed, persona.user_id, page[0], 43]).integers(2**31 - 1))
                request = self.prompts.page_request(persona, 0, page, (), seed)
                # the persona's id joins the structured facts (a test double with planted answers reads it)
                requests.append(replace(request, context={**request.context, "user_id": persona.user_id}))
                pages.append((persona.user_id, page))
        for start in range(0, len(requests), self.chunk):  # chunks: a disk cache keeps each finished chunk
            part = pages[start : start + self.chunk]
            checks = [check_page_decision(page) for _, page in part]
            batch = requests[start : start + self.chunk]
            results = ask_json_batch(self.llm, batch, checks, max_repairs=self.max_repairs)
            log.info("llm feature: %d of %d probe calls", min(start + self.chunk, len(requests)), len(requests))
            with self._lock:  # sessions of a pipelined run ask from several threads (`StackedDecider.prefetch`)
                self.n_calls += len(batch)
                for (user, page), result in zip(part, results, strict=True):
                    if result.failed:
                        self.n_failed_calls += 1
                        values = [float("nan")] * len(page)
                    else:
                        values = [1.0 if a["watch"] else 0.0 for a in result.value["items"]]
                    for i, v in zip(page, values, strict=True):
                        self._answers[(user, i)] = v
        return [np.array([self._answers[(p.user_id, int(i))] for i in ids], dtype=np.float64) for p, ids in asks]


@dataclass(frozen=True)
class StackWeights:
    """One fold's stacking weights: logit P(valid) = a * logit P_response(valid) + b * llm_watch + c."""

    a: float
    b: float
    c: float

    def logit(self, base_logit: np.ndarray, llm_watch: np.ndarray) -> np.ndarray:
        """The fitted stack itself (a, b and c applied)."""
        return self.a * base_logit + self.b * llm_watch + self.c

    def decision_logit(self, base_logit: np.ndarray, llm_watch: np.ndarray, yes_rate: float) -> np.ndarray:
        """What decisions use: the response model's logit plus the LLM's centred term (see module docstring)."""
        return base_logit + self.b * (llm_watch - yes_rate)


@dataclass
class StackReport:
    """What the stack fit saw and how it scored out of fold on the validation split (written to validity.json)."""

    n_users: int
    n_pairs: int
    n_positive: int
    llm_yes_rate: float
    n_llm_calls: int
    n_failed_items: int
    folds: list[dict[str, float]] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)  # the fold weights' mean
    auc_valid_response: float = float("nan")  # out-of-fold, on the (weighted) fit sample
    auc_valid_stacked: float = float("nan")  # the decision rule's (response logit + centred LLM term)
    auc_valid_llm_alone: float = float("nan")
    logloss_valid_response: float = float("nan")  # out of fold, weighted
    logloss_valid_stacked: float = float("nan")
    logloss_gain_ci_low: float = float("nan")  # 2.5% user-bootstrap quantile of (response - stacked) log-loss
    applied: bool = False  # True when the LLM's weight is applied to decisions (it lowered the log-loss)


def _gain_lower_bound(
    y: np.ndarray,
    base: np.ndarray,
    stacked: np.ndarray,
    w: np.ndarray,
    user_of: np.ndarray,
    seed: int,
    n_boot: int = 1000,
) -> float:
    """2.5% quantile over a user bootstrap (seeded) of the weighted log-loss the stacked logits save."""

    def row_loss(z: np.ndarray) -> np.ndarray:  # -log P(y | z), stable
        return np.logaddexp(0.0, z) - y * z

    gain = np.bincount(user_of, weights=w * (row_loss(base) - row_loss(stacked)))
    weight = np.bincount(user_of, weights=w)
    pick = np.random.default_rng([seed, 59]).integers(0, gain.size, (n_boot, gain.size))
    return float(np.quantile(gain[pick].sum(axis=1) / weight[pick].sum(axis=1), 0.025))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _auc(y: np.ndarray, score: np.ndarray, weight: np.ndarray) -> float:
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, score, sample_weight=weight))


class LLMStack:
    """The fitted, cross-fitted stack over a response model (see module docstring)."""

    def __init__(
        self,
        response: ResponseModel,
        answers: LLMAnswers,
        folds: dict[int, int],
        weights: list[StackWeights],
        fill: float,
        report: StackReport | None,
        applied: bool = True,
    ) -> None:
        self.response = response
        self.answers = answers
        self.folds = folds
        self.weights = weights  # as fitted, per fold
        self.fill = fill
        self.report = report
        self.applied = applied  # False: decisions use the response model alone and never ask the LLM

    def weights_for(self, persona: Persona) -> StackWeights:
        return self.weights[self.folds.get(persona.user_id, persona.user_id % len(self.weights))]

    def probabilities(self, asks: Sequence[tuple[Persona, Sequence[int]]], candidate: bool = False) -> list[np.ndarray]:
        """Watch probabilities at the response model's level for decisions: stacked (batched LLM calls for the
        missing answers) when the weight is applied, else the response model's own. `candidate` = the stacked
        ones with the fitted weights whether applied or not (what `simrec validate` reports)."""
        if not (self.applied or candidate):
            return [self.base_probability(persona, ids) for persona, ids in asks]
        llm = self.answers.get(asks)
        out = []
        for (persona, ids), answer in zip(asks, llm, strict=True):
            items = np.asarray(ids, dtype=np.int64)
            llm_watch = np.nan_to_num(answer, nan=self.fill)
            base = response_logit_valid(self.response, persona, items)
            z = self.weights_for(persona).decision_logit(base, llm_watch, self.fill)
            p_valid = _sigmoid(z)
            out.append(np.clip(self.response.config.scale * p_valid, 1.0 - MAX_WATCH, MAX_WATCH))
        return out

    def probability(self, persona: Persona, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.probabilities([(persona, item_ids)])[0]

    def base_probability(self, persona: Persona, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The response model's own watch probability (what the `fitted` profile decides by)."""
        return self.response.plan(persona).watch_probability[np.asarray(item_ids, dtype=np.int64)].astype(np.float64)


def _user_valid(split: Split) -> dict[int, set[int]]:
    frame = split.valid
    out: dict[int, set[int]] = {}
    for u, i in zip(frame["user_id"].tolist(), frame["item_id"].tolist(), strict=True):
        out.setdefault(int(u), set()).add(int(i))
    return out


def sample_fit_pairs(
    response: ResponseModel,
    split: Split,
    population: Mapping[int, Persona],
    config: LLMFeatureConfig,
    candidates: Callable[[np.ndarray], Candidates] | None = None,
) -> list[tuple[Persona, np.ndarray, np.ndarray, np.ndarray]]:
    """Per sampled user: (persona, items, valid label, inverse-sampling weight) from its fit impressions."""
    rng = np.random.default_rng([config.seed, 47])
    users = np.array(sorted(population), dtype=np.int64)
    users = np.sort(rng.choice(users, size=min(config.n_users, users.size), replace=False))
    lists_by_user: dict[int, list[np.ndarray]] = {int(u): [] for u in users}
    top_n = response.config.top_n
    if candidates is not None:
        for ranked in candidates(users).values():
            for u in lists_by_user:
                lists_by_user[u].append(np.asarray(ranked.get(u, ()), dtype=np.int64)[:top_n])
    valid = _user_valid(split)
    n = split.dataset.n_items
    out = []
    for u in users.tolist():
        persona = population[u]
        seen = np.asarray(persona.train_items, dtype=np.int64)
        lists = lists_by_user[u]
        if candidates is None:
            lists = scorer_candidates(response.features, response.features.matrix(persona), seen, top_n)
        unseen = np.setdiff1d(np.arange(n), seen)
        lists = [*lists, rng.choice(unseen, size=min(response.config.n_random, unseen.size), replace=False)]
        shown = np.setdiff1d(np.unique(np.concatenate(lists)), seen)
        held = valid.get(u, set())
        label = np.array([i in held for i in shown.tolist()], dtype=bool)
        pos, neg = shown[label], shown[~label]
        take_pos = rng.choice(pos, size=min(config.max_positives, pos.size), replace=False)
        take_neg = rng.choice(neg, size=min(config.n_negatives, neg.size), replace=False)
        items = np.concatenate([take_pos, take_neg])
        if items.size == 0:
            continue
        label = np.concatenate([np.ones(take_pos.size, bool), np.zeros(take_neg.size, bool)])
        weight = np.concatenate(
            [
                np.full(take_pos.size, pos.size / max(take_pos.size, 1)),
                np.full(take_neg.size, neg.size / max(take_neg.size, 1)),
            ]
        )
        order = rng.permutation(items.size)  # positives and negatives mixed on the probe pages
        out.append((persona, items[order], label[order], weight[order]))
    return out


def fit_llm_stack(
    response: ResponseModel,
    answers: LLMAnswers,
    split: Split,
    population: Mapping[int, Persona],
    config: LLMFeatureConfig,
    candidates: Callable[[np.ndarray], Candidates] | None = None,
) -> LLMStack:
    """Probe the LLM on a sample of fit impressions and fit the cross-fitted stack (see module docstring)."""
    sample = sample_fit_pairs(response, split, population, config, candidates)
    if not sample:
        raise ValueError("llm feature: no fit impressions sampled (no users or no unseen items)")
    llm = answers.get([(persona, items) for persona, items, _, _ in sample])
    fold_of = np.concatenate([np.full(len(s[1]), response.fold_of(s[0])) for s in sample])
    base = np.concatenate([response_logit_valid(response, s[0], s[1]) for s in sample])
    x_llm = np.concatenate(llm)
    y = np.concatenate([s[2] for s in sample])
    w = np.concatenate([s[3] for s in sample])
    usable = ~np.isnan(x_llm)
    fill = float(np.average(x_llm[usable], weights=w[usable])) if usable.any() else 0.5
    x_llm = np.where(usable, x_llm, fill)
    x = np.column_stack([base, x_llm])
    n_folds = response.config.folds
    weights, fold_rows = [], []
    stacked_oof = np.full(y.size, np.nan)
    for fold in range(n_folds):
        fit_rows, score_rows = fold_of != fold, fold_of == fold
        if y[fit_rows].all() or not y[fit_rows].any():
            raise ValueError(f"llm feature: fold {fold}'s fit sample has only one class; raise [llm_feature] n_users")
        model = LogisticRegression(C=config.c, max_iter=1000).fit(x[fit_rows], y[fit_rows], sample_weight=w[fit_rows])
        sw = StackWeights(float(model.coef_[0, 0]), float(model.coef_[0, 1]), float(model.intercept_[0]))
        weights.append(sw)
        stacked_oof[score_rows] = sw.decision_logit(base[score_rows], x_llm[score_rows], fill)
        fold_rows.append({"fold": fold, "a": sw.a, "b": sw.b, "c": sw.c, "n_pairs": int(fit_rows.sum())})
    loss_response = log_loss(y, _sigmoid(base), sample_weight=w)
    loss_stacked = log_loss(y, _sigmoid(stacked_oof), sample_weight=w)
    user_of = np.concatenate([np.full(len(s[1]), i) for i, s in enumerate(sample)])
    gain_low = _gain_lower_bound(y, base, stacked_oof, w, user_of, config.seed)
    applied = bool(gain_low > 0)
    report = StackReport(
        n_users=len(sample),
        n_pairs=int(y.size),
        n_positive=int(y.sum()),
        llm_yes_rate=fill,
        n_llm_calls=answers.n_calls,
        n_failed_items=int((~usable).sum()),
        folds=fold_rows,
        weights={k: float(np.mean([getattr(s, k) for s in weights])) for k in ("a", "b", "c")},
        auc_valid_response=_auc(y, base, w),
        auc_valid_stacked=_auc(y, stacked_oof, w),
        auc_valid_llm_alone=_auc(y, x_llm, w),
        logloss_valid_response=float(loss_response),
        logloss_valid_stacked=float(loss_stacked),
        logloss_gain_ci_low=gain_low,
        applied=applied,
    )
    log.info("llm feature stack fitted: %s", report)
    return LLMStack(response, answers, dict(response.folds), weights, fill, report, applied)


class StackedDecider(GroundedDecider):
    """The grounded decider of a profile with `llm_feature`: watch logits from the stack, the rest unchanged."""

    def __init__(self, *args, stack: LLMStack, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stack = stack

    def watch_probability(self, persona: Persona, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stacked P(watch) with the LLM term (what `simrec validate` scores at item level)."""
        return self.stack.probability(persona, item_ids)

    def prefetch(self, personas: Sequence[Persona], pages: Sequence[Sequence[int]]) -> None:
        """Ask the LLM now for the pages' unasked items (what `page_logits` would ask), so the persona user calls it
        before taking its lock and sessions' probes wait on the endpoint together (`LLMUserModel.lock`)."""
        if self.stack.applied:
            self.stack.answers.get(list(zip(personas, pages, strict=True)))

    def page_logits(
        self, personas: Sequence[Persona], ids: np.ndarray, valid: np.ndarray, rows: np.ndarray
    ) -> np.ndarray:
        """The stacked logits (response model + the LLM's fitted watch term) of every page, after ONE batched LLM
        call for the batch's unasked items; the rest of the rule is the base class's."""
        sizes = valid.sum(axis=1)
        if self.stack.applied:
            self.stack.answers.get([(p, ids[i, : sizes[i]]) for i, p in enumerate(personas)])
        out = np.zeros(ids.shape, dtype=np.float64)
        for i, persona in enumerate(personas):
            out[i, : sizes[i]] = logit(self.stack.probability(persona, ids[i, : sizes[i]]))
        return out


def build_stacked_decider(
    decider: GroundedDecider,
    llm: LLM,
    prompts: PromptBuilder,
    split: Split,
    population: Mapping[int, Persona],
    config: LLMFeatureConfig,
    candidates: Callable[[np.ndarray], Candidates] | None = None,
) -> StackedDecider:
    """Fit the stack over `decider`'s response model and return the stacked decider of the same profile."""
    if decider.response is None:
        raise ValueError(f"profile {decider.config.name!r}: llm_feature needs the fitted response model (response)")
    answers = LLMAnswers(llm, prompts, config.probe_page_size, config.max_repairs, config.seed)
    stack = fit_llm_stack(decider.response, answers, split, population, config, candidates)
    return StackedDecider(
        decider.dataset,
        pd.DataFrame(),  # the train statistics are passed in (stats)
        decider.config,
        embedder=decider.embedder,
        item_vectors=decider.item_vectors,
        stats=decider.stats,
        collab=decider.collab,
        response=decider.response,
        stack=stack,
    )
