"""Build environments the way `simrec validate` builds its users: the entry points of the registered gym ids.

`make_env` and `make_vector_env` turn a few keyword arguments (`dataset`, `seed`, `user`, ...) into the experiment
config the CLI would use, then build the same world (dataset, Agent4Rec split, every split user's persona from the
train split) and the same user model (`experiments.build.UserModelFactory`): the default `user="fitted"` is the
validated user. The first build on a machine trains the recommenders whose impressions the response model is
fitted on and fits it (printed phase by phase to stderr; minutes on ML-100K, longer on ML-1M); later builds load
both from the cache (`~/.cache/simrec`, `$SIMREC_CACHE_DIR` or `cache_dir=`) in seconds. Worlds and user models are
memoised per process, so `gym.make_vec` and repeated `gym.make` calls share them.

`personas="train"` keeps the personas `simrec train-rl` trains on and `personas="held_out"` the ones it holds out
(block `eval_fold` of `eval_personas` in the seeded split of `experiments.rl.checkpoint.split_personas`), so a
script can train on the first and score its policy on real held-out data with `simrec.rl.evaluate`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.build import UserModelFactory, World, build_llm, build_world, train_recommender
from experiments.config import ExperimentConfig
from experiments.rl.checkpoint import split_personas, with_personas
from experiments.rl.features import candidate_featurizer as rl_featurizer
from simenv import defaults
from simenv.env import RecEnv
from simenv.protocols import CandidateFeaturizer, Recommender, UserModel
from simenv.vector_env import FastRecVectorEnv

# RecEnv options that need records or text, which the vectorised env does not keep.
_SINGLE_ENV_ONLY = ("log", "policy_name", "render_mode", "persistent_memory")
PERSONAS = ("all", "train", "held_out")
EVAL_PERSONAS = defaults.EVAL_PERSONAS  # the held-out block's default size (ML-100K: 350 of 703)


def select_personas(world: World, personas: str, eval_personas: int, eval_fold: int, seed: int) -> World:
    """`world` with the personas an env samples sessions from: all, or the train / held-out side of the RL split."""
    if personas not in PERSONAS:
        raise ValueError(f"personas={personas!r}: must be one of {', '.join(PERSONAS)}")
    if personas == "all":
        return world
    train, held_out = split_personas(world.population, eval_personas, seed, eval_fold)
    return with_personas(world, train if personas == "train" else held_out)


def env_config(
    dataset: str = defaults.DATASET,
    seed: int = 0,
    user: str | None = None,
    n_users: int | None = None,
    llm: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    users_file: str | Path | None = None,
) -> ExperimentConfig:
    """The experiment config an env is built from: the CLI's defaults with these fields set (every other default,
    including the user kind's numbers, is the one `simrec validate` uses)."""
    users: dict[str, Any] = {"embedder": "hashing", "config_file": users_file}
    if user is not None:
        users["kind"] = user
    return ExperimentConfig.model_validate(
        {
            "run": {"seed": seed},
            "data": {"dataset": dataset, "split_users": n_users, "cache_dir": cache_dir},
            "users": users,
            "llm": dict(llm or {"backend": "mock", "cache": False}),
        }
    )


@functools.lru_cache(maxsize=8)
def _world_and_users(config: ExperimentConfig) -> tuple[World, UserModelFactory]:
    world = build_world_cached(config.model_copy(update={"users": config.users.model_copy(update={"kind": "fitted"})}))
    llm = build_llm(config) if config.users.writes_text else None
    return world, UserModelFactory(config, world, llm)


def default_world(
    dataset: str = defaults.DATASET, seed: int = 0, n_users: int | None = None, cache_dir: str | Path | None = None
) -> World:
    """The world the envs of these arguments are built on (dataset, split, every split user's persona); memoised,
    treat as read-only."""
    return build_world_cached(env_config(dataset, seed, n_users=n_users, cache_dir=cache_dir))


@functools.lru_cache(maxsize=8)
def build_world_cached(config: ExperimentConfig) -> World:
    return build_world(config, n_personas=10**9)  # every split user is a persona


def build_parts(
    config: ExperimentConfig, recommender: str | Recommender | None, member: int | Sequence[int] = 0
) -> tuple[World, UserModel, Recommender | None]:
    """(world, a fresh user model of the config's kind deciding by response-model ensemble member `member` (or by
    one of several members, drawn per episode), the candidate recommender) for one env."""
    world, factory = _world_and_users(config)
    rec = recommender
    if isinstance(recommender, str):
        rec = train_recommender(config, world, recommender)[0]
    return world, factory(member=member), rec


_FEATURIZERS: dict[tuple[int, object, int, tuple[str, ...]], CandidateFeaturizer] = {}


def candidate_featurizer(
    config: ExperimentConfig, world: World, base: Recommender | None, name: str | None = None
) -> CandidateFeaturizer:
    """The train-only candidate featurizer of `simrec train-rl` (`experiments.rl.features`) over `world` and `base`;
    memoised for the process per (world, base name), or per base object when it has no registry name (building one
    inverts an item-item matrix and keeps three n_items x n_items tables)."""
    key = (id(world), name if name is not None else id(base), config.run.seed, config.rl.rank_sources)
    if key not in _FEATURIZERS:
        _FEATURIZERS[key] = rl_featurizer(config, world, base)
    return _FEATURIZERS[key]


