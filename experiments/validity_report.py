"""The validity section: `validity.md` (tables and agreement) and `validity.png` (sim vs real per policy)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from experiments.validity import EXPECTED_BIAS, per_user  # noqa: E402


def _intervals(labelled: pd.DataFrame, column: str, n_boot: int = 300, seed: int = 0) -> pd.DataFrame:
    """Per-policy mean and persona-bootstrap 95% interval of a per-user share."""
    frame = per_user(labelled).frame
    rng = np.random.default_rng([seed, 41])
    rows = {}
    for policy, group in frame.groupby("policy"):
        v = group[column].to_numpy(np.float64)
        boots = v[rng.integers(0, v.size, (n_boot, v.size))].mean(axis=1)
        rows[policy] = (v.mean(), *np.quantile(boots, [0.025, 0.975]))
    return pd.DataFrame.from_dict(rows, orient="index", columns=["mean", "lo", "hi"])


def plot_validity(path: Path, labelled: pd.DataFrame) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, (sim, real, title) in zip(
        axes,
        (("sim_p_view", "real_hit", "P_view vs real test hit"), ("sim_p_like", "real_like", "P_like vs real like")),
        strict=True,
    ):
        s, r = _intervals(labelled, sim), _intervals(labelled, real)
        for policy in s.index:
            ax.errorbar(
                r.loc[policy, "mean"],
                s.loc[policy, "mean"],
                xerr=[[r.loc[policy, "mean"] - r.loc[policy, "lo"]], [r.loc[policy, "hi"] - r.loc[policy, "mean"]]],
                yerr=[[s.loc[policy, "mean"] - s.loc[policy, "lo"]], [s.loc[policy, "hi"] - s.loc[policy, "mean"]]],
                fmt="o",
                capsize=2,
            )
            ax.annotate(policy, (r.loc[policy, "mean"], s.loc[policy, "mean"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
        ax.set_xlabel(f"real ({real})")
        ax.set_ylabel(f"simulated ({sim})")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_validity_report(run_dir: Path, result: dict, labelled: pd.DataFrame) -> Path:
    """Write validity.md and validity.png into `run_dir`; returns the markdown path."""
    plot_validity(run_dir / "validity.png", labelled)
    lines = [
        f"# Validity: {result['dataset']}, {result['n_personas']} personas, seed {result['seed']}, "
        f"{result['user_kind']} users",
        "",
        "Each policy's simulated outcome vs the real held-out ratings of the same personas for the same shown "
        "(user, item) pairs. real hit = in the user's test ratings; real like = in test with rating >= 4.",
        "",
        "| policy | shown | sim P_view | real hit | held-out hit | sim/real | sim P_like | real like | recall@20 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in sorted(result["policies"].items(), key=lambda kv: -kv[1]["real_hit"]):
        lines.append(
            f"| {name} | {r['shown']} | {r['sim_p_view']:.3f} | {r['real_hit']:.3f} | {r['heldout_hit']:.3f} | "
            f"{r['ratio_view_hit']:.2f} | {r['sim_p_like']:.3f} | {r['real_like']:.3f} | {r['recall_at_20']:.3f} |"
        )
    lines += ["", *agreement_table(result["agreement"])]
    cal = result["calibration"]
    lines += [
        "",
        f"Calibration: sim P_view / real hit, mean {cal['ratio_mean']:.2f}, CV {cal['ratio_cv']:.3f} (Pop + CF), "
        f"CV {cal['ratio_cv_all']:.3f} (all). Item-level AUC of the watch probability for test membership: "
        f"{result['auc_watch_test']:.3f} over every shown pair (a pair shown by several policies counts once per "
        f"policy), {result.get('auc_watch_test_distinct', float('nan')):.3f} over the distinct (user, item) pairs.",
    ]
    if "offline_recall_vs_real_hit" in result:
        o = result["offline_recall_vs_real_hit"]
        lines.append(
            f"Reference: Spearman of offline recall@20 with real hit: all {o['all']:+.2f}, Pop + CF {o['pop_cf']:+.2f}."
        )
    lines += ["", *generalisation_lines(result)]
    if "llm_feature" in result:
        lines += ["", *llm_feature_lines(result["llm_feature"])]
    lines += ["", "![sim vs real](validity.png)", ""]
    path = run_dir / "validity.md"
    path.write_text("\n".join(lines))
    return path


def agreement_table(agreement: dict) -> list[str]:
    """The rank-agreement table: per outcome and policy subset, Spearman, Kendall, significant pairs, inversions."""
    lines = ["| agreement | subset | Spearman [95% CI] | Kendall | significant pairs agreed | inverted |"]
    lines.append("|---|---|---|---|---|---|")
    for key, parts in agreement.items():
        for subset, a in parts.items():
            lines.append(
                f"| {key} | {subset} | {a['spearman']:+.2f} [{a['ci'][0]:+.2f}, {a['ci'][1]:+.2f}] | "
                f"{a['kendall']:+.2f} | {a['significant_pairs']:.2f} of {a['n_significant_pairs']} | "
                f"{', '.join('>'.join(p) for p in a['inverted_pairs']) or '—'} |"
            )
    return lines


def generalisation_lines(result: dict) -> list[str]:
    """Out of sample: leave-one-source-out agreement, each policy's quality-adjusted bias, A/B lift agreement."""
    loso = result.get("leave_one_source_out")
    lines = ["## Out of sample: policies the response model never saw", ""]
    if loso:
        families = ", ".join(f"{p} (without {f})" for p, f in loso["left_out_family"].items())
        lines += [
            "Each fit-source policy re-simulated by a user whose response model was fitted without its family's "
            f"impressions: {families}; the other policies as above.",
            "",
            *agreement_table(loso["agreement"]),
        ]
    else:
        lines.append("Leave-one-source-out: not run (the user kind has no response model, or it writes text).")
    blocks = [("in sample", result)] + ([("leave one source out", loso)] if loso else [])
    columns = [(name, block, "p_view_vs_real_hit") for name, block in blocks]
    expected = EXPECTED_BIAS in result["bias"]
    if expected:
        columns += [
            (f"expected, {name}", block, EXPECTED_BIAS) for name, block in blocks if EXPECTED_BIAS in block["bias"]
        ]
    lines += [
        "",
        "Quality-adjusted bias of P_view (sim/real over the median ratio, minus 1; 95% CI; "
        "* = the interval excludes 0):",
        "",
    ]
    if expected:
        lines += [
            "The expected column scores the user model's own watch probability of the same shown pairs instead of its "
            "sampled decisions: the part of a bias the per-item model makes; the rest comes from the sessions (who "
            "leaves early, how many pages each persona sees).",
            "",
        ]
    lines += ["| policy | " + " | ".join(name for name, _, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for policy in sorted(result["bias"]["p_view_vs_real_hit"]):
        cells = [_bias_cell(block["bias"][key][policy]) for _, block, key in columns]
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    lines += ["", "A/B lift agreement (median |sim lift - real lift| / |real lift| over significant real pairs):", ""]
    for name, block in blocks:
        lift = block["lift_agreement"]["p_view_vs_real_hit"]
        worst = ", ".join(
            f"{r['better']}>{r['worse']} sim {r['sim_lift']:+.0%} real {r['real_lift']:+.0%}" for r in lift["pairs"][:3]
        )
        lines.append(f"- {name}: {lift['median_relative_error']:.2f} over {lift['n_pairs']} pairs; worst: {worst}")
    return lines


def _bias_cell(b: dict) -> str:
    mark = "*" if b.get("significant") else ""
    return f"{b['bias']:+.1%}{mark} [{b['ci'][0]:+.1%}, {b['ci'][1]:+.1%}]"


def llm_feature_lines(block: dict) -> list[str]:
    """The LLM feature section: fitted weights per fold, and response model vs stacked on the same shown pairs."""
    fit = block["fit"]
    lines = [
        "## The LLM's contribution (fitted, not assumed)",
        "",
        "logit P(valid | shown) = a * logit P_response + b * llm_watch + c, fitted on validation membership of "
        f"{fit['n_pairs']} sampled fit impressions of {fit['n_users']} users ({fit['n_positive']} positive), "
        f"cross-fitted over user folds. LLM yes rate {fit['llm_yes_rate']:.2f}; unusable answers: "
        f"{fit['n_failed_items']} in the fit, {fit['run_failed_items']} of {fit['run_answers']} in the run.",
        "",
        "Decisions use logit P_response + b * (llm_watch - yes rate) (a, c not applied); b is applied only when it "
        "lowers the out-of-fold validation log-loss with a user-bootstrap 95% interval above 0: here "
        f"{'APPLIED' if fit['applied'] else 'NOT applied (b = 0, decisions as fitted)'}, log-loss "
        f"{fit['logloss_valid_response']:.4f} -> {fit['logloss_valid_stacked']:.4f}, gain 95% low "
        f"{fit['logloss_gain_ci_low']:+.4f}.",
        "",
        "| fold | a | b (LLM) | c | fit pairs |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {f['fold']} | {f['a']:.3f} | {f['b']:+.3f} | {f['c']:+.3f} | {f['n_pairs']} |" for f in fit["folds"]]
    auc = block["auc_watch_test"]
    view, like = block["expected_spearman"]["p_view_vs_real_hit"], block["expected_spearman"]["p_like_vs_real_like"]
    rows = [
        ("validation AUC, out of fold (fit sample)", fit["auc_valid_response"], fit["auc_valid_stacked"], ".3f"),
        ("test AUC of P(watch), shown pairs", auc["response"], auc["stacked"], ".3f"),
        (
            "expected P_view ~ real hit, Spearman Pop + CF",
            view["response"]["pop_cf"],
            view["stacked"]["pop_cf"],
            "+.2f",
        ),
        ("expected P_view ~ real hit, Spearman all", view["response"]["all"], view["stacked"]["all"], "+.2f"),
        (
            "expected P_like ~ real like, Spearman Pop + CF",
            like["response"]["pop_cf"],
            like["stacked"]["pop_cf"],
            "+.2f",
        ),
        ("expected P_like ~ real like, Spearman all", like["response"]["all"], like["stacked"]["all"], "+.2f"),
    ]
    lines += ["", "| measure | response model (fitted) | stacked (llm-grounded) |", "|---|---|---|"]
    lines += [f"| {name} | {a:{fmt}} | {b:{fmt}} |" for name, a, b, fmt in rows]
    lines += [
        "",
        "Expected = mean watch probability over the same shown pairs (no sampling noise); the simulated P_view and "
        "P_like above are this run's sampled decisions.",
    ]
    return lines
