"""The vectorised env (`simenv.vector_env.FastRecVectorEnv`) against the single env it batches.

- Registration and spaces: `gym.make_vec` builds it by default; sync/async still wrap single envs; the single
  spaces equal `simrec/FastRec-v1`'s (slate and sequential ids).
- Replay: every sub-env's observations, action masks, rewards, episode ends and interview scores equal what the
  single env's own pieces (`SessionState`, `page_reward`, `stats_interview_score`) and the kernel's
  invalid-action rule (`simenv.kernel.repair_slates`, through `SessionState`'s public masks) give for the same
  candidates, actions (some invalid, repaired) and reactions; this covers next-step autoreset.
- Seeding, invalid actions, and the interview formula.
- Statistics: the single env (`gym.make`) and the vector env under the same uniform random policy give the same
  means (watched per page and per position, stars, likes, first-page exits, episode length, reward, interview)
  within 4 standard errors; and deliberate drifts of the vectorised user model fail that comparison.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

import simrec  # noqa: F401  (registers the ids)
from agents.decision import GroundedDecider
from agents.signals import stats_interview_score
from agents.silent_user import SilentUserModel
from simenv.kernel import InvalidActionError, repair_slates
from simenv.records import Interview, ItemReaction, PageFeedback
from simenv.rewards import RewardConfig, page_reward, terminal_reward
from simenv.spaces import SessionState
from simenv.vector_env import FastRecVectorEnv, interview_scores

SMALL = {"dataset": "synthetic"}
REWARD = RewardConfig(watch=1.0, like=0.5, rating=0.1, exit_penalty=2.0, satisfaction=0.3)


def _vec(env_id: str = "simrec/FastRec-v1", num_envs: int = 8, **kwargs) -> FastRecVectorEnv:
    return gym.make_vec(env_id, num_envs=num_envs, **{**SMALL, **kwargs})


def _uniform_valid(rng: np.random.Generator, mask: np.ndarray, k: int) -> np.ndarray:
    """Per row, k distinct available candidates uniformly at random (the policy both envs are compared under)."""
    keys = np.where(mask, rng.random(mask.shape), np.inf)
    return np.argsort(keys, axis=1)[:, :k]


@pytest.mark.parametrize("env_id", ["simrec/FastRec-v1", "simrec/FastRecSeq-v1"])
def test_make_vec_builds_it_with_the_single_env_spaces(env_id):
    venv = _vec(env_id, num_envs=3)
    single = gym.make(env_id, **SMALL)
    assert isinstance(venv, FastRecVectorEnv)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert venv.single_observation_space == single.observation_space
    assert venv.single_action_space == single.action_space
    assert venv.observation_space == batch_space(single.observation_space, 3)
    assert venv.action_space == batch_space(single.action_space, 3)
    assert venv.max_episode_steps == gym.spec(env_id).max_episode_steps
    sync = gym.make_vec(env_id, num_envs=2, vectorization_mode="sync", **SMALL)
    assert isinstance(sync, gym.vector.SyncVectorEnv)
    sync.close()
    venv.close()
    venv.close()  # safe twice


def test_single_env_only_options_are_refused():
    with pytest.raises(ValueError, match="render_mode"):
        _vec(render_mode="ansi")


def test_observations_are_in_space_with_batch_shapes_and_dtypes():
    venv = _vec(num_envs=5)
    obs, info = venv.reset(seed=3)
    assert venv.observation_space.contains(obs)
    assert info["_candidate_ids"].all() and info["candidate_ids"].shape == (5, venv.n_candidates)
    rng = np.random.default_rng(0)
    for _ in range(12):
        obs, reward, term, trunc, info = venv.step(rng.integers(0, venv.n_candidates, size=(5, 4)))
        assert venv.observation_space.contains(obs)
        assert reward.shape == (5,) and reward.dtype == np.float64
        assert term.dtype == np.bool_ and trunc.dtype == np.bool_ and not (term & trunc).any()
        for key, value in info.items():
            if not key.startswith("_"):
                assert value.shape[0] == 5 and info[f"_{key}"].shape == (5,), key


def _feedback(items: np.ndarray, watched: np.ndarray, stars: np.ndarray, left: bool) -> PageFeedback:
    reactions = tuple(
        ItemReaction(int(i), bool(w), int(s) if w else None) for i, w, s in zip(items, watched, stars, strict=True)
    )
    return PageFeedback(reactions, bool(left))


@pytest.mark.parametrize("env_id", ["simrec/FastRec-v1", "simrec/FastRecSeq-v1"])
def test_replay_through_the_single_env_pieces_matches_exactly(env_id):
    """Rebuild each sub-env's session with `SessionState` from the info arrays and compare everything."""
    n = 6
    steps = 3 * (4 if env_id.endswith("Seq-v1") else 1)  # 3 pages, so that some sessions reach the page limit
    venv = _vec(env_id, num_envs=n, reward=REWARD, max_pages=3, max_episode_steps=steps)
    sequential = venv.action_mode == "sequential"
    k, cfg = venv.page_size, venv.reward_config
    rng = np.random.default_rng(1)
    obs, info = venv.reset(seed=11)
    states: list[SessionState | None] = [None] * n
    ended = np.zeros(n, dtype=bool)
    seen = {"repaired": 0, "autoreset": 0, "terminated": 0, "truncated": 0}

    def fresh(i: int, info: dict) -> SessionState:
        persona = venv.personas[int(info["user_id"][i])]
        vector = obs["persona"][i]
        ids = info["candidate_ids"][i]
        table = venv.candidate_featurizer.features(persona, ids)  # the flags are replayed by record_page
        return SessionState(persona, vector, ids, venv.features, k, venv.max_pages, venv.history_len, table)

    for i in range(n):
        states[i] = fresh(i, info)
    for _ in range(120 if sequential else 40):
        # Mostly valid, sometimes a shown or duplicate candidate (repaired by the rule).
        actions = rng.integers(0, venv.n_candidates, size=(n,) if sequential else (n, k))
        expected_obs = []
        obs, reward, term, trunc, info = venv.step(actions)
        for i in range(n):
            if ended[i]:  # next-step autoreset: action ignored, first observation, reward 0
                seen["autoreset"] += 1
                assert info["_candidate_ids"][i] and reward[i] == 0.0 and not term[i] and not trunc[i]
                assert info["page"][i] == 0 and not info["_page_items"][i]
                states[i] = fresh(i, info)
                expected_obs.append(states[i].observation())
                continue
            assert not info["_candidate_ids"][i]
            state = states[i]
            page = state.pending + [int(actions[i])] if sequential else actions[i].tolist()
            repaired, n_reps = repair_slates(np.array([page]), state.shown[None], state.candidate_ids[None], "repair")
            chosen, n_rep = repaired[0].tolist(), int(n_reps[0])
            if sequential:
                state.set_pending(chosen)
                chosen = chosen if len(chosen) == k else None
            assert info["n_repaired"][i] == n_rep
            seen["repaired"] += n_rep
            if chosen is None:
                assert reward[i] == 0.0 and not term[i] and not trunc[i] and not info["_page_items"][i]
            else:
                items = info["page_items"][i]
                assert info["_page_items"][i] and items.tolist() == [state.candidate_list[c] for c in chosen]
                fb = _feedback(items, info["watched"][i], info["rating"][i], info["left"][i])
                state.record_page(chosen, fb)
                expected = page_reward(fb, cfg)
                assert info["page_reward"][i] == pytest.approx(expected)
                assert term[i] == fb.left
                assert trunc[i] == (not fb.left and state.page_index >= venv.max_pages)
                assert info["n_watched"][i] == fb.n_watched and info["n_liked"][i] == fb.n_liked
                if term[i] or trunc[i]:
                    score = stats_interview_score(state.n_shown, state.n_watched, state.n_liked)
                    assert info["_interview_score"][i] and info["interview_score"][i] == score
                    expected += terminal_reward(Interview(state.persona.user_id, score, ""), cfg)
                    seen["terminated" if term[i] else "truncated"] += 1
                else:
                    assert not info["_interview_score"][i]
                assert reward[i] == pytest.approx(expected)
            expected_obs.append(state.observation())
            assert (info["action_mask"][i] == state.action_mask()).all()
        for key in obs:
            np.testing.assert_array_equal(obs[key], np.stack([e[key] for e in expected_obs]), err_msg=key)
        ended = term | trunc
    assert all(v > 0 for v in seen.values()), seen  # every path was exercised


