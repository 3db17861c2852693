"""Pure reward functions over a user's page feedback and end-of-session interview.

A reward is a weighted sum of interpretable terms, so a config names what is being optimised:

    item reward     = watch * [watched] + like * [rating >= 4] + rating * (rating or 0)
    page reward     = sum of item rewards on the page - exit_penalty * [user left on this page]
    terminal reward = satisfaction * interview score (1..10), added on the last step when weight != 0

The default, `RewardConfig()`, is the watch count (1 per watched item), the quantity behind P_view.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from simenv.records import Interview, ItemReaction, PageFeedback


@dataclass(frozen=True, slots=True)
class RewardConfig:
    """Weights of the reward terms (see the module docstring). Default: 1 per watched item, nothing else."""

    watch: float = 1.0
    like: float = 0.0
    rating: float = 0.0
    exit_penalty: float = 0.0
    satisfaction: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


#: Named presets accepted wherever a reward config is (`gym.make(..., reward="likes")`).
REWARD_PRESETS: dict[str, RewardConfig] = {
    "watch": RewardConfig(),
    "likes": RewardConfig(watch=0.0, like=1.0),
    "rating": RewardConfig(watch=0.0, rating=1.0),
    "engagement": RewardConfig(watch=1.0, like=1.0, exit_penalty=1.0),
    "satisfaction": RewardConfig(watch=0.0, satisfaction=1.0),
}


def reward_config(value: RewardConfig | str | Mapping[str, Any] | None) -> RewardConfig:
    """Accept a `RewardConfig`, a preset name or a dict of weights; anything else is a clear error."""
    if value is None:
        return RewardConfig()
    if isinstance(value, RewardConfig):
        return value
    if isinstance(value, str):
        if value not in REWARD_PRESETS:
            raise ValueError(f"reward: unknown preset {value!r}; choose one of {sorted(REWARD_PRESETS)}")
        return REWARD_PRESETS[value]
    if isinstance(value, Mapping):
        known = {f.name for f in fields(RewardConfig)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"reward: unknown weight(s) {unknown}; known weights are {sorted(known)}")
        return RewardConfig(**{k: float(v) for k, v in value.items()})
    raise TypeError(f"reward: expected RewardConfig, preset name or dict, got {type(value).__name__}")


def item_reward(reaction: ItemReaction, config: RewardConfig) -> float:
    """Reward for one shown item (0 for an item the user did not watch, unless weights say otherwise)."""
    if not reaction.watched:
        return 0.0
    value = config.watch
    if reaction.rating is not None:
        value += config.rating * reaction.rating
        if reaction.rating >= 4:
            value += config.like
    return float(value)


def item_rewards(feedback: PageFeedback, config: RewardConfig) -> tuple[float, ...]:
    """Per-item rewards in page order (what the event log's `reward` column holds)."""
    return tuple(item_reward(r, config) for r in feedback.reactions)


def page_reward(feedback: PageFeedback, config: RewardConfig) -> float:
    """Reward for one page: item rewards plus the exit penalty if the user left on it.

    `item_reward` inlined (this runs on every env step): the same terms, added in the same order, so the
    total is bit-identical to `sum(item_rewards(feedback, config))`.
    """
    watch, like, per_star = config.watch, config.like, config.rating
    total = 0.0
    for r in feedback.reactions:
        if r.watched:
            value = watch
            rating = r.rating
            if rating is not None:
                value += per_star * rating
                if rating >= 4:
                    value += like
            total += value
    if feedback.left:
        total -= config.exit_penalty
    return float(total)


def terminal_reward(interview: Interview | None, config: RewardConfig) -> float:
    """Satisfaction term added on the episode's last step (0 without an interview or with weight 0)."""
    if interview is None or config.satisfaction == 0.0:
        return 0.0
    return float(config.satisfaction * interview.score)
