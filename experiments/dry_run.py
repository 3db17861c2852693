"""`simrec compare --dry-run`: the LLM calls, tokens and cost a compare run is expected to make, before any call.

A pilot runs the configured comparison on a seeded sample of the run's personas (`PILOT_PERSONAS`, stratified by
activity group, which drives session length) with the mock LLM in a temporary directory: the same users, decision
profile, pages and policies (recommenders are trained or loaded from the model cache exactly as the run will, so
the run reuses them), and each sampled persona's very session of the run (same episode number, same seeds).
Every request the pilot's users and rankers make is counted per template, then scaled by each group's personas /
its pilot size; calls made outside sessions (building a policy or user model) count once. Prompt tokens are the
mock's estimate (rendered characters / 4). The completion tokens of a real model lie between the mock's short
answers and the requests' `max_tokens` caps; both are printed, and the cost (given `--llm.price-per-mtok`) as that
range. Not in the estimate: re-asks of invalid answers (at most `max_repairs` per call) and transport retries,
which depend on the model and the endpoint; and a real model's answers may change decisions (hence pages) where
the profile weighs them. Cache hits would make the run cheaper than estimated.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from experiments.build import UserModelFactory, World, build_world, train_recommender
from experiments.config import ExperimentConfig
from experiments.preflight import preflight
from experiments.recommender_specs import check_recommender_specs
from simenv.llm import LLM, LLMRequest, LLMResponse, LLMWrapper, MockLLM

PILOT_PERSONAS = 24


class CountingLLM(LLMWrapper):
    """Counts requests per template: calls, prompt and completion tokens, and the requests' `max_tokens` caps."""

    label = "counting"

    def __init__(self, inner: LLM) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()
        self.prompt_tokens: Counter[str] = Counter()
        self.completion_tokens: Counter[str] = Counter()
        self.completion_caps: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, requests: Sequence[LLMRequest], responses: Sequence[LLMResponse]) -> None:
        with self._lock:
            for request, response in zip(requests, responses, strict=True):
                self.calls[request.template] += 1
                self.prompt_tokens[request.template] += response.prompt_tokens
                self.completion_tokens[request.template] += response.completion_tokens
                self.completion_caps[request.template] += request.max_tokens

    def snapshot(self) -> dict[str, Counter[str]]:
        """Copies of the four counters, keyed calls / prompt / completion / cap."""
        with self._lock:
            counters = (self.calls, self.prompt_tokens, self.completion_tokens, self.completion_caps)
            return {key: Counter(c) for key, c in zip(("calls", "prompt", "completion", "cap"), counters, strict=True)}

    def complete(self, request: LLMRequest) -> LLMResponse:
        response = self.inner.complete(request)
        self._count([request], [response])
        return response

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        responses = self.inner.complete_batch(requests)
        self._count(requests, responses)
        return responses


@dataclass(frozen=True)
class TemplateEstimate:
    """Expected calls and tokens of one prompt template over the whole run."""

    template: str
    calls: float
    prompt_tokens: float
    completion_tokens: float  # as short as the mock's answers
    completion_cap: float  # every answer as long as its max_tokens


@dataclass(frozen=True)
class DryRunEstimate:
    """A compare run's expected LLM use, scaled from a pilot of `n_pilot` personas to `n_personas`."""

    n_personas: int
    n_pilot: int
    policies: tuple[str, ...]
    templates: tuple[TemplateEstimate, ...]
    price_per_mtok: float | None = None
    pilot_calls: dict[str, int] = field(default_factory=dict)  # per policy, as counted in the pilot

    @property
    def calls(self) -> float:
        return sum(t.calls for t in self.templates)

    @property
    def tokens_low(self) -> float:
        return sum(t.prompt_tokens + t.completion_tokens for t in self.templates)

    @property
    def tokens_high(self) -> float:
        return sum(t.prompt_tokens + t.completion_cap for t in self.templates)

    def cost(self) -> tuple[float, float] | None:
        """(low, high) cost at `price_per_mtok`, or None without a price."""
        if self.price_per_mtok is None:
            return None
        return self.tokens_low * self.price_per_mtok / 1e6, self.tokens_high * self.price_per_mtok / 1e6


def pilot_strata(world: World, n: int, seed: int) -> list[tuple[list[int], float]]:
    """A seeded sample of `n` of the world's personas, stratified by activity group (it drives how many pages a
    session lasts): per group, the sampled personas' episode numbers in the run (their ranks among the sorted
    persona ids) and the weight (group size / sampled) that scales its counts to the run. Proportional allocation,
    at least one persona per non-empty group; every persona when there are <= `n`."""
    groups: dict[int, list[int]] = {}
    for episode, user in enumerate(sorted(world.personas)):
        groups.setdefault(world.personas[user].activity, []).append(episode)
    total = len(world.personas)
    rng = np.random.default_rng([seed, 16])
    out = []
    for activity in sorted(groups):
        episodes = groups[activity]
        k = len(episodes) if total <= n else min(len(episodes), max(1, round(n * len(episodes) / total)))
        out.append((sorted(int(e) for e in rng.choice(episodes, size=k, replace=False)), len(episodes) / k))
    return out


