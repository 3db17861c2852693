"""Issue 24: the per-candidate features come from the train split only, and the weights action applies its rule.

- Train-only proof: a world whose held-out (VALID and TEST) ratings are replaced for every user gives identical
  observations, `candidate_features` included, episode after episode (same seeds, same actions, a deterministic
  user), through the same featurizer builder train-rl and evaluate-rl use.
- The featurizer's columns mean what they say: the base score is standardised over the candidate set and its rank
  orders the candidates as the base does; the session flags mark shown, watched and liked candidates.
- Weights mode shows the top candidates by base score + w . x, ties by the base's rank.
"""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pandas as pd

from experiments.rl.features import candidate_featurizer
from recommenders.candidate_features import FEATURE_NAMES
from recommenders.popularity import PopRecommender
from simenv import kernel
from simenv.env import RecEnv
from simenv.spaces import FEATURES_KEY
from tests.fixtures_env import ScriptedUser, tiny_world


class _World:
    def __init__(self, dataset, split) -> None:
        self.dataset, self.split = dataset, split


def _config():
    from experiments.config import load_config

    return load_config(None, {"data": {"dataset": "synthetic"}, "rl": {"rank_sources": []}})


def _scrambled(frame: pd.DataFrame, n_items: int, seed: int) -> pd.DataFrame:
    """The same users and sizes, other items and ratings."""
    rng = np.random.default_rng(seed)
    return frame.assign(
        item_id=rng.integers(0, n_items, len(frame)), rating=rng.integers(1, 6, len(frame)).astype(float)
    )


def _episodes(env: RecEnv, n: int = 6) -> list[dict[str, np.ndarray]]:
    out = []
    for e in range(n):
        obs, info = env.reset(seed=100 + e)
        out.append(obs)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(np.flatnonzero(info["action_mask"])[[0, 2, 4, 6]])
            out.append(obs)
            done = term or trunc
    return out


def test_observations_do_not_change_when_held_out_ratings_do() -> None:
    ds, personas, split = tiny_world()
    other = replace(split, valid=_scrambled(split.test, ds.n_items, 1), test=_scrambled(split.test, ds.n_items, 2))
    assert not other.test.equals(split.test)
    runs = []
    for s in (split, other):
        base = PopRecommender().fit(s.train, ds.n_users, ds.n_items)  # a base fitted on train only
        featurizer = candidate_featurizer(_config(), _World(ds, s), base)
        env = RecEnv(ds, personas, ScriptedUser(), s.train, base, featurizer)
        runs.append(_episodes(env))
    assert len(runs[0]) == len(runs[1]) > 6
    for a, b in zip(*runs, strict=True):
        assert a.keys() == b.keys() and FEATURES_KEY in a
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_feature_columns_and_session_flags() -> None:
    ds, personas, split = tiny_world()
    base = PopRecommender().fit(split.train, ds.n_users, ds.n_items)
    featurizer = candidate_featurizer(_config(), _World(ds, split), base)
    assert featurizer.names == FEATURE_NAMES
    env = RecEnv(ds, personas, ScriptedUser(), split.train, base, featurizer)
    obs, info = env.reset(seed=3)
    table = obs[FEATURES_KEY]
    assert table.shape == (env.n_candidates, len(FEATURE_NAMES) + 3)
    score, rank = table[:, 0], table[:, 1]
    assert abs(score.mean()) < 1e-5 and abs(score.std() - 1) < 1e-3  # standardised over the candidate set
    base_scores = base.score(info["user_id"])[info["candidate_ids"]]
    assert (np.diff(base_scores[np.argsort(rank, kind="stable")]) <= 1e-9).all()  # rank 0 = the base's best
    assert not table[:, -3:].any()
    page = np.array([0, 1, 2, 3])
    obs, _, _, _, info = env.step(page)
    flags = obs[FEATURES_KEY][:, -3:]
    fb = info["feedback"]
    assert flags[page, 0].all() and flags[:, 0].sum() == 4
    np.testing.assert_array_equal(flags[page, 1], [r.watched for r in fb.reactions])
    np.testing.assert_array_equal(flags[page, 2], [r.watched and (r.rating or 0) >= 4 for r in fb.reactions])


