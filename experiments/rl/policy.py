"""The candidate-scoring policy for SB3: one small MLP shared by every candidate row, pooled permutation-invariantly.

`CandidateSetExtractor` is an SB3 `BaseFeaturesExtractor` for the env's flat Dict observation
(`simenv.spaces`). Each candidate's row is its `candidate_features` (featurizer columns and session flags) joined
with its `candidates` row (genres, popularity, mean rating, shown); one MLP, the same weights for every row,
embeds each row, and the embeddings are pooled by mean and max (so the output does not depend on the order of the
candidates, and what is learnt about one candidate transfers to every other). The pooled vector is concatenated
with an embedding of the rest (persona, history, session: what the session is like so far). SB3's actor then maps
it to the weights-mode action, a weight per candidate feature, which `simenv.kernel.rank_by_weights` applies to every
candidate: the scoring itself is shared across candidates too.

`policy_kwargs()` is what `PPO("MultiInputPolicy", env, policy_kwargs=...)` takes; its action noise starts small
(`log_std_init`) and the actor's last layer starts near zero (SB3's orthogonal init with gain 0.01), so an
untrained policy shows the base recommender's own order and exploration perturbs it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from simenv.spaces import FEATURES_KEY


class CandidateSetExtractor(BaseFeaturesExtractor):
    """Shared per-candidate MLP with mean + max pooling, concatenated with an MLP embedding of the other keys.

    Output size: 2 * `hidden` (pooled candidates) + `context` (everything else).
    """

    def __init__(self, observation_space: gym.spaces.Dict, hidden: int = 32, context: int = 32) -> None:
        if FEATURES_KEY not in observation_space.spaces:
            raise ValueError(f"CandidateSetExtractor needs the {FEATURES_KEY!r} key (an env with a featurizer)")
        n_candidates, n_features = observation_space[FEATURES_KEY].shape
        row_extra = 0
        if "candidates" in observation_space.spaces:
            row_extra = int(observation_space["candidates"].shape[0]) // n_candidates
        self.context_keys = tuple(k for k in observation_space.spaces if k not in (FEATURES_KEY, "candidates"))
        n_context = sum(int(observation_space[k].shape[0]) for k in self.context_keys)
        super().__init__(observation_space, features_dim=2 * hidden + (context if n_context else 0))
        self.n_candidates, self.row_extra = n_candidates, row_extra
        self.row = nn.Sequential(
            nn.Linear(n_features + row_extra, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.context = nn.Sequential(nn.Linear(n_context, context), nn.ReLU()) if n_context else None

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        rows = observations[FEATURES_KEY]
        if self.row_extra:
            extra = observations["candidates"].reshape(rows.shape[0], self.n_candidates, self.row_extra)
            rows = th.cat([rows, extra], dim=-1)
        h = self.row(rows)
        pooled = [h.mean(dim=1), h.max(dim=1).values]
        if self.context is not None:
            pooled.append(self.context(th.cat([observations[k].flatten(1) for k in self.context_keys], dim=1)))
        return th.cat(pooled, dim=1)


def policy_kwargs(hidden: int = 32, context: int = 32, log_std_init: float = -1.0) -> dict[str, Any]:
    """SB3 `policy_kwargs` for `MultiInputPolicy` on an env with `candidate_features` (e.g. `simrec/FastRecRank-v1`)."""
    return {
        "features_extractor_class": CandidateSetExtractor,
        "features_extractor_kwargs": {"hidden": hidden, "context": context},
        "net_arch": {"pi": [64], "vf": [64]},
        "log_std_init": log_std_init,
    }
