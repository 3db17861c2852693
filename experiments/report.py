"""Reports from a run directory's logs alone: a Markdown report with the metrics table and PNG plots.

A comparison run keeps one sub-run per policy under `<run_dir>/policies/<policy>/` (each a
`simenv.runner` run directory); a single runner directory works too. Nothing here needs the models,
the dataset or the LLM: only the logged tables, `reference.json` (real rating histogram written at run
time) and `population` tables when present.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from experiments.text_quality import feelings_frame, own_text_table, sentiment_table  # noqa: E402
from simenv.eventlog import read_table  # noqa: E402
from simenv.llm.calllog import read_call_log  # noqa: E402
from simenv.metrics import METRICS, per_user_metrics, summarize  # noqa: E402

REFERENCE_FILE = "reference.json"
AGENT4REC_ML1M = {  # published, ML-1M, gpt-3.5, 1,000 agents (Agent4Rec)
    "random": (0.312, 3.3, 0.269, 2.99, 2.93),
    "pop": (0.398, 4.45, 0.360, 3.01, 3.42),
    "mf": (0.488, 6.07, 0.462, 3.17, 3.80),
    "multvae": (0.495, 5.69, 0.452, 3.10, 3.75),
    "lightgcn": (0.502, 5.73, 0.465, 3.02, 3.85),
}


@dataclass(frozen=True)
class RunTables:
    """All logged tables of a run (every policy concatenated)."""

    events: pd.DataFrame
    pages: pd.DataFrame
    interviews: pd.DataFrame
    llm_calls: pd.DataFrame
    population: pd.DataFrame


EXTERNAL_FILE = "external.json"  # a ranking file's or service's counters (experiments.compare.record_external)


def external_table(run_dir: Path) -> pd.DataFrame:
    """One row per policy served by a ranking file or service: its `external.json` counters."""
    rows = {
        p.parent.name: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((run_dir / "policies").glob(f"*/{EXTERNAL_FILE}"))
    }
    return pd.DataFrame.from_dict(rows, orient="index").fillna(0).astype(int).rename_axis("policy")


def policy_dirs(run_dir: Path) -> list[Path]:
    """The runner directories inside a run: `policies/*` of a comparison, or the run itself."""
    nested = sorted(p for p in (run_dir / "policies").glob("*") if (p / "config.json").is_file())
    if nested:
        return nested
    if (run_dir / "config.json").is_file() or (run_dir / "population").is_dir():
        return [run_dir]
    raise FileNotFoundError(f"{run_dir}: no run here (expected config.json or policies/*/config.json)")


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_run(run_dir: Path) -> RunTables:
    dirs = policy_dirs(run_dir)
    calls = []
    for d in dirs:
        if (d / "llm_calls").is_dir():
            frame = read_call_log(d / "llm_calls")
            calls.append(frame.assign(policy=d.name) if not frame.empty else frame)
    return RunTables(
        events=_concat([read_table(d, "events") for d in dirs]),
        pages=_concat([read_table(d, "pages") for d in dirs]),
        interviews=_concat([read_table(d, "interviews") for d in dirs]),
        llm_calls=_concat(calls),
        population=read_table(run_dir, "population") if (run_dir / "population").is_dir() else pd.DataFrame(),
    )


def metrics_table(tables: RunTables, seed: int = 0) -> pd.DataFrame:
    """Tidy metrics (policy, metric, mean, ci_low, ci_high, n_users) with seeded bootstrap intervals."""
    if tables.events.empty:
        return pd.DataFrame(columns=["policy", "metric", "mean", "ci_low", "ci_high", "n_users"])
    per_user = per_user_metrics(tables.events, tables.interviews if not tables.interviews.empty else None)
    out = summarize(per_user, rng=np.random.default_rng(seed))
    shares = fallback_shares(tables.pages)
    return out.assign(fallback_share=out["policy"].map(shares).astype(float).fillna(0.0))


def fallback_shares(pages: pd.DataFrame) -> pd.Series:
    """Per policy: the share of its pages marked `fallback` (the LLM's answer for the page, its decision or in
    narrate mode its text, unusable after its repairs). A policy's metrics rest on fallbacks in that share."""
    if pages.empty or "fallback" not in pages.columns:
        return pd.Series(dtype=float)
    return pages.groupby("policy")["fallback"].mean().astype(float)


