"""Pluggable recommenders end to end: a plugin class and a ranking file run through `simrec compare` (mock
LLM) and give exactly the events of the equivalent built-in policy; a ranking file in raw ids equals the
in-process policy it was written from; an HTTP service joins a comparison; every bad spec fails before any
simulation with a one-line error naming the spec; `simrec check-recommender` passes and fails as it should."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.cli import app
from experiments.recommender_specs import SpecError, parse_spec, parse_specs
from experiments.report import read_run
from recommenders.base import BaseRecommender
from recommenders.ranking_file import RankingFileError, RankingFileRecommender, read_ranking_file
from simenv.data import load_dataset
from simenv.eventlog import read_table
from simenv.runner import run_sessions
from tests.fixtures_cache import seed_response_cache
from tests.fixtures_env import NoisyUser, tiny_world
from tests.fixtures_plugins import PlainPop
from tests.servers.recommender_server import RecommenderServer

MODULE = "tests.fixtures_plugins"  # the plugin classes the specs below import


class SeededScores(BaseRecommender):
    """In-process reference policy: a fixed random score per (user, item)."""

    name = "seeded-scores"

    def score_batch(self, user_ids, histories=None) -> np.ndarray:
        return np.stack([np.random.default_rng([7, int(u)]).random(self.n_items) for u in user_ids]).astype(np.float32)


@pytest.fixture(name="flags")
def flags_fixture(tmp_path: Path, fitted_response: Path) -> list[str]:
    """The runs' cache starts with the fitted response model only: plugins are trained (and counted) here."""
    return [
        "--data.dataset", "synthetic",
        "--data.n-personas", "6",
        "--data.cache-dir", str(seed_response_cache(tmp_path / "cache", fitted_response)),
        "--llm.backend", "mock",
        "--users.embedder", "hashing",
        "--simulation.pages", "3",
        "--run.out-dir", str(tmp_path / "runs"),
    ]  # fmt: skip


def events_of(run_dir: Path, policy: str) -> pd.DataFrame:
    events = read_run(run_dir).events
    return events[events["policy"] == policy].drop(columns=["policy", "run"]).reset_index(drop=True)


def test_parse_specs_kinds_labels_and_errors() -> None:
    specs = parse_specs(["mf", f"{MODULE}:PlainPop", "file:out/rank.csv?ids=dense", "mine=http://127.0.0.1:9/r"])
    assert [(s.kind, s.label) for s in specs] == [
        ("registry", "mf"), ("import", "PlainPop"), ("file", "file-rank"), ("http", "mine")
    ]  # fmt: skip
    assert specs[2].target == "out/rank.csv" and specs[2].options == (("ids", "dense"),)
    with pytest.raises(SpecError, match="'bogus': not a registry name .* package.module:ClassName"):
        parse_spec("bogus")
    with pytest.raises(SpecError, match="both have the policy name 'file-r'"):
        parse_specs(["file:a/r.csv", "file:b/r.parquet"])
    with pytest.raises(SpecError, match="label 'pop' is a registry name"):
        parse_spec("pop=file:x.csv")


def test_plugin_class_and_ranking_file_run_through_compare(flags: list[str], tmp_path: Path) -> None:
    # A ranking file equal to pop: every item of every user, score = train popularity (raw ids = synthetic's).
    data = load_dataset("synthetic", cache_dir=tmp_path / "cache" / "data")
    from experiments.build import build_world
    from experiments.config import load_config

    world = build_world(load_config(None, {"data": {"dataset": "synthetic", "n_personas": 6,
                                                    "cache_dir": str(tmp_path / "cache")}}))  # fmt: skip
    counts = np.bincount(world.split.train["item_id"], minlength=data.n_items)
    users, items = np.meshgrid(np.arange(data.n_users), np.arange(data.n_items), indexing="ij")
    ranking = pd.DataFrame({"user_id": data.user_raw_ids[users.ravel()], "item_id": data.item_raw_ids[items.ravel()],
                            "score": counts[items.ravel()]})  # fmt: skip
    ranking.sample(frac=1.0, random_state=0).to_csv(tmp_path / "pop_rank.csv", index=False)
    names = ["pop", f"{MODULE}:PlainPop", f"popfile=file:{tmp_path / 'pop_rank.csv'}"]
    PlainPop.fits = 0
    app(["compare", *flags, "--run.name", "plug", "--recommenders.names", json.dumps(names)])
    run_dir = tmp_path / "runs" / "plug"
    assert sorted(p.name for p in (run_dir / "policies").iterdir()) == ["PlainPop", "pop", "popfile"]
    pop = events_of(run_dir, "pop")
    assert len(pop) > 0
    pd.testing.assert_frame_equal(events_of(run_dir, "PlainPop"), pop)
    pd.testing.assert_frame_equal(events_of(run_dir, "popfile"), pop)
    assert PlainPop.fits == 1
    app(["compare", *flags, "--run.name", "plug2", "--recommenders.names", json.dumps(names[1:2])])
    assert PlainPop.fits == 1  # the second run loaded the trained plugin from the model cache


