"""`simrec evaluate-rl CHECKPOINT`: does a policy trained in the simulator beat its base recommender outside it?

The trained policy (`simenv.policies.SB3Recommender` over the checkpoint's SB3 model), its base recommender, Pop
and Random run one session each for the checkpoint's held-out personas (never trained on;
`experiments.rl.checkpoint.split_personas`), same personas and seed for every policy, and are scored three ways:
1. `train_sim`: in the user model it was trained on (likes and watches per session, P_view, P_like);
2. `other_sim`: in another user model (`other_user`: the LLM persona user for a policy trained on a no-text kind):
   a gain that exists only in the training simulator is over-fitting to it;
3. `real`: the (user, item) pairs shown in the `train_sim` sessions scored against the personas' real held-out
   ratings exactly as `simrec validate` does (`experiments.validity.label_shown` / `per_user`: real hit = in the
   user's TEST ratings, real like = in test with rating >= 4), plus offline recall@20 on TEST of each policy's
   ranking (`experiments.validate.offline_recall`; NaN for the RL policy, which picks pages among its session's
   candidates and has no catalog ranking).
Differences RL − base come with persona-bootstrap 95% intervals (paired: the same resampled personas).
The checkpoint's policy is an SB3 model or an offline d3rlpy one (`experiments.rl.offline.OfflinePolicy`), both
behind `SB3Recommender`; `evaluate_rl(..., policy=...)` scores any other page policy in its place (a hand-written
re-ranker, say) against the same base, personas and seeds.
Writes `evaluate_rl.json` next to the checkpoint, each run's event logs under `evaluate/`, and the per-persona table
every figure is computed from, `evaluate/per_persona.parquet` (one row per simulator, policy and persona), from which
`experiments.evaluate_rl_folds` pools the folds of a cross-fitted run.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from experiments.build import UserModelFactory, World, build_llm, build_world, train_recommender
from experiments.rl.checkpoint import Checkpoint, decisions_only, with_personas
from experiments.rl.features import candidate_featurizer
from experiments.rl.progress import EvalProgress
from experiments.rl.rerankers import CandidateReranker, greedy_score
from experiments.validate import offline_recall
from experiments.validity import label_shown, per_user
from simenv.policies import SB3Recommender
from simenv.protocols import PagePolicy, Recommender

EVALUATE_FILE = "evaluate_rl.json"
OTHER_USER = {"persona": "fitted"}  # the other user model a policy is scored in: the LLM persona, unless trained on it


def other_user(kind: str) -> str:
    """The user kind a policy trained on `kind` is also scored in (a gain only the training user shows is over-fit)."""
    return OTHER_USER.get(kind, "persona")


SIM_METRICS = ("likes_per_session", "watches_per_session", "pages_per_session", "p_view", "p_like")
GREEDY = "sim-greedy"  # the yardstick: candidates ranked by the response model's own watch probability
REAL_METRICS = ("real_hit", "real_like", "heldout_hit")
PER_PERSONA_FILE = "per_persona.parquet"  # under evaluate/: (simulator, policy, user) rows


def paired_difference(frame: pd.DataFrame, column: str, a: str, b: str, n_boot: int, seed: int) -> dict[str, Any]:
    """Mean over personas of `column` for policy `a` minus policy `b`, with a persona-bootstrap 95% interval."""
    wide = frame.pivot(index="user", columns="policy", values=column)[[a, b]].dropna()
    diff = (wide[a] - wide[b]).to_numpy(np.float64)
    rng = np.random.default_rng([seed, 37])
    boots = diff[rng.integers(0, len(diff), (n_boot, len(diff)))].mean(axis=1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"difference": float(diff.mean()), "ci": [float(lo), float(hi)], "n_personas": int(len(diff))}


def per_persona(labelled: pd.DataFrame) -> pd.DataFrame:
    """(policy, user) rows: validate's per-user shares plus likes and watches per session."""
    frame = per_user(labelled).frame
    counts = labelled.groupby(["policy", "user"], sort=True).agg(
        likes_per_session=("sim_like", "sum"),
        watches_per_session=("watched", "sum"),
        pages_per_session=("page", "nunique"),
    )
    frame = frame.merge(counts.reset_index(), on=["policy", "user"])
    return frame.rename(columns={"sim_p_view": "p_view", "sim_p_like": "p_like"})


