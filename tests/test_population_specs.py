"""`simrec population` takes the recommender specs `simrec compare` takes (issue 17): a plugin class is refitted
every round like a registry model, a ranking file runs, and a bad spec fails before the run directory exists.
(Before, a spec passed the name check and failed after the run directory was written: `KeyError`, exit 1.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.cli import app
from simenv.data import load_dataset
from simenv.eventlog import read_table
from tests.fixtures_cache import seed_response_cache
from tests.fixtures_plugins import PlainPop

MODULE = "tests.fixtures_plugins"


@pytest.fixture(scope="module", name="cache")
def cache_fixture(tmp_path_factory: pytest.TempPathFactory, fitted_response: Path) -> Path:
    """One cache for the module, starting with the synthetic world's fitted response model (`fixtures_cache`)."""
    return seed_response_cache(tmp_path_factory.mktemp("population-cache"), fitted_response)


def _flags(tmp_path: Path, cache: Path) -> list[str]:
    return [
        "--data.dataset", "synthetic",
        "--data.n-personas", "8",
        "--data.cache-dir", str(cache),
        "--llm.backend", "mock",
        "--users.embedder", "hashing",
        "--population.rounds", "2",
        "--run.out-dir", str(tmp_path / "runs"),
    ]  # fmt: skip


def _population(tmp_path: Path, cache: Path, name: str, recommender: str) -> pd.DataFrame:
    app(["population", *_flags(tmp_path, cache), "--run.name", name, "--population.recommender", recommender])
    return read_table(tmp_path / "runs" / name, "population")


def test_a_plugin_class_is_refitted_each_round_like_the_registry_model(tmp_path: Path, cache: Path) -> None:
    PlainPop.fits = 0
    plugin = _population(tmp_path, cache, "plugin", f"{MODULE}:PlainPop")
    assert PlainPop.fits >= 3  # the closed loop refits each round, the open loop fits once
    pd.testing.assert_frame_equal(plugin, _population(tmp_path, cache, "pop", "pop"))  # PlainPop is pop


def test_a_ranking_file_runs_in_the_population(tmp_path: Path, cache: Path) -> None:
    data = load_dataset("synthetic", cache_dir=cache / "data")
    rng = np.random.default_rng(0)
    users, items = np.meshgrid(np.arange(data.n_users), np.arange(data.n_items), indexing="ij")
    pd.DataFrame(
        {
            "user_id": data.user_raw_ids[users.ravel()],
            "item_id": data.item_raw_ids[items.ravel()],
            "score": rng.random(users.size),
        }
    ).to_csv(tmp_path / "rank.csv", index=False)
    table = _population(tmp_path, cache, "file", f"mine=file:{tmp_path / 'rank.csv'}")
    assert len(table) == 4 and set(table["variant"]) == {"closed loop", "open loop"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nomodule_xyz:Thing", "module 'nomodule_xyz' not found"),
        (f"{MODULE}:NoRecommend", "missing recommend"),
        ("file:/nonexistent/rank.csv", "/nonexistent/rank.csv"),
    ],
)
def test_a_bad_spec_fails_on_one_line_before_the_run_dir(
    tmp_path: Path, cache: Path, capsys, spec: str, expected: str
) -> None:
    with pytest.raises(SystemExit) as info:
        app(["population", *_flags(tmp_path, cache), "--run.name", "bad", "--population.recommender", spec])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("simrec: ")]
    assert len(lines) == 1 and expected in lines[0] and f"recommender {spec!r}" in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "runs" / "bad").exists()
