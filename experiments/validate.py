"""`simrec validate`: does the simulator rank recommenders the way the real held-out data does?

Runs every policy of `[validate] policies` (the registry's standard recommenders plus degraded variants of
known quality, `VARIANTS`) over the same personas with the configured user model, then scores the simulated
outcomes against the real held-out ratings of the same (user, item) pairs (experiments.validity). Writes, in
`runs/<name>/`: `validity.json` (the contract in docs/CONTRACTS.md), `validity.md` and `validity.png`
(sim vs real per policy, with persona-bootstrap intervals), plus each policy's event logs under `policies/`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from agents.config import load_response_config
from agents.fidelity import watch_probability_of
from experiments.build import UserModelFactory, World, build_llm, build_world, worker_setup
from experiments.compare import runner_batch, runner_slots
from experiments.config import ExperimentConfig
from experiments.engine import PolicyRecipe
from experiments.training_log import TrainingLog, training_summary, warn_if_time_capped
from experiments.validity import EXPECTED_BIAS, label_shown, llm_contribution, score_validity
from experiments.validity_policies import VARIANTS, build_policy, family_of, policy_parts
from recommenders.training import training_progress
from simenv.episodes import serve_pages
from simenv.errors import FallbackShareExceeded, RunInterrupted
from simenv.protocols import Recommender, UserModel
from simenv.records import PageRequest
from simenv.runner import rollback_to_checkpoint

log = logging.getLogger(__name__)
VALIDITY_FILE = "validity.json"
COMMAND_FILE = "command"  # in a validate run directory: "validate" (a compare run has none)
POP_CF = ("pop", "mf", "multvae", "lightgcn", "sasrec")
# sessions stepped together page by page (users not on an endpoint): pages decide the same in any batch, and
# fewer, larger steps cut the per-step cost (a lazy leave-one-source-out user predicts once per step and fold, a
# BaseRecommender scores a step's users at once; ML-100K validate 91 s at 64, 61 s at 256, identical validity.json;
# with batched pages 44.8 s at 256, 37.0 s at 512, two runs each; ML-1M, all cached, 268 s -> 246 s). At most
# `ResponseModel.feature_cache`.
STEP_BATCH = 512


def with_validate_defaults(config: ExperimentConfig) -> ExperimentConfig:
    """The hashing embedder unless the config file or a flag names one: validation scores decisions, not words,
    and the fitted kinds decide without it (MiniLM would only embed memories). The LLM is the `[llm]`
    default, the mock, unless named."""
    updates: dict[str, Any] = {}
    if "embedder" not in config.users.model_fields_set:
        updates["users"] = config.users.model_copy(update={"embedder": "hashing"})
    return config.model_copy(update=updates)


def check_policy_names(names: tuple[str, ...], labels: tuple[str, ...] = ()) -> None:
    """Fail before anything runs when a policy is neither a registry name, a variant, a label of
    `--recommenders.names` (`labels`, e.g. `ease` for `ease=newrecs:EASE`) nor a recommender spec."""
    from experiments.config import ConfigError
    from recommenders.registry import REGISTRY

    spec = ("file:", "http://", "https://")
    unknown = [
        n
        for n in names
        if n not in VARIANTS and n not in REGISTRY and n not in labels and ":" not in n and not n.startswith(spec)
    ]
    if unknown:
        known = ", ".join(sorted({*REGISTRY, *VARIANTS, *labels}))
        raise ConfigError(
            f"[validity] policies: unknown {unknown}; known: {known} (or a recommender spec; a label LABEL is "
            "defined by --recommenders.names LABEL=SPEC)"
        )
    labelled = [n for n in names if "=" in n.split(":", 1)[0]]
    if labelled:
        raise ConfigError(
            f"[validity] policies: {labelled} hold a label; define it with --recommenders.names "
            "'[\"LABEL=SPEC\"]' and list LABEL among the policies"
        )
    if len(names) != len(set(names)):
        raise ConfigError(f"[validity] policies: duplicate names in {list(names)}")


def labels_of(config: ExperimentConfig) -> tuple[str, ...]:
    """The policy labels `--recommenders.names` defines (`ease` for `ease=newrecs:EASE`)."""
    from experiments.recommender_specs import parse_specs

    return tuple(spec.label for spec in parse_specs(config.recommenders.names))


def check_policy_specs(config: ExperimentConfig, world: World) -> None:
    """Resolve every policy that is a recommender spec or a label of one (import the class, check its settings,
    read a ranking file, probe a service) before any policy runs: a typo in the last one fails the command
    before anything is trained or written. Raises `SpecError` (a `ConfigError`) naming the spec."""
    from experiments.recommender_specs import check_spec, find_spec
    from recommenders.registry import REGISTRY

    for name in config.validity.policies:
        if name in VARIANTS or name in REGISTRY:
            continue
        check_spec(config, world, find_spec(config, name))


def offline_recall(policy: Recommender, world: World, users: list[int], k: int = 20, seed: int = 0) -> float:
    """Mean recall@k on TEST of the policy's top-k (train and valid items excluded), over `users`."""
    test = world.split.test.groupby("user_id")["item_id"].agg(set)
    seen = pd.concat([world.split.train, world.split.valid]).groupby("user_id")["item_id"].agg(list)
    asked = [u for u in users if test.get(u)]
    requests = [PageRequest(u, k, seen.get(u, []), np.random.default_rng([seed, u, 3])) for u in asked]
    values = []
    for start in range(0, len(requests), STEP_BATCH):
        part = requests[start : start + STEP_BATCH]
        for r, rec in zip(part, serve_pages(policy, part, policy.name), strict=True):
            target = test[r.user_id]
            values.append(len(target.intersection(rec.item_ids)) / len(target))
            if hasattr(policy, "end_session"):
                policy.end_session(r.user_id)
    return float(np.mean(values)) if values else float("nan")


