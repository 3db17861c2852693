"""Scoring the simulator against real held-out data (experiments.validity) and the `simrec validate` command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from experiments.config import load_config
from experiments.validity import EXPECTED_BIAS, agreement, auc_watch, bias, label_shown, lift_agreement, score_validity
from tests.fixtures_cache import seed_response_cache


def planted_events(quality: dict[str, float], sim_noise: float, n_users: int = 300, seed: int = 0):
    """Events of policies whose shown items are in TEST with probability `quality[policy]`, and a simulator
    that watches with that same probability (plus `sim_noise`); returns (events, valid, test)."""
    rng = np.random.default_rng(seed)
    events, test = [], []
    item = 0
    for policy, q in quality.items():
        for u in range(n_users):
            for _ in range(8):
                hit = rng.random() < q
                watched = rng.random() < np.clip(q + sim_noise * rng.normal(), 0, 1)
                events.append((policy, u, item, watched, 5.0 if watched else None))
                if hit:
                    test.append((u, item, 5.0 if rng.random() < 0.7 else 2.0))
                item += 1
    ev = pd.DataFrame(events, columns=["policy", "user", "item", "watched", "rating"])
    test_frame = pd.DataFrame(test, columns=["user_id", "item_id", "rating"])
    valid = pd.DataFrame({"user_id": [0], "item_id": [-1], "rating": [4.0]})
    return ev, valid, test_frame


QUALITY = {"random": 0.02, "pop": 0.2, "mf": 0.3, "lightgcn": 0.35, "sasrec": 0.25, "weak": 0.1}


def test_planted_truth_gives_full_agreement() -> None:
    ev, valid, test = planted_events(QUALITY, sim_noise=0.0)
    result = score_validity(label_shown(ev, valid, test), ["pop", "mf", "lightgcn", "sasrec"], n_boot=200)
    view = result["agreement"]["p_view_vs_real_hit"]
    assert view["all"]["spearman"] == pytest.approx(1.0)
    assert view["pop_cf"]["spearman"] == pytest.approx(1.0)
    assert view["all"]["significant_pairs"] == 1.0 and view["all"]["inverted_pairs"] == []
    assert view["all"]["n_significant_pairs"] >= 12
    assert result["calibration"]["ratio_cv"] < 0.1
    for name, q in QUALITY.items():
        assert result["policies"][name]["real_hit"] == pytest.approx(q, abs=0.03)


def test_inverted_simulator_is_caught() -> None:
    """A simulator that watches Pop most and the best CF model least gets a negative Spearman and the
    inverted significant pairs listed."""
    ev, valid, test = planted_events(QUALITY, sim_noise=0.0)
    flipped = {"pop": "lightgcn", "lightgcn": "pop"}
    sim = ev.copy()
    swapped, _, _ = planted_events({flipped.get(k, k): v for k, v in QUALITY.items()}, 0.0)
    sim["watched"] = swapped.sort_values(["policy", "user"], kind="stable")["watched"].to_numpy()
    labelled = label_shown(ev.assign(watched=sim["watched"]), valid, test)
    view = score_validity(labelled, ["pop", "mf", "lightgcn", "sasrec"], n_boot=200)["agreement"]
    assert view["p_view_vs_real_hit"]["all"]["spearman"] < 0.9
    assert view["p_view_vs_real_hit"]["all"]["inverted_pairs"]


def test_agreement_interval_contains_point_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    real = rng.random((5, 100)) * np.arange(1, 6)[:, None]
    sim = real + rng.normal(0, 1.0, real.shape)
    names = ["a", "b", "c", "d", "e"]
    a = agreement(sim, real, names, names, n_boot=300, seed=3)
    b = agreement(sim, real, names, names, n_boot=300, seed=3)
    assert a == b
    assert a["ci"][0] <= a["spearman"] <= a["ci"][1]


def test_bias_finds_the_policy_the_simulator_overrates() -> None:
    """A simulator calibrated for every policy but one, which it rates 30% too high: that policy's bias is
    about +30% with an interval excluding 0, the others' intervals include 0."""
    rng = np.random.default_rng(1)
    real = rng.binomial(20, np.array([0.05, 0.1, 0.2, 0.3, 0.4])[:, None], (5, 400)) / 20
    sim = real * 2.0 + rng.normal(0, 0.01, real.shape)  # a constant level (held-out vs test) is no bias
    sim[2] *= 1.3
    names = ["a", "b", "c", "d", "e"]
    result = bias(sim, real, names, n_boot=300, seed=0)
    assert result["c"]["bias"] == pytest.approx(0.3, abs=0.05)
    assert result["c"]["ci"][0] > 0.15
    for name in ("a", "b", "d", "e"):
        assert abs(result[name]["bias"]) < 0.06
    assert result["c"]["significant"] and not any(result[name]["significant"] for name in ("a", "b", "d", "e"))
    assert bias(sim, real, names, n_boot=300, seed=0) == result


