"""RecEnv with hand-made users: checkers, seeded identical logs, invalid-action rules, sequential pages, obs."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from simenv.env import InvalidActionError, RecEnv
from simenv.eventlog import read_table
from simenv.rewards import RewardConfig
from tests.fixtures_env import NoisyUser, ScriptedUser, tiny_world

DS, PERSONAS, SPLIT = tiny_world()


def make(user=None, **kw):
    return RecEnv(DS, PERSONAS, user or NoisyUser(), SPLIT.train, **kw)


@pytest.mark.parametrize("mode", ["slate", "sequential"])
def test_both_checkers_pass(mode):
    env = make(action_mode=mode)
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)


def _rollout(env, seed, n_episodes=6):
    rng = np.random.default_rng(seed)
    trace = []
    for ep in range(n_episodes):
        obs, info = env.reset(seed=seed + ep)
        done = False
        while not done:
            action = rng.choice(np.flatnonzero(info["action_mask"]), size=env.page_size, replace=False)
            obs, reward, term, trunc, info = env.step(action)
            trace.append((reward, term, trunc, obs["history"].sum(), info["page_items"].tolist()))
            done = term or trunc
    env.close()
    return trace


def test_two_envs_same_seed_write_identical_logs(tmp_path):
    a = _rollout(make(log=tmp_path / "a", policy_name="rand"), seed=3)
    b = _rollout(make(log=tmp_path / "b", policy_name="rand"), seed=3)
    assert a == b
    for table in ("events", "pages", "interviews"):
        ta = read_table(tmp_path / "a", table).drop(columns="run")
        tb = read_table(tmp_path / "b", table).drop(columns="run")
        assert len(ta) > 0
        assert ta.equals(tb), table
    events = read_table(tmp_path / "a", "events")
    assert events["episode"].nunique() == 6
    assert set(events["policy"]) == {"rand"}
    # Different seed, different sessions: the log is not constant.
    assert _rollout(make(), seed=4) != a


def test_strict_mode_rejects_duplicates_and_reshown_items():
    env = make(ScriptedUser(), invalid_action="strict")
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="already on this page"):
        env.step(np.array([0, 1, 1, 2]))
    env.step(np.array([0, 1, 2, 3]))
    with pytest.raises(InvalidActionError, match="shown on an earlier page"):
        env.step(np.array([4, 5, 6, 3]))


def test_out_of_space_actions_always_raise():
    env = make(ScriptedUser())
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"0\.\.39"):
        env.step(np.array([0, 1, 2, 40]))
    with pytest.raises(InvalidActionError, match=r"shape \(4,\)"):
        env.step(np.array([0, 1, 2]))
    with pytest.raises(InvalidActionError, match="integer"):
        env.step(np.array([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(RuntimeError, match="before reset"):
        make().step(np.array([0, 1, 2, 3]))


def test_repair_mode_replaces_with_best_available_and_counts():
    env = make(ScriptedUser())
    _, info = env.reset(seed=0)
    cands = info["candidate_ids"]
    _, _, _, _, info = env.step(np.array([5, 6, 7, 8]))
    _, _, _, _, info = env.step(np.array([5, 9, 9, 10]))
    # Slot 0 (5, shown before) -> candidate 0, slot 2 (9 again) -> candidate 1.
    assert info["n_repaired"] == 2
    assert info["page_items"].tolist() == [cands[0], cands[9], cands[1], cands[10]]
    assert not info["action_mask"][[0, 1, 5, 6, 7, 8, 9, 10]].any()
    assert info["action_mask"].sum() == env.n_candidates - 8


def test_sequential_mode_shows_page_when_full():
    env = make(ScriptedUser(), action_mode="sequential")
    obs, info = env.reset(seed=1)
    table = lambda o: o["candidates"].reshape(env.n_candidates, -1)  # noqa: E731
    for k in [3, 7, 7]:
        obs, reward, term, trunc, info = env.step(k)
        assert reward == 0.0 and not term and not trunc
        assert "page_items" not in info
    assert info["n_repaired"] == 1  # the second 7 became candidate 0
    assert info["slot"] == 3
    assert sorted(np.flatnonzero(table(obs)[:, -1]).tolist()) == [0, 3, 7]
    obs, reward, term, trunc, info = env.step(np.int64(9))
    cands = info_cands = env.state.candidate_ids
    assert info["page_items"].tolist() == [cands[3], cands[7], cands[0], cands[9]]
    assert reward == info["n_watched"]
    assert table(obs)[:, -1].sum() == 0 and table(obs)[[0, 3, 7, 9], -2].tolist() == [1, 1, 1, 1]
    assert info_cands is cands


def test_observation_reflects_session_and_persona():
    env = make(ScriptedUser(), reward=RewardConfig(watch=1.0, satisfaction=1.0))
    obs, info = env.reset(options={"user_id": 4}, seed=0)
    assert info["user_id"] == 4
    persona = PERSONAS[4]
    liked = obs["persona"][9 : 9 + len(DS.genre_vocabulary)]
    assert [DS.genre_vocabulary[j] for j in np.flatnonzero(liked)] == list(persona.liked_genres)
    assert not set(info["candidate_ids"].tolist()) & set(persona.train_items)
    assert env.observation_space.contains(obs)
    total, pages = 0.0, 0
    done = False
    while not done:
        obs, reward, term, trunc, info = env.step(np.flatnonzero(info["action_mask"])[:4])
        total += reward
        pages += 1
        done = term or trunc
    assert trunc and not term and pages == env.max_pages
    hist = obs["history"].reshape(env.history_len, -1)
    assert hist[:, -1].sum() == env.history_len  # 20 items shown, history rows all in use
    watched = env.state.n_watched
    assert obs["session"][2] == pytest.approx(watched / 20)
    # Reward: watched items plus the interview score on the last step.
    assert total == pytest.approx(watched + info["interview_score"])


def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match="n_candidates=10"):
        make(n_candidates=10)
    with pytest.raises(ValueError, match="action_mode"):
        make(action_mode="list")
    with pytest.raises(ValueError, match="users"):
        make(users=[999])


def test_exploration_sample_is_distinct_and_seeded():
    from simenv.candidates import sample_without_replacement

    a = sample_without_replacement(np.random.default_rng(1), 1000, 30)
    b = sample_without_replacement(np.random.default_rng(1), 1000, 30)
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 30 and 0 <= a.min() and a.max() < 1000
    counts = np.bincount(
        np.concatenate([sample_without_replacement(np.random.default_rng(s), 10, 2) for s in range(3000)]),
        minlength=10,
    )
    assert counts.min() > 500 and counts.max() < 700  # ~600 each: uniform over indices
