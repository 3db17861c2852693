"""Issues 15 and 24: `simrec train-rl` trains a re-ranker of a base recommender's candidates on an ensemble of fitted
users and saves a checkpoint; `simrec evaluate-rl` scores it, the sim-greedy yardstick, the base, Pop and Random
three ways on held-out personas (a response member it was not trained on, the other user model, real held-out
data); `simrec export-policy` turns it into a recommender that passes `simrec check-recommender`. Real SB3 PPO on
the synthetic dataset, a few hundred steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.cli import app
from experiments.config import load_config
from experiments.evaluate_rl import EVALUATE_FILE, evaluate_rl, paired_difference
from experiments.rl.checkpoint import MODEL_FILE, MONITOR_FILE, Checkpoint, split_personas
from experiments.train_rl import train_rl

pytestmark = pytest.mark.slow


def _config(root: Path, cache: Path, name: str, **rl: object):
    return load_config(
        None,
        {
            "data": {"dataset": "synthetic", "cache_dir": str(cache)},
            "run": {"out_dir": str(root / "runs"), "name": name},
            "rl": {"timesteps": 512, "eval_personas": 6, "base": "pop", **rl},
        },
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, worker_cache: Path) -> Checkpoint:
    return train_rl(_config(tmp_path_factory.mktemp("rl"), worker_cache, "ppo", action="weights"))


def test_checkpoint_holds_model_monitor_and_a_disjoint_persona_split(trained: Checkpoint) -> None:
    directory = Path(trained.directory)
    assert (directory / MODEL_FILE).is_file() and (directory / MONITOR_FILE).is_file()
    loaded = Checkpoint.load(directory)
    assert loaded.timesteps >= 512 and not loaded.stopped_by_budget
    assert len(loaded.eval_users) == 6 and len(loaded.train_users) > 100
    assert not set(loaded.eval_users) & set(loaded.train_users)
    assert (loaded.algo, loaded.action_mode, loaded.base, loaded.user) == ("ppo", "weights", "pop", "fitted")
    assert loaded.members == (0, 1, 2) and loaded.eval_member == 3  # scored on a member it never trained against


def test_evaluate_rl_scores_every_policy_three_ways(trained: Checkpoint, capsys: pytest.CaptureFixture) -> None:
    app(["evaluate-rl", trained.directory, "--bootstrap", "50"])
    assert "evaluate_rl.json" in capsys.readouterr().out
    result = json.loads((Path(trained.directory) / EVALUATE_FILE).read_text())
    assert result["personas_disjoint"] is True
    assert sorted(result["eval_personas"]) == sorted(trained.eval_users)
    assert not set(result["eval_personas"]) & set(trained.train_users)
    assert set(result["policies"]) == {"ppo", "sim-greedy", "pop", "random"}  # the base is pop here
    for name, scores in result["policies"].items():
        assert scores["train_sim"]["user_model"] == "fitted[member 3]"
        assert scores["other_sim"]["user_model"] == "persona"
        for key in ("train_sim", "other_sim"):
            row = scores[key]
            assert 0 <= row["p_like"] <= row["p_view"] <= 1, (name, key)
            assert 0 <= row["likes_per_session"] <= row["watches_per_session"] <= 20
            assert 1 <= row["pages_per_session"] <= 5
        real = scores["real"]
        assert 0 <= real["real_like"] <= real["real_hit"] <= real["heldout_hit"] <= 1
        assert real["shown"] >= 6 * 4
        assert np.isnan(real["recall_at_20"]) == (name in ("ppo", "sim-greedy"))  # re-rankers: no catalog ranking
    comparison = result["comparisons"]["real"]
    diff, greedy = comparison["real_hit_difference_vs_base"], comparison["greedy_real_hit_difference_vs_base"]
    assert diff["ci"][0] <= diff["difference"] <= diff["ci"][1] and diff["n_personas"] == 6
    assert greedy["difference"] == pytest.approx(
        result["policies"]["sim-greedy"]["real"]["real_hit"] - result["policies"]["pop"]["real"]["real_hit"]
    )
    share = comparison["share_of_greedy_real_hit_gain"]
    assert share is None or share == pytest.approx(diff["difference"] / greedy["difference"])
    assert set(result["comparisons"]["transfer"]) == {"sim_lift", "real_lift", "sim_over_real"}
    for key in ("train_sim", "other_sim"):
        assert set(result["comparisons"][key]) >= {"likes_ratio_vs_pop", "likes_ratio_vs_random"}
    # every policy met the same personas in both simulators
    for key in ("train_sim", "other_sim"):
        events = pd.read_parquet(Path(trained.directory) / "evaluate" / key / "ppo" / "events")
        assert sorted(events["user"].unique()) == sorted(trained.eval_users)


def test_time_budget_stops_training_cleanly(tmp_path: Path, worker_cache: Path) -> None:
    checkpoint = train_rl(_config(tmp_path, worker_cache, "budget", timesteps=10**7, time_budget=0.5))
    assert checkpoint.stopped_by_budget and 0 < checkpoint.timesteps < 10**7
    assert (Path(checkpoint.directory) / MODEL_FILE).is_file()
    assert Checkpoint.load(Path(checkpoint.directory)).stopped_by_budget


def test_split_personas_is_seeded_disjoint_and_complete() -> None:
    ids = range(100, 300)
    train, held_out = split_personas(ids, 50, seed=3)
    assert len(held_out) == 50 and not set(train) & set(held_out) and set(train) | set(held_out) == set(ids)
    assert split_personas(ids, 50, seed=3) == (train, held_out)
    assert split_personas(ids, 50, seed=4)[1] != held_out
    with pytest.raises(ValueError, match="eval_personas"):
        split_personas(ids, 200, seed=3)


def test_split_folds_hold_out_every_persona_exactly_once() -> None:
    ids = range(100, 303)  # 203 users in blocks of 51: folds 0..3, the last one 50
    held = [split_personas(ids, 51, seed=5, fold=k)[1] for k in range(4)]
    assert [len(h) for h in held] == [51, 51, 51, 50]
    assert sorted(u for h in held for u in h) == list(ids)
    train, held_out = split_personas(ids, 51, seed=5, fold=2)
    assert not set(train) & set(held_out) and len(train) + len(held_out) == 203
    assert held[0] == split_personas(ids, 51, seed=5)[1]  # fold 0 is the default split
    with pytest.raises(ValueError, match="eval_fold=4"):
        split_personas(ids, 51, seed=5, fold=4)


def test_pooled_folds_score_the_union_of_their_held_out_personas(
    trained: Checkpoint, tmp_path: Path, worker_cache: Path
) -> None:
    from experiments.evaluate_rl_folds import pool_folds

    other = train_rl(_config(tmp_path, worker_cache, "fold1", timesteps=256, eval_fold=1))
    assert not set(other.eval_users) & set(trained.eval_users)
    folds = [Path(trained.directory), Path(other.directory)]
    done = folds[0] / EVALUATE_FILE  # the CLI test above may have evaluated the shared checkpoint already
    results = [json.loads(done.read_text()) if done.is_file() else evaluate_rl(folds[0], n_boot=50)]
    results.append(evaluate_rl(folds[1], n_boot=50))
    pooled = pool_folds(folds, n_boot=50)
    assert pooled["folds"] == 2 and pooled["n_personas"] == 12
    hit = pooled["comparisons"]["real"]["real_hit_difference_vs_base"]
    per_fold = [r["comparisons"]["real"]["real_hit_difference_vs_base"]["difference"] for r in results]
    assert hit["n_personas"] == 12 and hit["difference"] == pytest.approx(sum(per_fold) / 2)
    likes = [r["policies"]["pop"]["train_sim"]["likes_per_session"] for r in results]
    assert pooled["policies"]["pop"]["train_sim"]["likes_per_session"] == pytest.approx(sum(likes) / 2)
    with pytest.raises(ValueError, match="held out by two checkpoints"):
        pool_folds([folds[0], folds[0]])


def test_paired_difference_of_known_per_persona_values() -> None:
    frame = pd.DataFrame(
        {"policy": ["a"] * 4 + ["b"] * 4, "user": [1, 2, 3, 4] * 2, "real_hit": [0.5] * 4 + [0.25] * 4}
    )
    out = paired_difference(frame, "real_hit", "a", "b", n_boot=100, seed=0)
    assert out == {"difference": 0.25, "ci": [0.25, 0.25], "n_personas": 4}


def test_exported_policy_round_trips_through_check_recommender(trained: Checkpoint) -> None:
    from experiments.check_recommender import run_check
    from experiments.rl.export import export_policy

    out = export_policy(Path(trained.directory), label="rl", n_sessions=16)
    assert out["spec"] == "rl=recommenders.weight_reranker:WeightReranker"
    assert set(out["weights"]) >= {"base_score", "knn", "ease"} and all(-1 <= w <= 1 for w in out["weights"].values())
    config = Checkpoint.load(Path(trained.directory)).experiment()
    config = config.model_copy(
        update={"recommenders": config.recommenders.model_copy(update={"config_file": Path(out["config_file"])})}
    )
    report = run_check(config, out["spec"])
    assert report.ok, report


def test_ranking_policy_trains_evaluates_and_exports_as_a_recommender(tmp_path: Path, worker_cache: Path) -> None:
    from experiments.check_recommender import run_check
    from experiments.rl.export import export_policy
    from experiments.rl.policy import CandidateScoringPolicy
    from experiments.rl.policy_ranker import PolicyRanker
    from experiments.train_rl import run_train_rl

    result = run_train_rl(_config(tmp_path, worker_cache, "ranking", timesteps=256, action="ranking"))
    checkpoint = Checkpoint.load(tmp_path / "runs" / "ranking")
    assert checkpoint.action_mode == "slate" and checkpoint.config["rl"]["action"] == "ranking"
    assert isinstance(checkpoint.load_model().policy, CandidateScoringPolicy)
    assert result["policies"]["ppo"]["real"]["shown"] >= 6 * 4  # evaluate-rl served its pages

    out = export_policy(Path(checkpoint.directory), label="ranked")
    assert out["spec"] == "ranked=experiments.rl.policy_ranker:PolicyRanker" and "weights" not in out
    config = checkpoint.experiment()
    config = config.model_copy(
        update={"recommenders": config.recommenders.model_copy(update={"config_file": Path(out["config_file"])})}
    )
    report = run_check(config, out["spec"])
    assert report.ok, report
    # a session: each page is new, never a train item; the catalog scores are the same on every call
    from experiments.build import build_world

    world = build_world(config)
    ranker = PolicyRanker(Path(checkpoint.directory) / "export", world.dataset).fit(
        world.split.train, world.dataset.n_users, world.dataset.n_items
    )
    user = checkpoint.eval_users[0]
    shown = set(world.population[user].train_items)
    for _ in range(3):
        page = ranker.recommend(user, 4, shown, np.random.default_rng(0)).item_ids
        assert len(set(page)) == 4 and not set(page) & shown
        shown |= set(page)
    assert np.array_equal(ranker.score(user), ranker.score(user))
