"""Issue 17: a ranking file's or service's use of the fallback is counted *and reported*: after `simrec compare`,
`policies/<name>/external.json` and the report hold the pages served, the pages and items the fallback filled,
the users the source did not know, the ids dropped and the failed attempts by kind (before, these counters
lived in the process only: the run's record could not tell a service's pages from the fallback's)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.cli import app
from simenv.data import load_dataset
from tests.servers.recommender_server import RecommenderServer

FLAGS = [
    "--data.dataset", "synthetic",
    "--data.n-personas", "6",
    "--llm.backend", "mock",
    "--users.embedder", "hashing",
    "--simulation.pages", "3",
]  # fmt: skip


def test_fallback_pages_dropped_ids_and_failures_are_in_the_run(tmp_path: Path, worker_cache: Path) -> None:
    flags = [*FLAGS, "--data.cache-dir", str(worker_cache), "--run.out-dir", str(tmp_path / "runs")]
    data = load_dataset("synthetic", cache_dir=worker_cache / "data")
    order = [str(i) for i in np.random.default_rng(3).permutation(data.n_items)]
    rows = [(u, i, r + 1) for u in data.user_raw_ids[::2] for r, i in enumerate(order)]  # half the users
    pd.DataFrame(rows, columns=["user_id", "item_id", "rank"]).to_csv(tmp_path / "half.csv", index=False)
    (tmp_path / "models.toml").write_text("[models.svc]\nmax_retries = 1\nbackoff_s = 0.0\n")
    faults = {1: "500", 3: "excluded", 4: "unknown", 6: "404"}  # arrival 0 is the probe
    with RecommenderServer(order, faults=faults) as server:
        names = [f"svc={server.url}", f"half=file:{tmp_path / 'half.csv'}"]
        app(["compare", *flags, "--recommenders.config-file", str(tmp_path / "models.toml"), "--run.name", "r",
             "--recommenders.names", json.dumps(names)])  # fmt: skip
    run_dir = tmp_path / "runs" / "r"
    svc = json.loads((run_dir / "policies" / "svc" / "external.json").read_text())
    assert svc["fail_http_500"] == 1 and svc["fail_http_404"] == 1  # the 500 was retried, the 404 was not
    assert svc["dropped_ids"] == 2  # the excluded and the unknown id
    assert svc["fallback_pages"] == 1 and svc["failed_pages"] == 1  # the 404's page came from the fallback
    assert svc["requests"] == len(server.bodies) - 1 and svc["pages"] > 0
    half = json.loads((run_dir / "policies" / "half" / "external.json").read_text())
    assert half["fallback_users"] > 0 and half["fallback_pages"] >= half["fallback_users"]
    assert half["fallback_items"] == 4 * half["fallback_pages"]  # a user not in the file: whole pages
    report = (run_dir / "report.md").read_text()
    assert "## Ranking files and services" in report and "fail_http_500" in report


def test_saving_a_ranking_file_policy_warns_nothing(tmp_path: Path) -> None:
    """Its arrays are read-only; torch warned on every save (a UserWarning line in every run's output)."""
    import warnings

    from recommenders.ranking_file import RankingFileRecommender, read_ranking_file

    data = load_dataset("synthetic", cache_dir=tmp_path / "cache")
    pd.DataFrame({"user_id": data.user_raw_ids[:3], "item_id": data.item_raw_ids[:3], "rank": [1, 1, 1]}).to_csv(
        tmp_path / "r.csv", index=False
    )
    ranking = read_ranking_file(tmp_path / "r.csv", data, ids="raw")
    rec = RankingFileRecommender(ranking=ranking, source="r.csv").fit(data.interactions, data.n_users, data.n_items)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec.save(tmp_path / "model")
    assert RankingFileRecommender.load(tmp_path / "model").ranking is not None