def test_expected_bias_separates_the_model_from_the_sessions() -> None:
    """Decisions drawn from a calibrated probability, except that one policy's users watch twice as often as that
    probability says (what early leaving does to a realized share): the realized bias finds the policy, the
    expected bias (the probability itself) does not; without a probability there is no expected block."""
    rng = np.random.default_rng(4)
    rows, test = [], []
    item = 0
    for policy, q in QUALITY.items():
        for u in range(300):
            for _ in range(8):
                if rng.random() < q:
                    test.append((u, item, 5.0))
                watched = rng.random() < min(1.0, q * (2.0 if policy == "weak" else 1.0))
                rows.append((policy, u, item, watched, 5.0 if watched else None, q))
                item += 1
    ev = pd.DataFrame(rows, columns=["policy", "user", "item", "watched", "rating", "watch_probability"])
    valid = pd.DataFrame({"user_id": [0], "item_id": [-1], "rating": [4.0]})
    test_frame = pd.DataFrame(test, columns=["user_id", "item_id", "rating"])
    labelled = label_shown(ev, valid, test_frame)
    result = score_validity(labelled, ["pop", "mf"], n_boot=200)
    realized, expected = result["bias"]["p_view_vs_real_hit"], result["bias"][EXPECTED_BIAS]
    assert realized["weak"]["bias"] > 0.7 and realized["weak"]["significant"]
    assert abs(expected["weak"]["bias"]) < 0.15 and not expected["weak"]["significant"]
    assert result["policies"]["weak"]["sim_p_view_expected"] == pytest.approx(QUALITY["weak"])
    without = score_validity(label_shown(ev.drop(columns="watch_probability"), valid, test_frame), ["pop"], n_boot=50)
    assert EXPECTED_BIAS not in without["bias"] and "sim_p_view_expected" not in without["policies"]["weak"]


def test_distinct_auc_counts_each_pair_once() -> None:
    """A pair shown by many policies weighs once per policy in the pooled AUC and once in the distinct one."""
    labelled = pd.DataFrame(
        {
            "user": [0, 0, 0, 0, 0, 1],
            "item": [1, 1, 1, 1, 2, 3],
            "watch_probability": [0.9, 0.9, 0.9, 0.9, 0.5, 0.1],
            "in_test": [False, False, False, False, True, False],
        }
    )
    # pooled: the positive (0.5) beats the one 0.1 negative and loses to four 0.9 copies -> 1/5
    assert auc_watch(labelled) == pytest.approx(1 / 5)
    # distinct: one 0.9 negative and one 0.1 negative -> 1/2
    assert auc_watch(labelled, distinct=True) == pytest.approx(1 / 2)


def test_lift_agreement_measures_overpredicted_lifts() -> None:
    """Exact lifts give a median error 0; a simulator that doubles every lift over the worst policy is off by
    about 1 (100%) on the pairs that include it."""
    rng = np.random.default_rng(2)
    quality = np.array([0.1, 0.15, 0.2, 0.3])
    real = rng.binomial(30, quality[:, None], (4, 500)) / 30
    names = ["w", "x", "y", "z"]
    exact = lift_agreement(real.copy(), real, names, n_boot=200, seed=0)
    assert exact["median_relative_error"] == pytest.approx(0.0, abs=1e-12) and exact["n_pairs"] == 6
    sim = real.copy()
    sim[1:] *= 1 + (quality[1:, None] / quality[0] - 1)  # lift over w doubled, roughly
    skewed = lift_agreement(sim, real, names, n_boot=200, seed=0)
    over_w = [r for r in skewed["pairs"] if r["worse"] == "w"]
    assert len(over_w) == 3 and all(r["sim_lift"] > 1.5 * r["real_lift"] for r in over_w)
    assert skewed["pairs"][0]["relative_error"] >= skewed["pairs"][-1]["relative_error"]