def watch_probabilities(user_model: Any, world: World, events: pd.DataFrame) -> np.ndarray:
    """The user model's page-0 watch probability of every shown (user, item) pair (for the item-level AUC)."""
    out = np.full(len(events), np.nan)
    prob = watch_probability_of(user_model)
    if prob is None:
        return out
    for user, rows in events.groupby("user").indices.items():
        out[rows] = prob(world.personas[int(user)], events["item"].to_numpy()[rows])
    return out


def response_columns(user_model: Any, world: World, events: pd.DataFrame, seed: int) -> dict[str, np.ndarray]:
    """For a kind with `llm_feature`: the response model's own watch probability (the `fitted` kind's), the
    stacked one with the fitted LLM weight (applied or not: one batched LLM call for unasked pairs), and whether
    the rating plan likes each shown item if watched (for the expected P_like)."""
    decider = user_model.decider
    base, like = np.full(len(events), np.nan), np.zeros(len(events))
    items = events["item"].to_numpy(np.int64)
    groups = events.groupby("user").indices
    asks = [(world.personas[int(user)], items[rows]) for user, rows in groups.items()]
    candidate = np.full(len(events), np.nan)
    stacked = decider.stack.probabilities(asks, candidate=True)
    for (persona, ids), rows, p in zip(asks, groups.values(), stacked, strict=True):
        candidate[rows] = p
        base[rows] = decider.stack.base_probability(persona, ids)
        rating = decider.plan(persona).rating
        stars = rating.stars(rating.prediction[ids], np.random.default_rng([seed, persona.user_id, 53]))
        like[rows] = stars >= 4
    return {"response_watch_probability": base, "llm_candidate_probability": candidate, "like_if_watched": like}


