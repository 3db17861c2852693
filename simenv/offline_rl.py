"""Offline-RL export: env rollouts of any policy recorded as a Minari dataset (`minari.load_dataset` reads it).

`minari.DataCollector` needs jax (`minari[create]`) only to append steps to its buffers; this module records
the same `EpisodeBuffer`s itself and hands them to `minari.create_dataset_from_buffers`, so the export works
with plain `minari` + pyarrow (Minari's Arrow format). Datasets go under `MINARI_DATASETS_PATH` (Minari's
own setting; default `~/.minari/datasets`).

A logged comparison run (`simenv.runner`) has no env observations, so it is exported by replaying its
policy through the env: wrap the recommender in `simenv.policies.RecommenderPolicy` and call
`export_rollouts` with the same seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from simenv.policies import EnvPolicy


def collect_episodes(env: Any, policy: EnvPolicy, n_episodes: int, seed: int) -> list[Any]:
    """`n_episodes` Minari `EpisodeBuffer`s (episode e reset with seed `seed + e`); infos are not kept."""
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
                id=e,
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
    policy: EnvPolicy,
    dataset_id: str,
    n_episodes: int,
    seed: int,
    algorithm_name: str | None = None,
    description: str | None = None,
) -> Any:
    """Record `n_episodes` of `policy` in `env` as Minari dataset `dataset_id`; returns the `MinariDataset`.

    `dataset_id` follows Minari's syntax, e.g. `"simenv/fastrec/random-v0"`. `env` must come from
    `gym.make` (Minari stores its spec so `recover_environment()` works).
    """
    try:
        import minari
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("offline-RL export needs minari: pip install 'minari>=0.5'") from exc
    if env.spec is None:
        raise ValueError("export_rollouts: env has no spec; create it with gym.make(...) so Minari can record it")
    buffers = collect_episodes(env, policy, n_episodes, seed)
    return minari.create_dataset_from_buffers(
        dataset_id=dataset_id,
        buffer=buffers,
        env=env,
        eval_env=env.spec,
        author="simrec",
        algorithm_name=algorithm_name or getattr(policy, "name", type(policy).__name__),
        description=description or "simrec RecEnv rollouts",
        data_format="arrow",
    )