def test_rank_columns_are_each_recommenders_log_rank_among_the_unseen_items() -> None:
    from recommenders.candidate_features import featurizer_for
    from recommenders.mf import MFRecommender

    ds, personas, split = tiny_world()
    pop = PopRecommender().fit(split.train, ds.n_users, ds.n_items)
    mf = MFRecommender(epochs=2, seed=0).fit(split.train, ds.n_users, ds.n_items)
    featurizer = featurizer_for(
        split.train, ds.n_users, ds.n_items, ds.genre_matrix, pop, others={"pop": pop, "mf": mf}
    )
    assert featurizer.names == (*FEATURE_NAMES, "rank:mf", "rank:pop")
    persona = next(iter(personas.values()))
    seen = set(persona.train_items)
    unseen = np.array([i for i in range(ds.n_items) if i not in seen])
    table = featurizer.features(persona, unseen)
    for j, rec in ((len(FEATURE_NAMES), mf), (len(FEATURE_NAMES) + 1, pop)):
        scores = np.asarray(rec.score(persona.user_id, ()), dtype=np.float64)[unseen]
        position = np.empty(len(unseen))
        position[np.argsort(-scores, kind="stable")] = np.arange(len(unseen))  # unseen ids ascending: ties to lower id
        np.testing.assert_allclose(table[:, j], np.log1p(position) / np.log1p(ds.n_items - 1), rtol=1e-6)


def test_weights_rule_ranks_by_prior_plus_weighted_features_ties_by_index() -> None:
    x = np.array([[[0.0, 1.0], [0.0, 0.0], [1.0, -1.0], [0.5, 0.0], [0.0, 0.0]]])  # columns: base_score, other
    available = np.array([[True, True, True, False, True]])
    page = kernel.rank_by_weights(np.array([[0.0, 0.0]]), x, available, 3, prior_column=0)
    assert page.tolist() == [[2, 0, 1]]  # base order; 3 is unavailable; 0 before 1 (tie, lower index)
    page = kernel.rank_by_weights(np.array([[0.0, 1.0]]), x, available, 3, prior_column=0)
    assert page.tolist() == [[0, 1, 2]]  # 0 rises to 1.0; 1, 2 (fallen from 1.0) and 4 tie at 0: lower index first


def test_memoised_user_columns_give_the_same_features_and_stay_within_their_bound() -> None:
    """The per-user catalog columns are computed once per user (and train items) and kept up to `memo_mb`: the
    features equal those of a featurizer that recomputes every call, a user whose train items differ is not served
    another's columns, and the memo never holds more users than its bound allows."""
    from recommenders.candidate_features import CATALOG_COLUMNS, TrainCandidateFeatures
    from recommenders.mf import MFRecommender

    ds, personas, split = tiny_world()
    mf = MFRecommender(epochs=2, seed=0).fit(split.train, ds.n_users, ds.n_items)
    args = (split.train, ds.n_users, ds.n_items, ds.genre_matrix, mf)
    block_mb = ds.n_items * (len(CATALOG_COLUMNS) + 1) * 4 / 2**20  # one user's float32 block
    memo = TrainCandidateFeatures(*args, others={"mf": mf}, memo_mb=3.5 * block_mb)  # room for 3 users
    fresh = TrainCandidateFeatures(*args, others={"mf": mf}, memo_mb=0)
    rng = np.random.default_rng(0)
    users = list(personas.values())
    for persona in users * 3:
        ids = rng.choice(ds.n_items, 12, replace=False)
        np.testing.assert_array_equal(memo.features(persona, ids), fresh.features(persona, ids))
    assert len(users) > 3 and memo.memoised_users == 3 and fresh.memoised_users == 0
    ids = np.arange(ds.n_items)
    original = memo.features(users[0], ids)  # now memoised
    changed = replace(users[0], train_items=tuple(users[0].train_items[:-1]))
    np.testing.assert_array_equal(memo.features(changed, ids), fresh.features(changed, ids))
    assert not np.array_equal(memo.features(changed, ids), original)
    copy = pickle.loads(pickle.dumps(memo))  # shipped without its memo, which it refills
    assert copy.memoised_users == 0
    np.testing.assert_array_equal(copy.features(users[0], ids), original)
    assert copy.memoised_users == 1
