"""Scoring the simulator against real held-out data: per-policy real and simulated outcomes, and their agreement.

Definitions (docs/USERS.md, "Validity"), all per persona and then averaged over personas:
- real hit = share of the shown (user, item) pairs found in the user's TEST ratings; real like = in test with
  rating >= 4; held-out hit = in valid or test;
- sim P_view / P_like = the simulator's watched / liked (rating >= 4) share of the same shown pairs;
- agreement across policies: Spearman and Kendall of the per-policy means, with persona-bootstrap 95%
  intervals (the same resampled personas for every policy, so differences are paired);
- significant-pair agreement: among policy pairs whose real difference has a bootstrap interval excluding 0,
  the share the simulator orders the same way; `inverted_pairs` lists the ones it orders the other way;
- calibration: coefficient of variation of sim / real across policies; item level: pooled AUC of the
  simulator's watch probability for test membership, over every shown pair (a pair shown by several policies
  counts once per policy) and over the distinct (user, item) pairs;
- quality-adjusted bias of a policy: its sim / real ratio over the median ratio of all policies, minus 1 (0 = the
  simulator rates it as it rates the typical policy; +0.2 = 20% too generously), with a persona-bootstrap interval
  and whether that interval excludes 0 (`significant`);
- expected P_view: the mean over personas of the user model's own watch probability of the pairs it was shown
  (no sampling, no session dynamics); its bias beside the realized one splits a policy's bias into what the
  per-item model predicts and what the sessions add (who leaves early, how many pages each persona sees);
- A/B lift agreement: over the policy pairs whose real difference is significant, |sim lift - real lift| /
  |real lift| with lift = better / worse - 1 (better by the real outcome); the median is the headline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, spearmanr
from sklearn.metrics import roc_auc_score

LIKE_MIN = 4.0
PAIRS = {"p_view_vs_real_hit": ("sim_p_view", "real_hit"), "p_like_vs_real_like": ("sim_p_like", "real_like")}
EXPECTED_BIAS = "p_view_expected_vs_real_hit"  # the bias block of the expected P_view (module docstring)


@dataclass(frozen=True)
class PerUser:
    """(policy, user) rows: shown count and the per-user shares of every outcome."""

    frame: pd.DataFrame  # columns policy, user, shown, sim_p_view, sim_p_like, real_hit, real_like, heldout_hit,
    # and sim_p_view_expected when every shown pair has a watch probability


def label_shown(events: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """The events with real labels: in_test, test_like, in_heldout (valid or test) for each shown pair."""
    need = {"policy", "user", "item", "watched", "rating"}
    missing = need - set(events.columns)
    if missing:
        raise ValueError(f"events lack columns {sorted(missing)}")
    t = test[["user_id", "item_id", "rating"]].rename(columns={"user_id": "user", "item_id": "item"})
    t = t.assign(in_test=True, test_like=t["rating"].to_numpy() >= LIKE_MIN).drop(columns="rating")
    v = valid[["user_id", "item_id"]].rename(columns={"user_id": "user", "item_id": "item"}).assign(in_valid=True)
    out = events.merge(t, on=["user", "item"], how="left").merge(v, on=["user", "item"], how="left")
    for column in ("in_test", "test_like", "in_valid"):
        out[column] = out[column].astype("boolean").fillna(False).astype(bool)
    out["in_heldout"] = out["in_test"] | out["in_valid"]
    out["sim_like"] = out["watched"].astype(bool) & (pd.to_numeric(out["rating"]).fillna(0).to_numpy() >= LIKE_MIN)
    return out


def per_user(labelled: pd.DataFrame) -> PerUser:
    grouped = labelled.groupby(["policy", "user"], sort=True)
    frame = pd.DataFrame(
        {
            "shown": grouped.size(),
            "sim_p_view": grouped["watched"].mean(),
            "sim_p_like": grouped["sim_like"].mean(),
            "real_hit": grouped["in_test"].mean(),
            "real_like": grouped["test_like"].mean(),
            "heldout_hit": grouped["in_heldout"].mean(),
        }
    )
    if has_expected(labelled):
        frame["sim_p_view_expected"] = grouped["watch_probability"].mean()
    return PerUser(frame.reset_index())


def has_expected(labelled: pd.DataFrame) -> bool:
    """True when every shown pair carries the user model's watch probability (the expected P_view is defined)."""
    return "watch_probability" in labelled.columns and bool(np.isfinite(labelled["watch_probability"]).all())


