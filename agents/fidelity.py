"""Fidelity harness: how believable simulated users are, measured against held-out real ratings.

- Taste discrimination (Agent4Rec's protocol): per persona and ratio 1:m, mix n held-out (test) items the user
  rated with m*n items the user never rated in any split (sampled with the passed rng), shuffle, show them as
  pages of at most `page_size` items, and ask which the persona would watch. Counts are pooled over personas
  (micro average); precision, recall and F1 are 0 (never NaN) when their denominator is 0.
- The protocol as peers run it (Agent4Rec's, as SimUSER and others report it): the same pages, but the persona
  is told how many of a page's items it has watched and picks that many (`pick_many`: the top k by watch
  probability for a fitted user, the LLM's own k picks for an LLM user); reported as `protocol_*` next to the
  calibrated scores. A calibrated user says yes at the real consumption rate, so its own decisions cannot reach
  the accuracy this protocol allows; the two answer different questions and both are reported.
- Rating fidelity: the persona rates held-out items as if watched; RMSE against the real ratings (of the
  subject's expected rating when it exposes one, `expected_rating`; `rmse_stars` of the sampled stars) and
  KL(real || simulated) of the 1..5 star histograms, each histogram smoothed with a pseudo-count of
  `KL_PSEUDO_COUNT` = 0.5 per star (Jeffreys prior) so a star the simulator never gives costs a large but finite
  penalty.
A subject is anything with `judge_many(asks, rng) -> [(watch bool[n], stars int[n])]` (both user models have
it); any other `UserModel` with a `dataset` attribute is wrapped by `SessionJudge`, which shows each page in
a fresh session and only has ratings for the items it watched.
- Level-free taste ranking: when the subject exposes a watch probability (`watch_probability_of`), the pooled
  AUC of that probability for "held-out" vs "never rated" is reported per ratio too. Accuracy and F1 of sampled
  decisions depend on the user's absolute watch level: a user calibrated to real consumption (P(watch) ~0.3-0.5
  for a good recommendation) cannot reach the accuracy of one that watches everything it likes, even when it
  ranks the items better; the AUC separates the two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from sklearn.metrics import roc_auc_score

from agents.decision import top_k
from simenv.data.dataset import Split
from simenv.protocols import UserModel
from simenv.records import Page, Persona

KL_PSEUDO_COUNT = 0.5
Ask = tuple[Persona, Sequence[int]]


class Judge(Protocol):
    def judge_many(self, asks: Sequence[Ask], rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per ask (one page at index 0 for a persona): watch flags and 1..5 stars (as if watched)."""
        ...