def test_ranking_file_in_raw_ids_equals_the_in_process_policy(tmp_path: Path, caplog) -> None:
    ds0, personas, split = tiny_world()
    ds = dataclasses.replace(  # raw ids unlike the dense ones
        ds0,
        item_raw_ids=np.array([str(5000 - 3 * i) for i in range(ds0.n_items)], dtype=object),
        user_raw_ids=np.array([str(900 + u) for u in range(ds0.n_users)], dtype=object),
    )
    reference = SeededScores().fit(split.train, ds.n_users, ds.n_items)
    scores = reference.score_batch(np.arange(ds.n_users))
    users, items = np.meshgrid(np.arange(ds.n_users), np.arange(ds.n_items), indexing="ij")
    frame = pd.DataFrame({"user_id": ds.user_raw_ids[users.ravel()].astype(int),
                          "item_id": ds.item_raw_ids[items.ravel()].astype(int),
                          "score": scores.ravel().astype(np.float64)})  # fmt: skip
    frame.sample(frac=1.0, random_state=1).to_parquet(tmp_path / "rank.parquet")
    policy = RankingFileRecommender(ranking=read_ranking_file(tmp_path / "rank.parquet", ds))
    policy.fit(split.train, ds.n_users, ds.n_items)

    def run(rec, name: str) -> pd.DataFrame:
        run_sessions(rec, NoisyUser(), personas, ds, split.train, tmp_path / name, n_pages=5, seed=2)
        return read_table(tmp_path / name, "events").drop(columns=["run", "policy"])

    pd.testing.assert_frame_equal(run(policy, "file"), run(reference, "ref"))
    assert policy.report().get("fallback_pages", 0) == 0 and policy.report()["fallback_users"] == 0

    # Only the top 10 of each user, and users 0-4 missing: the fallback fills, counted.
    frame["rank"] = frame.groupby("user_id")["score"].rank(ascending=False, method="first")
    top = frame[(frame["rank"] <= 10) & (frame["user_id"] >= 905)].drop(columns=["score"])
    top.to_csv(tmp_path / "top.csv", index=False)
    partial = RankingFileRecommender(ranking=read_ranking_file(tmp_path / "top.csv", ds), fallback="pop")
    partial.fit(split.train, ds.n_users, ds.n_items)
    events = run(partial, "partial")
    stats = partial.report()
    assert stats["fallback_users"] == 5 and stats["fallback_pages"] >= 5
    user10 = events[(events["user"] == 10) & (events["page"] < 2)]["item"].tolist()
    best10 = np.argsort(-np.where(np.isin(np.arange(ds.n_items), personas[10].train_items), -np.inf, scores[10]))
    assert user10[:4] == best10[:4].tolist()  # file order while the file lasts


