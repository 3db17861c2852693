"""Synthetic populations through the vectorised fast-user env (`simenv.synthetic_population`, issue 18).

- `draw_population`: seeded, member ids above the real ones, sources drawn from the real personas.
- A member decides exactly as the real persona it copies: the same seed and pages give the same observations,
  reactions and rewards whether the env is told the member's id or its source's.
- `options={"users": ids}` assigns sessions; `autoreset_mode="Disabled"` gives each member one session.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import simrec  # noqa: F401  (registers the ids)
from simenv.synthetic_population import SourceIdPolicy, SyntheticPopulation, draw_population, member_personas

SMALL = {"dataset": "synthetic", "vectorization_mode": "vector_entry_point"}


def _real_ids() -> list[int]:
    venv = gym.make_vec("simrec/FastRec-v1", num_envs=1, **SMALL)
    return list(venv.users)


def _first_available(info: dict, k: int) -> np.ndarray:
    """The first k candidates still available (the candidate set is ordered best first)."""
    return np.argsort(~info["action_mask"], axis=1, kind="stable")[:, :k]


def test_draw_population_is_seeded_and_never_reuses_a_real_id():
    real = _real_ids()
    a = draw_population(real, 500, np.random.default_rng(1))
    b = draw_population(real, 500, np.random.default_rng(1))
    c = draw_population(real, 500, np.random.default_rng(2))
    np.testing.assert_array_equal(a.source, b.source)
    assert not np.array_equal(a.source, c.source)
    assert len(a) == 500 and a.user_ids[0] == max(real) + 1 and (np.diff(a.user_ids) == 1).all()
    assert set(a.source.tolist()) <= set(real)
    assert len(set(a.source.tolist())) > len(real) // 2  # drawn from many personas, not a few
    with pytest.raises(ValueError, match="collide"):
        draw_population(real, 10, np.random.default_rng(0), first_id=min(real))


def test_a_member_decides_exactly_as_the_persona_it_copies():
    real = _real_ids()
    pop = draw_population(real, 64, np.random.default_rng(3))
    # No autoreset: a new session would be a uniform draw over members in one env, over real users in the other.
    members = gym.make_vec("simrec/FastRec-v1", num_envs=64, population=pop, autoreset_mode="Disabled", **SMALL)
    sources = gym.make_vec("simrec/FastRec-v1", num_envs=64, autoreset_mode="Disabled", **SMALL)
    obs_m, info_m = members.reset(seed=7, options={"users": pop.user_ids})
    obs_s, info_s = sources.reset(seed=7, options={"users": pop.source})
    np.testing.assert_array_equal(info_m["user_id"], pop.user_ids)
    np.testing.assert_array_equal(info_s["user_id"], pop.source)
    watched_any = False
    for _ in range(5):
        action = _first_available(info_m, members.page_size)
        np.testing.assert_array_equal(action, _first_available(info_s, sources.page_size))
        obs_m, r_m, term_m, trunc_m, info_m = members.step(action)
        obs_s, r_s, term_s, trunc_s, info_s = sources.step(action)
        for key in obs_m:
            np.testing.assert_array_equal(obs_m[key], obs_s[key])
        np.testing.assert_array_equal(r_m, r_s)
        np.testing.assert_array_equal(term_m | trunc_m, term_s | trunc_s)
        np.testing.assert_array_equal(info_m["watched"], info_s["watched"])
        watched_any |= bool(info_m["watched"].any())
    assert watched_any


def test_disabled_autoreset_gives_each_member_one_session():
    pop = draw_population(_real_ids(), 300, np.random.default_rng(0))
    venv = gym.make_vec("simrec/FastRec-v1", num_envs=100, population=pop, autoreset_mode="Disabled", **SMALL)
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.DISABLED
    seen: list[int] = []
    for start in range(0, 300, 100):
        ids = pop.user_ids[start : start + 100]
        _, info = venv.reset(seed=start, options={"users": ids})
        pages = np.zeros(100, dtype=np.int64)
        ends = np.zeros(100, dtype=np.int64)
        for _ in range(venv.max_pages + 3):
            _, reward, term, trunc, info = venv.step(_first_available(info, venv.page_size))
            shown = info["_page_items"]
            assert (reward[~shown] == 0).all()
            pages += shown
            ends += term | trunc
            np.testing.assert_array_equal(info["user_id"], ids)  # never replaced by another member
            assert not info["_candidate_ids"].any()  # no autoreset
        assert (ends == 1).all() and (pages >= 1).all() and (pages <= venv.max_pages).all()
        assert (pages < venv.max_pages).any()  # some members left early and then showed nothing more
        seen.extend(ids.tolist())
    assert seen == pop.user_ids.tolist()


def test_bad_users_and_populations_are_refused():
    real = _real_ids()
    pop = draw_population(real, 20, np.random.default_rng(0))
    venv = gym.make_vec("simrec/FastRec-v1", num_envs=4, population=pop, **SMALL)
    with pytest.raises(ValueError, match="not users of this env"):
        venv.reset(seed=0, options={"users": np.array(real[:4])})  # real ids are not members here
    with pytest.raises(ValueError, match="expected 4 integer user ids"):
        venv.reset(seed=0, options={"users": pop.user_ids[:3]})
    with pytest.raises(ValueError, match="not in the env's users"):
        gym.make_vec("simrec/FastRec-v1", num_envs=2, population=pop, users=real[:5], **SMALL)
    clash = SyntheticPopulation(np.array(real[:2], dtype=np.int64), np.array(real[:2], dtype=np.int64))
    with pytest.raises(ValueError, match="also real user ids"):
        gym.make_vec("simrec/FastRec-v1", num_envs=2, population=clash, **SMALL)
    with pytest.raises(ValueError, match="autoreset_mode"):
        gym.make_vec("simrec/FastRec-v1", num_envs=2, autoreset_mode="SameStep", **SMALL)


def test_member_personas_copy_their_source_under_their_own_id():
    from simrec.envs import default_world

    personas = default_world("synthetic").population
    pop = draw_population(sorted(personas), 50, np.random.default_rng(0))
    members = member_personas(pop, personas)
    assert sorted(members) == pop.user_ids.tolist()
    for uid, src in zip(pop.user_ids.tolist(), pop.source.tolist(), strict=True):
        m, s = members[uid], personas[src]
        assert m.user_id == uid and m.train_items == s.train_items and m.activity == s.activity
        assert m.taste_text == s.taste_text
    with pytest.raises(ValueError, match="have no persona"):
        member_personas(pop, {})


def test_source_id_policy_serves_members_as_their_source():
    from simenv.records import Page, PageFeedback, Recommendation

    class Recorder:
        name = "recorder"

        def __init__(self) -> None:
            self.calls: list[tuple[str, int]] = []

        def recommend(self, user_id, k, exclude, rng, history=()):
            self.calls.append(("recommend", user_id))
            return Recommendation(tuple(range(k)))

        def observe(self, user_id, page, feedback):
            self.calls.append(("observe", user_id))

    pop = SyntheticPopulation(np.array([100, 101]), np.array([7, 3]))
    inner = Recorder()
    policy = SourceIdPolicy(inner, pop)
    assert policy.name == "recorder"
    assert policy.recommend(101, 2, set(), np.random.default_rng(0)).item_ids == (0, 1)
    policy.observe(100, Page(0, 0, (0, 1)), PageFeedback((), False))
    policy.recommend(3, 2, set(), np.random.default_rng(0))  # a real id passes through
    assert inner.calls == [("recommend", 3), ("observe", 7), ("recommend", 3)]
