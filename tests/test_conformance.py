"""The recommender conformance checker: every registry recommender passes it, and each planted defect is
caught by the check meant for it (and a class missing a method fails `protocol` by name)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import pytest

from recommenders.base import BaseRecommender, top_k
from recommenders.conformance import ConformanceError, check_recommender, missing_methods
from recommenders.popularity import PopRecommender
from recommenders.random_policy import RandomRecommender
from recommenders.registry import REGISTRY, make
from simenv.llm.mock import MockLLM
from simenv.records import Recommendation, as_int_tuple
from tests.fixtures_recommenders import (  # noqa: F401  (the *_fixture names register pytest fixtures)
    FAST_CONFIGS,
    fitted_fixture,
    random_split_fixture,
    synthetic_fixture,
)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registry_recommender_passes(name: str, fitted, random_split) -> None:
    load_kwargs = {}
    if name == "llm-rank":
        llm = MockLLM(seed=0)
        rec = make("llm-rank", base="pop", llm=llm, catalog=random_split.dataset)
        rec.fit(random_split.train, random_split.dataset.n_users, random_split.dataset.n_items)
        load_kwargs = {"llm": llm, "catalog": random_split.dataset}
    else:
        rec = fitted[name]
    report = check_recommender(rec, random_split.dataset, train=random_split.train, load_kwargs=load_kwargs)
    assert report.ok, str(report)
    assert [c.name for c in report.checks][:2] == ["protocol", "score_shape"] and len(report.checks) == 11


# ---- planted defects: each breaks one rule -----------------------------------------------------------
class ReturnsExcluded(PopRecommender):
    name = "returns-excluded"

    def recommend(self, user_id, k, exclude, rng, history=()):
        page = list(super().recommend(user_id, k, exclude, rng, history).item_ids)
        if exclude:
            page[-1] = min(exclude)
        return Recommendation(item_ids=tuple(page))


class OutOfRange(PopRecommender):
    name = "out-of-range"

    def recommend(self, user_id, k, exclude, rng, history=()):
        page = list(super().recommend(user_id, k, exclude, rng, history).item_ids)
        return Recommendation(item_ids=(*page[:-1], self.n_items))


class IgnoresK(PopRecommender):
    name = "ignores-k"

    def recommend(self, user_id, k, exclude, rng, history=()):
        return (
            super().recommend(user_id, 10, exclude, rng, history)
            if k != 10
            else super().recommend(user_id, 9, exclude, rng, history)
        )


class Stateful(PopRecommender):
    """Every call shifts the page by one: not a function of (user, exclude, seed)."""

    name = "stateful"
    calls = 0

    def recommend(self, user_id, k, exclude, rng, history=()):
        Stateful.calls += 1
        page = super().recommend(user_id, k + Stateful.calls % 3, exclude, rng, history).item_ids
        return Recommendation(item_ids=tuple(page[-k:]))


class OverclaimsPropensities(RandomRecommender):
    name = "overclaims"

    def recommend(self, user_id, k, exclude, rng, history=()):
        rec = super().recommend(user_id, k, exclude, rng, history)
        return Recommendation(item_ids=rec.item_ids, propensities=(0.5,) * k)


class HidesPropensities(RandomRecommender):
    name = "hides-propensities"

    def recommend(self, user_id, k, exclude, rng, history=()):
        return Recommendation(item_ids=super().recommend(user_id, k, exclude, rng, history).item_ids)


class ForgetsOnLoad(PopRecommender):
    name = "forgets-on-load"

    def _restore(self, state) -> None:
        self.popularity = -state["popularity"].numpy()


class WrongScoreShape(PopRecommender):
    name = "wrong-score-shape"

    def score(self, user_id: int, history: Sequence[int] = ()) -> np.ndarray:
        return super().score(user_id, history)[:-1]

    def recommend(self, user_id, k, exclude, rng, history=()):
        allowed = self.allowed_mask(exclude, k)
        return Recommendation(item_ids=as_int_tuple(top_k(np.where(allowed, self.popularity, -np.inf), k)))


class PadsWithExcluded(PopRecommender):
    """Never refuses: when fewer than k items are allowed it pads the page with excluded ones."""

    name = "pads"

    def recommend(self, user_id, k, exclude: Collection[int], rng, history=()):
        allowed = [i for i in np.argsort(-self.popularity, kind="stable").tolist() if i not in exclude]
        padding = sorted(exclude)[: max(0, k - len(allowed))]
        return Recommendation(item_ids=tuple((allowed + padding)[:k]))


class MixesRows(BaseRecommender):
    """Scores the catalog per user, but its `score_batch` returns the rows in reverse order for several users."""

    name = "mixes-rows"

    def _fit(self, valid) -> None:
        self.table = np.random.default_rng(0).normal(size=(self.n_users, self.n_items))

    def _restore(self, state) -> None:
        self._fit(None)

    def score_batch(self, user_ids, histories=None) -> np.ndarray:
        return self.table[np.asarray(user_ids)[::-1]]


class NoObserve:
    """Has everything but observe."""

    name = "no-observe"

    def fit(self, train, n_users, n_items, valid=None):
        return self

    def score(self, user_id, history=()):
        return np.zeros(3)

    def recommend(self, user_id, k, exclude, rng, history=()):
        return Recommendation(item_ids=tuple(range(k)))

    def save(self, path) -> None: ...

    @classmethod
    def load(cls, path):
        return cls()


DEFECTS = {
    ReturnsExcluded: {"never_excluded", "observe"},
    OutOfRange: {"ids_in_range", "never_excluded", "observe"},  # the id it made up is not excludable either
    IgnoresK: {"honours_k", "never_excluded"},  # asking for 10 of 6 allowed items makes it raise there
    Stateful: {"deterministic", "propensities", "save_load"},  # its pages vary from call to call
    OverclaimsPropensities: {"propensities"},
    HidesPropensities: {"propensities"},
    ForgetsOnLoad: {"save_load"},
    WrongScoreShape: {"score_shape"},
    PadsWithExcluded: {"too_few_allowed"},
    MixesRows: {"batched_pages"},
}


@pytest.mark.parametrize("cls", list(DEFECTS), ids=lambda c: c.name)
def test_each_planted_defect_is_caught(cls, random_split) -> None:
    ds = random_split.dataset
    rec = cls().fit(random_split.train, ds.n_users, ds.n_items)
    report = check_recommender(rec, ds, train=random_split.train, raise_on_failure=False)
    failed = {c.name for c in report.failures}
    assert failed == DEFECTS[cls], str(report)
    with pytest.raises(ConformanceError, match=f"conformance of {cls.name}: {len(failed)} failed"):
        check_recommender(rec, ds, train=random_split.train)


def test_missing_method_is_named_and_stops_the_checks(random_split) -> None:
    assert missing_methods(NoObserve) == ["observe"]
    report = check_recommender(NoObserve(), random_split.dataset, raise_on_failure=False)
    assert [(c.name, c.passed, c.detail) for c in report.checks] == [("protocol", False, "missing observe")]

    class NoLoad(NoObserve):
        load = None  # type: ignore[assignment]

        def observe(self, user_id, page, feedback) -> None: ...

    assert missing_methods(NoLoad()) == ["load (a classmethod)"]


def test_fit_option_trains_first(random_split) -> None:
    ds = random_split.dataset
    report = check_recommender(make("pop"), ds, train=random_split.train, fit=True)
    assert report.checks[1].name == "fit" and report.ok