def run_validate(config: ExperimentConfig, console: Console | None = None, resume: bool = False) -> Path:
    """Simulate every policy, score it against the real held-out data, write validity.json/.md/.png.

    `resume` continues a crashed run: finished policies are re-read from their logs, not re-simulated."""
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    start = time.perf_counter()
    world, run_dir, n_personas = _prepare(config, console, resume)
    llm = build_llm(config) if config.users.writes_text else None
    users = UserModelFactory(config, world, llm)
    with training_progress(TrainingLog(console)):  # a line every few seconds while models train
        user_model = users()
    stack = getattr(getattr(user_model, "decider", None), "stack", None)  # agents.llm_feature (llm-grounded)
    simulated = _simulate_all(config, world, users, user_model, stack, run_dir, n_personas, resume, console)
    result = _validity_result(config, world, simulated, stack, start)
    (run_dir / VALIDITY_FILE).write_text(json.dumps(result, indent=2, default=_json_default))
    from experiments.validity_report import write_validity_report

    report = write_validity_report(run_dir, result, simulated.labelled)
    print_headline(console, result)
    if result["time_capped"]:
        console.print(
            f"[bold yellow]WARNING[/] stopped by the time cap, so not reproducible: {', '.join(result['time_capped'])}"
        )
    console.print(f"report: {report}")
    return run_dir


def _prepare(config: ExperimentConfig, console: Console, resume: bool) -> tuple[World, Path, int]:
    """Every check that can fail before anything is written (names, caches, endpoint, data, sizes, specs), then
    the run directory: (world, run directory, persona cap)."""
    from experiments.compare import prepare_run_dir  # the same run-directory rules as compare
    from experiments.model_cache import check_caches
    from experiments.preflight import check_endpoint, check_sizes

    section = config.validity
    check_policy_names(section.policies, labels_of(config))
    check_caches(config)
    if config.users.writes_text:
        check_endpoint(config)  # a wrong key, model or address: exit 1 before the run directory is written
    n_personas = section.n_personas or 10**9
    world = build_world(config, n_personas=n_personas)  # data errors and sizes first: nothing written yet
    check_sizes(config, world, requested=section.n_personas or 0)
    check_policy_specs(config, world)  # every spec resolves before the run directory exists
    run_dir = prepare_run_dir(config, resume=resume)
    (run_dir / COMMAND_FILE).write_text("validate\n")  # `simrec resume` continues it as a validate run
    console.print(
        f"[bold]simrec validate[/] → {run_dir}: {world.dataset.name}, {len(world.personas)} personas, "
        f"{len(section.policies)} policies, {config.users.kind} users"
    )
    return world, run_dir, n_personas


@dataclass(frozen=True)
class _Simulated:
    """Every policy's labelled events, offline recall and training summary; the left-out refits' events."""

    labelled_parts: list[pd.DataFrame]
    recall: dict[str, Any]
    training: dict[str, Any]
    left_out_parts: dict[str, pd.DataFrame]
    left_out: dict[str, str]
    labelled: pd.DataFrame  # the parts in one frame


def _simulate_all(
    config: ExperimentConfig,
    world: World,
    users: UserModelFactory,
    user_model: UserModel,
    stack: Any,
    run_dir: Path,
    n_personas: int,
    resume: bool,
    console: Console,
) -> _Simulated:
    """Every policy by the configured user model, then (fitted kinds) each fit-source policy by a user fitted
    without its family; a stop (fallback share, Ctrl-C) says how to resume."""
    try:
        labelled_parts, recall, training = _simulate(
            config, world, users, user_model, stack, run_dir, n_personas, resume, console
        )
        left_out_parts, left_out = {}, {}
        if not config.users.writes_text:  # the LLM kinds would need a new stacked fit per left-out family
            console.print("leave-one-source-out: each fit-source policy again, by a user fitted without its family")
            left_out_parts, left_out = _simulate_left_out(config, world, users, run_dir, n_personas, resume, console)
    except FallbackShareExceeded as exc:
        raise FallbackShareExceeded(f"{exc}; stopped, the run is resumable: simrec resume {run_dir}") from None
    except KeyboardInterrupt as exc:
        raise RunInterrupted(
            f"{str(exc) or 'interrupted'}: the pages in flight are dropped (logs end at the last checkpoint); "
            f"resume with: simrec resume {run_dir}"
        ) from None
    labelled = pd.concat(labelled_parts, ignore_index=True)
    return _Simulated(labelled_parts, recall, training, left_out_parts, left_out, labelled)


