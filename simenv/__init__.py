"""simenv: the core of simrec — records, data, the LLM layer and the Gymnasium environment.

Importing `simenv` registers the environment ids (Gymnasium 1.x has no plugin entry points, so use
`import simenv` or `gym.make("simenv:simenv/FastRec-v0")`):

| id                          | user model                          | action                      | episode limit |
|-----------------------------|-------------------------------------|-----------------------------|---------------|
| `simenv/FastRec-v0`         | fast MNL user (no LLM)              | slate, `MultiDiscrete`      | 5 pages       |
| `simenv/FastRecSeq-v0`      | fast MNL user                       | one slot, `Discrete` (DQN)  | 5 pages x 4   |
| `simenv/PersonaRec-v0`      | LLM persona user, mock LLM default  | slate, `MultiDiscrete`      | 5 pages       |
| `simenv/PersonaRecLive-v0`  | LLM persona user, real model        | slate; `nondeterministic`   | 5 pages       |

The ids' entry points are in `experiments.envs` (the composition root: it builds the default world, user
model and candidate recommender; `simenv` itself never imports `agents`, `recommenders` or `experiments`).
Every kwarg of `gym.make` is documented there and in `simenv.env.RecEnv`. When changing `max_pages` (or
`page_size` for the sequential id), pass the matching `max_episode_steps` as well.

The two fast-user ids also have a `vector_entry_point` building `simenv.vector_env.FastRecVectorEnv` (N sessions
stepped together in numpy, lean array `info`, next-step autoreset): `gym.make_vec(id, num_envs=N)` builds it by
default (`vectorization_mode="vector_entry_point"`); `"sync"` / `"async"` wrap N single envs as before.
"""

from __future__ import annotations

import gymnasium as _gym

from simenv.defaults import MAX_PAGES as PAGES
from simenv.defaults import PAGE_SIZE

ENV_IDS = ("simenv/FastRec-v0", "simenv/FastRecSeq-v0", "simenv/PersonaRec-v0", "simenv/PersonaRecLive-v0")


def _register() -> None:
    specs = [
        ("simenv/FastRec-v0", "experiments.envs:make_fast_env", PAGES, {}, False),
        (
            "simenv/FastRecSeq-v0",
            "experiments.envs:make_fast_env",
            PAGES * PAGE_SIZE,
            {"action_mode": "sequential"},
            False,
        ),
        ("simenv/PersonaRec-v0", "experiments.envs:make_persona_env", PAGES, {}, False),
        ("simenv/PersonaRecLive-v0", "experiments.envs:make_live_persona_env", PAGES, {}, True),
    ]
    vector_entry = {
        "simenv/FastRec-v0": "experiments.envs:make_fast_vector_env",
        "simenv/FastRecSeq-v0": "experiments.envs:make_fast_vector_env",
    }
    for env_id, entry, steps, kwargs, nondeterministic in specs:
        if env_id in _gym.registry:
            continue
        _gym.register(
            id=env_id,
            entry_point=entry,
            vector_entry_point=vector_entry.get(env_id),
            max_episode_steps=steps,
            nondeterministic=nondeterministic,
            kwargs={"page_size": PAGE_SIZE, "max_pages": PAGES, **kwargs},
        )


_register()
