"""A fitted synthetic world to seed the caches of tests whose point is not fitting it.

`fitted_response` fits the default synthetic world's response model (every split user, the "full" feature set,
the registry's default fit-source recommenders) into this test process's `worker_cache` once, or finds it
there; `seed_response_cache` copies those pickles into a test's own cache directory, so its run loads the model
instead of training five recommenders and fitting it again (tens of seconds each time on 2 cores). The run's
results are the same either way: the fit is seeded and the cache key holds everything it depends on. Tests
about caching itself (damage, what gets written) keep an empty cache. Registered in conftest (`pytest_plugins`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session", name="fitted_response")
def fitted_response_fixture(worker_cache: Path) -> Path:
    """`worker_cache`'s response directory, holding the default synthetic world's fitted response model."""
    from experiments.build import UserModelFactory, build_world  # here: conftest loads this module for every run
    from experiments.config import load_config

    config = load_config(
        None, {"data": {"dataset": "synthetic", "cache_dir": str(worker_cache)}, "users": {"embedder": "hashing"}}
    )
    UserModelFactory(config, build_world(config), None).response_model("full")
    return worker_cache / "response"


def seed_response_cache(cache_dir: Path, fitted: Path) -> Path:
    """Copy the fitted response models (`fitted_response`) into `cache_dir`'s response directory; `cache_dir`."""
    shutil.copytree(fitted, Path(cache_dir) / "response", dirs_exist_ok=True)
    return Path(cache_dir)
