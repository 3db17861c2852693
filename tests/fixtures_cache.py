"""Each test process's cache, seeded with a fitted synthetic world for tests whose point is not fitting it.

The default synthetic world's response model (every split user, the "full" feature set, the fit-source
recommenders of the default recommenders file), `train-rl`'s other ensemble members, and the model that runs with
their own recommenders file get (the fit sources' config-class defaults) are fitted once per run: the first
process that needs them fits them into the run's shared directory (`$SIMREC_TEST_SHARED_DIR`, tests/conftest.py)
under a file lock, a process that comes later waits for the lock and finds them there. `worker_cache` copies that
cache (data, the fit-source recommenders, the response pickles) into this process's own cache;
`seed_response_cache` copies the response pickles into a test's own cache directory, so its run loads the model
instead of training five recommenders and fitting it again (tens of seconds each time on 2 cores). The run's
results are the same either way: the fit is seeded and the cache key holds everything it depends on. Tests about
caching itself (damage, what gets written) keep an empty cache. Registered in conftest (`pytest_plugins`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from filelock import FileLock

_SEEDED: list[Path] = []  # this process's cache, once the run's fitted cache has been copied into it


def _shared_dir() -> Path:
    return Path(os.environ["SIMREC_TEST_SHARED_DIR"]) / "synthetic"


def _fit_shared_cache() -> Path:
    """The run's cache holding the fitted synthetic world (fitted here unless a process did it already)."""
    from experiments.build import UserModelFactory, build_world  # here: conftest loads this module for every run
    from experiments.config import load_config

    shared = _shared_dir()
    with FileLock(f"{shared}.lock"):
        if not (shared / "fitted").is_file():
            settings = {"data": {"dataset": "synthetic", "cache_dir": str(shared)}, "users": {"embedder": "hashing"}}
            config = load_config(None, settings)
            world = build_world(config)
            factory = UserModelFactory(config, world, None)
            for member in config.rl.members:  # 0, the validated model; the others, what `train-rl` trains against
                factory.response_model("full", member=member)
            # runs whose recommenders file sets none of the fit sources (their config-class defaults, no time cap)
            (shared / "no_sources.toml").write_text("")
            settings["recommenders"] = {"config_file": str(shared / "no_sources.toml")}
            UserModelFactory(load_config(None, settings), world, None).response_model("full")
            (shared / "fitted").touch()  # last: the files above are complete
    return shared


def _seed_from(shared: Path) -> Path:
    cache = Path(os.environ["SIMREC_CACHE_DIR"])
    shutil.copytree(shared / "models", cache / "models", dirs_exist_ok=True)
    shutil.copytree(shared / "response", cache / "response", dirs_exist_ok=True)
    _SEEDED.append(cache)
    return cache


@pytest.fixture(scope="session", name="worker_cache")
def worker_cache_fixture() -> Path:
    """This test process's cache (`$SIMREC_CACHE_DIR`, set in conftest) for tests whose point is not the cache,
    holding the synthetic world's recommenders and response models (fitted once per run, see above); what a test
    adds is loaded by the next ones. Tests about caching (damage, isolation, what gets written) use their own
    `tmp_path` cache. Safe because a process runs its tests one after another (no concurrent writer)."""
    return _SEEDED[0] if _SEEDED else _seed_from(_fit_shared_cache())


@pytest.fixture(autouse=True)
def _seeded_when_fitted() -> None:
    """Tests that build the synthetic world without asking for `worker_cache` (`gym.make(..., dataset="synthetic")`
    reads `$SIMREC_CACHE_DIR`) find it fitted too once the run's fit is done; they never wait for it (until then
    they fit it into the process's cache themselves, as they would without the shared fit)."""
    if not _SEEDED and (_shared_dir() / "fitted").is_file():
        _seed_from(_shared_dir())


@pytest.fixture(scope="session", name="fitted_response")
def fitted_response_fixture(worker_cache: Path) -> Path:
    """`worker_cache`'s response directory, holding the default synthetic world's fitted response model."""
    return worker_cache / "response"


def seed_response_cache(cache_dir: Path, fitted: Path) -> Path:
    """Copy the fitted response models (`fitted_response`) into `cache_dir`'s response directory; `cache_dir`."""
    shutil.copytree(fitted, Path(cache_dir) / "response", dirs_exist_ok=True)
    return Path(cache_dir)
