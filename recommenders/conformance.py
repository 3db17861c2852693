"""A conformance checker for recommenders, in the spirit of Gymnasium's `check_env`.

`check_recommender(rec, dataset)` calls a (fitted) recommender the way the simulator does and checks the
`simenv.protocols.Recommender` contract:

- protocol:        it has fit, score, recommend, observe, save and a `load` on its class;
- score_shape:     `score` gives one finite-or-(-inf) number per item;
- honours_k:       a page has exactly k distinct ids, for several k;
- ids_in_range:    every id is an int in 0..n_items-1;
- never_excluded:  no id in `exclude`, also when all but a few items are excluded;
- too_few_allowed: asking for k items when fewer are allowed raises instead of returning a bad page;
- deterministic:   the same call with generators of the same seed gives the same page;
- batched_pages:   `recommend_batch` (when present: every `BaseRecommender`) gives `recommend`'s pages;
- propensities:    when given, one per position, each in (0, 1], position-0 propensities of the distinct
                   first items sum to at most 1 and match their observed frequency; a policy whose pages vary
                   with the generator must give them;
- save_load:       `type(rec).load(path)` after `save(path)` recommends and scores the same;
- observe:         feedback on a page is accepted, and the next page avoids the shown items.

Every check runs (a failure does not stop the others, except a missing protocol method); the report lists
them all and `ConformanceError` is raised when any failed (unless `raise_on_failure=False`).
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simenv.data import Dataset
from simenv.records import ItemReaction, Page, PageFeedback, PageRequest, Recommendation

PROTOCOL_METHODS = ("fit", "score", "recommend", "observe", "save", "load")


class ConformanceError(AssertionError):
    """A recommender broke the protocol; the message lists every failed check."""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class ConformanceReport:
    recommender: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def __str__(self) -> str:
        lines = [f"conformance of {self.recommender}: {'ok' if self.ok else f'{len(self.failures)} failed'}"]
        width = max((len(c.name) for c in self.checks), default=0)
        for c in self.checks:
            lines.append(f"  {'PASS' if c.passed else 'FAIL'}  {c.name:<{width}}  {c.detail}".rstrip())
        return "\n".join(lines)


def missing_methods(target: Any) -> list[str]:
    """Protocol methods `target` (a class or an instance) lacks; `load` must be a classmethod."""
    cls = target if isinstance(target, type) else type(target)
    missing = [m for m in PROTOCOL_METHODS if m != "load" and not callable(getattr(cls, m, None))]
    if not isinstance(inspect.getattr_static(cls, "load", None), classmethod | staticmethod):
        missing.append("load (a classmethod)")
    return missing


def check_recommender(
    rec: Any,
    dataset: Dataset,
    *,
    train: pd.DataFrame | None = None,
    users: Sequence[int] | None = None,
    k: int = 4,
    seed: int = 0,
    fit: bool = False,
    n_draws: int = 50,
    load_kwargs: dict[str, Any] | None = None,
    raise_on_failure: bool = True,
) -> ConformanceReport:
    """Run the checks on `rec` (fitted unless `fit=True`, which fits it on `train`) over a few users.

    `train` (default: all of `dataset.interactions`) gives each user's consumed items, excluded as the
    simulator does; `users` default to 3 seeded picks among users with interactions. `load_kwargs` go to
    `type(rec).load` (e.g. `llm=`, `catalog=` for the LLM ranker).
    """
    name = getattr(rec, "name", None) or type(rec).__name__
    report = ConformanceReport(str(name))
    train = dataset.interactions if train is None else train
    rng = np.random.default_rng([seed, 17])
    if users is None:
        known = np.unique(train["user_id"].to_numpy())
        users = sorted(rng.choice(known, size=min(3, known.size), replace=False).tolist())
    consumed = {int(u): set(train.loc[train["user_id"] == u, "item_id"].astype(int).tolist()) for u in users}

    missing = missing_methods(rec)
    report.checks.append(Check("protocol", not missing, f"missing {', '.join(missing)}" if missing else ""))
    if missing:
        return _finish(report, raise_on_failure)
    if fit:

        def fit_it() -> str:
            rec.fit(train, dataset.n_users, dataset.n_items)
            return f"on {len(train)} interactions"

        _run(report, "fit", fit_it)
    probe = _Probe(rec, dataset.n_items, list(users), consumed, k, seed, n_draws, rng, load_kwargs or {})
    for check_name, check in CHECKS:
        _run(report, check_name, lambda check=check: check(probe))
    return _finish(report, raise_on_failure)


@dataclass
class _Probe:
    """What every check needs: the recommender, its users with their consumed items, and the shared generator
    (the checks draw from it in turn, so their order is part of the seeded behaviour)."""

    rec: Any
    n_items: int
    users: list[int]
    consumed: dict[int, set[int]]
    k: int
    seed: int
    n_draws: int
    rng: np.random.Generator
    load_kwargs: dict[str, Any]

    def page(self, user: int, kk: int, exclude: set[int], s: int | None = None) -> Recommendation:
        return self.rec.recommend(user, kk, exclude, np.random.default_rng(self.seed if s is None else s), ())


def _score_shape(p: _Probe) -> str:
    for user in p.users:
        scores = np.asarray(p.rec.score(user, ()))
        if scores.shape != (p.n_items,):
            raise AssertionError(f"user {user}: score has shape {scores.shape}, want ({p.n_items},)")
        if np.isnan(scores).any() or np.isposinf(scores).any():
            raise AssertionError(f"user {user}: score holds NaN or +inf")
    return ""


def _honours_k(p: _Probe) -> str:
    sizes = sorted({1, p.k, 2 * p.k})
    for user in p.users:
        for kk in sizes:
            ids = list(p.page(user, kk, p.consumed[user]).item_ids)
            if len(ids) != kk or len(set(ids)) != kk:
                raise AssertionError(f"user {user}: k={kk} gave {len(ids)} ids ({len(set(ids))} distinct): {ids[:12]}")
    return f"k in {sizes}"


def _ids_in_range(p: _Probe) -> str:
    n_items = p.n_items
    for user in p.users:
        ids = p.page(user, 2 * p.k, p.consumed[user]).item_ids
        bad = [i for i in ids if not isinstance(i, int | np.integer) or isinstance(i, bool) or not 0 <= i < n_items]
        if bad:
            raise AssertionError(f"user {user}: ids {bad[:5]} are not ints in 0..{n_items - 1}")
    return ""


def _never_excluded(p: _Probe) -> str:
    k, n_items = p.k, p.n_items
    for user in p.users:
        ids = p.page(user, 2 * k, p.consumed[user]).item_ids
        bad = sorted(set(ids) & p.consumed[user])
        if bad:
            raise AssertionError(f"user {user}: recommended excluded (consumed) ids {bad[:5]}")
        keep = set(p.rng.choice(n_items, size=min(n_items, k + 2), replace=False).tolist())
        exclude = set(range(n_items)) - keep
        ids = p.page(user, k, exclude).item_ids
        bad = sorted(set(ids) - keep)
        if bad:
            raise AssertionError(f"user {user}: with only {sorted(keep)} allowed, recommended excluded ids {bad[:5]}")
    return f"consumed items, and all but {k + 2} items"


def _too_few_allowed(p: _Probe) -> str:
    k = p.k
    keep = set(p.rng.choice(p.n_items, size=k - 1, replace=False).tolist())
    try:
        rec_page = p.page(p.users[0], k, set(range(p.n_items)) - keep)
    except Exception:  # noqa: BLE001 - any exception is a refusal
        return "raised"
    raise AssertionError(f"only {k - 1} items allowed for k={k}, but it returned {list(rec_page.item_ids)}")


def _deterministic(p: _Probe) -> str:
    for user in p.users:
        a, b = p.page(user, p.k, p.consumed[user]), p.page(user, p.k, p.consumed[user])
        if a.item_ids != b.item_ids or a.propensities != b.propensities:
            raise AssertionError(f"user {user}: two calls with seed {p.seed} gave {a.item_ids} and {b.item_ids}")
    return ""


def _batched_pages(p: _Probe) -> str:
    """A policy with `recommend_batch` (every `BaseRecommender`) serves the runner's sessions through it: its
    pages must be `recommend`'s, so a `score_batch` that mixes up its rows fails here."""
    batch = getattr(p.rec, "recommend_batch", None)
    if batch is None:
        return "no recommend_batch (served one page at a time)"
    requests = [PageRequest(u, kk, p.consumed[u], np.random.default_rng(p.seed)) for u in p.users for kk in (1, p.k)]
    pages = batch(requests)
    if len(pages) != len(requests):
        raise AssertionError(f"recommend_batch returned {len(pages)} pages for {len(requests)} requests")
    for r, page in zip(requests, pages, strict=True):
        want = p.page(r.user_id, r.k, p.consumed[r.user_id]).item_ids
        if tuple(page.item_ids) != tuple(want):
            raise AssertionError(f"user {r.user_id}, k={r.k}: recommend_batch gave {page.item_ids}, recommend {want}")
    return f"{len(requests)} pages in one call"