def make_env(
    dataset: str = defaults.DATASET,
    seed: int = 0,
    user: str | None = None,
    n_users: int | None = None,
    recommender: str | Recommender | None = None,
    llm: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    users_file: str | Path | None = None,
    candidate_features: bool = True,
    member: int | Sequence[int] = 0,
    personas: str = "all",
    eval_personas: int = EVAL_PERSONAS,
    eval_fold: int = 0,
    **env_kwargs: Any,
) -> RecEnv:
    """One session per episode (`simenv.env.RecEnv`) with the `user` kind (default `fitted`, the validated user).

    `dataset` (ml-100k, ml-1m, synthetic or a MovieLens directory), `seed` (the split and the user model's fit),
    `n_users` (users in the split; None = all eligible) choose the world; `recommender` (a registry name trained on
    the train split and cached, or a fitted `Recommender`; None = train popularity) gives the base candidates;
    `llm` is an `[llm]` table for the text-writing kinds (default the mock backend); `users_file` a users.toml with
    other kinds. `candidate_features` (default True) adds the train-only per-candidate features
    (`recommenders.candidate_features`: base score and rank, item-kNN, EASE, SVD, genre lift, popularity, mean
    rating) as the `candidate_features` key; `action_mode="weights"` needs them. `member` picks the fitted
    response model's ensemble member the user decides by (0 = the validated one; others are refitted with
    other seeds: `experiments.build.UserModelFactory.response_model`); several members (e.g. `(0, 1, 2)`, what
    `simrec train-rl` trains against; no-text kinds only) decide each episode by one drawn at reset, so a policy
    trained on them cannot exploit one member's errors. `personas` ("all", "train", "held_out"),
    `eval_personas` and `eval_fold` choose the side of the RL persona split sessions are drawn from (module
    docstring). Everything else goes to `RecEnv` (page_size, max_pages, n_candidates, reward, action_mode, ...).
    """
    config = env_config(dataset, seed, user, n_users, llm, cache_dir, users_file)
    world, user_model, rec = build_parts(config, recommender, member)
    if config.users.writes_text:
        env_kwargs.setdefault("persistent_memory", False)  # a seeded reset reproduces the episode
    featurizer = _featurizer(config, world, rec, recommender, candidate_features)
    sessions = select_personas(world, personas, eval_personas, eval_fold, seed)
    return RecEnv(
        world.dataset,
        sessions.personas,
        user_model,
        world.split.train,
        candidate_recommender=rec,
        candidate_featurizer=featurizer,
        **env_kwargs,
    )


def _featurizer(
    config: ExperimentConfig,
    world: World,
    rec: Recommender | None,
    recommender: str | Recommender | None,
    wanted: bool,
) -> CandidateFeaturizer | None:
    """The candidate featurizer of an env (None when not `wanted`); a named base is memoised under its name."""
    if not wanted:
        return None
    name = recommender if isinstance(recommender, str) or recommender is None else None
    return candidate_featurizer(config, world, rec, name)


def make_vector_env(
    num_envs: int = 1,
    dataset: str = defaults.DATASET,
    seed: int = 0,
    user: str | None = None,
    n_users: int | None = None,
    recommender: str | Recommender | None = None,
    cache_dir: str | Path | None = None,
    users_file: str | Path | None = None,
    candidate_features: bool = True,
    member: int | Sequence[int] = 0,
    personas: str = "all",
    eval_personas: int = EVAL_PERSONAS,
    eval_fold: int = 0,
    **env_kwargs: Any,
) -> FastRecVectorEnv:
    """`num_envs` sessions stepped together (`simenv.vector_env.FastRecVectorEnv`) with a no-text `user` kind; the
    world, user model and candidate features of `make_env`. Other kwargs go to `FastRecVectorEnv` (including the
    `max_episode_steps` that `gym.make_vec` passes from the registration)."""
    unsupported = sorted(k for k in _SINGLE_ENV_ONLY if env_kwargs.get(k) not in (None, False, "env"))
    if unsupported:
        raise ValueError(
            f"{unsupported}: not supported by the vectorised env (no records or text); "
            f"use vectorization_mode='sync' or 'async' for single envs with these options"
        )
    for key in _SINGLE_ENV_ONLY:
        env_kwargs.pop(key, None)
    config = env_config(dataset, seed, user, n_users, None, cache_dir, users_file)
    if config.users.writes_text:
        raise ValueError(f"user={config.users.kind!r} writes text: the vectorised env takes no-text kinds only")
    world, user_model, rec = build_parts(config, recommender, member)
    featurizer = _featurizer(config, world, rec, recommender, candidate_features)
    sessions = select_personas(world, personas, eval_personas, eval_fold, seed)
    return FastRecVectorEnv(
        num_envs,
        world.dataset,
        sessions.personas,
        user_model,
        world.split.train,
        candidate_recommender=rec,
        candidate_featurizer=featurizer,
        **env_kwargs,
    )


def make_live_persona_env(llm: Mapping[str, Any] | None = None, **kwargs: Any) -> RecEnv:
    """`simrec/PersonaRecLive-v1`: the persona user with a real model (default the embedded SmolLM2)."""
    return make_env(llm=llm or {"backend": "llama-cpp"}, **{"user": "persona", **kwargs})
