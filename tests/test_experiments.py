"""The `simrec` CLI end to end with tiny budgets (CleanRL-style smoke runs), bad configs, resume and reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.cli import app
from experiments.config import ConfigError, load_config
from experiments.report import build_report, read_run
from simenv.eventlog import RunLog, read_table

TINY_MODELS = """
[models.mf]
dim = 16
epochs = 4
eval_every = 2
batch_size = 512
[models.sasrec]
dim = 16
n_blocks = 1
max_len = 20
epochs = 2
eval_every = 1
[models.multvae]
hidden = 32
latent = 16
epochs = 3
eval_every = 3
[models.lightgcn]
dim = 16
n_layers = 1
epochs = 3
eval_every = 3
"""


@pytest.fixture(name="base_flags")
def base_flags_fixture(tmp_path: Path, worker_cache: Path) -> list[str]:
    """Flags for a seconds-long run: synthetic data, mock LLM, hashing embedder, tiny models."""
    models = tmp_path / "tiny_models.toml"
    models.write_text(TINY_MODELS)
    return [
        "--data.dataset", "synthetic",
        "--data.n-personas", "6",
        "--data.cache-dir", str(worker_cache),
        "--llm.backend", "mock",
        "--users.embedder", "hashing",
        "--simulation.pages", "3",
        "--run.out-dir", str(tmp_path / "runs"),
        "--recommenders.config-file", str(models),
    ]  # fmt: skip


def test_compare_writes_logs_table_and_report(base_flags: list[str], tmp_path: Path, capsys) -> None:
    app(["compare", *base_flags, "--run.name", "cmp", "--recommenders.names", '["random","pop","mf","llm-rank"]'])
    out = capsys.readouterr().out
    assert "P_view" in out and "report:" in out
    run_dir = tmp_path / "runs" / "cmp"
    tables = read_run(run_dir)
    assert set(tables.events["policy"]) == {"random", "pop", "mf", "llm-rank"}
    assert "rerank" in set(tables.llm_calls.loc[tables.llm_calls["policy"] == "llm-rank", "template"])
    assert tables.events.groupby("policy")["episode"].nunique().eq(6).all()
    assert set(tables.interviews["score"]).issubset(set(range(1, 11)))
    assert len(tables.llm_calls) > 0 and tables.llm_calls["backend"].eq("mock").all()
    report = (run_dir / "report.md").read_text()
    assert "| mf " in report and "LLM cost" in report
    # How each recommender's training stopped; the epoch-trained MF says so on the console too.
    training = json.loads((run_dir / "training.json").read_text())
    assert training["random"] is None and training["pop"] is None
    assert training["mf"]["stopped_by"] in ("epochs", "patience") and not training["mf"]["time_capped"]
    assert training["llm-rank"] == training["mf"]  # its base model's training
    assert "mf: trained 4 epochs" in out and "WARNING" not in out
    for png in ("metrics.png", "exit_pages.png", "ratings.png", "latency.png"):
        assert (run_dir / "report" / png).stat().st_size > 1000
    # The metrics in the report come from the logs: P_view of random recomputed by hand.
    ev = tables.events[tables.events["policy"] == "random"]
    by_user = ev.groupby("user")["watched"].mean().mean()
    metrics = pd.read_csv(run_dir / "report" / "metrics.csv")
    row = metrics[(metrics["policy"] == "random") & (metrics["metric"] == "P_view")].iloc[0]
    assert row["mean"] == pytest.approx(by_user)


def test_resume_after_crash_gives_identical_logs(base_flags: list[str], tmp_path: Path) -> None:
    flags = [*base_flags, "--run.name", "r", "--recommenders.names", '["random","pop"]']
    app(["compare", *flags])
    run_dir = tmp_path / "runs" / "r"
    before = read_run(run_dir)
    # Emulate a crash during the second policy: its checkpoint and every part after the first page vanish.
    pop_dir = run_dir / "policies" / "pop"
    (pop_dir / "checkpoint.json").unlink()
    for table in ("interviews", "pages"):
        shutil.rmtree(pop_dir / table)
    for part in sorted((pop_dir / "events").glob("part-*.parquet"))[1:]:
        part.unlink()
    with pytest.raises(SystemExit):  # starting the same run again is refused ...
        app(["compare", *flags])
    app(["resume", str(run_dir)])  # ... resuming it is not
    after = read_run(run_dir)
    pd.testing.assert_frame_equal(before.events, after.events)
    pd.testing.assert_frame_equal(before.interviews, after.interviews)


def test_bad_config_fails_before_work_naming_file_key_value(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[llm]\nbackend = "mock"\nbakend = "x"\n[simulation]\npages = "five"\n')
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    message = str(info.value)
    assert str(bad) in message and "[llm.bakend] unknown key" in message and "'five'" in message
    with pytest.raises(SystemExit) as code:
        app(["compare", "--config", str(bad), "--run.out-dir", str(tmp_path / "runs")])
    assert code.value.code == 2
    assert "bakend" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="line 1"):
        (tmp_path / "broken.toml").write_text("[llm\n")
        load_config(tmp_path / "broken.toml")


def test_flags_override_file_which_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[data]\nn_personas = 7\n[llm]\nbackend = "mock"\n')
    config = load_config(path, {"data": {"n_personas": 3}})
    assert config.data.n_personas == 3 and config.llm.backend == "mock" and config.simulation.pages == 5
    assert load_config(Path("demo")).llm.backend == "llama-cpp"  # bare names resolve to experiments/configs


def test_fidelity_command_scores_every_kind(base_flags: list[str], tmp_path: Path) -> None:
    app(["fidelity", *base_flags, "--run.name", "fid", "--fidelity.n-personas", "8",
         "--fidelity.kinds", '["fitted","handset"]', "--fidelity.ratios", "[1,3]"])  # fmt: skip
    table = pd.read_csv(tmp_path / "runs" / "fid" / "fidelity.csv")
    assert sorted(zip(table["kind"], table["ratio"], strict=True)) == [
        ("fitted", 1), ("fitted", 3), ("handset", 1), ("handset", 3)
    ]  # fmt: skip
    assert table[["accuracy", "precision", "recall", "f1", "rmse", "rmse_stars", "kl"]].notna().all().all()
    assert table["accuracy"].between(0, 1).all()
    # both kinds rank by a watch probability, so both answer the protocol as peers run it (told k, pick k)
    assert table["protocol_accuracy"].between(0, 1).all()
    assert (table["protocol_precision"] == table["protocol_recall"]).all()  # exactly k picked per page


def test_train_rl_command_trains_and_evaluates(base_flags: list[str], tmp_path: Path) -> None:
    """The CLI path: train-rl writes a checkpoint and scores it beside its base, Pop and Random (evaluate-rl)."""
    app(["train-rl", *base_flags, "--run.name", "rl", "--rl.timesteps", "128", "--rl.eval-personas", "4",
         "--rl.base", "pop"])  # fmt: skip
    result = json.loads((tmp_path / "runs" / "rl" / "evaluate_rl.json").read_text())
    assert set(result["policies"]) == {"ppo", "sim-greedy", "pop", "random"}
    assert result["personas_disjoint"] is True and len(result["eval_personas"]) == 4


def test_population_command_writes_rounds_and_report(base_flags: list[str], tmp_path: Path) -> None:
    app(["population", *base_flags, "--run.name", "pop", "--population.rounds", "2",
         "--population.recommender", "pop"])  # fmt: skip
    run_dir = tmp_path / "runs" / "pop"
    table = read_table(run_dir, "population")
    assert sorted(set(table["variant"])) == ["closed loop", "open loop"]
    assert table.groupby("variant")["round"].apply(list).map(lambda r: r == [1, 2]).all()
    assert (run_dir / "report" / "population.png").is_file()


def test_report_from_a_stored_tiny_log(tmp_path: Path) -> None:
    """Two users, one policy, hand-made rows: the report's numbers are the hand-computed ones."""
    log = RunLog(tmp_path / "run")
    log.write_config({"policy": "p"})
    rows = []
    #  user 0: page 0 shows 2 items, watches one rated 5; user 1: watches both, rated 4 and 2, leaves on page 0.
    for user, watched, ratings in ((0, (True, False), (5, None)), (1, (True, True), (4, 2))):
        for pos, (w, r) in enumerate(zip(watched, ratings, strict=True)):
            rows.append(
                {"run": "run", "policy": "p", "episode": user, "user": user, "page": 0, "position": pos,
                 "item": pos, "watched": w, "rating": r, "liked": bool(r and r >= 4), "left": user == 1,
                 "reward": float(w), "llm_call_id": "", "propensity": float("nan"), "feeling": ""}
            )  # fmt: skip
    log.append("events", rows)
    log.append(
        "interviews",
        [{"run": "run", "policy": "p", "episode": u, "user": u, "n_pages": 1, "score": s, "fallback": False,
          "reason": "", "llm_call_ids": ""} for u, s in ((0, 6), (1, 8))],
    )  # fmt: skip
    (tmp_path / "run" / "reference.json").write_text(json.dumps({"rating_hist": [0.1, 0.1, 0.3, 0.3, 0.2]}))
    build_report(tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "report" / "metrics.csv").set_index("metric")["mean"]
    assert metrics["P_view"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["N_like"] == pytest.approx((1 + 1) / 2)
    assert metrics["P_like"] == pytest.approx((0.5 + 0.5) / 2)
    assert metrics["N_exit"] == pytest.approx(1.0)
    assert metrics["S_sat"] == pytest.approx(7.0)
    assert "0.750" in (tmp_path / "run" / "report.md").read_text()
    assert np.isfinite(metrics.to_numpy()).all()