def test_same_seed_gives_identical_trajectories_and_another_seed_does_not():
    def run(seed: int) -> list:
        venv = _vec(num_envs=7, reward="engagement")
        obs, info = venv.reset(seed=seed)
        rng = np.random.default_rng(0)
        out = [obs, info]
        for _ in range(15):
            out.extend(venv.step(_uniform_valid(rng, info["action_mask"], 4)))
            info = out[-1]
        return out

    def flat(xs: list) -> list[np.ndarray]:
        out = []
        for x in xs:
            out.extend([x[key] for key in sorted(x)] if isinstance(x, dict) else [x])
        return out

    a, b, c = flat(run(5)), flat(run(5)), flat(run(6))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(a, c, strict=False))


def test_reset_mask_resets_only_the_masked_sessions():
    venv = _vec(num_envs=4)
    obs, info = venv.reset(seed=0)
    obs, *_ = venv.step(np.tile(np.arange(4), (4, 1)))
    mask = np.array([True, False, True, False])
    obs2, info2 = venv.reset(options={"reset_mask": mask})
    assert (info2["_candidate_ids"] == mask).all()
    assert (info2["page"][mask] == 0).all()
    for key in obs:
        np.testing.assert_array_equal(obs2[key][~mask], obs[key][~mask])
    with pytest.raises(ValueError, match="reset_mask"):
        venv.reset(options={"reset_mask": np.array([1, 0, 1, 0])})


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (np.zeros((3, 3), dtype=np.int64), r"shape \(3, 4\)"),
        (np.zeros((3, 4), dtype=np.float64), "dtype float64"),
        (np.array([[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, -1, 3]]), "env 2 slot 2: candidate index -1"),
        (np.array([[0, 1, 2, 40], [0, 1, 2, 3], [0, 1, 2, 3]]), "env 0 slot 3: candidate index 40 outside 0..39"),
    ],
)
def test_invalid_actions_raise_clear_errors(action, match):
    venv = _vec(num_envs=3)
    venv.reset(seed=0)
    with pytest.raises(InvalidActionError, match=match):
        venv.step(action)


