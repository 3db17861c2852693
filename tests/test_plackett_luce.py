"""The Plackett-Luce page distribution and the item-wise scoring policy (issue 24): a proper distribution over
pages, exact sampling, the mode is the top-k, and the scores follow the candidates when they are reordered."""

from __future__ import annotations

import functools
import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from experiments.rl.plackett_luce import PlackettLuceDistribution
from experiments.rl.policy import CandidateScoringPolicy
from simenv.spaces import FEATURES_KEY, N_CANDIDATE_FLAGS


def test_log_prob_is_a_distribution_over_ordered_pages() -> None:
    logits = th.tensor([[0.3, -1.0, 2.0, 0.5, 0.0]])
    dist = PlackettLuceDistribution(k=3).proba_distribution(logits)
    pages = th.tensor(list(itertools.permutations(range(5), 3)), dtype=th.float32)  # all 60 ordered pages
    probs = dist.proba_distribution(logits.expand(len(pages), 5)).log_prob(pages).exp()
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-5)
    # one page by hand: 2 first, then 3 among {0, 1, 3, 4}, then 0 among {0, 1, 4}
    e = np.exp(logits[0].numpy())
    by_hand = e[2] / e.sum() * e[3] / (e.sum() - e[2]) * e[0] / (e[0] + e[1] + e[4])
    page = pages.tolist().index([2.0, 3.0, 0.0])
    assert float(probs[page]) == pytest.approx(by_hand, rel=1e-5)


def test_gumbel_top_k_samples_match_the_log_prob_and_the_mode_is_the_top_k() -> None:
    th.manual_seed(0)
    logits = th.tensor([[1.0, 0.0, -0.5, 0.7]])
    dist = PlackettLuceDistribution(k=2).proba_distribution(logits.expand(40_000, 4))
    pages = dist.sample()
    assert (pages[:, 0] != pages[:, 1]).all()  # distinct candidates on every page
    two = PlackettLuceDistribution(k=2).proba_distribution(logits.expand(2, 4))
    expected = two.log_prob(th.tensor([[0, 3], [2, 1]])).exp()
    observed = [float(((pages[:, 0] == a) & (pages[:, 1] == b)).float().mean()) for a, b in ((0, 3), (2, 1))]
    assert observed == pytest.approx(expected.tolist(), abs=0.01)
    assert dist.mode()[0].tolist() == [0, 3]


def _space(n_candidates: int = 6, n_features: int = 5, n_genres: int = 2) -> gym.spaces.Dict:
    box = functools.partial(gym.spaces.Box, -10.0, 10.0, dtype=np.float32)
    return gym.spaces.Dict(
        {
            FEATURES_KEY: box(shape=(n_candidates, n_features + N_CANDIDATE_FLAGS)),
            "candidates": box(shape=(n_candidates * n_genres,)),
            "session": box(shape=(3,)),
        }
    )


def test_scores_follow_the_candidates_when_they_are_reordered_and_shown_ones_are_never_drawn() -> None:
    th.manual_seed(0)
    space = _space()
    policy = CandidateScoringPolicy(space, gym.spaces.MultiDiscrete([6, 6]), lambda _: 1e-3, ortho_init=False)
    rng = np.random.default_rng(0)
    obs = {k: th.as_tensor(rng.uniform(-1, 1, (1, *v.shape)), dtype=th.float32) for k, v in space.spaces.items()}
    obs[FEATURES_KEY][..., -N_CANDIDATE_FLAGS:] = 0.0
    obs[FEATURES_KEY][0, 4, -N_CANDIDATE_FLAGS] = 1.0  # candidate 4 was shown on an earlier page
    order = th.tensor([3, 0, 5, 1, 4, 2])
    moved = dict(obs)
    moved[FEATURES_KEY] = obs[FEATURES_KEY][:, order]
    moved["candidates"] = obs["candidates"].reshape(1, 6, 2)[:, order].reshape(1, 12)
    with th.no_grad():
        scores = policy.get_distribution(obs).logits.clone()
        moved_scores = policy.get_distribution(moved).logits.clone()
        value, moved_value = policy.predict_values(obs), policy.predict_values(moved)
    assert th.allclose(moved_scores, scores[:, order], atol=1e-5)
    assert th.allclose(value, moved_value, atol=1e-5)  # the critic reads pooled rows: order-free
    assert scores[0, :4].std() > 0.01  # the head is not constant: the check above has something to compare
    assert 4 not in policy.get_distribution(obs).proba_distribution(scores.expand(2000, 6)).sample().flatten()


def test_policy_is_refused_for_an_action_that_is_not_a_slate_of_candidates() -> None:
    with pytest.raises(ValueError, match="slate of candidate indices"):
        CandidateScoringPolicy(_space(), gym.spaces.Box(-1, 1, (6,)), lambda _: 1e-3)
