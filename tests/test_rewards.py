"""Reward functions on hand-made feedback: each term, the exit penalty, the terminal satisfaction, presets."""

import pytest

from simenv.records import Interview, ItemReaction, PageFeedback
from simenv.rewards import (
    REWARD_PRESETS,
    RewardConfig,
    item_rewards,
    page_reward,
    reward_config,
    terminal_reward,
)

FEEDBACK = PageFeedback(
    reactions=(
        ItemReaction(1, True, 5),
        ItemReaction(2, True, 2),
        ItemReaction(3, False),
        ItemReaction(4, True, 4),
    ),
    left=True,
)


def test_default_reward_is_watch_count():
    assert page_reward(FEEDBACK, RewardConfig()) == 3.0
    assert item_rewards(FEEDBACK, RewardConfig()) == (1.0, 1.0, 0.0, 1.0)


def test_each_term_counts_what_it_says():
    likes = RewardConfig(watch=0.0, like=1.0)
    assert page_reward(FEEDBACK, likes) == 2.0  # ratings 5 and 4
    ratings = RewardConfig(watch=0.0, rating=1.0)
    assert page_reward(FEEDBACK, ratings) == 11.0  # 5 + 2 + 4
    mixed = RewardConfig(watch=0.5, like=2.0, rating=0.1, exit_penalty=3.0)
    assert page_reward(FEEDBACK, mixed) == pytest.approx(3 * 0.5 + 2 * 2.0 + 1.1 - 3.0)


def test_exit_penalty_only_when_user_leaves():
    stay = PageFeedback(FEEDBACK.reactions, left=False)
    cfg = RewardConfig(exit_penalty=10.0)
    assert page_reward(stay, cfg) == 3.0
    assert page_reward(FEEDBACK, cfg) == -7.0


def test_terminal_satisfaction():
    cfg = RewardConfig(satisfaction=0.5)
    assert terminal_reward(Interview(7, 8), cfg) == 4.0
    assert terminal_reward(None, cfg) == 0.0
    assert terminal_reward(Interview(7, 8), RewardConfig()) == 0.0


def test_reward_config_accepts_presets_dicts_and_rejects_typos():
    assert reward_config("likes") == REWARD_PRESETS["likes"]
    assert reward_config({"like": 2}) == RewardConfig(like=2.0)
    assert reward_config(None) == RewardConfig()
    with pytest.raises(ValueError, match="unknown preset"):
        reward_config("views")
    with pytest.raises(ValueError, match="likes"):
        reward_config({"likes": 1.0})


def test_page_reward_equals_the_sum_of_item_rewards_exactly():
    """`page_reward` inlines `item_reward` for speed; it must add the same terms in the same order."""
    import numpy as np

    rng = np.random.default_rng(4)
    for _ in range(300):
        reactions = []
        for item in range(int(rng.integers(1, 7))):
            watched = bool(rng.random() < 0.6)
            rating = [None, 1, 2, 3, 4, 5, 2.5][int(rng.integers(7))] if watched else None
            reactions.append(ItemReaction(item, watched, rating))
        feedback = PageFeedback(tuple(reactions), left=bool(rng.random() < 0.3))
        cfg = RewardConfig(*(float(w) for w in rng.normal(size=5)))
        expected = sum(item_rewards(feedback, cfg)) - (cfg.exit_penalty if feedback.left else 0.0)
        assert page_reward(feedback, cfg) == expected
