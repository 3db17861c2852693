"""How much of a run's LLM text is the model's own, and whether its feelings agree with its ratings (issue 16).

From the logs alone: `llm_calls` gives, per backend and template, the requests asked (first attempts) and how many
ended in a fallback (unusable after repairs: bad JSON, schema, an echo of the prompt, a feeling contradicting its
rating); the events and pages give each stored feeling with its rating and whether its page fell back. Sentiment
agreement (`simenv.llm.sentiment`, VADER) is reported for the model's own feelings (pages that did not fall back)
and for every stored feeling (defaults included), per backend.
"""

from __future__ import annotations

import pandas as pd

from agents.llm_user.fallbacks import FEELING_BY_RATING
from simenv.llm.sentiment import agreement

DEFAULT_FEELINGS = frozenset(FEELING_BY_RATING.values())


def own_text_table(calls: pd.DataFrame) -> pd.DataFrame:
    """Per backend and template: requests, fallbacks and the share of answers used as the model's own."""
    if calls.empty or "fallback" not in calls:
        return pd.DataFrame()
    first = calls[calls["attempt"] == 0].groupby(["backend", "template"]).size().rename("requests")
    fell = calls[calls["fallback"].astype(bool)].groupby(["backend", "template"]).size().rename("fallbacks")
    repaired = calls[calls["attempt"] > 0].groupby(["backend", "template"]).size().rename("repairs")
    out = pd.concat([first, repaired, fell], axis=1).fillna(0).astype(int)
    out["own_share"] = (1 - out["fallbacks"] / out["requests"].where(out["requests"] > 0)).round(3)
    return out


def _backend_of(calls: pd.DataFrame) -> dict[str, str]:
    """policy -> its (most frequent) LLM backend."""
    if calls.empty:
        return {}
    return {str(p): str(g["backend"].mode().iloc[0]) for p, g in calls.groupby("policy")}


def feelings_frame(events: pd.DataFrame, pages: pd.DataFrame, calls: pd.DataFrame) -> pd.DataFrame:
    """One row per stored feeling: backend, rating, feeling, and whether it is the model's own."""
    if events.empty or "feeling" not in events:
        return pd.DataFrame(columns=["backend", "rating", "feeling", "own"])
    watched = events[events["watched"].astype(bool)].copy()
    keys = ["policy", "episode", "user", "page"]
    fallback = pages[[*keys, "fallback"]] if not pages.empty else pd.DataFrame(columns=[*keys, "fallback"])
    watched = watched.merge(fallback, on=keys, how="left")
    page_fell = watched["fallback"].fillna(False).astype(bool)
    watched["own"] = ~page_fell & ~watched["feeling"].isin(DEFAULT_FEELINGS) & (watched["feeling"].str.len() > 0)
    watched["backend"] = watched["policy"].map(_backend_of(calls)).fillna("none")
    return watched[["backend", "rating", "feeling", "own"]].reset_index(drop=True)


def sentiment_table(feelings: pd.DataFrame) -> pd.DataFrame:
    """Per backend: VADER agreement with the rating for the model's own feelings and for all stored ones."""
    rows = {}
    for backend, group in feelings.groupby("backend"):
        mine = group[group["own"]]
        own = agreement(zip(mine["rating"].astype(int), mine["feeling"], strict=True))
        every = agreement(zip(group["rating"].astype(int), group["feeling"], strict=True))
        rows[backend] = {
            "feelings": every.n,
            "own": own.n,
            "own_share": round(own.n / every.n, 3) if every.n else float("nan"),
            "own_agree": round(own.rate, 3),
            "own_contradict": round(own.contradiction_rate, 3),
            "all_agree": round(every.rate, 3),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("backend")