def wide_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per policy: 'mean [low, high]' per metric, in Agent4Rec's column order."""
    rows = {}
    for (policy, metric), r in metrics.set_index(["policy", "metric"]).iterrows():
        rows.setdefault(policy, {})[metric] = f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        rows[policy]["users"] = int(r["n_users"])
        if "fallback_share" in r:
            rows[policy]["fallback_share"] = f"{r['fallback_share']:.1%}"
    table = pd.DataFrame.from_dict(rows, orient="index")
    columns = (*METRICS, "users", "fallback_share")
    return table[[c for c in columns if c in table.columns]].rename_axis("policy")


def llm_summary(calls: pd.DataFrame) -> pd.DataFrame:
    """Per policy: calls, tokens, cache hits, repairs, fallbacks, latency percentiles."""
    if calls.empty:
        return pd.DataFrame()
    g = calls.groupby("policy")
    out = pd.DataFrame(
        {
            "calls": g.size(),
            "prompt_tokens": g["prompt_tokens"].sum(),
            "completion_tokens": g["completion_tokens"].sum(),
            "cache_hit_rate": g["cache_hit"].mean(),
            "latency_p50_s": g["latency_s"].median(),
            "latency_p95_s": g["latency_s"].quantile(0.95),
        }
    )
    for column in ("repairs", "fallback"):
        if column in calls.columns:
            out[column] = g[column].sum()
    return out


