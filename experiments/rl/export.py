"""`simrec export-policy RUN`: a trained policy as a recommender `--recommenders.names` accepts.

- A weights-mode policy becomes a `recommenders.weight_reranker` (numpy only). The policy's action depends on the
  session so far, but that recommender serves users without a simulator, so the export keeps one weight vector: the
  mean of the policy's deterministic actions over `n_sessions` sessions of the *training* personas (the held-out
  ones stay unseen), played in the training env with response member 0. `RUN/export/` holds `policy.json`, `base/`
  and `rank/`.
- Any other online policy (the ranking policy, a slate or DQN model) becomes an
  `experiments.rl.policy_ranker.PolicyRanker`: `RUN/export/policy.json` names the checkpoint, whose model serves
  page by page as in `evaluate-rl` (SB3 and torch at inference).

Both write `RUN/export/recommenders.toml` (the run's recommender settings plus `[models.<label>] policy = ...`) and
return the spec to pass.
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
from experiments.rl.policy_ranker import POLICY_FILE as RANKER_POLICY_FILE
from recommenders.weight_reranker import BASE_DIR, POLICY_FILE, RANK_DIR

EXPORT_DIR = "export"
WEIGHTS_SPEC = "recommenders.weight_reranker:WeightReranker"
RANKER_SPEC = "experiments.rl.policy_ranker:PolicyRanker"


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
    """Write `directory/export/` (module docstring); returns the spec, the config file and (weights) the weights."""
    directory = Path(directory)
    checkpoint = Checkpoint.load(directory)
    config = decisions_only(checkpoint.experiment())
    if checkpoint.offline:
        raise ValueError(f"{directory}: an offline ({checkpoint.algo}) policy; `simrec evaluate-rl` scores it")
    out = directory / EXPORT_DIR
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if checkpoint.action_mode == "weights":
        spec, extra = WEIGHTS_SPEC, {"weights": _export_weights(checkpoint, config, out, n_sessions)}
    else:
        spec, extra = RANKER_SPEC, {}
        meta = {"checkpoint": str(directory.resolve()), "base": checkpoint.base, "action": config.rl.action}
        (out / RANKER_POLICY_FILE).write_text(json.dumps(meta, indent=2))
    label = label or directory.name.replace("_", "-")
    source = Path(config.recommenders.config_file or "recommenders.toml")
    if not source.is_file() and (CONFIG_DIR / source).is_file():
        source = CONFIG_DIR / source
    text = source.read_text() if source.is_file() else ""
    tomllib.loads(text)  # the copied settings parse
    text += f'\n\n# simrec export-policy {directory}\n[models.{label}]\npolicy = "{out.resolve()}"\n'
    (out / "recommenders.toml").write_text(text)
    return {"spec": f"{label}={spec}", "config_file": str(out / "recommenders.toml"), **extra}


def _export_weights(checkpoint: Checkpoint, config: Any, out: Path, n_sessions: int) -> dict[str, float]:
    """The weights re-ranker's files in `out`; returns the mean weights by feature name."""
    from simenv.vector_env import FastRecVectorEnv

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
    n_base = page["n_candidates"] - int(round(page["explore_fraction"] * page["n_candidates"]))
    meta = {
        "weights": weights.tolist(),
        "names": list(featurizer.names),
        "base": checkpoint.base,
        "rank_sources": list(featurizer.others),
        "n_base": n_base,
        "seed": config.run.seed,
        "from_checkpoint": str(checkpoint.directory),
        "n_sessions_averaged": n_sessions,
    }
    (out / POLICY_FILE).write_text(json.dumps(meta, indent=2))
    base.save(out / BASE_DIR)
    for name, recommender in featurizer.others.items():  # the models behind the rank:<name> columns
        recommender.save(out / RANK_DIR / name)
    return dict(zip(featurizer.names, weights.round(4).tolist(), strict=True))
