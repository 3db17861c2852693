"""`simrec export-policy RUN`: a trained weights-mode policy as a recommender `--recommenders.names` accepts.

The policy's action depends on the session so far, but a recommender serves users without a simulator, so the
export keeps one weight vector: the mean of the policy's deterministic actions over `n_sessions` sessions of the
*training* personas (the held-out ones stay unseen), played in the training env with response member 0. It writes
`RUN/export/`: `policy.json` and `base/` (`recommenders.weight_reranker`), and `recommenders.toml` (the run's
recommender settings plus `[models.<label>] policy = ...`), and prints the spec to pass.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from experiments.build import UserModelFactory, build_world, train_recommender
from experiments.config import CONFIG_DIR
from experiments.rl.checkpoint import Checkpoint, decisions_only, with_personas
from experiments.rl.features import candidate_featurizer
from recommenders.weight_reranker import BASE_DIR, POLICY_FILE, RANK_DIR

EXPORT_DIR = "export"
SPEC = "recommenders.weight_reranker:WeightReranker"


def mean_weights(model: Any, env: Any, n_sessions: int, seed: int) -> np.ndarray:
    """The mean deterministic action of `model` over the pages of `n_sessions` sessions of `env` (a vector env)."""
    from experiments.rl.sb3_vec import SB3VectorEnv

    venv = SB3VectorEnv(env, info_keys=())
    venv.seed(seed)
    obs = venv.reset()
    actions, done = [], 0
    while done < n_sessions:
        action = model.predict(obs, deterministic=True)[0]
        actions.append(np.asarray(action, dtype=np.float64))
        obs, _, dones, _ = venv.step(action)
        done += int(dones.sum())
    return np.clip(np.concatenate(actions).mean(axis=0), -1.0, 1.0)


def export_policy(directory: Path, label: str | None = None, n_sessions: int = 400) -> dict[str, Any]:
    """Write `directory/export/` (module docstring); returns the spec, config file and weights."""
    from simenv.vector_env import FastRecVectorEnv

    directory = Path(directory)
    checkpoint = Checkpoint.load(directory)
    if checkpoint.action_mode != "weights":
        raise ValueError(f"{directory}: a {checkpoint.action_mode!r} policy; only weights-mode policies export")
    config = decisions_only(checkpoint.experiment())
    world = with_personas(build_world(config), checkpoint.train_users)
    base = train_recommender(config, world, checkpoint.base)[0]
    featurizer = candidate_featurizer(config, world, base)
    page = checkpoint.env
    env = FastRecVectorEnv(
        8,
        world.dataset,
        world.personas,
        UserModelFactory(config, world, None)(member=0),
        world.split.train,
        base,
        featurizer,
        page_size=page["page_size"],
        max_pages=page["max_pages"],
        n_candidates=page["n_candidates"],
        explore_fraction=page["explore_fraction"],
        history_len=page["history_len"],
        action_mode="weights",
    )
    weights = mean_weights(
        checkpoint.load_model(), env, n_sessions, int(np.random.default_rng([config.run.seed, 24]).integers(2**31))
    )
    out = directory / EXPORT_DIR
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    n_base = page["n_candidates"] - int(round(page["explore_fraction"] * page["n_candidates"]))
    meta = {
        "weights": weights.tolist(),
        "names": list(featurizer.names),
        "base": checkpoint.base,
        "rank_sources": list(featurizer.others),
        "n_base": n_base,
        "seed": config.run.seed,
        "from_checkpoint": str(directory),
        "n_sessions_averaged": n_sessions,
    }
    (out / POLICY_FILE).write_text(json.dumps(meta, indent=2))
    base.save(out / BASE_DIR)
    for name, recommender in featurizer.others.items():  # the models behind the rank:<name> columns
        recommender.save(out / RANK_DIR / name)
    label = label or directory.name.replace("_", "-")
    source = Path(config.recommenders.config_file or "recommenders.toml")
    if not source.is_file() and (CONFIG_DIR / source).is_file():
        source = CONFIG_DIR / source
    text = source.read_text() if source.is_file() else ""
    tomllib.loads(text)  # the copied settings parse
    text += f'\n\n# simrec export-policy {directory}\n[models.{label}]\npolicy = "{out.resolve()}"\n'
    (out / "recommenders.toml").write_text(text)
    return {
        "spec": f"{label}={SPEC}",
        "config_file": str(out / "recommenders.toml"),
        "weights": dict(zip(featurizer.names, weights.round(4).tolist(), strict=True)),
    }
