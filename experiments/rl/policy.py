"""Candidate-scoring policies for SB3: one small network shared by every candidate row.

Both read the env's Dict observation (`simenv.spaces`): each candidate's row is its `candidate_features`
(featurizer columns and session flags) joined with its `candidates` row (genres, popularity, mean rating, shown);
one MLP, the same weights for every row, embeds each row, and the embeddings are pooled by mean and max (so the
summary does not depend on the order of the candidates, and what is learnt about one candidate transfers to every
other). The pooled vector is concatenated with an embedding of the rest (persona, history, session so far).

- **weights action** (`policy_kwargs()` for `PPO("MultiInputPolicy", env, policy_kwargs=...)`): SB3's actor maps
  the summary to one weight per candidate feature, which `simenv.kernel.rank_by_weights` applies to every candidate
  (a linear score, Virtual-Taobao's action).
- **scores action** (`CandidateScoringPolicy`, `PPO(CandidateScoringPolicy, env)`): an item-wise head scores each
  candidate from its own row embedding and the summary (SlateQ's decomposition, a non-linear score); the Gaussian
  action is those scores, which `simenv.kernel.rank_by_scores` adds to the base's score. Permutation-equivariant:
  shuffling the candidates shuffles the scores the same way.

In both the actor's last layer starts near zero (gain 0.01) and the action noise small (`log_std_init`), so an
untrained policy shows the base recommender's own order and exploration perturbs it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from experiments.rl.plackett_luce import PlackettLuceDistribution
from simenv.spaces import FEATURES_KEY, N_CANDIDATE_FLAGS


class CandidateSetExtractor(BaseFeaturesExtractor):
    """Shared per-candidate MLP with mean + max pooling, concatenated with an MLP embedding of the other keys.

    Output size: 2 * `hidden` (pooled candidates) + `context` (everything else). With `keep_rows`, the per-candidate
    embeddings come first (`n_candidates * hidden` more columns, `rows_dim`), for an item-wise head.
    """

    def __init__(
        self, observation_space: gym.spaces.Dict, hidden: int = 32, context: int = 32, keep_rows: bool = False
    ) -> None:
        if FEATURES_KEY not in observation_space.spaces:
            raise ValueError(f"CandidateSetExtractor needs the {FEATURES_KEY!r} key (an env with a featurizer)")
        n_candidates, n_features = observation_space[FEATURES_KEY].shape
        row_extra = 0
        if "candidates" in observation_space.spaces:
            row_extra = int(observation_space["candidates"].shape[0]) // n_candidates
        self.context_keys = tuple(k for k in observation_space.spaces if k not in (FEATURES_KEY, "candidates"))
        n_context = sum(int(observation_space[k].shape[0]) for k in self.context_keys)
        rows_dim = n_candidates * hidden if keep_rows else 0
        super().__init__(observation_space, features_dim=rows_dim + 2 * hidden + (context if n_context else 0))
        self.n_candidates, self.row_extra, self.hidden, self.rows_dim = n_candidates, row_extra, hidden, rows_dim
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
        parts = [h.flatten(1)] if self.rows_dim else []
        parts += [h.mean(dim=1), h.max(dim=1).values]
        if self.context is not None:
            parts.append(self.context(th.cat([observations[k].flatten(1) for k in self.context_keys], dim=1)))
        return th.cat(parts, dim=1)


def policy_kwargs(hidden: int = 32, context: int = 32, log_std_init: float = -1.0) -> dict[str, Any]:
    """SB3 `policy_kwargs` for `MultiInputPolicy` on a weights-mode env (e.g. `simrec/FastRecRank-v1`)."""
    return {
        "features_extractor_class": CandidateSetExtractor,
        "features_extractor_kwargs": {"hidden": hidden, "context": context},
        "net_arch": {"pi": [64], "vf": [64]},
        "log_std_init": log_std_init,
    }


class ItemwiseLatent(nn.Module):
    """SB3's `mlp_extractor` slot for the scores policy: the actor's latent is the extractor's output unchanged
    (row embeddings + summary, read by `ItemwiseScoreHead`); the critic's is an MLP over the summary alone."""

    def __init__(self, rows_dim: int, summary_dim: int, value_hidden: int = 64) -> None:
        super().__init__()
        self.rows_dim = rows_dim
        self.latent_dim_pi = rows_dim + summary_dim
        self.latent_dim_vf = value_hidden
        self.value = nn.Sequential(nn.Linear(summary_dim, value_hidden), nn.Tanh())

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        return features

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        return self.value(features[:, self.rows_dim :])


