"""The Mesa population: seeded determinism and the closed loop actually changing recommendations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agents.config import load_user
from agents.decision import GroundedDecider
from agents.embedding import HashingEmbedder
from agents.persona import build_personas
from agents.silent_user import SilentUserModel
from experiments.population import PopulationConfig, PopulationModel, genre_entropy, run_population
from recommenders.registry import make
from simenv.data import agent4rec_split, make_synthetic

MF = {"dim": 16, "epochs": 6, "eval_every": 3, "batch_size": 256}


@pytest.fixture(name="world", scope="module")
def world_fixture():
    dataset = make_synthetic(n_users=120, n_items=200, seed=3)
    split = agent4rec_split(dataset, n_users=None, seed=0)
    personas = build_personas(split)
    return dataset, split, [personas[int(u)] for u in split.users[:40]]


def population(world, seed: int, retrain: bool) -> PopulationModel:
    dataset, split, personas = world
    decider = GroundedDecider(dataset, split.train, load_user("handset").decision, embedder=HashingEmbedder())
    users = SilentUserModel(decider, personas)
    return PopulationModel(
        dataset,
        split.train,
        personas,
        users,
        lambda: make("mf", **MF),
        PopulationConfig(rounds=3, retrain=retrain),
        rng=np.random.default_rng(seed),
    )


def test_same_seed_same_rounds_different_seed_differs(world) -> None:
    a = run_population(population(world, 7, retrain=True), 3)
    b = run_population(population(world, 7, retrain=True), 3)
    c = run_population(population(world, 8, retrain=True), 3)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    assert list(a["round"]) == [1, 2, 3]
    assert a[["P_view", "P_like", "coverage", "popularity_bias"]].notna().all().all()


def test_closed_loop_retraining_changes_recommendations(world) -> None:
    closed = population(world, 7, retrain=True)
    opened = population(world, 7, retrain=False)
    initial = opened.recommender
    for model in (closed, opened):
        run_population(model, 2)
    assert closed.simulated, "the simulated users liked something"
    assert opened.recommender is initial  # open loop: never refit
    user = world[2][0].user_id
    before = initial.score(user, ())
    after = closed.recommender.score(user, ())
    assert not np.allclose(before, after)
    top_before = np.argsort(-before)[:20]
    top_after = np.argsort(-after)[:20]
    assert set(top_before) != set(top_after)


def test_genre_entropy() -> None:
    assert genre_entropy(np.array([5.0, 0.0, 0.0])) == 0.0
    assert genre_entropy(np.array([1.0, 1.0, 1.0, 1.0])) == pytest.approx(2.0)
    assert genre_entropy(np.zeros(3)) == 0.0
