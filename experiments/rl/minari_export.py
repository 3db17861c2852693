"""Offline-RL export: env rollouts of any policy recorded as a Minari dataset (`minari.load_dataset` reads it).

`minari.DataCollector` needs jax (`minari[create]`) only to append steps to its buffers; this module records
the same `EpisodeBuffer`s itself and hands them to `minari.create_dataset_from_buffers`, so the export works
with plain `minari` + pyarrow (Minari's Arrow format, the default) or h5py (`data_format="hdf5"`: Minari 0.5.4's
Arrow writer rewrites per episode and slowed quadratically here, 800 episodes 143 s vs 8 s in HDF5). Datasets go
under `MINARI_DATASETS_PATH` (Minari's own setting; default `~/.minari/datasets`).

A logged comparison run (`simenv.runner`) has no env observations, so it is exported by replaying its
policies through the env: wrap each recommender in `simenv.policies.RecommenderPolicy` and call
`export_rollouts` with the same seed (several policies go into one dataset, each with the same episode seeds,
so every policy meets the same personas, as in `simrec compare`). `experiments.rl.offline` trains d3rlpy on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from simenv.policies import EnvPolicy


def collect_episodes(env: Any, policy: EnvPolicy, n_episodes: int, seed: int, first_id: int = 0) -> list[Any]:
    """`n_episodes` Minari `EpisodeBuffer`s (episode e reset with seed `seed + e`, id `first_id + e`); infos are
    not kept."""
    from minari.data_collector import EpisodeBuffer

    inner = env.unwrapped
    buffers = []
    for e in range(n_episodes):
        obs, info = env.reset(seed=seed + e)
        observations = {k: [v] for k, v in obs.items()}
        actions, rewards, terms, truncs = [], [], [], []
        done = False
        while not done:
            action = policy.act(inner, obs, info)
            obs, reward, terminated, truncated, info = env.step(action)
            policy.observe(inner, info)
            for k, v in obs.items():
                observations[k].append(v)
            actions.append(np.asarray(action, dtype=np.int64))
            rewards.append(float(reward))
            terms.append(bool(terminated))
            truncs.append(bool(truncated))
            done = terminated or truncated
        buffers.append(
            EpisodeBuffer(
                id=first_id + e,
                seed=seed + e,
                observations={k: np.stack(v) for k, v in observations.items()},
                actions=np.stack(actions),
                rewards=rewards,
                terminations=terms,
                truncations=truncs,
            )
        )
    return buffers


def export_rollouts(
    env: Any,
    policy: EnvPolicy | Sequence[EnvPolicy],
    dataset_id: str,
    n_episodes: int,
    seed: int,
    algorithm_name: str | None = None,
    description: str | None = None,
    data_format: str = "arrow",
) -> Any:
    """Record `n_episodes` of `policy` (of each policy, when several) in `env` as Minari dataset `dataset_id`;
    returns the `MinariDataset`.

    `dataset_id` follows Minari's syntax, e.g. `"simenv/fastrec/random-v0"`. An env from `gym.make` has its spec
    stored (`recover_environment()` works); an env built from parts (no spec) stores only its spaces.
    """
    try:
        import minari
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("offline-RL export needs minari: pip install 'minari>=0.5'") from exc
    policies = list(policy) if isinstance(policy, Sequence) else [policy]
    if not policies:
        raise ValueError("export_rollouts: no policy given")
    buffers = []
    for p in policies:
        buffers += collect_episodes(env, p, n_episodes, seed, first_id=len(buffers))
    names = "+".join(getattr(p, "name", type(p).__name__) for p in policies)
    spec = env.spec
    return minari.create_dataset_from_buffers(
        dataset_id=dataset_id,
        buffer=buffers,
        env=env if spec is not None else None,
        eval_env=spec,
        observation_space=None if spec is not None else env.observation_space,
        action_space=None if spec is not None else env.action_space,
        author="simrec",
        algorithm_name=algorithm_name or names,
        description=description or "simrec RecEnv rollouts",
        data_format=data_format,
    )
