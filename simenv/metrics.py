"""Agent4Rec's session metrics from a run's logs, per policy, with confidence intervals over users.

Per episode (Agent4Rec's definitions): P_view = watched / shown; N_like = items rated >= 4; P_like = liked / shown;
N_exit = number of pages the user saw (the 1-based page on which they left, or the last page);
S_sat = interview score (1..10). A user's value is the mean over their episodes under that policy; the
reported value is the mean over users, with a 95% interval over users (percentile bootstrap with the
seeded rng passed in, or Student t). Nothing here turns into NaN silently: a policy without interviews
simply has no S_sat row.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from simenv.eventlog import read_table

METRICS = ("P_view", "N_like", "P_like", "N_exit", "S_sat")
COLUMNS = ["policy", "metric", "mean", "ci_low", "ci_high", "n_users"]


def per_user_metrics(events: pd.DataFrame, interviews: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (policy, user) with the five metrics (S_sat NaN for users without an interview)."""
    need = {"policy", "episode", "user", "page", "watched", "liked"}
    missing = need - set(events.columns)
    if missing:
        raise ValueError(f"events table: missing column(s) {sorted(missing)}")
    if events.empty:
        return pd.DataFrame(columns=["policy", "user", *METRICS])
    ev = events.assign(watched=events["watched"].astype(float), liked=events["liked"].astype(float))
    per_episode = ev.groupby(["policy", "user", "episode"], sort=True).agg(
        shown=("watched", "size"), watched=("watched", "sum"), liked=("liked", "sum"), last_page=("page", "max")
    )
    per_episode["P_view"] = per_episode["watched"] / per_episode["shown"]
    per_episode["N_like"] = per_episode["liked"]
    per_episode["P_like"] = per_episode["liked"] / per_episode["shown"]
    per_episode["N_exit"] = per_episode["last_page"] + 1
    per_episode["S_sat"] = np.nan
    if interviews is not None and not interviews.empty:
        scores = interviews.set_index(["policy", "user", "episode"])["score"].astype(float)
        per_episode["S_sat"] = scores.reindex(per_episode.index)
    per_user = per_episode.groupby(level=["policy", "user"], sort=True)[list(METRICS)].mean()
    return per_user.reset_index()


def summarize(
    per_user: pd.DataFrame,
    rng: np.random.Generator | None = None,
    method: Literal["bootstrap", "t"] = "bootstrap",
    n_boot: int = 2000,
    level: float = 0.95,
) -> pd.DataFrame:
    """Tidy frame (policy, metric, mean, ci_low, ci_high, n_users). Bootstrap needs `rng`."""
    if method == "bootstrap" and rng is None:
        raise ValueError("summarize: method='bootstrap' needs a seeded rng (np.random.Generator)")
    if method not in ("bootstrap", "t"):
        raise ValueError(f"summarize: method={method!r}, expected 'bootstrap' or 't'")
    rows = []
    for policy, group in per_user.groupby("policy", sort=True):
        for metric in METRICS:
            values = group[metric].dropna().to_numpy(dtype=float)
            if len(values) == 0:
                continue
            low, high = _interval(values, rng, method, n_boot, level)
            rows.append((policy, metric, float(values.mean()), low, high, len(values)))
    return pd.DataFrame(rows, columns=COLUMNS)


def run_metrics(
    run_dir: str | Path,
    rng: np.random.Generator | None = None,
    method: Literal["bootstrap", "t"] = "bootstrap",
    n_boot: int = 2000,
) -> pd.DataFrame:
    """`summarize(per_user_metrics(events, interviews))` for one run directory."""
    per_user = per_user_metrics(read_table(run_dir, "events"), read_table(run_dir, "interviews"))
    return summarize(per_user, rng=rng, method=method, n_boot=n_boot)


def _interval(
    values: np.ndarray, rng: np.random.Generator | None, method: str, n_boot: int, level: float
) -> tuple[float, float]:
    mean = float(values.mean())
    n = len(values)
    if n == 1 or np.all(values == values[0]):
        return mean, mean  # no spread to estimate: a degenerate interval, not NaN
    alpha = (1.0 - level) / 2.0
    if method == "t":
        from scipy import stats  # scipy ships with the SB3/sklearn stack; only needed for t intervals

        half = float(stats.t.ppf(1.0 - alpha, n - 1)) * float(values.std(ddof=1)) / math.sqrt(n)
        return mean - half, mean + half
    assert rng is not None
    idx = rng.integers(0, n, size=(n_boot, n))
    means = values[idx].mean(axis=1)
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))
