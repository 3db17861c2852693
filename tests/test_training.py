"""The shared training loop: epochs with early stopping on valid (best weights kept), seeded so two fits give
identical weights and top-k, a wall-clock cap that is only a guard and is recorded when it fires, progress
reports, vectorised BPR negatives, and a model cache key that changes with any setting or default."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console

from experiments.model_cache import resolved_settings
from experiments.training_log import TrainingLog, training_summary, warn_if_time_capped
from recommenders.base import UserItems
from recommenders.evaluation import evaluate_split
from recommenders.registry import load, make
from recommenders.training import BPRSampler, EpochProgress, time_capped, training_progress
from tests.fixtures_recommenders import (  # noqa: F401  (the *_fixture names register pytest fixtures)
    fit,
    random_split_fixture,
    synthetic_fixture,
)

EPOCH_TRAINED = ("mf", "lightgcn", "multvae")


@pytest.mark.parametrize("name", EPOCH_TRAINED)
def test_two_fits_with_one_seed_give_identical_weights_and_top_k(name, random_split) -> None:
    a, b = fit(name, random_split, seed=3), fit(name, random_split, seed=3)
    state_a, state_b = a._state(), b._state()
    assert state_a.keys() == state_b.keys() and state_a
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    users = np.arange(random_split.dataset.n_users)
    top_a = np.argsort(-a.score_batch(users), axis=1, kind="stable")[:, :20]
    top_b = np.argsort(-b.score_batch(users), axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(top_a, top_b)
    assert a.train_report["stopped_by"] in ("patience", "epochs")
    assert {k: v for k, v in a.train_report.items() if k != "train_seconds" and k != "curve"} == {
        k: v for k, v in b.train_report.items() if k != "train_seconds" and k != "curve"
    }


def test_early_stopping_keeps_the_best_valid_weights(random_split) -> None:
    model = fit("mf", random_split, epochs=200, eval_every=1, patience=3, lr=0.05)
    report = model.train_report
    assert report["stopped_by"] == "patience"
    assert report["epochs_run"] == report["best_epoch"] + 3
    evaluated = [p["valid_recall@20"] for p in report["curve"] if "valid_recall@20" in p]
    assert report["best_valid"] == max(evaluated) == report["best_valid_recall@20"]
    # the restored weights are those of the best epoch, not the last
    assert evaluate_split(model, random_split, on="valid").recall == pytest.approx(report["best_valid"], abs=1e-5)


def test_ndcg_can_drive_early_stopping(random_split) -> None:
    model = fit("mf", random_split, epochs=6, eval_every=2, valid_metric="ndcg@10")
    assert model.train_report["valid_metric"] == "ndcg@10"
    assert model.train_report["best_valid"] == pytest.approx(
        evaluate_split(model, random_split, on="valid", k=10).ndcg, abs=1e-5
    )
    with pytest.raises(ValueError, match="valid_metric must be 'recall@K' or 'ndcg@K'"):
        make("mf", valid_metric="map@10")


def test_time_cap_is_a_recorded_guard(random_split, tmp_path) -> None:
    model = fit("lightgcn", random_split, epochs=500, eval_every=50, time_cap_s=1e-6)
    report = model.train_report
    assert report["stopped_by"] == "time_cap" and report["epochs_run"] == 1
    assert report["best_valid"] is not None  # the last epoch is validated
    model.save(tmp_path / "m")
    loaded = load(tmp_path / "m")
    assert time_capped(loaded) is not None and loaded.train_report["time_cap_s"] == 1e-6
    summary = training_summary(loaded)
    assert summary is not None and summary["time_capped"] and summary["stopped_by"] == "time_cap"
    console = Console(record=True, width=200)
    assert warn_if_time_capped(console, "lightgcn", loaded)
    assert "WARNING lightgcn: training was stopped by the time cap" in console.export_text()
    uncapped = fit("mf", random_split, epochs=2, eval_every=1)
    assert time_capped(uncapped) is None and not warn_if_time_capped(console, "mf", uncapped)
    assert training_summary(make("pop").fit(random_split.train, 200, 300)) is None
    with pytest.raises(ValueError, match="time_cap_s must be positive"):
        make("mf", time_cap_s=0)


def test_the_old_budget_setting_is_rejected_with_the_known_fields() -> None:
    with pytest.raises(TypeError, match=r"unknown MFConfig field\(s\) \['time_budget_s'\].*time_cap_s"):
        make("mf", time_budget_s=10.0)


def test_progress_reports_every_epoch_with_valid_metric_and_eta(random_split) -> None:
    seen: list[EpochProgress] = []
    with training_progress(seen.append):
        model = fit("mf", random_split, epochs=8, eval_every=2, patience=10)
    assert [p.epoch for p in seen] == list(range(1, 9))
    assert [p.valid is not None for p in seen] == [e % 2 == 0 for e in range(1, 9)]
    assert all(p.model == "mf" and p.metric == "recall@20" for p in seen)
    assert seen[-1].stopped_by == "epochs" and all(p.stopped_by is None for p in seen[:-1])
    assert round(seen[-1].best, 5) == model.train_report["best_valid"]
    assert seen[2].eta_s > 0 and "ETA" in seen[2].line() and "stopped by epochs" in seen[-1].line()
    fit("mf", random_split, epochs=2, eval_every=1)  # outside the block: no reports
    assert len(seen) == 8
    console = Console(record=True, width=300)
    log = TrainingLog(console, every_s=0.0, heartbeat_s=0.0)
    for p in seen:
        log(p)
    text = console.export_text()
    assert "mf: epoch 2/8, loss" in text and "valid recall@20" in text and "stopped by epochs" in text


def test_bpr_negatives_avoid_positives_and_are_seeded() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 50, 40
    draws = zip(rng.integers(n_users, size=600), rng.integers(n_items, size=600), strict=True)
    pairs = {(int(u), int(i)) for u, i in draws}
    frame = pd.DataFrame(sorted(pairs), columns=["user_id", "item_id"])
    lists = UserItems.from_frame(frame, n_users)
    a = BPRSampler(lists, n_items, torch.Generator().manual_seed(1)).epoch()
    b = BPRSampler(lists, n_items, torch.Generator().manual_seed(1)).epoch()
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    users, positives, negatives = (t.tolist() for t in a)
    assert sorted(zip(users, positives, strict=True)) == sorted(pairs)
    assert not any((u, j) in pairs for u, j in zip(users, negatives, strict=True))


def test_cache_key_settings_hold_every_field_so_changed_defaults_retrain() -> None:
    full = resolved_settings("mf", {"epochs": 5})
    assert full["epochs"] == 5 and full["time_cap_s"] is None and full["valid_metric"] == "recall@20"
    assert "patience" in full and "batch_size" in full
    assert resolved_settings("mf", {"epochs": 6}) != full
    assert make("mf", **full).config.epochs == 5
    assert resolved_settings("mine", {"x": 1}) == {"x": 1}  # not a registry name: unchanged
    assert resolved_settings("mf", {"nonsense": 1}) == {"nonsense": 1}  # make() reports it


@pytest.mark.parametrize("name", ["mf", "multvae"])
def test_training_log_prints_heartbeats_within_epochs(name, random_split) -> None:
    console = Console(record=True, width=300)
    with training_progress(TrainingLog(console, every_s=1e9, heartbeat_s=0.0)):
        fit(name, random_split, epochs=2, eval_every=2)
    lines = console.export_text().splitlines()
    assert f"  {name}: epoch 1/2 running, 0 s" in lines
    assert lines[-1].startswith(f"  {name}: trained 2 epochs in ") and "stopped by epochs" in lines[-1]
