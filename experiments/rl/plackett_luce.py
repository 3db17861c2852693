"""A Plackett-Luce distribution over pages, as an SB3 `Distribution`: k distinct candidates drawn one after the
other, each with probability softmax(score) over the candidates not drawn yet.

Why: a page is a ranking of k out of C candidates. Independent Gaussian noise on C scores (a `Box` action) spreads the
policy gradient over every candidate, most of which are never near the page; a Plackett-Luce policy puts the
gradient on the shown candidates against the ones they were drawn over (the listwise policy gradient of ranking
and top-k recommendation). Sampling uses the Gumbel top-k trick (add Gumbel noise, take the k largest: an exact
draw); the mode is the k highest scores. Entropy has no closed form; `entropy()` is that of the first draw.
"""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.distributions import Distribution
from torch import nn


class PlackettLuceDistribution(Distribution):
    """Pages of `k` distinct candidate indices from per-candidate scores (logits) of shape (batch, C)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.logits: th.Tensor | None = None

    def proba_distribution_net(self, *args: Any, **kwargs: Any) -> nn.Module:
        raise NotImplementedError("the scores come from the policy's item-wise head (experiments.rl.policy)")

    def proba_distribution(self, logits: th.Tensor) -> PlackettLuceDistribution:
        self.logits = logits
        return self

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        """Sum over the page's slots of log softmax(score) of the slot's candidate among those not drawn before it."""
        assert self.logits is not None
        picks = actions.long().reshape(self.logits.shape[0], self.k)
        logits = self.logits
        total = th.zeros(logits.shape[0], dtype=logits.dtype, device=logits.device)
        drawn = th.zeros_like(logits, dtype=th.bool)
        for j in range(self.k):
            masked = logits.masked_fill(drawn, float("-inf"))
            total = total + masked.gather(1, picks[:, j : j + 1]).squeeze(1) - th.logsumexp(masked, dim=1)
            drawn = drawn.scatter(1, picks[:, j : j + 1], True)
        return total

    def entropy(self) -> th.Tensor:
        assert self.logits is not None
        return th.distributions.Categorical(logits=self.logits).entropy()

    def sample(self) -> th.Tensor:
        assert self.logits is not None
        uniform = th.rand_like(self.logits).clamp_(1e-10, 1.0 - 1e-7)
        return th.topk(self.logits - th.log(-th.log(uniform)), self.k, dim=1).indices

    def mode(self) -> th.Tensor:
        assert self.logits is not None
        return th.topk(self.logits, self.k, dim=1).indices

    def actions_from_params(self, logits: th.Tensor, deterministic: bool = False) -> th.Tensor:
        self.proba_distribution(logits)
        return self.get_actions(deterministic=deterministic)

    def log_prob_from_params(self, logits: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        actions = self.actions_from_params(logits)
        return actions, self.log_prob(actions)