def estimate_run(config: ExperimentConfig, pilot: int = PILOT_PERSONAS, world: World | None = None) -> DryRunEstimate:
    """Run the pilot (mock LLM, temporary directory) and scale its counts to the run's personas.

    Each sampled persona's session is the one the run will simulate (the runner's `only_chunks` with chunks of
    one episode keeps its episode number, hence its seeds), so the estimate's only error is the sampling of
    personas (and, for a real model, how its answers differ from the mock's)."""
    if pilot < 1:
        raise ValueError(f"dry run: pilot must be >= 1 persona, got {pilot}")
    world = world or build_world(config)
    policies = tuple(check_recommender_specs(config, world))
    strata = pilot_strata(world, pilot, config.run.seed)
    counting = CountingLLM(MockLLM(seed=config.run.seed))
    users = UserModelFactory(config, world, counting)
    totals = {key: Counter[str]() for key in ("calls", "prompt", "completion", "cap")}
    pilot_calls: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="simrec-dry-run-") as tmp:
        for name in policies:
            before = counting.snapshot()
            recommender, _ = train_recommender(config, world, name, llm=counting)
            user_model = users(counting) if config.users.writes_text else users()
            _add(totals, counting.snapshot(), before, 1.0)  # calls outside sessions happen once per policy
            for k, (episodes, weight) in enumerate(strata):
                start = counting.snapshot()
                world.run_sessions(
                    recommender,
                    user_model,
                    Path(tmp) / f"{name}-{k}",
                    n_pages=config.simulation.pages,
                    page_size=config.simulation.page_size,
                    seed=config.run.seed,
                    policy_name=name,
                    batch_size=1,
                    only_chunks=set(episodes),
                )
                _add(totals, counting.snapshot(), start, weight)
            close = getattr(recommender, "close", None)
            if callable(close):
                close()
            pilot_calls[name] = sum(counting.calls.values()) - sum(before["calls"].values())
    templates = tuple(
        TemplateEstimate(t, totals["calls"][t], totals["prompt"][t], totals["completion"][t], totals["cap"][t])
        for t in sorted(totals["calls"])
    )
    n_pilot = sum(len(episodes) for episodes, _ in strata)
    return DryRunEstimate(
        len(world.personas), n_pilot, policies, templates, config.llm.price_per_mtok, dict(pilot_calls)
    )


def _add(
    totals: dict[str, Counter[str]], now: dict[str, Counter[str]], then: dict[str, Counter[str]], w: float
) -> None:
    """Add `w` x (now - then) to `totals`, per counter and template."""
    for key, counter in totals.items():
        for template, value in now[key].items():
            counter[template] += (value - then[key].get(template, 0)) * w


def print_estimate(console: Console, estimate: DryRunEstimate, config: ExperimentConfig) -> None:
    """The estimate as a table per template plus a totals line (and the cost range when priced)."""
    table = Table(title=f"expected LLM use ({config.llm.backend}, model {config.llm.model or 'default'})")
    for column in ("template", "calls", "prompt tokens", "completion tokens (short .. max_tokens)"):
        table.add_column(column, justify="left" if column == "template" else "right")
    for t in estimate.templates:
        table.add_row(
            t.template,
            f"{t.calls:,.0f}",
            f"{t.prompt_tokens:,.0f}",
            f"{t.completion_tokens:,.0f} .. {t.completion_cap:,.0f}",
        )
    console.print(table)
    line = (
        f"dry run: {len(estimate.policies)} policies × {estimate.n_personas} personas (pilot {estimate.n_pilot} "
        f"with the mock LLM, scaled): ~{estimate.calls:,.0f} LLM calls, ~{estimate.tokens_low:,.0f} .. "
        f"{estimate.tokens_high:,.0f} tokens"
    )
    cost = estimate.cost()
    if cost is not None:
        line += f", cost ~{cost[0]:,.2f} .. {cost[1]:,.2f} at {estimate.price_per_mtok:g} per million tokens"
    else:
        line += " (give --llm.price-per-mtok for the cost)"
    console.print(line)
    console.print(
        "not included: re-asks of invalid answers (up to the profile's max_repairs per call) and transport retries "
        f"(up to {config.llm.max_retries} per call); cache hits make a run cheaper."
    )
    console.print("No LLM call was made.")


def run_dry_run(
    config: ExperimentConfig, console: Console | None = None, pilot: int = PILOT_PERSONAS
) -> DryRunEstimate:
    """`simrec compare --dry-run`: check the config as compare does, estimate and print; writes no run directory."""
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    needs_llm = config.users.writes_text or "llm-rank" in config.recommenders.names
    preflight(config, recommenders=config.recommenders.names, needs_llm=needs_llm, probe=False)  # no LLM call
    estimate = estimate_run(config, pilot)
    print_estimate(console, estimate, config)
    return estimate