def _propensities(p: _Probe) -> str:
    user = p.users[0]
    pages = [p.page(user, p.k, p.consumed[user], p.seed + 1 + d) for d in range(p.n_draws)]
    given = [page for page in pages if page.propensities is not None]
    if not given:
        if len({page.item_ids for page in pages}) > 1:
            raise AssertionError(f"pages vary with the generator ({p.n_draws} seeds) but carry no propensities")
        return "none given (deterministic pages)"
    first = _first_propensities(given)
    total = sum(first.values())
    if total > 1.0 + 1e-6:
        raise AssertionError(f"position-0 propensities of {len(first)} distinct first items sum to {total:.4f} > 1")
    counts = pd.Series([int(page.item_ids[0]) for page in given]).value_counts()
    m = len(given)
    for item, prob in first.items():
        freq = counts.get(item, 0) / m
        if prob >= 0.1 and abs(freq - prob) > 4 * np.sqrt(prob * (1 - prob) / m) + 1 / m:
            raise AssertionError(f"item {item} came first in {freq:.2f} of {m} pages but claims propensity {prob:.3f}")
    return f"{len(first)} distinct first items over {m} pages, sum {total:.4f}"


def _first_propensities(given: Sequence[Recommendation]) -> dict[int, float]:
    """Position-0 propensity of each distinct first item, after checking every page's propensities are well formed
    (one per position, each in (0, 1], the same first item always with the same propensity)."""
    first: dict[int, float] = {}
    for page in given:
        props = tuple(float(x) for x in page.propensities or ())
        if len(props) != len(page.item_ids):
            raise AssertionError(f"{len(props)} propensities for {len(page.item_ids)} ids")
        if not all(0.0 < x <= 1.0 + 1e-9 for x in props):
            raise AssertionError(f"propensities outside (0, 1]: {props}")
        item = int(page.item_ids[0])
        if item in first and abs(first[item] - props[0]) > 1e-9:
            raise AssertionError(f"item {item} first with propensity {first[item]} and {props[0]}")
        first[item] = props[0]
    return first


