"""Entry points of the registered Gymnasium ids: build the default world and user model, then the env.

This is the composition root of `gym.make` / `gym.make_vec`: `simenv` defines the environments from injected
parts (dataset, personas, user model, candidate recommender, reward) and registers its ids with entry-point
strings naming the functions below, so the core never imports `agents`, `recommenders` or `experiments`.
The recommender registry (torch) and the LLM user stack are imported when first needed, so `gym.make` of a
fast-user id stays quick to start.
The world (dataset, Agent4Rec split, personas) is cached per (dataset, n_users, split_seed, min_liked), so
`gym.make_vec` and repeated `gym.make` calls do not rebuild it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import pandas as pd

from agents.fast_user import FastUserModel
from agents.persona import build_personas
from simenv import defaults
from simenv.data import agent4rec_split, load_dataset
from simenv.data.dataset import Dataset, Split
from simenv.env import RecEnv
from simenv.protocols import Recommender
from simenv.records import Persona
from simenv.vector_env import FastRecVectorEnv

# RecEnv options that need records or text, which the vectorised env does not keep.
_SINGLE_ENV_ONLY = ("log", "policy_name", "render_mode", "persistent_memory")


@functools.lru_cache(maxsize=8)
def default_world(
    dataset: str = defaults.DATASET,
    n_users: int | None = None,
    split_seed: int = 0,
    min_liked: int = defaults.MIN_LIKED,
) -> tuple[Dataset, Split, dict[int, Persona]]:
    """(dataset, Agent4Rec split, personas built from the train split); cached, treat as read-only."""
    ds = load_dataset(dataset)
    split = agent4rec_split(ds, n_users=n_users, seed=split_seed, min_liked=min_liked)
    return ds, split, dict(build_personas(split))


def candidate_recommender(
    recommender: str | Recommender | None, train: pd.DataFrame, dataset: Dataset, config: Mapping[str, Any] | None
) -> Recommender | None:
    """None (train popularity), a fitted `Recommender`, or a registry name fitted here on the train split."""
    if recommender is None or not isinstance(recommender, str):
        return recommender
    from recommenders.registry import make as make_recommender

    return make_recommender(recommender, **dict(config or {})).fit(train, dataset.n_users, dataset.n_items)


def make_fast_env(
    dataset: str = defaults.DATASET,
    n_users: int | None = None,
    split_seed: int = 0,
    min_liked: int = defaults.MIN_LIKED,
    user_config: Any = None,
    recommender: str | Recommender | None = None,
    recommender_config: Mapping[str, Any] | None = None,
    **env_kwargs: Any,
) -> RecEnv:
    """`simenv/FastRec-v0`: the multinomial-logit user (`agents.fast_user.FastUserModel`), no LLM.

    `dataset`, `n_users`, `split_seed`, `min_liked` choose the world (see `default_world`); `user_config` is an
    `agents.config.FastUserConfig` (None = the shipped default); `recommender` (+ `recommender_config`)
    gives the base candidates; everything else goes to `RecEnv` (page_size, max_pages, n_candidates, reward,
    action_mode, invalid_action, log, ...).
    """
    ds, split, personas = default_world(dataset, n_users, split_seed, min_liked)
    user = FastUserModel(ds, config=user_config, train=split.train)  # per-persona plans built lazily
    rec = candidate_recommender(recommender, split.train, ds, recommender_config)
    return RecEnv(ds, personas, user, split.train, candidate_recommender=rec, **env_kwargs)


def make_fast_vector_env(
    num_envs: int = 1,
    dataset: str = defaults.DATASET,
    n_users: int | None = None,
    split_seed: int = 0,
    min_liked: int = defaults.MIN_LIKED,
    user_config: Any = None,
    recommender: str | Recommender | None = None,
    recommender_config: Mapping[str, Any] | None = None,
    **env_kwargs: Any,
) -> FastRecVectorEnv:
    """The `vector_entry_point` of the fast-user ids: the world and user model of `make_fast_env`, `num_envs`
    sessions in one `simenv.vector_env.FastRecVectorEnv`. Other kwargs go to `FastRecVectorEnv` (including the
    `max_episode_steps` that `gym.make_vec` passes from the registration)."""
    unsupported = sorted(k for k in _SINGLE_ENV_ONLY if env_kwargs.get(k) not in (None, False, "env"))
    if unsupported:
        raise ValueError(
            f"{unsupported}: not supported by the vectorised env (no records or text); "
            f"use vectorization_mode='sync' or 'async' for single envs with these options"
        )
    for key in _SINGLE_ENV_ONLY:
        env_kwargs.pop(key, None)
    ds, split, personas = default_world(dataset, n_users, split_seed, min_liked)
    user = FastUserModel(ds, config=user_config, train=split.train)
    rec = candidate_recommender(recommender, split.train, ds, recommender_config)
    return FastRecVectorEnv(num_envs, ds, personas, user, split.train, candidate_recommender=rec, **env_kwargs)


def make_persona_env(
    dataset: str = defaults.DATASET,
    n_users: int | None = None,
    split_seed: int = 0,
    min_liked: int = defaults.MIN_LIKED,
    llm: Any = None,
    embedder: str = "hashing",
    user_config: Any = None,
    recommender: str | Recommender | None = None,
    recommender_config: Mapping[str, Any] | None = None,
    **env_kwargs: Any,
) -> RecEnv:
    """`simenv/PersonaRec-v0`: LLM persona users (`agents.llm_user.LLMUserModel`) with memory and reflection.

    `llm` is a `simenv.llm.LLMConfig`, a dict of its fields, or None for the deterministic mock backend;
    `embedder` is `"hashing"` (fast, deterministic) or `"minilm"` (all-MiniLM-L6-v2, offline package);
    `user_config` an `agents.config.LLMUserConfig`. Other arguments as in `make_fast_env`. Each episode
    starts the user with a fresh memory so a seeded reset reproduces the episode.
    """
    from agents.llm_user import LLMUserModel
    from simenv.llm import LLMConfig, make_llm

    ds, split, personas = default_world(dataset, n_users, split_seed, min_liked)
    if llm is None:
        llm = LLMConfig(backend="mock")
    elif isinstance(llm, Mapping):
        llm = LLMConfig.from_mapping(llm, source="gym.make(llm=...)")
    user = LLMUserModel(ds, make_llm(llm), _embedder(embedder), user_config, train=split.train)
    rec = candidate_recommender(recommender, split.train, ds, recommender_config)
    env_kwargs.setdefault("persistent_memory", False)
    return RecEnv(ds, personas, user, split.train, candidate_recommender=rec, **env_kwargs)


def make_live_persona_env(llm: Any = None, **kwargs: Any) -> RecEnv:
    """`simenv/PersonaRecLive-v0`: like PersonaRec-v0 but with a real model; default the embedded SmolLM2."""
    if llm is None:
        llm = {"backend": "llama-cpp"}
    return make_persona_env(llm=llm, **kwargs)


def _embedder(name: str) -> Any:
    from agents.embedding import HashingEmbedder, MiniLMEmbedder

    if name == "hashing":
        return HashingEmbedder()
    if name == "minilm":
        return MiniLMEmbedder()
    raise ValueError(f"embedder={name!r}: expected 'hashing' or 'minilm'")