def test_strict_mode_names_env_and_slot_and_changes_nothing():
    venv = _vec(num_envs=3, invalid_action="strict")
    venv.reset(seed=0)
    page = np.tile(np.arange(4), (3, 1))
    _, _, term, trunc, _ = venv.step(page)
    live = np.flatnonzero(~(term | trunc))  # the others are autoreset next step, their actions ignored
    assert len(live) >= 2
    sessions = venv.sessions
    before = {key: getattr(sessions, key).copy() for key in ("page", "shown", "recent", "n_shown", "elapsed")}
    dup = page + 4
    dup[live[0], 3] = dup[live[0], 0]
    with pytest.raises(InvalidActionError, match=f"env {live[0]} slot 3: candidate 4 .* already on this page"):
        venv.step(dup)
    again = page + 4
    again[live[1], 1] = 0
    with pytest.raises(InvalidActionError, match=f"env {live[1]} slot 1: candidate 0 .* shown on an earlier page"):
        venv.step(again)
    for key, value in before.items():
        np.testing.assert_array_equal(getattr(sessions, key), value, err_msg=key)
    _, _, _, _, info = venv.step(page + 4)
    assert (info["n_repaired"] == 0).all() and (info["page"][live] == 2).all()


def test_interview_scores_equal_the_single_users_formula():
    shown, watched, liked = np.meshgrid(np.arange(0, 25), np.arange(0, 25), np.arange(0, 25), indexing="ij")
    ok = (watched <= shown) & (liked <= watched)
    shown, watched, liked = shown[ok], watched[ok], liked[ok]
    expected = [stats_interview_score(int(s), int(w), int(x)) for s, w, x in zip(shown, watched, liked, strict=True)]
    np.testing.assert_array_equal(interview_scores(shown, watched, liked), expected)


# -- statistics -----------------------------------------------------------------------------------------------

N_EPISODES = 5000
K = 4
PAGES = 5


@dataclasses.dataclass
class Episodes:
    """Per-episode totals: pages, reward, watched (per position, and per page index), liked, stars, left on
    page 0, interview score."""

    pages: np.ndarray
    reward: np.ndarray
    watched: np.ndarray  # (E, K) by position
    by_page: np.ndarray  # (E, PAGES) watched by page index
    liked: np.ndarray
    stars: np.ndarray
    first_exit: np.ndarray
    score: np.ndarray


def _episodes(rows: list[tuple]) -> Episodes:
    cols = list(zip(*rows, strict=True))
    return Episodes(*(np.asarray(c, dtype=np.float64) for c in cols))


def _single_env_episodes(n: int, seed: int) -> Episodes:
    env = gym.make("simrec/FastRec-v1", **SMALL, reward=REWARD)
    rng = np.random.default_rng(seed)
    rows = []
    obs, info = env.reset(seed=seed)
    for _ in range(n):
        pages, total, watched, liked, stars, first_exit, done = 0, 0.0, np.zeros(K), 0, 0, 0, False
        by_page = np.zeros(PAGES)
        while not done:
            action = _uniform_valid(rng, info["action_mask"][None], K)[0]
            obs, reward, term, trunc, info = env.step(action)
            fb = info["feedback"]
            watched += [r.watched for r in fb.reactions]
            by_page[pages] = fb.n_watched
            liked += fb.n_liked
            stars += sum(r.rating for r in fb.reactions if r.watched)
            first_exit += term and pages == 0
            pages += 1
            total += reward
            done = term or trunc
        rows.append((pages, total, watched, by_page, liked, stars, first_exit, info["interview_score"]))
        obs, info = env.reset()
    return _episodes(rows)


