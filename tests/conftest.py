"""Suite-wide settings: everything runs offline, and each test process has its own simrec cache; area fixtures live
in tests/fixtures_<area>.py.

The suite runs in parallel (pytest-xdist, `-n 2` in pyproject's addopts; `-n 0` runs it in one process). Worlds,
trained models and fitted response models that tests build without a `cache_dir` go to `$SIMREC_CACHE_DIR`, which
is set here for each test process (xdist worker) to a fresh directory of its own, removed at the end: the user's
~/.cache/simrec is never written, and two processes never write the same cache entry (the response-model and
model-directory writers are not safe against a concurrent writer of the same entry). A fresh cache is what a
fresh machine has. To keep the fitted worlds between runs (faster repeated runs), set `SIMREC_TEST_CACHE_DIR`:
each worker then uses `$SIMREC_TEST_CACHE_DIR/<worker>` (do not point two concurrent test runs at the same one).

What every worker would fit alike (the default synthetic world's response model, tests/fixtures_cache.py) is fitted
once per run, under a file lock, in `$SIMREC_TEST_SHARED_DIR` (made by the first process, inherited by the
workers; `$SIMREC_TEST_CACHE_DIR/shared` when kept), and copied from there into each worker's own cache.

The modules that take longest (measured with `--durations`) are handed out first (`--no-loadscope-reorder` in
pyproject's addopts keeps this order; xdist would otherwise hand out the modules with most tests first), so that the
two workers finish together instead of one starting the Ray engine's module when the other is nearly done.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads spin-wait by default; under load that multiplies torch and llama.cpp CPU time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # xdist runs one test process per core; torch's and BLAS's own thread pools on top of that oversubscribe the
    # cores (measured on 2 cores: the suite took 324 s with them and 243 s without, and half the system CPU). Set
    # here, before any test imports numpy or torch; subprocesses the tests start inherit it.
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

pytest_plugins = ("tests.fixtures_cache",)  # `worker_cache` and `fitted_response`
_FRESH_CACHE: list[Path] = []
# Longest first (seconds per module, `--durations=0` on 2 cores, one thread per worker): the default ML-100K world
# fitted cold (~75), the Ray cluster and its engine comparisons (~60), real processes interrupted by signals (~45),
# the transformers GGUF load (~35), SmolLM2 behind llama.cpp's server and the processes engine's compares (~22 each),
# then the demo, damaged caches rebuilt, offline RL, recommender specs, validate and the experiment commands (~12-14
# each). Modules that run the default synthetic world load its response model, fitted once per run
# (tests/fixtures_cache.py).
LONGEST_MODULES = (
    "test_env_registered.py",
    "test_ray_engine.py",
    "test_interrupt.py",
    "test_llm_local_models.py",
    "test_llm_server_fallbacks.py",
    "test_process_engine.py",
    "test_demo.py",
    "test_cache_damage.py",
    "test_offline_rl.py",
    "test_recommender_specs.py",
    "test_validity.py",
    "test_experiments.py",
    "test_llm_openai.py",
    "test_response.py",
    "test_candidate_policy.py",
    "test_hostile_input.py",
    "test_evaluate_rl.py",
    "test_dry_run.py",
    "test_agents_real.py",
    "test_llm_feature.py",
    "test_vector_env.py",
)


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    kept = os.environ.get("SIMREC_TEST_CACHE_DIR")
    if kept:
        cache = Path(kept).expanduser() / worker
        cache.mkdir(parents=True, exist_ok=True)
    else:
        cache = Path(tempfile.mkdtemp(prefix=f"simrec-test-cache-{worker}-"))
        _FRESH_CACHE.append(cache)
    os.environ["SIMREC_CACHE_DIR"] = str(cache)
    os.environ["SB3_LOGDIR"] = str(cache / "sb3")  # SB3 models without a log dir make one here, not in /tmp
    if "SIMREC_TEST_SHARED_DIR" not in os.environ:  # the first process (xdist's controller); workers inherit it
        if kept:
            shared = Path(kept).expanduser() / "shared"
            shared.mkdir(parents=True, exist_ok=True)
        else:
            shared = Path(tempfile.mkdtemp(prefix="simrec-test-shared-"))
            _FRESH_CACHE.append(shared)
        os.environ["SIMREC_TEST_SHARED_DIR"] = str(shared)


def pytest_unconfigure(config: pytest.Config) -> None:
    for cache in _FRESH_CACHE:
        shutil.rmtree(cache, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The LONGEST_MODULES first, in that order; every other module after them in collection order (a stable sort:
    the order of tests inside a module is kept)."""
    rank = {name: i for i, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
