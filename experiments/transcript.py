"""`simrec transcript RUN --user N [--policy P]`: one simulated session told as a story, from the run's logs alone.

Per page: the items shown (titles from the run's dataset), what was watched and rated with the feeling the user
wrote, then the reflections stored after it and, on the last page, whether the user left and why; at the end the
satisfaction interview. Text the model did not write is marked: `[fallback]` where the answer was unusable after
repairs (the page's or interview's `fallback` column, a reflection with a fallback user event), `[default]` where
the text is the plain default for its rating or exit (`agents.llm_user.fallbacks`; a model answer that happens to
use the same words is marked too).

Reflections and fallback events come from the run's `user_events` table (`write_user_events`); a run that did
not record one says so instead of showing none.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from agents.llm_user.fallbacks import (
    FEELING_BY_RATING,
    INTERVIEW_NO_ANSWER_REASON,
    INTERVIEW_PLACEHOLDER_REASON,
    LEAVE_REASON_NOTHING_LIKED,
    LEAVE_REASON_SEEN_ENOUGH,
    UserEvent,
)
from experiments.config import ConfigError
from experiments.report import policy_dirs
from simenv.eventlog import RunLog, read_table

USER_EVENTS = "user_events"
USER_EVENT_COLUMNS = ["user", "episode", "page", "kind", "template", "detail", "llm_call_ids"]
WIDTH = 100
DEFAULT_REASONS = {LEAVE_REASON_NOTHING_LIKED, LEAVE_REASON_SEEN_ENOUGH}
DEFAULT_INTERVIEW_REASONS = {INTERVIEW_NO_ANSWER_REASON, INTERVIEW_PLACEHOLDER_REASON}


def write_user_events(run_dir: str | Path, events: Iterable[UserEvent]) -> None:
    """Append the user model's events (reflections, fallbacks) to the run's `user_events` table (created even when
    there are none, so a transcript can tell "none happened" from "not recorded")."""
    (Path(run_dir) / USER_EVENTS).mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "user": e.user_id,
            "episode": e.episode,
            "page": e.page_index,
            "kind": e.kind,
            "template": e.template,
            "detail": e.detail,
            "llm_call_ids": ",".join(e.llm_call_ids),
        }
        for e in events
    ]
    RunLog(run_dir).append(USER_EVENTS, rows)


@dataclass(frozen=True)
class Session:
    """What the logs hold about one episode of one user under one policy."""

    policy: str
    user: int
    episode: int
    events: pd.DataFrame  # one row per shown item, by page and position
    pages: pd.DataFrame  # one row per page
    interview: dict[str, Any] | None
    user_events: pd.DataFrame | None  # None: the run recorded none


def _policy_dir(run_dir: Path, policy: str | None) -> Path:
    dirs = {d.name if d != run_dir else _policy_name(d): d for d in policy_dirs(run_dir)}
    if policy is None:
        if len(dirs) == 1:
            return next(iter(dirs.values()))
        raise ConfigError(f"{run_dir} holds {len(dirs)} policies: pass --policy (one of {', '.join(sorted(dirs))})")
    if policy not in dirs:
        raise ConfigError(f"{run_dir}: no policy {policy!r} (policies: {', '.join(sorted(dirs))})")
    return dirs[policy]


def _policy_name(policy_dir: Path) -> str:
    config = json.loads((policy_dir / "config.json").read_text()) if (policy_dir / "config.json").is_file() else {}
    return str(config.get("policy", policy_dir.name))


def load_sessions(run_dir: str | Path, user: int, policy: str | None = None) -> list[Session]:
    """Every logged episode of `user` under `policy` (optional when the run has one policy), oldest first."""
    run_dir = Path(run_dir)
    pdir = _policy_dir(run_dir, policy)
    name = _policy_name(pdir)
    events = read_table(pdir, "events")
    mine = events[events["user"] == user]
    if mine.empty:
        users = sorted(int(u) for u in events["user"].unique())
        shown = ", ".join(map(str, users[:12])) + (" ..." if len(users) > 12 else "")
        raise ConfigError(f"{pdir}: user {user} has no session under {name!r} (users: {shown})")
    pages = read_table(pdir, "pages")
    interviews = read_table(pdir, "interviews")
    has_events = (pdir / USER_EVENTS).is_dir()
    user_events = read_table(pdir, USER_EVENTS) if has_events else None
    if user_events is not None and user_events.empty:
        user_events = pd.DataFrame(columns=USER_EVENT_COLUMNS)
    out = []
    for episode in sorted(int(e) for e in mine["episode"].unique()):
        ev = mine[mine["episode"] == episode].sort_values(["page", "position"])
        pg = pages[(pages["user"] == user) & (pages["episode"] == episode)].sort_values("page")
        iv = interviews[(interviews["user"] == user) & (interviews["episode"] == episode)]
        ue = None
        if user_events is not None:
            ue = user_events[(user_events["user"] == user) & (user_events["episode"] == episode)]
        interview = iv.iloc[0].to_dict() if not iv.empty else None
        out.append(Session(name, user, episode, ev, pg, interview, ue))
    return out


def _quote(text: str) -> str:
    return f"\u201c{text}\u201d"


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ") or [indent]


def render(session: Session, title: Callable[[int], str]) -> str:
    """The session as text (module docstring); `title(item_id)` names an item."""
    lines = [f"User {session.user} \u00b7 {session.policy} \u00b7 episode {session.episode}"]
    fallback_pages = {int(p) for p in session.pages.loc[session.pages["fallback"], "page"]}
    reflections: dict[int, list[tuple[str, bool]]] = {}
    if session.user_events is not None:
        ue = session.user_events
        failed = set(ue.loc[(ue["kind"] == "fallback") & (ue["template"] == "reflection"), "page"].astype(int))
        for row in ue[ue["kind"] == "reflection"].itertuples():
            texts = [t.strip() for t in str(row.detail).split(" | ") if t.strip()]
            reflections.setdefault(int(row.page), []).extend((t, int(row.page) in failed) for t in texts)
    n_text = n_marked = 0
    for page, items in session.events.groupby("page", sort=True):
        page = int(page)
        lines.append(f"Page {page + 1}")
        for row in items.itertuples():
            name = title(int(row.item))
            if not row.watched:
                lines.append(f"  {int(row.position) + 1}. {name} \u2014 skipped")
                continue
            rating = int(row.rating)
            feeling = str(row.feeling or "")
            mark = _mark(page in fallback_pages, feeling == FEELING_BY_RATING.get(rating))
            n_text, n_marked = n_text + 1, n_marked + bool(mark)
            stars = "\u2605" * rating + "\u2606" * (5 - rating)
            lines.extend(
                _wrap(f"{int(row.position) + 1}. {name} \u2014 watched, {stars} {_quote(feeling)}{mark}", "  ")
            )
        for text, failed_reflection in reflections.get(page, []):
            mark = " [fallback]" if failed_reflection else ""
            n_text, n_marked = n_text + 1, n_marked + bool(mark)
            lines.extend(_wrap(f"Reflects: {_quote(text)}{mark}", "  "))
        left = session.pages.loc[session.pages["page"] == page, ["left", "reason"]]
        if not left.empty and bool(left.iloc[0]["left"]):
            reason = str(left.iloc[0]["reason"] or "")
            mark = _mark(page in fallback_pages, reason in DEFAULT_REASONS)
            n_text, n_marked = n_text + 1, n_marked + bool(mark)
            lines.extend(_wrap(f"Leaves: {_quote(reason)}{mark}", "  "))
    if session.user_events is None:
        lines.append("  (no reflections: this run did not record user events)")
    iv = session.interview
    if iv is None:
        lines.append("Interview: not logged")
    else:
        reason = str(iv["reason"] or "")
        mark = _mark(bool(iv["fallback"]), reason in DEFAULT_INTERVIEW_REASONS)
        n_text, n_marked = n_text + 1, n_marked + bool(mark)
        lines.extend(_wrap(f"Interview: satisfaction {int(iv['score'])}/10 \u2014 {_quote(reason)}{mark}", ""))
    ev = session.events
    lines.append(
        f"{len(ev)} shown, {int(ev['watched'].sum())} watched, {int(ev['liked'].sum())} liked; "
        f"text: {n_text - n_marked} of {n_text} in the model's own words, {n_marked} fallback or default"
    )
    return "\n".join(lines)


def _mark(fallback: bool, default: bool) -> str:
    return " [fallback]" if fallback else " [default]" if default else ""


def catalog_titles(run_dir: str | Path, dataset: str | None = None) -> Callable[[int], str]:
    """Item id -> "Title (year)" from the run's dataset (`dataset` overrides the one the run names); an id
    alone when the dataset cannot be loaded."""
    from experiments.build import cache_root
    from experiments.config import ExperimentConfig
    from simenv.data import load_dataset

    run_dir = Path(run_dir)
    source: str | None = dataset
    cache: Path | str | None = None
    experiment = run_dir / "experiment.json"
    if experiment.is_file():
        config = ExperimentConfig.model_validate(json.loads(experiment.read_text(encoding="utf-8")))
        source = source or config.data.dataset
        cache = cache_root(config) / "data"
    if source is None or cache is None:
        run_config = json.loads((policy_dirs(run_dir)[0] / "config.json").read_text())
        source = source or str(run_config.get("dataset", ""))
        cache = cache or run_config.get("cache_dir")
    try:
        catalog = load_dataset(source, cache_dir=cache).catalog
    except (OSError, ValueError) as exc:
        note = f"{exc}".splitlines()[0][:80]
        return lambda i: f"item {i} (no catalog: {note})"

    def title(item_id: int) -> str:
        it = catalog[item_id]
        return f"{it.title} ({it.year})" if it.year else it.title

    return title


def transcript(run_dir: str | Path, user: int, policy: str | None = None, dataset: str | None = None) -> str:
    """The rendered transcript of every episode of `user` under `policy` in the run."""
    sessions = load_sessions(run_dir, user, policy)
    title = catalog_titles(run_dir, dataset)
    return "\n\n".join(render(s, title) for s in sessions)