def _validity_result(
    config: ExperimentConfig, world: World, simulated: _Simulated, stack: Any, start: float
) -> dict[str, Any]:
    """The validity.json contract: the scores in and out of sample, training, wall time and the LLM's part."""
    section = config.validity
    labelled, recall, training = simulated.labelled, simulated.recall, simulated.training
    pop_cf = [p for p in POP_CF if p in section.policies]
    body = score_validity(labelled, pop_cf, recall, n_boot=section.bootstrap, seed=config.run.seed)
    if simulated.left_out_parts:
        out_of_sample = pd.concat(
            [part for part in simulated.labelled_parts if part["policy"].iloc[0] not in simulated.left_out_parts]
            + list(simulated.left_out_parts.values()),
            ignore_index=True,
        )
        body["leave_one_source_out"] = {
            "left_out_family": simulated.left_out,
            **score_validity(out_of_sample, pop_cf, recall, n_boot=section.bootstrap, seed=config.run.seed),
        }
    result = {
        "dataset": world.dataset.name,
        "n_personas": len(world.personas),
        "seed": config.run.seed,
        "user_kind": config.users.kind,
        **body,
        "training": training,
        "time_capped": sorted(n for n, t in training.items() if t and t["time_capped"]),
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    if stack is not None:
        fit = {**asdict(stack.report), "run_llm_calls": stack.answers.n_calls, "run_answers": len(stack.answers)}
        fit["run_failed_items"] = stack.answers.n_failed_items
        result["llm_feature"] = llm_contribution(labelled, pop_cf, fit)
    return result


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _pairs(a: dict) -> str:
    agreed = round(a["significant_pairs"] * a["n_significant_pairs"]) if a["n_significant_pairs"] else 0
    return f"{agreed}/{a['n_significant_pairs']}"


def largest_bias(block: dict) -> tuple[str, float]:
    """The policy with the largest absolute quality-adjusted P_view bias, and that bias."""
    biases = {p: b["bias"] for p, b in block["bias"]["p_view_vs_real_hit"].items()}
    worst = max(biases, key=lambda p: abs(biases[p]))
    return worst, biases[worst]


def bias_phrase(block: dict) -> str:
    """'largest bias random +20% (95% CI [-1%, +46%], not significant; expected +10%)': the largest P_view bias,
    its interval, and the part the per-item model makes (the expected P_view's bias) when it is known."""
    worst, value = largest_bias(block)
    entry = block["bias"]["p_view_vs_real_hit"][worst]
    lo, hi = entry["ci"]
    words = "significant" if entry.get("significant") else "not significant"
    expected = block["bias"].get(EXPECTED_BIAS, {}).get(worst)
    tail = f"; expected {expected['bias']:+.0%}" if expected else ""
    return f"largest bias {worst} {value:+.0%} (95% CI [{lo:+.0%}, {hi:+.0%}], {words}{tail})"


def out_of_sample_headline(result: dict) -> str | None:
    """One line: the leave-one-source-out figures (the headline a user should read first), or None."""
    loso = result.get("leave_one_source_out")
    if not loso:
        return None
    view = loso["agreement"]["p_view_vs_real_hit"]
    recall = result.get("offline_recall_vs_real_hit", {}).get("all", float("nan"))
    lift = loso["lift_agreement"]["p_view_vs_real_hit"]
    return (
        f"out of sample (each fit-source policy scored by a user fitted without its family): Spearman P_view~real "
        f"hit all {view['all']['spearman']:+.2f} [{view['all']['ci'][0]:+.2f}, {view['all']['ci'][1]:+.2f}] "
        f"(offline recall@20: {recall:+.2f}), Pop+CF {view['pop_cf']['spearman']:+.2f}; significant pairs "
        f"{_pairs(view['all'])}; {bias_phrase(loso)}; A/B lift error (median) "
        f"{lift['median_relative_error']:.2f} over {lift['n_pairs']} pairs"
    )


def headline(result: dict) -> str:
    """One line: rank agreement on Pop + CF and over all policies, significant pairs, calibration, AUC."""
    a = result["agreement"]
    view, like = a["p_view_vs_real_hit"], a["p_like_vs_real_like"]
    return (
        f"validity ({result['dataset']}, {result['n_personas']} personas), in sample: Spearman P_view~real hit "
        f"Pop+CF {view['pop_cf']['spearman']:+.2f} [{view['pop_cf']['ci'][0]:+.2f}, {view['pop_cf']['ci'][1]:+.2f}], "
        f"all {view['all']['spearman']:+.2f}; P_like~real like Pop+CF {like['pop_cf']['spearman']:+.2f}, "
        f"all {like['all']['spearman']:+.2f}; significant pairs ordered as real: P_view {_pairs(view['all'])}, "
        f"P_like {_pairs(like['all'])}; sim/real CV {result['calibration']['ratio_cv']:.2f} (Pop+CF); "
        f"AUC {result['auc_watch_test']:.3f}; offline recall@20 vs real hit Pop+CF "
        f"{result.get('offline_recall_vs_real_hit', {}).get('pop_cf', float('nan')):+.2f}"
    )


def print_headline(console: Console, result: dict) -> None:
    from rich.table import Table

    table = Table(title="Simulated vs real held-out outcomes of the same shown (user, item) pairs")
    for column in ("policy", "sim P_view", "real hit", "ratio", "sim P_like", "real like", "recall@20"):
        table.add_column(column, justify="right")
    rows = sorted(result["policies"].items(), key=lambda kv: -kv[1]["real_hit"])
    for name, r in rows:
        table.add_row(
            name,
            f"{r['sim_p_view']:.3f}",
            f"{r['real_hit']:.3f}",
            f"{r['ratio_view_hit']:.2f}",
            f"{r['sim_p_like']:.3f}",
            f"{r['real_like']:.3f}",
            f"{r['recall_at_20']:.3f}",
        )
    console.print(table)
    out_of_sample = out_of_sample_headline(result)
    if out_of_sample:
        console.print(out_of_sample)
    console.print(headline(result))
    if "llm_feature" in result:
        console.print(llm_headline(result["llm_feature"]))


def llm_headline(block: dict) -> str:
    """One line: the LLM feature's fitted weights, whether b is applied, and what it changes (AUC, rank agreement)."""
    fit, auc = block["fit"], block["auc_watch_test"]
    w = fit["weights"]
    spearman = block["expected_spearman"]
    view, like = spearman["p_view_vs_real_hit"], spearman["p_like_vs_real_like"]
    applied = "applied" if fit["applied"] else "NOT applied"
    return (
        f"LLM feature: logit P = {w['a']:.2f} * logit P_response {w['b']:+.2f} * llm_watch {w['c']:+.2f} "
        f"(LLM yes rate {fit['llm_yes_rate']:.2f}; b {applied}: validation log-loss gain 95% low "
        f"{fit['logloss_gain_ci_low']:+.4f}); validation AUC {fit['auc_valid_response']:.3f} -> "
        f"{fit['auc_valid_stacked']:.3f}; test AUC {auc['response']:.3f} -> {auc['stacked']:.3f}; "
        f"expected Spearman P_view~real hit Pop+CF {view['response']['pop_cf']:+.2f} -> "
        f"{view['stacked']['pop_cf']:+.2f}, all {view['response']['all']:+.2f} -> {view['stacked']['all']:+.2f}; "
        f"P_like~real like Pop+CF {like['response']['pop_cf']:+.2f} -> {like['stacked']['pop_cf']:+.2f}"
    )


def _simulate(
    config: ExperimentConfig, world: World, users: UserModelFactory, user_model: UserModel, stack: Any, run_dir: Path,
    n_personas: int, resume: bool, console: Console,
) -> tuple[list[pd.DataFrame], dict[str, Any], dict[str, Any]]:  # fmt: skip
    """Every policy's sessions, labelled against the held-out data (`run_validate`'s loop); also each policy's
    offline recall@20 and training summary."""
    labelled_parts, recall, training = [], {}, {}
    for name in config.validity.policies:
        t0 = time.perf_counter()
        with training_progress(TrainingLog(console)):
            policy = build_policy(users, name)
        training[name] = training_summary(policy)
        warn_if_time_capped(console, name, policy)
        recall[name] = offline_recall(policy, world, sorted(world.personas), seed=config.run.seed)
        events = _run_policy(config, world, policy, user_model, run_dir / "policies" / name, n_personas, resume)
        if stack is not None:
            events = events.assign(**response_columns(user_model, world, events, config.run.seed))
        labelled_parts.append(label_shown(events, world.split.valid, world.split.test))
        console.print(f"  {name:>22}: {len(events)} shown, {time.perf_counter() - t0:.1f} s")
    return labelled_parts, recall, training


def _run_policy(
    config: ExperimentConfig, world: World, policy: Recommender, user_model: UserModel, policy_dir: Path,
    n_personas: int, resume: bool, sources: tuple[str, ...] | None = None,
) -> pd.DataFrame:  # fmt: skip
    """One policy's sessions into `policy_dir` (resumed where a crashed run left it); its events with the user
    model's page-0 watch probability of each shown pair. `sources`: the user's fit sources (default config's)."""
    name = policy_dir.name
    needs_llm = config.users.writes_text
    if resume and policy_dir.is_dir():
        rollback_to_checkpoint(policy_dir)
    parts = policy_parts if sources is None else partial(policy_parts, sources=sources)
    slots = runner_slots(config)  # LLM users on an endpoint run pipelined, as in compare (the same logs)
    world.run_sessions(
        policy,
        user_model,
        policy_dir,
        PolicyRecipe(config, name, worker_setup, parts, build_llm if needs_llm else None, n_personas, False),
        n_pages=config.simulation.pages,
        page_size=config.simulation.page_size,
        seed=config.run.seed,
        policy_name=name,
        batch_size=STEP_BATCH if slots is None else runner_batch(config),
        concurrency=slots,
        resume=resume and (policy_dir / "config.json").is_file(),
        max_fallback_share=config.llm.max_fallback_share if needs_llm else None,
    )
    events = pd.read_parquet(policy_dir / "events")
    return events.assign(watch_probability=watch_probabilities(user_model, world, events))


def left_out_sources(config: ExperimentConfig, users: UserModelFactory) -> dict[str, tuple[str, ...]]:
    """Policy -> the fit sources of its leave-one-source-out user (the configured sources without the policy's
    family), for the policies whose family is a fit source; empty when the user kind has no response model."""
    feature_set = users.spec().decision.response
    if not feature_set:
        return {}
    sources = load_response_config(feature_set, config.users.config_file, seed=config.run.seed).sources
    out = {}
    for name in config.validity.policies:
        family = family_of(name)
        if family in sources:
            out[name] = tuple(s for s in sources if s != family)
    return out


def _simulate_left_out(
    config: ExperimentConfig, world: World, users: UserModelFactory, run_dir: Path, n_personas: int, resume: bool,
    console: Console,
) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:  # fmt: skip
    """The fit-source policies again, each with a user whose response model never saw its family's impressions
    (run_dir/leave_one_source_out/<policy>); returns their labelled events and each one's left-out family."""
    plan = left_out_sources(config, users)
    labelled, left_out = {}, {}
    for name, sources in plan.items():
        t0 = time.perf_counter()
        with training_progress(TrainingLog(console)):
            user_model = users(sources=sources)
            policy = build_policy(users, name)
        events = _run_policy(
            config, world, policy, user_model, run_dir / "leave_one_source_out" / name, n_personas, resume, sources
        )
        labelled[name] = label_shown(events, world.split.valid, world.split.test)
        left_out[name] = family_of(name)
        console.print(f"  {name:>22}: without {family_of(name)}'s impressions, {time.perf_counter() - t0:.1f} s")
    return labelled, left_out
