"""Shared fixtures for the recommender tests: a planted-structure synthetic dataset split the two ways the
benchmarks use (Agent4Rec's random per-user split and leave-one-out by time), small fast configs, and models
trained once per test session.

Fixtures are registered under `name=`: test modules import the `*_fixture` functions and take `fitted` etc.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch

from recommenders.registry import make
from simenv.data import Dataset, Split, agent4rec_split, make_synthetic, temporal_split

# Small configs: enough to learn the planted structure in a few seconds on 2 cores.
FAST_CONFIGS: dict[str, dict[str, Any]] = {
    "random": {},
    "pop": {},
    "pop-head": {"head_size": 40},
    "mf": {"dim": 32, "lr": 0.01, "reg": 0.05, "batch_size": 256, "epochs": 40, "eval_every": 2, "patience": 4},
    "lightgcn": {"dim": 32, "lr": 0.01, "batch_size": 512, "epochs": 30, "eval_every": 5, "patience": 2},
    "multvae": {"hidden": 64, "latent": 16, "batch_size": 50, "lr": 0.003, "epochs": 40, "anneal_steps": 100},
    "sasrec": {"dim": 32, "max_len": 30, "batch_size": 64, "lr": 0.005, "epochs": 15, "eval_every": 5, "patience": 2},
}
TRAINED = ("mf", "lightgcn", "multvae", "sasrec")


@pytest.fixture(scope="session", name="synthetic")
def synthetic_fixture() -> Dataset:
    return make_synthetic(n_users=200, n_items=300, seed=0)


@pytest.fixture(scope="session", name="random_split")
def random_split_fixture(synthetic: Dataset) -> Split:
    return agent4rec_split(synthetic, n_users=None, seed=0, min_liked=5, ratios=(0.6, 0.2, 0.2))


@pytest.fixture(scope="session", name="loo_split")
def loo_split_fixture(synthetic: Dataset) -> Split:
    return temporal_split(synthetic, k=1)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Train the tiny test models on one thread: on a shared 2-core machine, OpenMP threads that spin-wait
    made these fits 10x slower. The previous thread count is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit(name: str, split: Split, **overrides: Any):
    """Build `name` with its fast config (plus overrides) and fit it on `split`."""
    model = make(name, **{**FAST_CONFIGS[name], **overrides})
    with one_torch_thread():
        return model.fit(split.train, split.dataset.n_users, split.dataset.n_items, split.valid)


@pytest.fixture(scope="session", name="fitted")
def fitted_fixture(random_split: Split) -> dict[str, Any]:
    """Every non-LLM recommender, fitted once on the random split."""
    return {name: fit(name, random_split) for name in FAST_CONFIGS}


def train_items(split: Split, user_id: int) -> list[int]:
    return split.train.loc[split.train["user_id"] == user_id, "item_id"].tolist()


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)