@pytest.mark.slow
def test_validate_command_on_synthetic_data(tmp_path, fitted_response, monkeypatch) -> None:
    """End to end on the synthetic dataset with the fast user and the fitted response model: the JSON
    contract, and the planted structure (Random and the popularity band are worse than MF, really and in sim)."""
    import agents.features
    import experiments.build
    from experiments.validate import run_validate

    ranked: list[str] = []  # each fit source's rankings, computed for the response fits of this run
    rank_sources = experiments.build.source_rankings
    monkeypatch.setattr(
        experiments.build, "source_rankings", lambda rec, *a: ranked.append(rec.name) or rank_sources(rec, *a)
    )
    eased: list[int] = []  # EASE weights, computed for each response fit that does not share another's
    ease = agents.features.ease_weights
    monkeypatch.setattr(agents.features, "ease_weights", lambda *a: eased.append(1) or ease(*a))

    config = load_config(
        None,
        {
            "run": {"name": "v", "out_dir": str(tmp_path / "runs")},
            "data": {
                "dataset": "synthetic",
                "cache_dir": str(seed_response_cache(tmp_path / "cache", fitted_response)),
            },
            "users": {"kind": "fitted", "embedder": "hashing"},
            "llm": {"backend": "mock"},
            "validity": {
                "policies": ["random", "pop-band100", "pop", "mf", "mf-noise3", "sim-greedy"],
                "bootstrap": 100,
            },
            "recommenders": {"config_file": str(tmp_path / "recs.toml")},
        },
    )
    (tmp_path / "recs.toml").write_text(
        "[models.mf]\nepochs = 30\neval_every = 1000\n[models.lightgcn]\nepochs = 5\neval_every = 1000\n"
        "[models.multvae]\nepochs = 5\neval_every = 1000\n[models.sasrec]\nepochs = 2\neval_every = 1000\n"
    )
    run_dir = run_validate(config)
    result = json.loads((run_dir / "validity.json").read_text())
    assert {
        "dataset",
        "n_personas",
        "seed",
        "user_kind",
        "policies",
        "agreement",
        "calibration",
        "auc_watch_test",
    } <= set(result)
    for row in result["policies"].values():
        assert {"shown", "sim_p_view", "sim_p_like", "real_hit", "real_like", "heldout_hit", "recall_at_20"} <= set(row)
    for key in ("p_view_vs_real_hit", "p_like_vs_real_like"):
        for subset in ("all", "pop_cf"):
            part = result["agreement"][key][subset]
            assert {"spearman", "ci", "significant_pairs"} <= set(part)
            assert len(part["ci"]) == 2
    p = result["policies"]
    assert p["random"]["real_hit"] < p["mf"]["real_hit"] and p["random"]["sim_p_view"] < p["mf"]["sim_p_view"]
    assert result["auc_watch_test"] > 0.6
    assert (run_dir / "validity.md").is_file() and (run_dir / "validity.png").is_file()
    assert result["time_capped"] == [] and result["training"]["random"] is None
    assert result["training"]["mf"]["stopped_by"] == "epochs" and result["training"]["mf"]["epochs_run"] == 30
    # out of sample: every policy of a fit-source family re-simulated by a user fitted without that family
    loso = result["leave_one_source_out"]
    assert loso["left_out_family"] == {"pop-band100": "pop", "pop": "pop", "mf": "mf", "mf-noise3": "mf"}
    for name in loso["left_out_family"]:
        assert (run_dir / "leave_one_source_out" / name / "events").is_dir()
    assert set(loso["policies"]) == set(p) and loso["policies"]["random"] == p["random"]  # not a source: as is
    assert loso["policies"]["mf"]["sim_p_view"] != p["mf"]["sim_p_view"]
    for block in (result, loso):
        assert set(block["bias"]["p_view_vs_real_hit"]) == set(p)
        # the fitted user exposes its watch probability: the expected P_view and its bias are reported too
        assert set(block["bias"][EXPECTED_BIAS]) == set(p)
        assert all(0 < row["sim_p_view_expected"] < 1 for row in block["policies"].values())
        assert 0.5 < block["auc_watch_test_distinct"] <= 1
        assert 0 <= block["lift_agreement"]["p_view_vs_real_hit"]["median_relative_error"] < 10
    assert "Out of sample" in (run_dir / "validity.md").read_text()
    # three response fits (without pop, without mf, ensemble member 1 for sim-greedy) ranked each source once
    assert sorted(ranked) == sorted(set(ranked)) and {"pop", "mf"} <= set(ranked)
    # EASE for the main fit and ensemble member 1 (another seed); the two left-out fits reuse the main fit's
    assert len(eased) == 2