def test_ranking_file_errors_name_the_problem(tmp_path: Path) -> None:
    ds, _, _ = tiny_world()
    cases = {
        "cols.csv": ("user,item,score\n1,2,0.5\n", r"missing column\(s\) \['user_id', 'item_id'\]"),
        "both.csv": ("user_id,item_id,score,rank\n1,2,0.5,1\n", "exactly one of the columns score, rank"),
        "ids.csv": ("user_id,item_id,score\n1,2,0.5\n1,99999,0.4\n3,abc,0.1\n",
                    r"2 of 3 item_id value\(s\) are not raw synthetic-0 ids .*\['99999', 'abc'\] at rows \[3, 4\]"),
        "nan.csv": ("user_id,item_id,score\n1,2,x\n",
                    r"column score has 1 non-numeric value\(s\), e.g. \['x'\] at rows \[2\]"),
        "dup.csv": ("user_id,item_id,rank\n1,2,1\n1,2,2\n",
                    r"1 repeated \(user_id, item_id\) pair\(s\), e.g. \[\('1', '2'\)\]"),
        "rank.txt": ("", r"unknown ranking file type '.txt'"),
    }  # fmt: skip
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(RankingFileError, match=message):
            read_ranking_file(tmp_path / name, ds)
    with pytest.raises(RankingFileError, match="no such ranking file"):
        read_ranking_file(tmp_path / "missing.csv", ds)
    (tmp_path / "dense.csv").write_text("user_id,item_id,rank\n0,119,1\n0,120,2\n")
    with pytest.raises(RankingFileError, match=r"1 of 2 item_id value\(s\) are not dense ids in 0..119"):
        read_ranking_file(tmp_path / "dense.csv", ds, ids="dense")


def test_bad_specs_fail_before_any_simulation(flags: list[str], tmp_path: Path, capsys) -> None:
    (tmp_path / "cols.csv").write_text("user,item\n1,2\n")
    (tmp_path / "ids.csv").write_text("user_id,item_id,rank\n1,5,1\n1,777777,2\n")
    (tmp_path / "models.toml").write_text("[models.PlainPop]\nmin_cuont = 3\n")
    with RecommenderServer([str(i) for i in range(10)], always="500") as server:
        cases = [
            ("no_such_module_xyz:Rec", "module 'no_such_module_xyz' not found"),
            (f"{MODULE}:Missing", f"module '{MODULE}' has no attribute 'Missing'"),
            (f"{MODULE}:NoRecommend", "class NoRecommend does not satisfy the Recommender protocol: missing recommend"),
            (f"file:{tmp_path / 'cols.csv'}", r"missing column\(s\) \['user_id', 'item_id'\]"),
            (f"file:{tmp_path / 'ids.csv'}", r"1 of 2 item_id value\(s\) are not raw .*\['777777'\]"),
            (f"file:{tmp_path / 'ids.csv'}?ids=sparse", "ids must be 'raw' or 'dense', got 'sparse'"),
            (server.url, "probe request failed: .*HTTP 500"),
        ]
        for i, (spec, message) in enumerate(cases):
            with pytest.raises(SystemExit) as code:
                app(["compare", *flags, "--run.name", f"bad{i}", "--recommenders.names", json.dumps(["random", spec])])
            err = capsys.readouterr().err.strip()
            assert code.value.code == 2, err
            assert err.startswith(f"simrec: recommender '{spec}': ") and "\n" not in err, err
            assert re.search(message, err), err
            assert not (tmp_path / "runs" / f"bad{i}").exists()  # nothing written, nothing simulated
        models = ["--recommenders.config-file", str(tmp_path / "models.toml")]
        with pytest.raises(SystemExit):
            app(["compare", *flags, *models, "--run.name", "badset", "--recommenders.names", f'["{MODULE}:PlainPop"]'])
        assert "settings ['min_cuont'] do not fit PlainPop()" in capsys.readouterr().err


def test_http_service_joins_a_comparison(flags: list[str], tmp_path: Path, caplog) -> None:
    data = load_dataset("synthetic", cache_dir=tmp_path / "cache" / "data")
    order = [str(i) for i in np.random.default_rng(3).permutation(data.n_items)]
    users, items = np.meshgrid(np.arange(data.n_users), np.arange(data.n_items), indexing="ij")
    position = {raw: p for p, raw in enumerate(order)}
    pd.DataFrame({"user_id": data.user_raw_ids[users.ravel()], "item_id": data.item_raw_ids[items.ravel()],
                  "rank": [position[str(data.item_raw_ids[i])] + 1 for i in items.ravel()]}
                 ).to_csv(tmp_path / "order.csv", index=False)  # fmt: skip
    (tmp_path / "models.toml").write_text("[models.svc]\ntimeout_s = 1.0\nmax_retries = 1\n")
    models = ["--recommenders.config-file", str(tmp_path / "models.toml")]
    with (
        caplog.at_level(logging.WARNING),
        RecommenderServer(order, faults={2: "500", 5: "timeout"}, slow_s=3) as server,
    ):
        names = [f"svc={server.url}", f"same=file:{tmp_path / 'order.csv'}"]
        app(["compare", *flags, *models, "--run.name", "svc", "--recommenders.names", json.dumps(names)])
    run_dir = tmp_path / "runs" / "svc"
    pd.testing.assert_frame_equal(events_of(run_dir, "svc"), events_of(run_dir, "same"))
    assert [f for _, f in server.injected] == ["500", "timeout"]  # arrival 0 was the probe before the run
    retried = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retried) == 2 and "http_500" in retried[0] and "no answer within 1.0 s" in retried[1]


