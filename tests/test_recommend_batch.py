"""`recommend_batch`: one scoring pass for many sessions' pages, and the same pages `recommend` gives one by one
(the runner's page-by-page loop and validate's offline recall use it)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from recommenders.base import BaseRecommender, top_k
from recommenders.degraded import NoisyRanking
from recommenders.mf import MFRecommender
from simenv.eventlog import read_table
from simenv.records import PageRequest
from simenv.runner import run_sessions
from tests.fixtures_env import NoisyUser, tiny_world
from tests.fixtures_recommenders import TRAINED, fitted_fixture, random_split_fixture, synthetic_fixture

__all__ = ["fitted_fixture", "random_split_fixture", "synthetic_fixture"]  # fixtures pytest finds by name


def _requests(model, n_users: int, seed: int) -> list[PageRequest]:
    """Pages for many users: excludes of 0-40 items, session histories of 0-6 items, k of 1-10."""
    rng = np.random.default_rng(seed)
    out = []
    for user in rng.permutation(n_users)[:80]:
        exclude = set(rng.choice(model.n_items, int(rng.integers(0, 40)), replace=False).tolist())
        history = tuple(int(i) for i in rng.choice(model.n_items, int(rng.integers(0, 7)), replace=False))
        out.append(PageRequest(int(user), int(rng.integers(1, 11)), exclude, np.random.default_rng(0), history))
    return out


@pytest.mark.parametrize("name", TRAINED)
def test_batched_pages_equal_one_by_one_pages(fitted, random_split, name):
    model = fitted[name]
    requests = _requests(model, random_split.dataset.n_users, seed=3)
    batched = model.recommend_batch(requests)
    single = [model.recommend(r.user_id, r.k, r.exclude, r.rng, r.history) for r in requests]
    assert [b.item_ids for b in batched] == [s.item_ids for s in single]
    for b, r in zip(batched, requests, strict=True):
        assert len(b.item_ids) == r.k and not set(b.item_ids) & set(r.exclude)
        np.testing.assert_allclose(b.scores, model.score(r.user_id, r.history)[list(b.item_ids)], rtol=1e-5)


class RoundingTies(BaseRecommender):
    """Scores with planted exact and near ties whose batched values differ from the one-row values by rounding
    noise that depends on the batch: what a real model's batched matmul does, made large enough to reorder."""

    name = "rounding-ties"

    def _fit(self, valid) -> None:
        rng = np.random.default_rng(5)
        base = np.round(rng.normal(size=(self.n_users, self.n_items)), 1)  # many exact ties
        self.base = base + np.where(rng.random(base.shape) < 0.2, 1e-9, 0.0)  # and near ties
        self.batched_calls = 0

    def score_batch(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        rows = self.base[np.asarray(user_ids)].copy()
        if len(user_ids) > 1:
            self.batched_calls += 1
            rows += 1e-7 * np.random.default_rng(len(user_ids)).normal(size=rows.shape)
        return rows


def test_near_ties_are_served_as_one_row_would_be(random_split):
    model = RoundingTies().fit(random_split.train, random_split.dataset.n_users, random_split.dataset.n_items)
    requests = _requests(model, random_split.dataset.n_users, seed=4)
    batched = model.recommend_batch(requests)
    single = [model.recommend(r.user_id, r.k, r.exclude, r.rng, r.history) for r in requests]
    assert model.batched_calls == 1
    assert [b.item_ids for b in batched] == [s.item_ids for s in single]
    # without the tie guard the noise reorders pages: the planted ties are really exercised
    model.BATCH_TIE = -1.0
    unguarded = model.recommend_batch(requests)
    assert [b.item_ids for b in unguarded] != [s.item_ids for s in single]


@pytest.mark.parametrize("name", TRAINED)
def test_noisy_ranking_batched_pages_equal_one_by_one_pages(fitted, random_split, name):
    noisy = NoisyRanking(fitted[name], f"{name}-noise1", noise=1.0, seed=2)
    requests = _requests(noisy, random_split.dataset.n_users, seed=7)
    batched = noisy.recommend_batch(requests)
    assert [b.item_ids for b in batched] == [
        noisy.recommend(r.user_id, r.k, r.exclude, r.rng, r.history).item_ids for r in requests
    ]


def test_noisy_ranking_serves_near_ties_as_one_row_would(random_split):
    model = RoundingTies().fit(random_split.train, random_split.dataset.n_users, random_split.dataset.n_items)
    noisy = NoisyRanking(model, "ties-noise", noise=0.0)  # no noise: the planted ties stay ties
    requests = _requests(noisy, random_split.dataset.n_users, seed=8)
    single = [noisy.recommend(r.user_id, r.k, r.exclude, r.rng, r.history).item_ids for r in requests]
    assert [b.item_ids for b in noisy.recommend_batch(requests)] == single
    assert model.batched_calls == 1
    model.BATCH_TIE = -1.0  # the wrapper uses its base's guard: without it the planted ties reorder pages
    assert [b.item_ids for b in noisy.recommend_batch(requests)] != single


class OneByOne(MFRecommender):
    """MF served only through `recommend` (its `recommend_batch` removed): the runner's one-by-one path."""

    recommend_batch = None  # type: ignore[assignment]


def test_runner_logs_equal_with_and_without_batched_pages(tmp_path):
    ds, personas, split = tiny_world()
    settings = {"dim": 16, "epochs": 5, "eval_every": 1000, "batch_size": 64}
    tables = {}
    for label, cls in (("batched", MFRecommender), ("one-by-one", OneByOne)):
        rec = cls(**settings).fit(split.train, ds.n_users, ds.n_items)
        run_dir = tmp_path / label
        run_sessions(rec, NoisyUser(), personas, ds, split.train, run_dir, n_pages=5, page_size=4, seed=11,
                     policy_name="mf", batch_size=16, config={"note": "test"})  # fmt: skip
        tables[label] = {t: read_table(run_dir, t).drop(columns="run") for t in ("events", "pages")}
    for t in ("events", "pages"):
        assert tables["batched"][t].equals(tables["one-by-one"][t]), t
    assert len(tables["batched"]["pages"]) > len(personas)  # several pages per session were served


def test_subclass_overriding_recommend_is_served_one_request_at_a_time(random_split):
    class Reversed(MFRecommender):
        def recommend(self, user_id, k, exclude, rng, history=()):
            rec = super().recommend(user_id, k, exclude, rng, history)
            return type(rec)(item_ids=rec.item_ids[::-1])

    reversed_model = Reversed(dim=8, epochs=2, eval_every=1000).fit(
        random_split.train, random_split.dataset.n_users, random_split.dataset.n_items
    )
    requests = _requests(reversed_model, random_split.dataset.n_users, seed=6)
    batched = reversed_model.recommend_batch(requests)
    assert [b.item_ids for b in batched] == [
        reversed_model.recommend(r.user_id, r.k, r.exclude, r.rng, r.history).item_ids for r in requests
    ]


def test_top_k_is_the_stable_argsorts_head():
    """`top_k` (a partition, then a sort of the head) picks what a full stable argsort does: ties to the lower id,
    -inf last, NaN after everything."""
    rng = np.random.default_rng(0)
    for case in range(4000):
        n = int(rng.integers(1, 60))
        scores = np.round(rng.normal(size=n), int(case % 3))  # rounding to 0-2 decimals plants exact ties
        scores[rng.random(n) < 0.2] = -np.inf
        if case % 4 == 0:
            scores[rng.random(n) < 0.2] = np.nan
        k = int(rng.integers(1, n + 2))
        for values in (scores, scores.astype(np.float32)):
            assert top_k(values, k).tolist() == np.argsort(-values, kind="stable")[:k].tolist()
