"""Offline RL from logged sessions: behaviour policies' sessions as a Minari dataset, a d3rlpy policy trained on it.

1. `export_behaviour`: each behaviour policy (`[rl] behaviour`: recommenders by registry name, or `random` for
   uniformly random valid pages) runs `[rl] offline_episodes` sessions of the training personas in the slot-by-slot
   env (`RecEnv(action_mode="sequential")`: one candidate per step, the page reward when the page is full); the
   sessions are recorded with `experiments.rl.minari_export.export_rollouts` as a Minari dataset (HDF5) under
   `<run>/minari/`. Every behaviour policy gets the same episode seeds, hence the same personas and candidate sets,
   as in `simrec compare`.
2. `mdp_dataset`: the Minari dataset read back (`minari.MinariDataset`) as a d3rlpy `MDPDataset` (observations
   flattened in `OBS_KEYS` order; terminated = the persona left, timeout = page limit; every logged step is one
   transition).
3. `train_offline`: d3rlpy's DiscreteBC, DiscreteCQL or DiscreteBCQ (`OFFLINE_ALGOS`), `[rl] timesteps` gradient
   steps, stopped between epochs by `[rl] time_budget`; d3rlpy's CSV and TensorBoard logs under `<run>/d3rlpy/`.
4. `OfflinePolicy`: the trained d3rlpy algorithm behind SB3's `predict(obs, deterministic)`, so
   `simenv.policies.SB3Recommender` (sequential mode) evaluates it exactly like a DQN checkpoint.

d3rlpy samples its minibatches from numpy's global generator and has no per-call seed: `d3rlpy.seed(seed)` (its own
seeding function, as SB3 does with `set_random_seed`) is called with the run seed before training.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.rl.minari_export import export_rollouts
from simenv.policies import EnvPolicy, RandomPolicy, RecommenderPolicy
from simenv.protocols import Recommender
from simenv.spaces import FEATURES_KEY

OBS_KEYS = ("candidates", "history", "persona", "session")  # the Dict observation's keys, flattened in this order
OFFLINE_MODEL_FILE = "model.d3"
# algorithm -> (d3rlpy config class, its settings). CQL/BCQ: target network every 1000 steps (episodes are short).
OFFLINE_ALGOS: dict[str, tuple[str, dict[str, Any]]] = {
    "bc": ("DiscreteBCConfig", {"batch_size": 256, "learning_rate": 1e-3}),
    "cql": ("DiscreteCQLConfig", {"batch_size": 256, "learning_rate": 3e-4, "target_update_interval": 1000,
                                  "alpha": 1.0}),
    "bcq": ("DiscreteBCQConfig", {"batch_size": 256, "learning_rate": 3e-4, "target_update_interval": 1000}),
}  # fmt: skip
STEPS_PER_EPOCH = 250  # the time budget is checked between epochs (an epoch of CQL took 25-100 s under load)


def _d3rlpy() -> Any:
    """d3rlpy, its info-level console logging (structlog, configured globally by d3rlpy) turned down to warnings."""
    try:
        import d3rlpy
        import structlog
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "offline RL needs d3rlpy: `make setup`, or pip install -e '.[rl]' then pip install --no-deps "
            "d3rlpy==2.8.1 (it pins gymnasium==1.0.0, older than simenv needs, hence --no-deps)"
        ) from exc
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return d3rlpy


def flatten(obs: Mapping[str, np.ndarray]) -> np.ndarray:
    """One float32 vector (or a batch of them) from a Dict observation, keys in `OBS_KEYS` order, then the 2-D
    `candidate_features` table row-major when the env has a featurizer."""
    extra = set(obs) - set(OBS_KEYS)
    if not set(OBS_KEYS) <= set(obs) or extra - {FEATURES_KEY}:
        raise ValueError(f"observation keys {sorted(obs)}: expected {list(OBS_KEYS)} (and optionally {FEATURES_KEY})")
    parts = [np.asarray(obs[k], dtype=np.float32) for k in OBS_KEYS]
    if FEATURES_KEY in obs:
        table = np.asarray(obs[FEATURES_KEY], dtype=np.float32)
        parts.append(table.reshape(*table.shape[:-2], -1))
    return np.concatenate(parts, axis=-1)


@contextlib.contextmanager
def minari_root(directory: Path) -> Iterator[None]:
    """Minari's dataset root (`MINARI_DATASETS_PATH`, read by Minari on every call) set to `directory` inside."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(directory)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def behaviour_policies(recommenders: Mapping[str, Recommender | None], seed: int) -> list[EnvPolicy]:
    """Env policies for the named behaviour recommenders (None = uniformly random valid pages), each with its own
    seeded generator."""
    policies: list[EnvPolicy] = []
    for k, (name, rec) in enumerate(recommenders.items()):
        rng = np.random.default_rng([seed, 41, k])
        policy: EnvPolicy = RandomPolicy(rng) if rec is None else RecommenderPolicy(rec, rng)
        policy.name = name
        policies.append(policy)
    return policies