def _cube(table: PerUser, columns: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(policies, users, values[metric, policy, user]) over the users every policy showed something to."""
    wide = table.frame.pivot(index="user", columns="policy", values=list(columns)).dropna()
    policies = sorted(table.frame["policy"].unique())
    values = np.stack([wide[c][policies].to_numpy(np.float64).T for c in columns])
    return policies, wide.index.to_numpy(), values


def _rank_corr(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0, 0.0
    return float(spearmanr(x, y).statistic), float(kendalltau(x, y).statistic)


def agreement(
    sim: np.ndarray, real: np.ndarray, policies: Sequence[str], subset: Iterable[str], n_boot: int, seed: int
) -> dict:
    """Rank agreement of two (policy, user) matrices over `subset` of policies, with paired persona bootstrap."""
    index = [policies.index(p) for p in subset if p in policies]
    names = [policies[i] for i in index]
    s, r = sim[index], real[index]
    n_users = s.shape[1]
    rng = np.random.default_rng([seed, 31])
    point = _rank_corr(s.mean(axis=1), r.mean(axis=1))
    boot_sp, boot_kt = [], []
    boot_real_diff = np.empty((n_boot, len(index), len(index)))
    for b in range(n_boot):
        pick = rng.integers(0, n_users, n_users)
        sm, rm = s[:, pick].mean(axis=1), r[:, pick].mean(axis=1)
        sp, kt = _rank_corr(sm, rm)
        boot_sp.append(sp)
        boot_kt.append(kt)
        boot_real_diff[b] = rm[:, None] - rm[None, :]
    significant, agreed, inverted = 0, 0, []
    sim_mean, real_mean = s.mean(axis=1), r.mean(axis=1)
    for a, b in combinations(range(len(index)), 2):
        lo, hi = np.quantile(boot_real_diff[:, a, b], [0.025, 0.975])
        if lo > 0 or hi < 0:
            significant += 1
            if np.sign(sim_mean[a] - sim_mean[b]) == np.sign(real_mean[a] - real_mean[b]):
                agreed += 1
            else:
                inverted.append([names[a], names[b]])
    return {
        "policies": names,
        "spearman": point[0],
        "ci": [float(np.quantile(boot_sp, 0.025)), float(np.quantile(boot_sp, 0.975))],
        "kendall": point[1],
        "kendall_ci": [float(np.quantile(boot_kt, 0.025)), float(np.quantile(boot_kt, 0.975))],
        "significant_pairs": agreed / significant if significant else float("nan"),
        "n_significant_pairs": significant,
        "inverted_pairs": inverted,
    }


def bias(sim: np.ndarray, real: np.ndarray, policies: Sequence[str], n_boot: int, seed: int) -> dict:
    """Each policy's quality-adjusted bias (module docstring) with a paired persona-bootstrap 95% interval."""
    n_users = sim.shape[1]

    def point(pick: np.ndarray | slice) -> np.ndarray:
        ratio = sim[:, pick].mean(axis=1) / np.maximum(real[:, pick].mean(axis=1), 1e-12)
        return ratio / np.median(ratio) - 1.0

    rng = np.random.default_rng([seed, 37])
    boot = np.stack([point(rng.integers(0, n_users, n_users)) for _ in range(n_boot)])
    values = point(slice(None))
    out = {}
    for i, p in enumerate(policies):
        lo, hi = (float(q) for q in np.quantile(boot[:, i], [0.025, 0.975]))
        out[p] = {"bias": float(values[i]), "ci": [lo, hi], "significant": bool(lo > 0 or hi < 0)}
    return out


def lift_agreement(sim: np.ndarray, real: np.ndarray, policies: Sequence[str], n_boot: int, seed: int) -> dict:
    """A/B lift agreement over the significant real pairs (module docstring): the median relative error, and
    every pair's lifts, worst first."""
    n_users = sim.shape[1]
    rng = np.random.default_rng([seed, 31])  # the same resamples as `agreement`
    boot = np.empty((n_boot, len(policies)))
    for b in range(n_boot):
        boot[b] = real[:, rng.integers(0, n_users, n_users)].mean(axis=1)
    sim_mean, real_mean = sim.mean(axis=1), real.mean(axis=1)
    pairs = []
    for a, b in combinations(range(len(policies)), 2):
        lo, hi = np.quantile(boot[:, a] - boot[:, b], [0.025, 0.975])
        if not (lo > 0 or hi < 0) or min(real_mean[a], real_mean[b], sim_mean[a], sim_mean[b]) <= 0:
            continue
        hi_i, lo_i = (a, b) if real_mean[a] > real_mean[b] else (b, a)
        real_lift = real_mean[hi_i] / real_mean[lo_i] - 1.0
        sim_lift = sim_mean[hi_i] / sim_mean[lo_i] - 1.0
        error = abs(sim_lift - real_lift) / real_lift
        pairs.append({"better": policies[hi_i], "worse": policies[lo_i], "real_lift": float(real_lift),
                      "sim_lift": float(sim_lift), "relative_error": float(error)})  # fmt: skip
    pairs.sort(key=lambda r: -r["relative_error"])
    errors = [r["relative_error"] for r in pairs]
    return {
        "median_relative_error": float(np.median(errors)) if errors else float("nan"),
        "n_pairs": len(pairs),
        "pairs": pairs,
    }


def auc_watch(labelled: pd.DataFrame, column: str = "watch_probability", distinct: bool = False) -> float:
    """Pooled AUC of a watch-probability column for test membership (NaN if one class is absent); `distinct`
    counts each (user, item) pair once (its mean probability over the policies that showed it)."""
    if column not in labelled.columns:
        return float("nan")
    if distinct:
        labelled = labelled.groupby(["user", "item"], sort=False).agg({column: "mean", "in_test": "first"})
    score = labelled[column].to_numpy(np.float64)
    known = np.isfinite(score)
    y = labelled["in_test"].to_numpy()[known]
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, score[known]))