def _save_load(p: _Probe) -> str:
    rec, user = p.rec, p.users[0]
    before = p.page(user, p.k, p.consumed[user])
    with tempfile.TemporaryDirectory() as tmp:
        rec.save(Path(tmp) / "model")
        loaded = type(rec).load(Path(tmp) / "model", **p.load_kwargs)
    after = loaded.recommend(user, p.k, p.consumed[user], np.random.default_rng(p.seed), ())
    if before.item_ids != after.item_ids:
        raise AssertionError(f"user {user}: {before.item_ids} before save, {after.item_ids} after load")
    s1, s2 = np.asarray(rec.score(user, ())), np.asarray(loaded.score(user, ()))
    if s1.shape != s2.shape or not np.allclose(s1, s2, equal_nan=True):
        raise AssertionError(f"user {user}: scores differ after load (max diff {np.nanmax(np.abs(s1 - s2)):.3g})")
    return ""


def _observe(p: _Probe) -> str:
    rec, user = p.rec, p.users[0]
    first = p.page(user, p.k, p.consumed[user])
    shown = Page(episode=0, page_index=0, item_ids=tuple(int(i) for i in first.item_ids))
    reactions = tuple(
        ItemReaction(int(i), watched=j == 0, rating=4 if j == 0 else None) for j, i in enumerate(shown.item_ids)
    )
    rec.observe(user, shown, PageFeedback(reactions=reactions, left=False))
    exclude = p.consumed[user] | set(shown.item_ids)
    second = rec.recommend(user, p.k, exclude, np.random.default_rng(p.seed), (shown.item_ids[0],))
    again = sorted(set(second.item_ids) & set(shown.item_ids))
    end = getattr(rec, "end_session", None)
    if callable(end):
        end(user)
    if again:
        raise AssertionError(f"user {user}: the page after feedback repeats shown ids {again}")
    return ""


# The checks after `protocol` (and `fit`), in the order they run and draw from the probe's generator.
CHECKS: tuple[tuple[str, Callable[[_Probe], str]], ...] = (
    ("score_shape", _score_shape),
    ("honours_k", _honours_k),
    ("ids_in_range", _ids_in_range),
    ("never_excluded", _never_excluded),
    ("too_few_allowed", _too_few_allowed),
    ("deterministic", _deterministic),
    ("batched_pages", _batched_pages),
    ("propensities", _propensities),
    ("save_load", _save_load),
    ("observe", _observe),
)


def _run(report: ConformanceReport, name: str, fn: Callable[[], Any]) -> None:
    try:
        detail = fn()
        report.checks.append(Check(name, True, str(detail or "")))
    except AssertionError as exc:
        report.checks.append(Check(name, False, str(exc)))
    except Exception as exc:  # noqa: BLE001 - a crash in the recommender is a failed check, reported
        report.checks.append(Check(name, False, f"raised {type(exc).__name__}: {exc}"))


def _finish(report: ConformanceReport, raise_on_failure: bool) -> ConformanceReport:
    if raise_on_failure and not report.ok:
        raise ConformanceError(str(report))
    return report
