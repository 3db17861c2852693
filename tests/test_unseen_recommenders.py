"""The twelve bring-your-own recipes `bench_unseen_validity` scores: each meets the recommender contract, and the
strong ones beat popularity on held-out data (so the benchmark spans strong to weak models as it says)."""

from __future__ import annotations

import numpy as np
import pytest

import benchmarks.unseen_recommenders as unseen
from recommenders.conformance import check_recommender
from recommenders.evaluation import evaluate_split
from tests.fixtures_recommenders import random_split_fixture, synthetic_fixture  # noqa: F401  (pytest fixtures)


@pytest.mark.parametrize("label", sorted(unseen.UNSEEN))
def test_each_recipe_passes_the_contract(label: str, random_split) -> None:
    rec = getattr(unseen, unseen.UNSEEN[label])()
    report = check_recommender(rec, random_split.dataset, train=random_split.train, fit=True)
    assert report.ok, str(report)


def test_noise_is_seeded_per_user_and_weakens_the_model(random_split) -> None:
    ds, train = random_split.dataset, random_split.train
    clean = unseen.EASE().fit(train, ds.n_users, ds.n_items)
    noisy = unseen.NoisyEASE(noise=3.0).fit(train, ds.n_users, ds.n_items)
    users = np.arange(5)
    assert np.array_equal(noisy.score_batch(users), noisy.score_batch(users))
    assert not np.array_equal(noisy.score_batch(users[:1]), noisy.score_batch(users[1:2]))
    rank = [np.corrcoef(clean.score_batch(users)[i], noisy.score_batch(users)[i])[0, 1] for i in range(5)]
    assert max(rank) < 0.9


def test_the_strong_recipes_beat_their_noisy_and_popularity_versions(random_split) -> None:
    ds, train = random_split.dataset, random_split.train
    recall = {}
    for label in ("ease", "itemknn", "itemknn-noise", "liked-pop"):
        rec = getattr(unseen, unseen.UNSEEN[label])().fit(train, ds.n_users, ds.n_items)
        recall[label] = evaluate_split(rec, random_split).recall
    assert recall["ease"] > recall["liked-pop"] and recall["itemknn"] > recall["itemknn-noise"], recall
