"""Metrics on a hand-made log whose values are known, intervals, and the per-user averaging."""

import numpy as np
import pandas as pd
import pytest

from simenv.eventlog import RunLog
from simenv.metrics import per_user_metrics, run_metrics, summarize


def _events():
    rows = []

    def page(policy, user, episode, page_index, watched, ratings):
        for pos, (w, r) in enumerate(zip(watched, ratings, strict=True)):
            rows.append(
                {
                    "run": "hand",
                    "policy": policy,
                    "episode": episode,
                    "user": user,
                    "page": page_index,
                    "position": pos,
                    "item": 100 * user + 10 * page_index + pos,
                    "watched": w,
                    "rating": r,
                    "liked": r is not None and r >= 4,
                    "left": False,
                    "reward": float(w),
                    "llm_call_id": "",
                    "propensity": 1.0,
                    "feeling": "",
                }
            )

    # policy A, user 1: 8 shown, 3 watched, 2 liked (5 and 4), 2 pages.
    page("A", 1, 0, 0, [True, True, False, False], [5, 3, None, None])
    page("A", 1, 0, 1, [True, False, False, False], [4, None, None, None])
    # policy A, user 2: 4 shown, nothing watched, left on page 1.
    page("A", 2, 1, 0, [False] * 4, [None] * 4)
    # policy B, user 1 over two episodes: P_view 1.0 and 0.5 -> user mean 0.75.
    page("B", 1, 0, 0, [True] * 4, [4, 4, 4, 4])
    page("B", 1, 1, 0, [True, True, False, False], [2, 2, None, None])
    return rows


def _interviews():
    base = {"run": "hand", "fallback": False, "reason": "", "llm_call_ids": ""}
    return [
        {**base, "policy": "A", "episode": 0, "user": 1, "n_pages": 2, "score": 8},
        {**base, "policy": "A", "episode": 1, "user": 2, "n_pages": 1, "score": 2},
    ]


def test_per_user_values_match_the_definitions():
    pu = per_user_metrics(pd.DataFrame(_events()), pd.DataFrame(_interviews())).set_index(["policy", "user"])
    assert pu.loc[("A", 1), "P_view"] == pytest.approx(3 / 8)
    assert pu.loc[("A", 1), "N_like"] == 2
    assert pu.loc[("A", 1), "P_like"] == pytest.approx(2 / 8)
    assert pu.loc[("A", 1), "N_exit"] == 2
    assert pu.loc[("A", 1), "S_sat"] == 8
    assert pu.loc[("A", 2), "P_view"] == 0
    assert pu.loc[("A", 2), "N_exit"] == 1
    assert pu.loc[("B", 1), "P_view"] == pytest.approx(0.75)
    assert pu.loc[("B", 1), "N_like"] == pytest.approx(2.0)  # 4 likes, then 0: mean over the user's episodes
    assert np.isnan(pu.loc[("B", 1), "S_sat"])


def test_run_metrics_from_a_run_directory_with_t_intervals(tmp_path):
    log = RunLog(tmp_path)
    log.append("events", _events()[:8])
    log.append("events", _events()[8:])
    log.append("interviews", _interviews())
    table = run_metrics(tmp_path, method="t").set_index(["policy", "metric"])
    assert table.loc[("A", "P_view"), "mean"] == pytest.approx(3 / 16)
    assert table.loc[("A", "N_like"), "mean"] == pytest.approx(1.0)
    assert table.loc[("A", "P_like"), "mean"] == pytest.approx(1 / 8)
    assert table.loc[("A", "N_exit"), "mean"] == pytest.approx(1.5)
    assert table.loc[("A", "S_sat"), "mean"] == pytest.approx(5.0)
    # Two users with N_exit 2 and 1: t(0.975, df=1) * sd / sqrt(2) = 12.706 * 0.5.
    assert table.loc[("A", "N_exit"), "ci_high"] == pytest.approx(1.5 + 12.7062 * 0.5, rel=1e-4)
    assert table.loc[("A", "N_exit"), "n_users"] == 2
    # One user only: a degenerate interval, never NaN; no interviews for B: no S_sat row.
    assert table.loc[("B", "P_view"), "ci_low"] == table.loc[("B", "P_view"), "ci_high"] == pytest.approx(0.75)
    assert ("B", "S_sat") not in table.index
    assert not table[["mean", "ci_low", "ci_high"]].isna().any().any()


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(0)
    per_user = pd.DataFrame(
        {
            "policy": "X",
            "user": np.arange(200),
            "P_view": rng.uniform(0, 1, 200),
            "N_like": rng.integers(0, 10, 200),
            "P_like": rng.uniform(0, 1, 200),
            "N_exit": rng.integers(1, 6, 200),
            "S_sat": rng.integers(1, 11, 200),
        }
    )
    a = summarize(per_user, rng=np.random.default_rng(5))
    b = summarize(per_user, rng=np.random.default_rng(5))
    pd.testing.assert_frame_equal(a, b)
    assert ((a["ci_low"] < a["mean"]) & (a["mean"] < a["ci_high"])).all()
    t = summarize(per_user, method="t").set_index("metric")
    boot = a.set_index("metric")
    width_t = t["ci_high"] - t["ci_low"]
    width_b = boot["ci_high"] - boot["ci_low"]
    assert np.allclose(width_b, width_t, rtol=0.2)  # both estimate the same standard error
    with pytest.raises(ValueError, match="seeded rng"):
        summarize(per_user)
