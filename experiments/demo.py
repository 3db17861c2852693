"""`simrec demo` (what `make demo` runs): the product in one command, sized for a few minutes on 2 cores.

1. Preparation, timed: the dataset and split, the recommenders (experiments/configs/demo_recommenders.toml: epochs
   with early stopping on valid, seeded) and the fitted response model (both cached for the later passes).
2. Decisions: `compare` on `[data] n_personas` personas against the five recommenders with the mock LLM and the
   hashing embedder. The fitted users decide without either (narrate mode: the response model decides, the LLM
   only writes text, which memories only feed), so the Agent4Rec table does not wait on text and is the table the
   default configuration prints (same events; the hashing embedder only skips MiniLM's memory embeddings).
3. Validity: `validate` on the same split and seed (every eligible persona, the demo's `[validity] policies`,
   mock LLM, hashing embedder): how well the simulator's ranking agrees with the real held-out data.
Run directories: the demo replaces its own previous output (`<out_dir>/<name>` and `<name>-validity`, marked by a
`.simrec-demo` file it writes) and reuses the caches, so `make demo` runs again and again; a directory it did not
make is never removed (compare refuses to overwrite a run in it, as always).

4. Narration: `NARRATED_USERS` personas' sessions with `NARRATED_POLICY`, replayed page by page with the
   embedded model (`[llm]`, llama.cpp SmolLM2): the same pages and the same seeded decisions as in step 2 (checked),
   now with feelings, reflections, exit reasons and interview answers in the model's words, printed as transcripts
   (`experiments.transcript`; fallbacks marked) and logged in `runs/<name>/narrated/`.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from agents.config import DEFAULT_KIND
from experiments.build import (
    UserModelFactory,
    World,
    build_llm,
    build_world,
    cache_root,
    train_recommender,
)
from experiments.compare import run_compare
from experiments.config import ExperimentConfig
from experiments.model_cache import check_caches
from experiments.transcript import load_sessions, render, write_user_events
from experiments.validate import run_validate
from experiments.validity_policies import VARIANTS
from simenv.eventlog import RunLog, event_rows, interview_row, page_row, read_table
from simenv.kernel import episode_rngs
from simenv.llm import CallLogLLM
from simenv.llm.calllog import read_call_log
from simenv.protocols import UserModel
from simenv.records import Page
from simenv.rewards import item_rewards, page_reward, reward_config

NARRATED_POLICY = "lightgcn"
NARRATED_USERS = 3
NARRATED_DIR = "narrated"
DEMO_MARK = ".simrec-demo"  # in a run directory the demo made: the next demo may replace it


def own_run_dir(config: ExperimentConfig, narrated_sibling: str | None = None) -> Path:
    """`<out_dir>/<name>`, emptied if an earlier demo made it and marked as the demo's. The demo's: its mark is
    there, or (written before the mark existed) it holds the demo's `narrated/` logs, or it is the validity run
    next to such a directory (`narrated_sibling`). A directory with anything else in it is left as it is: compare
    then refuses to overwrite a run there."""
    run_dir = Path(config.run.out_dir) / config.run.name
    sibling = run_dir.parent / narrated_sibling / NARRATED_DIR if narrated_sibling else None
    earlier = (run_dir / DEMO_MARK).is_file() or (run_dir / NARRATED_DIR / "config.json").is_file()
    if sibling is not None:
        earlier = earlier or ((sibling / "config.json").is_file() and (run_dir / "validity.json").is_file())
    if earlier:
        shutil.rmtree(run_dir)
    if not run_dir.exists() or not any(run_dir.iterdir()):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / DEMO_MARK).write_text("made by `simrec demo`; the next demo replaces this directory\n")
    return run_dir


@dataclass
class Clock:
    """Wall time per phase, in the order the phases ran, from `start` (the command's start), and the process's
    CPU time (all threads): on a machine shared with other jobs the wall time says little, the CPU time more."""

    start: float = field(default_factory=time.perf_counter)
    phases: dict[str, float] = field(default_factory=dict)
    _t0: float = 0.0

    def __post_init__(self) -> None:
        self._t0 = self.start

    def lap(self, phase: str) -> float:
        now = time.perf_counter()
        seconds = now - self._t0
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds
        self._t0 = now
        return seconds

    def summary(self) -> str:
        total = time.perf_counter() - self.start
        parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.phases.items())
        cpu = time.process_time()
        return f"demo wall time {total:.0f} s ({total / 60:.1f} min): {parts}; CPU time {cpu:.0f} s"


def decisions_config(config: ExperimentConfig) -> ExperimentConfig:
    """The decisions pass: the demo's config with the mock LLM and the hashing embedder (module docstring)."""
    return config.model_copy(
        update={
            "llm": config.llm.model_copy(update={"backend": "mock", "cache": False}),
            "users": config.users.model_copy(update={"embedder": "hashing"}),
        }
    )


def validity_config(config: ExperimentConfig) -> ExperimentConfig:
    """The demo's validation run: same data and seed, the validated `fitted` user (the demo's decisions without the
    words), hashing embedder, own run dir."""
    return config.model_copy(
        update={
            "run": config.run.model_copy(update={"name": f"{config.run.name}-validity"}),
            "llm": config.llm.model_copy(update={"backend": "mock", "cache": False}),
            "users": config.users.model_copy(update={"embedder": "hashing", "kind": DEFAULT_KIND}),
        }
    )


def prepare(config: ExperimentConfig, console: Console, clock: Clock) -> World:
    """Load data, train every recommender the demo needs and fit the response model, timing each (the later
    passes find them in the cache)."""
    world = build_world(config)
    console.print(
        f"data: {world.dataset.name}, {world.dataset.n_items} items, {len(world.split.users)} split users, "
        f"{len(world.split.train)} train ratings ({clock.lap('data'):.1f} s)"
    )
    needed = list(config.recommenders.names)
    for name in config.validity.policies:
        base = VARIANTS[name].base if name in VARIANTS else name
        if base not in needed:
            needed.append(base)
    users = UserModelFactory(config, world, None)
    times = []
    for name in needed:
        _, seconds = train_recommender(config, world, name)
        times.append(f"{name} {seconds:.0f} s")
    console.print(f"recommenders trained: {', '.join(times)} ({clock.lap('training'):.1f} s)")
    feature_set = config.users.spec().decision.response
    if feature_set:
        users.response_model(feature_set)
        console.print(f"response model ({feature_set}) fitted on the split's users ({clock.lap('response fit'):.1f} s)")
    return world


def narrated_users(events: pd.DataFrame, n: int) -> list[int]:
    """The first `n` users (by episode) who watched something: their sessions have text to write."""
    per = events.groupby(["episode", "user"])["watched"].sum().reset_index().sort_values("episode")
    return [int(u) for u in per.loc[per["watched"] > 0, "user"].head(n)]


def narrate(config: ExperimentConfig, world: World, compare_dir: Path, policy: str, users: Sequence[int]) -> Path:
    """Replay `users`' logged sessions of `policy` with the configured LLM writing the text; returns the log dir.

    Each session gets its episode's seeded user rng and the pages the decisions pass showed, so the decisions are
    the same; a difference would be reported (the transcript comes from this pass's own logs either way)."""
    logged = read_table(compare_dir / "policies" / policy, "events")
    out_dir = compare_dir / NARRATED_DIR
    log = RunLog(out_dir)
    log.write_config(
        {"policy": policy, "dataset": world.dataset.name, "cache_dir": str(cache_root(config) / "data"),
         "users": list(users), "llm": config.llm.backend, "seed": config.run.seed}
    )  # fmt: skip
    call_log = CallLogLLM(build_llm(config), out_dir / "llm_calls")
    model = UserModelFactory(config, world, call_log)(call_log)
    with _quiet_fallbacks():  # the transcript marks every fallback and its summary counts them
        _replay(config, world, logged, model, log, policy, users)
    write_user_events(out_dir, model.events)
    call_log.close()
    return out_dir


@contextmanager
def _quiet_fallbacks() -> Iterator[None]:
    """Fallback warnings off the console while narrating (they stay in the run's user events)."""
    fallback_log = logging.getLogger("agents.llm_user.fallbacks")
    previous = fallback_log.level
    fallback_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        fallback_log.setLevel(previous)


def _replay(
    config: ExperimentConfig,
    world: World,
    logged: pd.DataFrame,
    model: UserModel,
    log: RunLog,
    policy: str,
    users: Sequence[int],
) -> None:
    """The narrated pass: each user's logged pages again, with the LLM writing; users whose decisions differ from
    the decisions pass are listed in `mismatched.json`."""
    rcfg = reward_config(None)
    sessions, pages = [], []
    for user in users:
        mine = logged[logged["user"] == user].sort_values(["page", "position"])
        episode = int(mine["episode"].iloc[0])
        user_rng, _ = episode_rngs(config.run.seed, episode)
        sessions.append(model.start_session(world.personas[user], episode, user_rng, reset_memory=True))
        pages.append([tuple(int(i) for i in g["item"]) for _, g in mine.groupby("page", sort=True)])
    mismatched: set[int] = set()
    catalog = world.dataset.catalog
    for page_index in range(max(len(p) for p in pages)):
        alive = [k for k, p in enumerate(pages) if page_index < len(p) and not sessions[k].left]
        shown = [Page(sessions[k].episode, page_index, pages[k][page_index]) for k in alive]
        feedback = model.react_batch(
            [sessions[k] for k in alive], [(p, [catalog[i] for i in p.item_ids]) for p in shown]
        )
        events, rows = [], []
        for k, page, fb in zip(alive, shown, feedback, strict=True):
            user = users[k]
            events.extend(event_rows(log.run_id, policy, page.episode, user, page, fb, item_rewards(fb, rcfg)))
            rows.append(page_row(log.run_id, policy, page.episode, user, page, fb, page_reward(fb, rcfg), 0))
            was = logged[(logged["user"] == user) & (logged["page"] == page_index)].sort_values("position")
            now = [(r.watched, r.rating if r.watched else None) for r in fb.reactions]
            if now != [(bool(w), int(r) if w else None) for w, r in zip(was["watched"], was["rating"], strict=True)]:
                mismatched.add(user)
        log.append("events", events)
        log.append("pages", rows)
    interviews = model.interview_batch(sessions)
    log.append(
        "interviews",
        [
            interview_row(log.run_id, policy, s.episode, len(s.pages), iv)
            for s, iv in zip(sessions, interviews, strict=True)
        ],
    )
    if mismatched:
        (log.run_dir / "mismatched.json").write_text(json.dumps(sorted(mismatched)))


def run_demo(config: ExperimentConfig, console: Console | None = None, start: float | None = None) -> tuple[Path, Path]:
    """Prepare, decide, validate, narrate (module docstring); returns the compare and validity run directories.
    `start` (a `time.perf_counter()` value) is when the command started; the wall time printed counts from it."""
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    clock = Clock(start if start is not None else time.perf_counter())
    console.rule("[bold]simrec demo[/]: preparation (data, recommenders, response model)")
    own_run_dir(validity_config(config), narrated_sibling=config.run.name)  # before the compare dir is replaced
    own_run_dir(decisions_config(config))
    check_caches(config)  # before `prepare` loads any: a damaged entry is set aside and rebuilt
    world = prepare(config, console, clock)
    console.rule(
        f"[bold]1. Decisions[/]: {min(config.data.n_personas, len(world.split.users))} personas x "
        f"{len(config.recommenders.names)} recommenders, fitted users; mock LLM and hashing embedder (the decisions "
        "read no text)"
    )
    compare_dir = run_compare(decisions_config(config), console=console)
    clock.lap("decisions")
    console.rule(
        f"[bold]2. Validity[/]: every eligible persona x {len(config.validity.policies)} policies "
        "(the demo's list: no extra under-trained checkpoints), scored against the real held-out ratings"
    )
    validity_dir = run_validate(validity_config(config), console=console)
    clock.lap("validity")
    users = narrated_users(read_table(compare_dir / "policies" / NARRATED_POLICY, "events"), NARRATED_USERS)
    console.rule(
        f"[bold]3. Narration[/]: {len(users)} personas' sessions with {NARRATED_POLICY}, same decisions, text by "
        f"{config.llm.backend} ({config.llm.model or 'the embedded SmolLM2-135M'})"
    )
    out_dir = narrate(config, world, compare_dir, NARRATED_POLICY, users)
    catalog = world.dataset.catalog
    for user in users:
        for session in load_sessions(out_dir, user):
            console.print(render(session, lambda i: f"{catalog[i].title} ({catalog[i].year})"), markup=False)
            console.print()
    if (out_dir / "mismatched.json").is_file():
        console.print(
            f"[red]decisions differ from the decisions pass for users {(out_dir / 'mismatched.json').read_text()}"
        )
    calls = read_call_log(out_dir / "llm_calls")
    if not calls.empty:
        console.print(
            f"{len(calls)} LLM calls, median {np.median(calls['latency_s']):.2f} s, "
            f"{int(calls['fallback'].sum())} fell back; logs: {out_dir} "
            f"(`simrec transcript {out_dir} --user {users[0]}`)"
        )
    clock.lap("narration")
    console.rule()
    console.print(clock.summary())
    return compare_dir, validity_dir