def score_validity(
    labelled: pd.DataFrame,
    pop_cf: Sequence[str],
    recall: Mapping[str, float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """The `validity.json` body without the run header (dataset, personas, seed, user kind)."""
    table = per_user(labelled)
    columns: tuple[str, ...] = ("sim_p_view", "sim_p_like", "real_hit", "real_like", "heldout_hit")
    if "sim_p_view_expected" in table.frame.columns:
        columns += ("sim_p_view_expected",)
    policies, users, values = _cube(table, columns)
    v = dict(zip(columns, values, strict=True))
    means = table.frame.groupby("policy")[list(columns)].mean()
    shown = table.frame.groupby("policy")["shown"].sum()
    out_policies = {}
    for p in policies:
        row = {"shown": int(shown[p]), **{c: float(means.loc[p, c]) for c in columns}}
        row["sim_p_like_given_view"] = row["sim_p_like"] / row["sim_p_view"] if row["sim_p_view"] else float("nan")
        row["ratio_view_hit"] = row["sim_p_view"] / row["real_hit"] if row["real_hit"] else float("nan")
        row["recall_at_20"] = float(recall[p]) if recall and p in recall else float("nan")
        out_policies[p] = row
    result: dict = {"policies": out_policies, "agreement": {}, "n_scored_users": int(len(users))}
    for key, (sim_col, real_col) in PAIRS.items():
        result["agreement"][key] = {
            "all": agreement(v[sim_col], v[real_col], policies, policies, n_boot, seed),
            "pop_cf": agreement(v[sim_col], v[real_col], policies, pop_cf, n_boot, seed),
        }
    if recall:
        rec = np.array([out_policies[p]["recall_at_20"] for p in policies])
        real = np.array([out_policies[p]["real_hit"] for p in policies])
        sub = [i for i, p in enumerate(policies) if p in pop_cf]
        result["offline_recall_vs_real_hit"] = {
            "all": _rank_corr(rec, real)[0],
            "pop_cf": _rank_corr(rec[sub], real[sub])[0] if len(sub) > 2 else float("nan"),
        }
    ratios = np.array([r["ratio_view_hit"] for p, r in out_policies.items() if p in pop_cf])
    ratios = ratios[np.isfinite(ratios)]
    all_ratios = np.array([r["ratio_view_hit"] for r in out_policies.values()])
    all_ratios = all_ratios[np.isfinite(all_ratios)]
    result["calibration"] = {
        "ratio_cv": float(ratios.std() / ratios.mean()) if ratios.size else float("nan"),
        "ratio_cv_all": float(all_ratios.std() / all_ratios.mean()) if all_ratios.size else float("nan"),
        "ratio_mean": float(ratios.mean()) if ratios.size else float("nan"),
    }
    result["auc_watch_test"] = auc_watch(labelled)
    result["auc_watch_test_distinct"] = auc_watch(labelled, distinct=True)
    result["bias"] = {key: bias(v[sim], v[real], policies, n_boot, seed) for key, (sim, real) in PAIRS.items()}
    if "sim_p_view_expected" in v:
        result["bias"][EXPECTED_BIAS] = bias(v["sim_p_view_expected"], v["real_hit"], policies, n_boot, seed)
    result["lift_agreement"] = {
        key: lift_agreement(v[sim], v[real], policies, n_boot, seed) for key, (sim, real) in PAIRS.items()
    }
    return result


def llm_contribution(labelled: pd.DataFrame, pop_cf: Sequence[str], fit: Mapping) -> dict:
    """What the stacked LLM answer changes on the same shown pairs (profiles with `llm_feature`).

    `labelled` needs `llm_candidate_probability` (stacked with the fitted LLM weight, whether or not the weight
    was applied to the run's decisions), `response_watch_probability` (the response model alone, i.e. the
    `fitted` profile's) and `like_if_watched` (the rating plan's stars >= 4). Reports the fit (weights, its
    out-of-fold validation scores, whether b was applied), the pooled TEST AUC of both probabilities, and the
    Spearman with real hit / like of the per-policy EXPECTED P_view (mean watch probability) and P_like (times
    like_if_watched): a paired, sampling-free comparison of the two decision rules on identical pages.
    """
    frame = labelled.assign(
        like_stacked=labelled["llm_candidate_probability"] * labelled["like_if_watched"],
        like_response=labelled["response_watch_probability"] * labelled["like_if_watched"],
    )
    columns = ["llm_candidate_probability", "response_watch_probability", "like_stacked", "like_response", "in_test"]
    per_policy = frame.groupby(["policy", "user"])[columns + ["test_like"]].mean().groupby("policy").mean()
    policies = list(per_policy.index)
    sub = [p for p in policies if p in pop_cf]

    def spearman(sim: str, real: str) -> dict[str, float]:
        out = {"all": _rank_corr(per_policy[sim].to_numpy(), per_policy[real].to_numpy())[0]}
        out["pop_cf"] = (
            _rank_corr(per_policy.loc[sub, sim].to_numpy(), per_policy.loc[sub, real].to_numpy())[0]
            if len(sub) > 2
            else float("nan")
        )
        return out

    auc_stacked = auc_watch(labelled, "llm_candidate_probability")
    auc_response = auc_watch(labelled, "response_watch_probability")
    return {
        "fit": dict(fit),
        "auc_watch_test": {"response": auc_response, "stacked": auc_stacked, "change": auc_stacked - auc_response},
        "expected_spearman": {
            "p_view_vs_real_hit": {
                "response": spearman("response_watch_probability", "in_test"),
                "stacked": spearman("llm_candidate_probability", "in_test"),
            },
            "p_like_vs_real_like": {
                "response": spearman("like_response", "test_like"),
                "stacked": spearman("like_stacked", "test_like"),
            },
        },
        "expected_p_view": {
            p: {
                "response": float(per_policy.loc[p, "response_watch_probability"]),
                "stacked": float(per_policy.loc[p, "llm_candidate_probability"]),
            }
            for p in policies
        },
    }