def export_behaviour(
    env: Any, policies: list[EnvPolicy], directory: Path, dataset_id: str, n_episodes: int, seed: int
) -> Path:
    """Record `n_episodes` sessions of each policy in `env` as Minari dataset `dataset_id` under `directory`
    (replacing an earlier one there); returns the dataset's directory."""
    shutil.rmtree(directory / dataset_id, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    with minari_root(directory), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="minari")  # no permalink, e-mail, env spec
        export_rollouts(
            env, policies, dataset_id, n_episodes, seed, description="simrec behaviour sessions", data_format="hdf5"
        )
    return directory / dataset_id


def mdp_dataset(dataset_dir: Path) -> Any:
    """The Minari dataset in `dataset_dir` as a d3rlpy `MDPDataset` (discrete actions)."""
    import minari

    d3rlpy = _d3rlpy()
    data = minari.MinariDataset(Path(dataset_dir) / "data")
    observations, actions, rewards, terminals, timeouts = [], [], [], [], []
    for episode in data.iterate_episodes():
        n = len(episode.actions)
        left = bool(episode.terminations[-1])
        # d3rlpy's timeout episode of m rows holds m - 1 transitions (the last row is only the next observation):
        # a page-limit episode keeps its final observation, with a placeholder action no transition uses.
        m = n if left else n + 1
        observations.append(flatten({k: v[:m] for k, v in episode.observations.items()}))
        actions.append(np.append(np.asarray(episode.actions, dtype=np.int64).reshape(n), [0] * (m - n)))
        rewards.append(np.append(np.asarray(episode.rewards, dtype=np.float32), [0.0] * (m - n)))
        ends = np.zeros(m, dtype=np.float32)
        ends[-1] = 1.0
        terminals.append(ends if left else np.zeros(m, dtype=np.float32))
        timeouts.append(np.zeros(m, dtype=np.float32) if left else ends)
    if not actions:
        raise ValueError(f"{dataset_dir}: the Minari dataset has no episodes")
    return d3rlpy.dataset.MDPDataset(
        np.concatenate(observations),
        np.concatenate(actions),
        np.concatenate(rewards)[:, None],
        np.concatenate(terminals),
        np.concatenate(timeouts),
        action_space=d3rlpy.ActionSpace.DISCRETE,
        action_size=int(data.action_space.n),
    )


@dataclass(frozen=True)
class OfflineRun:
    """What `train_offline` did."""

    steps: int
    stopped_by_budget: bool
    train_seconds: float
    n_transitions: int
    n_episodes: int


def train_offline(
    algo: str,
    dataset: Any,
    out: Path,
    steps: int,
    seed: int,
    time_budget: float | None = None,
    show_progress: bool = False,
) -> tuple[Any, OfflineRun]:
    """Fit d3rlpy's `algo` on `dataset` for `steps` gradient steps (or until `time_budget` seconds, checked between
    epochs); saves `<out>/model.d3` and logs (CSV + TensorBoard) to `<out>/d3rlpy/`."""
    if algo not in OFFLINE_ALGOS:
        raise ValueError(f"offline algo {algo!r}: expected one of {sorted(OFFLINE_ALGOS)}")
    d3rlpy = _d3rlpy()
    from d3rlpy.logging import FileAdapterFactory
    from torch.utils.tensorboard import SummaryWriter

    d3rlpy.seed(seed)
    class_name, settings = OFFLINE_ALGOS[algo]
    learner = getattr(d3rlpy.algos, class_name)(**settings).create(device="cpu:0")
    logs = out / "d3rlpy"
    shutil.rmtree(logs, ignore_errors=True)
    writer = SummaryWriter(str(logs / "tensorboard"))  # d3rlpy's own adapter needs tensorboardX; torch's writer
    start = time.perf_counter()
    stopped = False
    for _epoch, metrics in learner.fitter(
        dataset,
        n_steps=steps,
        n_steps_per_epoch=min(STEPS_PER_EPOCH, steps),
        experiment_name=algo,
        with_timestamp=False,
        logger_adapter=FileAdapterFactory(root_dir=str(logs)),
        show_progress=show_progress,
        save_interval=10**9,  # only the final model is kept (`model.d3`)
    ):
        for name, value in metrics.items():
            writer.add_scalar(f"train/{name}", value, learner.grad_step)
        if time_budget is not None and time.perf_counter() - start > time_budget:
            stopped = True
            break
    writer.close()
    seconds = time.perf_counter() - start
    learner.save(str(out / OFFLINE_MODEL_FILE))
    run = OfflineRun(
        steps=int(learner.grad_step),
        stopped_by_budget=stopped,
        train_seconds=round(seconds, 1),
        n_transitions=int(dataset.transition_count),
        n_episodes=len(dataset.episodes),
    )
    return learner, run


class OfflinePolicy:
    """A trained d3rlpy discrete algorithm with SB3's `predict` (what `simenv.policies.SB3Recommender` calls)."""

    def __init__(self, learner: Any) -> None:
        self.learner = learner

    @classmethod
    def load(cls, path: Path) -> OfflinePolicy:
        return cls(_d3rlpy().load_learnable(str(path), device="cpu:0"))

    def predict(self, observation: Mapping[str, np.ndarray], deterministic: bool = True) -> tuple[np.ndarray, None]:
        """The greedy action (d3rlpy's policies are deterministic) for one observation or a batch."""
        x = flatten(observation)
        single = x.ndim == 1
        actions = self.learner.predict(x[None] if single else x)
        return (actions[0] if single else actions), None