def test_check_recommender_command(flags: list[str], capsys, caplog) -> None:
    app(["check-recommender", "pop", *flags])
    out = capsys.readouterr().out
    assert "conformance of pop: ok" in out and "PASS  never_excluded" in out
    app(["check-recommender", f"{MODULE}:PlainPop", *flags])
    assert "conformance of plain-pop: ok" in capsys.readouterr().out
    with pytest.raises(SystemExit) as code, caplog.at_level(logging.ERROR):
        app(["check-recommender", f"{MODULE}:LeaksExcluded", *flags])
    assert code.value.code == 1
    out = capsys.readouterr().out
    assert "FAIL  never_excluded" in out and "FAIL  too_few_allowed" in out


def test_validate_takes_labels_and_resolves_every_spec_first(flags: list[str], tmp_path: Path, capsys) -> None:
    names = json.dumps([f"ease={MODULE}:PlainPop"])
    validate = ["validate", *flags, "--validity.bootstrap", "20", "--recommenders.names", names]
    PlainPop.fits = 0
    with pytest.raises(SystemExit) as code:  # a typo in the last spec: exit 2 before anything trains or is written
        app([*validate, "--run.name", "typo", "--validity.policies", '["pop", "ease", "no_such_module_xyz:Rec"]'])
    assert code.value.code == 2
    assert "module 'no_such_module_xyz' not found" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "typo").exists() and PlainPop.fits == 0
    with pytest.raises(SystemExit) as code:
        app([*validate, "--run.name", "lab", "--validity.policies", f'["pop", "x={MODULE}:PlainPop"]'])
    assert code.value.code == 2 and "define it with --recommenders.names" in capsys.readouterr().err
    app([*validate, "--run.name", "ok", "--validity.policies", '["random", "pop", "ease"]'])
    run_dir = tmp_path / "runs" / "ok"
    result = json.loads((run_dir / "validity.json").read_text())
    assert set(result["policies"]) == {"random", "pop", "ease"}  # the label is the json key ...
    assert (run_dir / "policies" / "ease" / "events").exists()  # ... and the policy's directory
    assert PlainPop.fits == 1
    assert PlainPop.columns == ["user_id", "item_id", "rating", "timestamp"]  # fit sees ratings and timestamps
    # PlainPop is the registry's pop: the same simulated outcome
    assert result["policies"]["ease"]["sim_p_view"] == result["policies"]["pop"]["sim_p_view"]


def test_plugin_cache_key_hashes_the_class_not_the_whole_file(tmp_path: Path, monkeypatch) -> None:
    import importlib
    import sys

    from experiments.recommender_specs import _source_digest

    two = "class A:\n    x = 1\n\n\nclass B:\n    y = {}\n\n\nclass C(B):\n    z = 3\n"
    (tmp_path / "two_recs.py").write_text(two.format(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("two_recs")
    before = {name: _source_digest(getattr(module, name)) for name in "ABC"}
    (tmp_path / "two_recs.py").write_text(two.format(2))  # edit class B only
    sys.modules.pop("two_recs")
    importlib.invalidate_caches()
    module = importlib.import_module("two_recs")
    after = {name: _source_digest(getattr(module, name)) for name in "ABC"}
    assert after["A"] == before["A"]  # another class of the file: its cached model is reused
    assert after["B"] != before["B"] and after["C"] != before["C"]  # the edited class and its subclass retrain