class SessionJudge:
    """Adapts any `UserModel`: one fresh session per page; unwatched items get stars 0 (no rating)."""

    def __init__(self, model: UserModel) -> None:
        self.model = model

    def judge_many(self, asks: Sequence[Ask], rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
        catalog = self.model.dataset.catalog  # type: ignore[attr-defined]
        sessions = [self.model.start_session(p, 0, rng) for p, _ in asks]
        pages = [(Page(0, 0, tuple(int(i) for i in ids)), [catalog[int(i)] for i in ids]) for _, ids in asks]
        out = []
        for fb in self.model.react_batch(sessions, pages):
            watch = np.array([r.watched for r in fb.reactions])
            stars = np.array([r.rating or 0 for r in fb.reactions], dtype=np.int64)
            out.append((watch, stars))
        return out


WatchProbability = Callable[[Persona, Sequence[int]], np.ndarray]


def watch_probability_of(subject: Any) -> WatchProbability | None:
    """The subject's P(watch) of items on a page: a user model's own, or its decider's without the LLM term
    (None when the decider has no non-LLM signal, e.g. `llm-only`: its probability would be a constant)."""
    prob = getattr(subject, "watch_probability", None)
    if prob is not None:
        return prob
    decider = getattr(subject, "decider", None)
    if decider is None or not getattr(decider, "has_signals", True):
        return None
    return getattr(decider, "watch_probability", None)


Picker = Callable[[Sequence[Ask], Sequence[int], np.random.Generator], list[np.ndarray]]


def picker_of(subject: Any) -> Picker | None:
    """How the subject answers the protocol as peers run it ("k of these items are ones you watched"): its own
    `pick_many` (LLM users ask the LLM), else the top k by its watch probability, else None."""
    pick = getattr(subject, "pick_many", None)
    if callable(pick):
        return pick
    prob = watch_probability_of(subject)
    if prob is None:
        return None
    return lambda asks, ks, rng: [top_k(prob(persona, ids), k) for (persona, ids), k in zip(asks, ks, strict=True)]


def expected_rating_of(subject: Any) -> Callable[[Persona, Sequence[int]], np.ndarray] | None:
    """The subject's expected rating of items (its rating model's point prediction), or None."""
    expected = getattr(subject, "expected_rating", None)
    if expected is not None:
        return expected
    decider = getattr(subject, "decider", None)
    if decider is None or getattr(decider, "response", None) is None or getattr(decider.config, "rating_llm", 0):
        return None  # a hand-set or LLM-rated subject's stars are its prediction
    return getattr(decider, "expected_rating", None)


def as_judge(subject: Judge | UserModel) -> Judge:
    return subject if callable(getattr(subject, "judge_many", None)) else SessionJudge(subject)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Counts:
    """Pooled confusion counts of watch decisions against held-out membership, and their scores (0, never NaN,
    when a denominator is 0)."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def accuracy(self) -> float:
        total = self.tp + self.fp + self.fn + self.tn
        return (self.tp + self.tn) / total if total else 0.0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def scores(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{name}": getattr(self, name) for name in ("accuracy", "precision", "recall", "f1")}


NO_COUNTS = {f"protocol_{name}": float("nan") for name in ("accuracy", "precision", "recall", "f1")}


@dataclass(frozen=True, slots=True)
class Discrimination:
    """Pooled scores for one ratio 1:m: the user's own (calibrated) decisions, and under the protocol as peers
    run it (`protocol`: told how many of a page's items it watched, the user picks that many; None when the
    subject can neither pick nor rank)."""

    ratio: int
    n_personas: int
    tp: int
    fp: int
    fn: int
    tn: int
    auc: float = float("nan")  # of the subject's watch probability, positives vs negatives (NaN: none exposed)
    protocol: Counts | None = None

    @property
    def counts(self) -> Counts:
        return Counts(self.tp, self.fp, self.fn, self.tn)

    @property
    def accuracy(self) -> float:
        return self.counts.accuracy

    @property
    def precision(self) -> float:
        return self.counts.precision

    @property
    def recall(self) -> float:
        return self.counts.recall

    @property
    def f1(self) -> float:
        return self.counts.f1

    def as_dict(self) -> dict[str, float]:
        protocol = self.protocol.scores("protocol_") if self.protocol is not None else NO_COUNTS
        return {"ratio": self.ratio, **self.counts.scores(), "auc": self.auc, **protocol, "n_personas": self.n_personas}


@dataclass(frozen=True, slots=True)
class RatingFidelity:
    """`rmse`: of the subject's expected rating when it exposes one (its point prediction), else of its stars;
    `rmse_stars`: of the stars it gave (a draw from its rating distribution); `kl`: of the stars' histogram."""

    rmse: float
    rmse_stars: float
    kl: float
    n: int
    real_hist: tuple[float, ...]
    sim_hist: tuple[float, ...]


def _user_items(frame, users: set[int]) -> dict[int, np.ndarray]:
    sub = frame[frame["user_id"].isin(users)]
    return {int(u): g["item_id"].to_numpy(np.int64) for u, g in sub.groupby("user_id")}


def _chunks(ids: np.ndarray, size: int) -> list[np.ndarray]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def discrimination(
    subject: Judge | UserModel,
    split: Split,
    personas: Sequence[Persona],
    rng: np.random.Generator,
    ratios: Sequence[int] = (1, 2, 3, 9),
    n_pos: int = 5,
    page_size: int = 10,
    heldout: str = "test",
) -> dict[int, Discrimination]:
    """Taste discrimination per ratio (see module docstring). `heldout="valid"` tunes without touching test."""
    if heldout not in ("test", "valid"):
        raise ValueError(f"heldout must be 'test' or 'valid', got {heldout!r}")
    judge = as_judge(subject)
    users = {p.user_id for p in personas}
    held = _user_items(getattr(split, heldout), users)
    rated = _user_items(split.dataset.interactions, users)
    n_items = split.dataset.n_items
    asks: list[Ask] = []
    labels: list[np.ndarray] = []
    tags: list[int] = []
    counted: dict[int, set[int]] = {m: set() for m in ratios}
    for persona in personas:
        pos_pool = held.get(persona.user_id, np.zeros(0, np.int64))
        if pos_pool.size == 0:
            continue
        never = np.setdiff1d(np.arange(n_items), rated[persona.user_id], assume_unique=False)
        for m in ratios:
            n = min(n_pos, pos_pool.size)
            if never.size < m * n:
                continue
            pos = rng.choice(pos_pool, size=n, replace=False)
            neg = rng.choice(never, size=m * n, replace=False)
            ids = np.concatenate([pos, neg])
            lab = np.concatenate([np.ones(n, bool), np.zeros(m * n, bool)])
            order = rng.permutation(ids.size)
            ids, lab = ids[order], lab[order]
            for a, b in zip(_chunks(ids, page_size), _chunks(lab, page_size), strict=True):
                asks.append((persona, [int(i) for i in a]))
                labels.append(b)
                tags.append(m)
            counted[m].add(persona.user_id)
    answers = judge.judge_many(asks, rng)
    counts = {m: np.zeros(4, np.int64) for m in ratios}
    for (watch, _), lab, m in zip(answers, labels, tags, strict=True):
        watch = np.asarray(watch, bool)
        counts[m] += [(watch & lab).sum(), (watch & ~lab).sum(), (~watch & lab).sum(), (~watch & ~lab).sum()]
    aucs = _ratio_aucs(watch_probability_of(subject), asks, labels, tags, ratios)
    protocol = _protocol_counts(picker_of(subject), asks, labels, tags, ratios, rng)
    return {
        m: Discrimination(m, len(counted[m]), *(int(x) for x in counts[m]), auc=aucs[m], protocol=protocol.get(m))
        for m in ratios
    }


def _protocol_counts(
    pick: Picker | None,
    asks: Sequence[Ask],
    labels: Sequence[np.ndarray],
    tags: Sequence[int],
    ratios: Sequence[int],
    rng: np.random.Generator,
) -> dict[int, Counts]:
    """Pooled counts per ratio when each page's user is told how many of its items it watched and picks that many
    (the same pages as the calibrated decisions; the picks must number exactly k)."""
    if pick is None:
        return {}
    ks = [int(lab.sum()) for lab in labels]
    picks = pick(asks, ks, rng)
    counts = {m: np.zeros(4, np.int64) for m in ratios}
    for chosen, lab, k, m in zip(picks, labels, ks, tags, strict=True):
        chosen = np.asarray(chosen, bool)
        if int(chosen.sum()) != k:
            raise ValueError(f"protocol pick: {int(chosen.sum())} items picked where the user was told {k}")
        counts[m] += [(chosen & lab).sum(), (chosen & ~lab).sum(), (~chosen & lab).sum(), (~chosen & ~lab).sum()]
    return {m: Counts(*(int(x) for x in counts[m])) for m in ratios}


def _ratio_aucs(
    prob: WatchProbability | None,
    asks: Sequence[Ask],
    labels: Sequence[np.ndarray],
    tags: Sequence[int],
    ratios: Sequence[int],
) -> dict[int, float]:
    """Pooled AUC of the watch probability per ratio; NaN without a probability or with one class only."""
    out = {m: float("nan") for m in ratios}
    if prob is None:
        return out
    for m in ratios:
        picked = [i for i, tag in enumerate(tags) if tag == m]
        if not picked:
            continue
        y = np.concatenate([labels[i] for i in picked])
        p = np.concatenate([np.asarray(prob(asks[i][0], asks[i][1]), np.float64) for i in picked])
        if y.min() != y.max():
            out[m] = float(roc_auc_score(y, p))
    return out


def star_histogram(stars: np.ndarray, pseudo_count: float = 0.0) -> np.ndarray:
    counts = np.bincount(np.clip(np.asarray(stars, np.int64), 1, 5) - 1, minlength=5).astype(np.float64)
    counts += pseudo_count
    total = counts.sum()
    return counts / total if total else counts


def kl_divergence(real: np.ndarray, sim: np.ndarray, pseudo_count: float = KL_PSEUDO_COUNT) -> float:
    """KL(real || sim) in nats between the star histograms of two rating samples."""
    p = star_histogram(real, pseudo_count)
    q = star_histogram(sim, pseudo_count)
    return float(np.sum(p * np.log(p / q)))


def rating_fidelity(
    subject: Judge | UserModel,
    split: Split,
    personas: Sequence[Persona],
    rng: np.random.Generator,
    n_per_persona: int = 10,
    page_size: int = 10,
    heldout: str = "test",
) -> RatingFidelity:
    """RMSE and KL(real || simulated) on up to `n_per_persona` held-out rated items per persona."""
    judge = as_judge(subject)
    frame = getattr(split, heldout)
    frame = frame[frame["user_id"].isin({p.user_id for p in personas})]
    by_user = {int(u): g for u, g in frame.groupby("user_id")}
    asks: list[Ask] = []
    truth: list[np.ndarray] = []
    for persona in personas:
        g = by_user.get(persona.user_id)
        if g is None:
            continue
        pick = rng.permutation(len(g))[:n_per_persona]
        ids = g["item_id"].to_numpy(np.int64)[pick]
        real = g["rating"].to_numpy(np.float64)[pick]
        for a, b in zip(_chunks(ids, page_size), _chunks(real, page_size), strict=True):
            asks.append((persona, [int(i) for i in a]))
            truth.append(b)
    answers = judge.judge_many(asks, rng)
    expected = expected_rating_of(subject)
    real_all, sim_all, mean_all = [], [], []
    for (persona, ids), (_, stars), real in zip(asks, answers, truth, strict=True):
        stars = np.asarray(stars, np.int64)
        keep = stars > 0
        real_all.append(real[keep])
        sim_all.append(stars[keep])
        if expected is not None:
            mean_all.append(np.asarray(expected(persona, ids), np.float64)[keep])
    real_v = np.concatenate(real_all) if real_all else np.zeros(0)
    sim_v = np.concatenate(sim_all).astype(np.float64) if sim_all else np.zeros(0)
    if real_v.size == 0:
        raise ValueError(f"rating_fidelity: no simulated ratings of {heldout} items for {len(personas)} personas")
    point = np.concatenate(mean_all) if expected is not None else sim_v
    return RatingFidelity(
        rmse=float(np.sqrt(np.mean((real_v - point) ** 2))),
        rmse_stars=float(np.sqrt(np.mean((real_v - sim_v) ** 2))),
        kl=kl_divergence(real_v, sim_v),
        n=int(real_v.size),
        real_hist=tuple(float(x) for x in star_histogram(real_v)),
        sim_hist=tuple(float(x) for x in star_histogram(sim_v)),
    )