def _plot_metric_bars(metrics: pd.DataFrame, path: Path) -> None:
    present = [m for m in METRICS if m in set(metrics["metric"])]
    fig, axes = plt.subplots(1, len(present), figsize=(3.2 * len(present), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], present, strict=True):
        m = metrics[metrics["metric"] == metric].sort_values("policy")
        err = np.vstack([m["mean"] - m["ci_low"], m["ci_high"] - m["mean"]])
        ax.bar(m["policy"], m["mean"], yerr=err, capsize=4, color="tab:blue", alpha=0.8)
        ax.set_title(metric)
        ax.tick_params(axis="x", rotation=45)
    fig.suptitle("Per-policy metrics (mean over users, 95% bootstrap interval)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_exit_pages(events: pd.DataFrame, path: Path) -> None:
    last = events.groupby(["policy", "episode"])["page"].max() + 1
    table = last.groupby(level="policy").value_counts(normalize=True).unstack(fill_value=0.0).sort_index(axis=1)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    table.T.plot(kind="bar", ax=ax)
    ax.set_xlabel("exit page (1-based; the last page if the user never left)")
    ax.set_ylabel("share of sessions")
    ax.set_title("Exit-page distribution")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_ratings(events: pd.DataFrame, reference: dict, path: Path) -> None:
    ratings = events.loc[events["watched"], "rating"].astype(int)
    sim = np.bincount(ratings, minlength=6)[1:6].astype(float)
    sim = sim / sim.sum() if sim.sum() else sim
    x = np.arange(1, 6)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.bar(x - 0.2, sim, width=0.4, label="simulated (all policies)")
    real = reference.get("rating_hist")
    if real:
        ax.bar(x + 0.2, real, width=0.4, label=f"real ({reference.get('dataset', 'train split')})")
    ax.set_xlabel("rating")
    ax.set_ylabel("share")
    ax.set_title("Rating histogram: simulated vs real")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_population(population: pd.DataFrame, path: Path) -> None:
    columns = [c for c in ("P_view", "P_like", "coverage", "genre_entropy", "popularity_bias") if c in population]
    fig, axes = plt.subplots(1, len(columns), figsize=(3.0 * len(columns), 3.0), squeeze=False)
    for ax, column in zip(axes[0], columns, strict=True):
        for label, group in population.groupby("variant") if "variant" in population else [("", population)]:
            ax.plot(group["round"], group[column], marker="o", label=str(label) or None)
        ax.set_title(column)
        ax.set_xlabel("round")
    if "variant" in population:
        axes[0][0].legend(fontsize=7)
    fig.suptitle("Population rounds (closed loop)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_latency(calls: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for policy, group in calls.groupby("policy"):
        ax.hist(group["latency_s"], bins=30, alpha=0.5, label=str(policy))
    ax.set_xlabel("LLM call latency (s)")
    ax.set_ylabel("calls")
    ax.set_title("LLM latency")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def text_quality_section(tables: RunTables) -> list[str]:
    """Markdown: the share of LLM text that is the model's own per template, and feelings' sentiment agreement."""
    own = own_text_table(tables.llm_calls)
    if own.empty:
        return []
    lines = ["## LLM text: the model's own words or fallback", "",
             "Per template: requests, repairs, answers unusable after repairs (fallbacks: bad JSON or schema, an echo "
             "of the prompt, a feeling contradicting its rating) and the share used as the model's own:", "",
             own.reset_index().to_markdown(index=False), ""]  # fmt: skip
    sentiment = sentiment_table(feelings_frame(tables.events, tables.pages, tables.llm_calls))
    if not sentiment.empty:
        lines += ["Feelings whose VADER sentiment agrees with their rating (4-5 positive, 1-2 negative, 3 not "
                  "strongly either), for the model's own feelings and for all stored ones (defaults included):", "",
                  sentiment.to_markdown(), ""]  # fmt: skip
    return lines


def build_report(run_dir: Path, seed: int = 0) -> Path:
    """Write `<run_dir>/report.md` and `<run_dir>/report/*.png` from the logs; return the report path."""
    run_dir = Path(run_dir)
    tables = read_run(run_dir)
    reference_path = run_dir / REFERENCE_FILE
    reference = json.loads(reference_path.read_text()) if reference_path.is_file() else {}
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    lines = [f"# simrec report: {run_dir.name}", ""]
    if reference:
        lines += [f"Dataset `{reference.get('dataset')}`, user model `{reference.get('user_model')}`.", ""]
    if not tables.events.empty:
        metrics = metrics_table(tables, seed)
        metrics.to_csv(out / "metrics.csv", index=False)
        lines += ["## Agent4Rec metrics (mean [95% interval] over users)", "", wide_table(metrics).to_markdown(), ""]
        lines += ["`fallback_share`: the share of the policy's pages marked fallback: the LLM's answer for the "
                  "page (its decision, or in narrate mode its text) was unusable after its repairs; a policy's figures "
                  "rest on fallbacks in that share.",
                  ""]  # fmt: skip
        lines += ["Published Agent4Rec values (ML-1M, gpt-3.5, 1,000 agents) for scale:", ""]
        published = pd.DataFrame.from_dict(AGENT4REC_ML1M, orient="index", columns=list(METRICS))
        lines += [published.rename_axis("policy").to_markdown(), ""]
        _plot_metric_bars(metrics, out / "metrics.png")
        _plot_exit_pages(tables.events, out / "exit_pages.png")
        _plot_ratings(tables.events, reference, out / "ratings.png")
        lines += ["![metrics](report/metrics.png)", "", "![exit pages](report/exit_pages.png)", ""]
        lines += ["![ratings](report/ratings.png)", ""]
    external = external_table(run_dir)
    if not external.empty:
        lines += ["## Ranking files and services", "", "Pages the source served, pages and items the fallback policy "
                  "filled, ids dropped (unknown, excluded or repeated) and failed attempts by kind:", ""]  # fmt: skip
        lines += [external.to_markdown(), ""]
    if not tables.llm_calls.empty:
        lines += ["## LLM cost and latency", "", llm_summary(tables.llm_calls).round(3).to_markdown(floatfmt="g"), ""]
        _plot_latency(tables.llm_calls, out / "latency.png")
        lines += ["![latency](report/latency.png)", ""]
        lines += text_quality_section(tables)
    if not tables.population.empty:
        lines += ["## Population rounds", "", tables.population.to_markdown(index=False, floatfmt=".3f"), ""]
        _plot_population(tables.population, out / "population.png")
        lines += ["![population](report/population.png)", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
