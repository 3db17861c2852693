"""simrec: simulated users for recommender systems — the Gymnasium ids and the library entry points.

`import simrec` registers the environment ids (Gymnasium 1.x has no plugin entry points; or use
`gym.make("simrec:simrec/FastRec-v1")`). Every id builds the validated `fitted` user unless `user=` names
another kind (docs/USERS.md); all accept `dataset=`, `seed=`, `user=`, `n_users=`, `recommender=` and the
`simenv.env.RecEnv` options. Every id's observation has the train-only `candidate_features` table (base score
and rank, collaborative affinities, popularity, mean rating, session flags; docs/CONTRACTS.md); the Rank id's action
is a weight per feature (the page = the top candidates by base score + w . x), for `simrec.rl.policy_kwargs()`:

| id                          | user (default)                          | action                      | episode limit |
|-----------------------------|-----------------------------------------|-----------------------------|---------------|
| `simrec/FastRec-v1`         | `fitted`, no text                       | slate, `MultiDiscrete`      | 5 pages       |
| `simrec/FastRecSeq-v1`      | `fitted`, no text                       | one slot, `Discrete` (DQN)  | 5 pages x 4   |
| `simrec/FastRecRank-v1`     | `fitted`, no text; base `mf`            | feature weights, `Box`      | 5 pages       |
| `simrec/PersonaRec-v1`      | `persona`: fitted + LLM text, mock LLM  | slate, `MultiDiscrete`      | 5 pages       |
| `simrec/PersonaRecLive-v1`  | `persona`, real model (SmolLM2)         | slate; `nondeterministic`   | 5 pages       |

The no-text ids have a `vector_entry_point` (`gym.make_vec(id, num_envs=N)`: `simenv.vector_env.FastRecVectorEnv`).
The first `gym.make` on a machine fits and caches the response model (minutes; see `simrec.envs`); later ones
take seconds. When changing `max_pages` (or `page_size` for the sequential id), pass `max_episode_steps` too.
"""

from __future__ import annotations

import gymnasium as _gym

from simenv.defaults import MAX_PAGES as PAGES
from simenv.defaults import PAGE_SIZE

ENV_IDS = (
    "simrec/FastRec-v1",
    "simrec/FastRecSeq-v1",
    "simrec/FastRecRank-v1",
    "simrec/PersonaRec-v1",
    "simrec/PersonaRecLive-v1",
)


def make_env(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - see simrec.envs.make_env
    """`simrec.envs.make_env` (imported on first use: building an env imports the whole stack)."""
    from simrec.envs import make_env as build

    return build(*args, **kwargs)


def make_vector_env(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - see simrec.envs.make_vector_env
    """`simrec.envs.make_vector_env`."""
    from simrec.envs import make_vector_env as build

    return build(*args, **kwargs)


def _register() -> None:
    specs = [
        ("simrec/FastRec-v1", "simrec.envs:make_env", PAGES, {}, False),
        ("simrec/FastRecSeq-v1", "simrec.envs:make_env", PAGES * PAGE_SIZE, {"action_mode": "sequential"}, False),
        (
            "simrec/FastRecRank-v1",
            "simrec.envs:make_env",
            PAGES,
            {"action_mode": "weights", "recommender": "mf"},
            False,
        ),
        ("simrec/PersonaRec-v1", "simrec.envs:make_env", PAGES, {"user": "persona"}, False),
        ("simrec/PersonaRecLive-v1", "simrec.envs:make_live_persona_env", PAGES, {}, True),
    ]
    vector = {"simrec/FastRec-v1", "simrec/FastRecSeq-v1", "simrec/FastRecRank-v1"}
    for env_id, entry, steps, kwargs, nondeterministic in specs:
        if env_id in _gym.registry:
            continue
        _gym.register(
            id=env_id,
            entry_point=entry,
            vector_entry_point="simrec.envs:make_vector_env" if env_id in vector else None,
            max_episode_steps=steps,
            nondeterministic=nondeterministic,
            kwargs={"page_size": PAGE_SIZE, "max_pages": PAGES, **kwargs},
        )


_register()
