"""What the engine tests share (tests/test_ray_engine.py, tests/test_process_engine.py): the fault policies their
workers import by name, a seconds-long compare's flags, and the check that a sharded run equals the local one."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pandas as pd
import pytest

from experiments.cli import app
from experiments.engine.shards import shard_root
from simenv.eventlog import read_table
from simenv.metrics import run_metrics

KILL = '["kill=tests.ray_helpers:FaultyPop"]'
FAIL = '["fail=tests.ray_helpers:FaultyPop"]'
BOTH = '["kill=tests.ray_helpers:FaultyPop","fail=tests.ray_helpers:FaultyPop"]'
TABLES = ("events", "pages", "interviews")


def write_fault_models(root: Path) -> None:
    """models.toml for the fault policies: `kill` kills its worker once, `fail` raises until its marker exists."""
    (root / "models.toml").write_text(
        f'[models.kill]\nmarker = "{root / "kill.marker"}"\nmode = "kill"\n'
        f'[models.fail]\nmarker = "{root / "fail.marker"}"\nmode = "raise"\n'
    )


def flags(root: Path, name: str, policies: str, *extra: str) -> list[str]:
    """A seconds-long compare: 40 personas of the synthetic data (3 chunks of 16), LLM users on the mock LLM."""
    return [
        "--data.dataset", "synthetic",
        "--data.n-personas", "40",
        "--data.cache-dir", str(root / "cache"),
        "--llm.backend", "mock",
        "--users.embedder", "hashing",
        "--simulation.pages", "3",
        "--run.out-dir", str(root / "runs"),
        "--run.name", name,
        "--recommenders.config-file", str(root / "models.toml"),
        "--recommenders.names", policies,
        *extra,
    ]  # fmt: skip


def assert_same_policy(local: Path, other: Path) -> None:
    """Same part files byte for byte (hence the same rows in the same order) and the same per-user metrics."""
    for table in TABLES:
        a, b = sorted((local / table).iterdir()), sorted((other / table).iterdir())
        assert [p.name for p in a] == [p.name for p in b], table
        assert all(filecmp.cmp(x, y, shallow=False) for x, y in zip(a, b, strict=True)), table
        pd.testing.assert_frame_equal(read_table(local, table), read_table(other, table))
    pd.testing.assert_frame_equal(run_metrics(local, rng=None, method="t"), run_metrics(other, rng=None, method="t"))
    assert not shard_root(other).exists()  # merged shards are removed


def assert_failed_run_resumes(root: Path, *extra: str) -> None:
    """A compare whose `fail` policy raises inside a worker exits 1 with no policy checkpoint but the failed shard's
    finished chunk kept; once the fault is fixed, `simrec resume` finishes it as the local run ("faults-local")."""
    with pytest.raises(SystemExit) as failed:
        app(["compare", *flags(root, "fail", FAIL, *extra)])
    assert failed.value.code == 1
    policy_dir = root / "runs/fail/policies/fail"
    assert not (policy_dir / "checkpoint.json").exists()
    assert any(shard_root(policy_dir).glob("*/fail/checkpoint.json"))  # the failed shard's finished chunk stays
    (root / "fail.marker").touch()  # the fault is fixed
    app(["resume", str(root / "runs/fail")])
    assert_same_policy(root / "runs/faults-local/policies/fail", policy_dir)