class ItemwiseScoreHead(nn.Module):
    """score_c = MLP([row embedding c, summary]) for every candidate c, with the same weights for every row."""

    def __init__(self, n_candidates: int, hidden: int, summary_dim: int, head_hidden: int = 32) -> None:
        super().__init__()
        self.n_candidates, self.hidden = n_candidates, hidden
        self.net = nn.Sequential(nn.Linear(hidden + summary_dim, head_hidden), nn.ReLU(), nn.Linear(head_hidden, 1))

    def forward(self, latent: th.Tensor) -> th.Tensor:
        n, c = latent.shape[0], self.n_candidates
        rows = latent[:, : c * self.hidden].reshape(n, c, self.hidden)
        summary = latent[:, c * self.hidden :]
        x = th.cat([rows, summary[:, None, :].expand(n, c, summary.shape[1])], dim=-1)
        return self.net(x).squeeze(-1)


class CandidateScoringPolicy(MultiInputActorCriticPolicy):
    """The item-wise actor-critic (module doc) for a slate-mode env with candidate features: the page is a
    Plackett-Luce draw over `beta * (base_score + head(row, summary))`, shown candidates excluded.

    `PPO(CandidateScoringPolicy, env)`. `prior_column`: the featurizer column holding the base's standardised score
    (0 for `recommenders.candidate_features`; None: no prior), so an untrained policy's mode is the base's order;
    `beta` (learnt, starts at `beta_init`) sets how greedy the draw is. `hidden` / `context` size the row and
    context embeddings, `head_hidden` the head; other keyword arguments are SB3's (`ortho_init`, optimizer...)."""

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        action_space: gym.spaces.MultiDiscrete,
        lr_schedule: Any,
        hidden: int = 32,
        context: int = 32,
        head_hidden: int = 32,
        prior_column: int | None = 0,
        beta_init: float = 1.0,
        **kwargs: Any,
    ) -> None:
        n_candidates = observation_space[FEATURES_KEY].shape[0] if FEATURES_KEY in observation_space.spaces else 0
        nvec = getattr(action_space, "nvec", None)
        if nvec is None or len(set(np.asarray(nvec).tolist())) != 1 or int(nvec[0]) != n_candidates:
            raise ValueError(
                f"CandidateScoringPolicy: expected a slate of candidate indices, MultiDiscrete([{n_candidates}] * k), "
                f"got {action_space}; make the env with action_mode='slate' and a candidate featurizer"
            )
        self.head_hidden, self.prior_column, self.beta_init = head_hidden, prior_column, beta_init
        kwargs["features_extractor_class"] = CandidateSetExtractor
        kwargs["features_extractor_kwargs"] = {"hidden": hidden, "context": context, "keep_rows": True}
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build_mlp_extractor(self) -> None:
        fe = self.features_extractor
        self.mlp_extractor = ItemwiseLatent(fe.rows_dim, fe.features_dim - fe.rows_dim)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)  # SB3's feature, value and (replaced below) action nets
        fe = self.features_extractor
        self.action_dist = PlackettLuceDistribution(len(self.action_space.nvec))
        self.action_net = ItemwiseScoreHead(fe.n_candidates, fe.hidden, fe.features_dim - fe.rows_dim, self.head_hidden)
        self.log_beta = nn.Parameter(th.tensor(float(np.log(self.beta_init))))
        if self.ortho_init:
            self.action_net.net[0].apply(lambda m: self.init_weights(m, gain=float(np.sqrt(2))))
            self.action_net.net[-1].apply(lambda m: self.init_weights(m, gain=0.01))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _scores(self, obs: dict[str, th.Tensor], latent_pi: th.Tensor) -> th.Tensor:
        rows = obs[FEATURES_KEY]
        score = self.action_net(latent_pi)
        if self.prior_column is not None:
            score = score + rows[:, :, self.prior_column]
        shown = rows[:, :, -N_CANDIDATE_FLAGS] > 0.5
        return (self.log_beta.exp() * score).masked_fill(shown, -1e4)

    def forward(self, obs: dict[str, th.Tensor], deterministic: bool = False) -> tuple[th.Tensor, ...]:
        latent_pi, latent_vf = self.mlp_extractor(self.extract_features(obs))
        dist = self.action_dist.proba_distribution(self._scores(obs, latent_pi))
        actions = dist.get_actions(deterministic=deterministic)
        return actions, self.value_net(latent_vf), dist.log_prob(actions)

    def evaluate_actions(self, obs: dict[str, th.Tensor], actions: th.Tensor) -> tuple[th.Tensor, ...]:
        latent_pi, latent_vf = self.mlp_extractor(self.extract_features(obs))
        dist = self.action_dist.proba_distribution(self._scores(obs, latent_pi))
        return self.value_net(latent_vf), dist.log_prob(actions), dist.entropy()

    def get_distribution(self, obs: dict[str, th.Tensor]) -> PlackettLuceDistribution:
        latent_pi = self.mlp_extractor.forward_actor(self.extract_features(obs))
        return self.action_dist.proba_distribution(self._scores(obs, latent_pi))