def simulate(
    policies: dict[str, PagePolicy],
    user_model: Any,
    checkpoint: Checkpoint,
    world: Any,
    run_dir: Path,
    seed: int,
    progress: EvalProgress,
    label: str,
) -> pd.DataFrame:
    """One session per held-out persona for each policy; the shown pairs labelled with the real held-out data."""
    parts = []
    for name, policy in policies.items():
        policy_dir = run_dir / name

        def on_page(episodes: int, pages: int, tag: str = f"{label} {name}") -> None:
            progress(tag, episodes)

        world.run_sessions(
            policy,
            user_model,
            policy_dir,
            n_pages=checkpoint.env["max_pages"],
            page_size=checkpoint.env["page_size"],
            seed=seed,
            policy_name=name,
            users=list(checkpoint.eval_users),
            batch_size=64,
            progress=on_page,
        )
        progress(f"{label} {name}", len(checkpoint.eval_users), final=True)
        parts.append(label_shown(pd.read_parquet(policy_dir / "events"), world.split.valid, world.split.test))
    return pd.concat(parts, ignore_index=True)


def evaluate_rl(
    directory: Path,
    console: Console | None = None,
    n_boot: int = 1000,
    policy: Callable[[World, Recommender], PagePolicy] | None = None,
) -> dict[str, Any]:
    """Score the checkpoint in `directory` three ways (module docstring); write and return `evaluate_rl.json`.

    `policy(world, base)`, if given, builds the page policy scored under the checkpoint's algorithm name instead of
    its trained model (called once per simulator, as the policy may keep per-session state)."""
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    start = time.perf_counter()
    directory = Path(directory)
    checkpoint = Checkpoint.load(directory)
    config = decisions_only(checkpoint.experiment())
    seed = config.run.seed
    world = with_personas(build_world(config), checkpoint.eval_users)
    names = dict.fromkeys((checkpoint.base, "pop", "random"))  # the base first, each once
    recommenders = {name: train_recommender(config, world, name)[0] for name in names}
    base = recommenders[checkpoint.base]
    rl_name = checkpoint.algo
    factory = UserModelFactory(config, world, build_llm(config))
    if policy is None:
        model = checkpoint.load_model()
        featurizer = candidate_featurizer(config, world, base) if checkpoint.action else None  # online checkpoints
        policy = functools.partial(_trained_policy, checkpoint, model, featurizer)
    users = list(checkpoint.eval_users)
    kinds = {"train_sim": checkpoint.user, "other_sim": other_user(checkpoint.user)}
    members = {"train_sim": checkpoint.eval_member, "other_sim": 0}
    progress = EvalProgress(len(kinds) * (2 + len(recommenders)), len(users))
    console.print(_headline(directory, checkpoint, config, list(recommenders), kinds))
    eval_dir = directory / "evaluate"
    shutil.rmtree(eval_dir, ignore_errors=True)  # this command's own outputs from an earlier evaluation
    frames: dict[str, pd.DataFrame] = {}
    labelled_train = pd.DataFrame()
    for key, kind in kinds.items():
        user_model = factory(kind=kind, member=members[key])
        greedy = _greedy_policy(factory, checkpoint, world, base)
        policies: dict[str, PagePolicy] = {rl_name: policy(world, base), GREEDY: greedy, **recommenders}
        labelled = simulate(policies, user_model, checkpoint, world, eval_dir / key, seed, progress, key)
        frames[key] = per_persona(labelled)
        if key == "train_sim":
            labelled_train = labelled
    save_per_persona(frames, eval_dir / PER_PERSONA_FILE)
    recall = {name: offline_recall(rec, world, users, seed=seed) for name, rec in recommenders.items()}
    recall[rl_name] = recall[GREEDY] = float("nan")
    labels = {key: kinds[key] + (f"[member {members[key]}]" if members[key] else "") for key in kinds}
    result_policies = policy_scores(frames, labels, [rl_name, GREEDY, *recommenders], recall)
    result = {
        **_summary(directory, checkpoint, world.dataset.name, seed),
        "policies": result_policies,
        "comparisons": comparisons(frames, result_policies, rl_name, checkpoint.base, list(recommenders), n_boot, seed),
        "n_shown_pairs": int(len(labelled_train)),
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    (directory / EVALUATE_FILE).write_text(json.dumps(result, indent=2))
    print_table(console, result)
    console.print(f"written: {directory / EVALUATE_FILE}")
    return result


def save_per_persona(frames: dict[str, pd.DataFrame], path: Path) -> None:
    """The per-persona tables of every simulator in one tidy file (a `simulator` column: train_sim / other_sim)."""
    tidy = pd.concat([frame.assign(simulator=key) for key, frame in frames.items()], ignore_index=True)
    tidy.to_parquet(path, index=False)


def load_per_persona(path: Path) -> dict[str, pd.DataFrame]:
    """`save_per_persona`'s file back as simulator -> per-persona frame."""
    tidy = pd.read_parquet(path)
    return {str(key): part.drop(columns="simulator").reset_index(drop=True) for key, part in tidy.groupby("simulator")}


def _summary(directory: Path, checkpoint: Checkpoint, dataset: str, seed: int) -> dict[str, Any]:
    """The head of `evaluate_rl.json`: which checkpoint, how it was trained, on whom it is scored."""
    users = list(checkpoint.eval_users)
    return {
        "checkpoint": str(directory),
        "dataset": dataset,
        "seed": seed,
        "algo": checkpoint.algo,
        "base": checkpoint.base,
        "trained_on": checkpoint.user,
        "timesteps": checkpoint.timesteps,
        "train_seconds": checkpoint.train_seconds,
        "stopped_by_budget": checkpoint.stopped_by_budget,
        "n_train_personas": len(checkpoint.train_users),
        "eval_personas": users,
        "personas_disjoint": not set(users) & set(checkpoint.train_users),
        "real_pairs_from": "train_sim",
    }


def _headline(
    directory: Path, checkpoint: Checkpoint, config: Any, recommenders: list[str], kinds: dict[str, str]
) -> str:
    """The evaluation's first console line: what is scored against what, on whom, in which user models."""
    return (
        f"evaluate-rl {directory}: {checkpoint.algo} (re-ranking {checkpoint.base}) vs {', '.join(recommenders)} on "
        f"{len(checkpoint.eval_users)} held-out personas (disjoint from the {len(checkpoint.train_users)} trained "
        f"on), users {kinds['train_sim']} (trained on response members {list(checkpoint.members)}; scored with "
        f"member {checkpoint.eval_member}) and {kinds['other_sim']}, LLM {config.llm.backend}"
        + ("" if config.rl.eval_text else " (decisions only; --rl.eval-text for the configured model's words)")
    )


def _greedy_policy(factory: UserModelFactory, checkpoint: Checkpoint, world: World, base: Recommender) -> PagePolicy:
    """The sim-greedy yardstick: the base's candidates ranked by the training user's own watch probability."""
    decider = factory.decider(factory.spec(checkpoint.user if checkpoint.user != "persona" else "fitted"))
    return CandidateReranker(
        GREEDY, greedy_score(decider), world.dataset, world.personas, world.split.train, base, checkpoint.env
    )


def _trained_policy(checkpoint: Checkpoint, model: Any, featurizer: Any, world: World, base: Recommender) -> PagePolicy:
    """The checkpoint's model as a page policy; a fresh adapter per simulator (it keeps per-session state)."""
    env = checkpoint.env
    return SB3Recommender(
        model,
        world.dataset,
        world.personas,
        world.split.train,
        action_mode=checkpoint.action_mode,
        page_size=env["page_size"],
        max_pages=env["max_pages"],
        n_candidates=env["n_candidates"],
        explore_fraction=env["explore_fraction"],
        history_len=env["history_len"],
        candidate_recommender=base,
        name=checkpoint.algo,
        candidate_featurizer=featurizer,
    )


def policy_scores(
    frames: dict[str, pd.DataFrame], labels: dict[str, str], names: list[str], recall: dict[str, float]
) -> dict[str, Any]:
    """Per policy: its mean per-persona sim metrics in each simulator (`labels`: simulator -> user model label) and
    its real scores (from the `train_sim` sessions' shown pairs) with offline recall@20."""
    out: dict[str, Any] = {}
    for name in names:
        entry: dict[str, Any] = {}
        for key, frame in frames.items():
            rows = frame[frame["policy"] == name]
            entry[key] = {"user_model": labels[key], **{m: float(rows[m].mean()) for m in SIM_METRICS}}
        rows = frames["train_sim"][frames["train_sim"]["policy"] == name]
        entry["real"] = {
            **{m: float(rows[m].mean()) for m in REAL_METRICS},
            "shown": int(rows["shown"].sum()),
            "recall_at_20": recall[name],
        }
        out[name] = entry
    return out


def comparisons(
    frames: dict[str, pd.DataFrame],
    scores: dict[str, Any],
    rl_name: str,
    base: str,
    recommenders: list[str],
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """The RL policy against the others: likes ratios and the paired likes difference vs the base in each
    simulator; real hit/like differences vs the base, the greedy yardstick's, and the share of its gain; transfer."""
    out: dict[str, Any] = {}
    for key, frame in frames.items():
        likes = {n: scores[n][key]["likes_per_session"] for n in scores}
        out[key] = {
            **{f"likes_ratio_vs_{n}": likes[rl_name] / likes[n] if likes[n] else float("nan") for n in recommenders},
            "likes_difference_vs_base": paired_difference(frame, "likes_per_session", rl_name, base, n_boot, seed),
        }
    real = frames["train_sim"]
    out["real"] = {
        f"{m}_difference_vs_base": paired_difference(real, m, rl_name, base, n_boot, seed)
        for m in ("real_hit", "real_like")
    }
    for m in ("real_hit", "real_like"):
        greedy = paired_difference(real, m, GREEDY, base, n_boot, seed)
        out["real"][f"greedy_{m}_difference_vs_base"] = greedy
        gain = out["real"][f"{m}_difference_vs_base"]["difference"]
        out["real"][f"share_of_greedy_{m}_gain"] = gain / greedy["difference"] if greedy["difference"] else None
    out["transfer"] = transfer_ratio(scores, rl_name, base)
    return out


def transfer_ratio(policies: dict[str, Any], rl: str, base: str) -> dict[str, Any]:
    """In-simulator relative lift over the base (watches per session, held-out member) divided by the real one (real
    hit): 1 = the simulator predicts the real gain, > 1 = it over-promises, < 0 = the signs disagree."""

    def lift(a: float, b: float) -> float:
        return (a - b) / b if b else float("nan")

    sim = lift(policies[rl]["train_sim"]["watches_per_session"], policies[base]["train_sim"]["watches_per_session"])
    real = lift(policies[rl]["real"]["real_hit"], policies[base]["real"]["real_hit"])
    return {"sim_lift": sim, "real_lift": real, "sim_over_real": sim / real if real else None}


def print_table(console: Console, result: dict[str, Any]) -> None:
    from rich.table import Table

    train, other = (result["policies"][result["algo"]][k]["user_model"] for k in ("train_sim", "other_sim"))
    table = Table(title=f"{result['algo']} vs its base {result['base']}, held-out personas ({result['dataset']})")
    columns = (
        f"likes/session {train}",
        "pages",
        "P_view",
        "P_like",
        f"likes/session {other}",
        "real hit",
        "real like",
    )
    for column in ("policy", *columns, "recall@20"):
        table.add_column(column, justify="right")
    for name, r in result["policies"].items():
        table.add_row(
            name,
            f"{r['train_sim']['likes_per_session']:.3f}",
            f"{r['train_sim']['pages_per_session']:.2f}",
            f"{r['train_sim']['p_view']:.3f}",
            f"{r['train_sim']['p_like']:.3f}",
            f"{r['other_sim']['likes_per_session']:.3f}",
            f"{r['real']['real_hit']:.4f}",
            f"{r['real']['real_like']:.4f}",
            f"{r['real']['recall_at_20']:.3f}",
        )
    console.print(table)
    c, base = result["comparisons"], result["base"]
    hit = c["real"]["real_hit_difference_vs_base"]
    greedy = c["real"]["greedy_real_hit_difference_vs_base"]
    share = c["real"]["share_of_greedy_real_hit_gain"]
    console.print(
        f"{result['algo']} / {base} likes per session: {c['train_sim'][f'likes_ratio_vs_{base}']:.3f} ({train}), "
        f"{c['other_sim'][f'likes_ratio_vs_{base}']:.3f} ({other}); real hit {result['algo']} − {base} "
        f"{hit['difference']:+.4f} [{hit['ci'][0]:+.4f}, {hit['ci'][1]:+.4f}]; {GREEDY} − {base} "
        f"{greedy['difference']:+.4f}; share of the greedy gain reached " + ("n/a" if share is None else f"{share:.2f}")
    )