def _vector_env_episodes(n: int, seed: int, venv: FastRecVectorEnv | None = None, num_envs: int = 100) -> Episodes:
    """The first n / num_envs episodes of every sub-env (a fixed count per sub-env: no bias toward short ones)."""
    venv = venv or _vec(num_envs=num_envs, reward=REWARD)
    num_envs = venv.num_envs
    per_env = -(-n // num_envs)
    rng = np.random.default_rng(seed)
    obs, info = venv.reset(seed=seed)
    acc = np.zeros((num_envs, 6 + K + PAGES))  # pages, reward, liked, stars, first exit, -, by position, by page
    rows: list[list[tuple]] = [[] for _ in range(num_envs)]
    ended = np.zeros(num_envs, dtype=bool)
    while min(len(r) for r in rows) < per_env:
        obs, reward, term, trunc, info = venv.step(_uniform_valid(rng, info["action_mask"], K))
        live = ~ended
        acc[live, 0] += 1
        acc[live, 1] += reward[live]
        acc[live, 2] += info["n_liked"][live]
        acc[live, 3] += info["rating"][live].sum(axis=1)
        acc[live, 4] += term[live] & (acc[live, 0] == 1)
        acc[live, 6 : 6 + K] += info["watched"][live]
        shown = np.flatnonzero(live & info["_page_items"])
        acc[shown, 6 + K + info["page"][shown] - 1] = info["n_watched"][shown]
        ended = term | trunc
        for i in np.flatnonzero(ended):
            a = acc[i]
            score = info["interview_score"][i]
            rows[i].append((a[0], a[1], a[6 : 6 + K].copy(), a[6 + K :].copy(), a[2], a[3], a[4], score))
        acc[ended] = 0.0
    return _episodes([r for per in rows for r in per[:per_env]])


def _z_scores(a: Episodes, b: Episodes) -> dict[str, float]:
    """Difference of each statistic over its standard error (ratios by the delta method over episodes)."""

    def mean(y):
        return y.mean(), y.var(ddof=1) / len(y)

    def ratio(y, x):
        r = y.sum() / x.sum()
        return r, ((y - r * x) ** 2).sum() / (len(y) * (len(y) - 1)) / x.mean() ** 2

    def stats(e: Episodes) -> dict[str, tuple[float, float]]:
        out = {
            "episode length": mean(e.pages),
            "episode reward": mean(e.reward),
            "interview score": mean(e.score),
            "exit on first page": mean(e.first_exit),
            "watched per page": ratio(e.watched.sum(axis=1), e.pages),
            "liked per page": ratio(e.liked, e.pages),
            "stars per watched": ratio(e.stars, e.watched.sum(axis=1)),
        }
        for j in range(K):
            out[f"watched at position {j}"] = ratio(e.watched[:, j], e.pages)
        out["watched on page 0"] = mean(e.by_page[:, 0])
        out["watched on page 1"] = ratio(e.by_page[:, 1], (e.pages > 1).astype(float))
        out["watched on pages 2+"] = ratio(e.by_page[:, 2:].sum(axis=1), np.maximum(e.pages - 2, 0))
        return out

    sa, sb = stats(a), stats(b)
    return {key: (sa[key][0] - sb[key][0]) / np.sqrt(sa[key][1] + sb[key][1]) for key in sa}


@pytest.fixture(scope="module")
def single_env_episodes() -> Episodes:
    return _single_env_episodes(N_EPISODES, seed=0)


def test_statistics_match_the_single_env(single_env_episodes):
    vector = _vector_env_episodes(N_EPISODES, seed=1)
    assert len(vector.pages) == N_EPISODES == len(single_env_episodes.pages)
    z = _z_scores(single_env_episodes, vector)
    assert max(abs(v) for v in z.values()) < 4.0, z


@pytest.mark.parametrize(
    ("drift", "n_vector"), [({"fatigue": 0.0}, N_EPISODES), ({"base": -0.6}, 1000), ({"satisfaction": -6.0}, 1000)]
)
def test_a_drifted_user_model_fails_the_comparison(single_env_episodes, drift, n_vector):
    """The comparison above has the power to see the leave rule's terms: change one and it fails. The two coarse
    drifts are seen from 1,000 vector episodes (largest |z| ~14 and ~20 there, ~33 and ~47 from 5,000); the
    fatigue term needs all 5,000 (|z| ~9; ~4 from 1,000)."""
    venv = _vec(num_envs=100, reward=REWARD)
    decider = venv.user_model.decider
    config = dataclasses.replace(decider.config, leave=dataclasses.replace(decider.config.leave, **drift))
    drifted = GroundedDecider(decider.dataset, pd.DataFrame(), config, stats=decider.stats, response=decider.response)
    venv.user_model = SilentUserModel(drifted)
    z = _z_scores(single_env_episodes, _vector_env_episodes(n_vector, seed=1, venv=venv))
    assert max(abs(v) for v in z.values()) > 4.0, z
