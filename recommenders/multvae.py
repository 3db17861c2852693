"""Mult-VAE (Liang et al., 2018): a variational autoencoder over each user's whole interaction row
with a multinomial likelihood and KL annealing. A user-free model: a new session is folded in by
adding the session's watched items to the input row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from recommenders.base import BaseRecommender, evaluating
from recommenders.training import TrainConfig, batch_done, train_with_early_stopping, valid_validator


@dataclass(frozen=True)
class MultVAEConfig(TrainConfig):
    """Paper defaults: one 600-unit hidden layer, 200-d latent, input dropout 0.5, beta annealed to 0.2
    over `anneal_steps` updates (fewer than the paper's 200k: ML-1M has far fewer users than ML-20M).
    `batch_size` counts users. Early stopping on valid ends training."""

    hidden: int = 600
    latent: int = 200
    dropout: float = 0.5
    beta_max: float = 0.2
    anneal_steps: int = 2000
    batch_size: int = 100
    epochs: int = 300
    eval_every: int = 5
    patience: int = 5


class VAE(nn.Module):
    """Encoder n_items -> hidden -> (mu, logvar); decoder latent -> hidden -> n_items logits."""

    def __init__(self, n_items: int, cfg: MultVAEConfig) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_items, cfg.hidden), nn.Tanh(), nn.Linear(cfg.hidden, 2 * cfg.latent))
        self.decoder = nn.Sequential(nn.Linear(cfg.latent, cfg.hidden), nn.Tanh(), nn.Linear(cfg.hidden, n_items))
        self.drop = nn.Dropout(cfg.dropout)
        self.latent = cfg.latent

    def forward(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.encoder(self.drop(F.normalize(rows, dim=1)))
        mu, logvar = h[:, : self.latent], h[:, self.latent :]
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decoder(z), mu, logvar


class MultVAERecommender(BaseRecommender):
    """Scores are the decoder's logits for the user's train row plus session items."""

    name = "multvae"
    Config = MultVAEConfig

    def _build(self) -> None:
        assert self.user_items is not None
        self.net = VAE(self.n_items, self.config)
        self.rows = torch.from_numpy(self.user_items.dense(self.n_items))

    def _fit(self, valid: pd.DataFrame | None) -> None:
        cfg = self.config
        self._build()
        init_generator = self.torch_generator(1)
        self.net.apply(lambda m: _init(m, init_generator))
        optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        generator = self.torch_generator(2)
        active = torch.from_numpy(np.flatnonzero(self.user_items.counts() > 0))
        step = 0

        def run_epoch(_epoch: int) -> float:
            nonlocal step
            total = 0.0
            order = active[torch.randperm(active.numel(), generator=generator)]
            for start in range(0, order.numel(), cfg.batch_size):
                rows = self.rows[order[start : start + cfg.batch_size]]
                beta = min(cfg.beta_max, cfg.beta_max * step / cfg.anneal_steps)
                logits, mu, logvar = self.net(rows)
                nll = -(F.log_softmax(logits, dim=1) * rows).sum(1).mean()
                kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(1).mean()
                loss = nll + beta * kl
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                batch_done()
                total += float(loss.detach()) * rows.shape[0]
            return total / max(order.numel(), 1)

        self.train_report = train_with_early_stopping(
            self.net, run_epoch, valid_validator(self, valid, cfg.valid_metric), cfg, self.name
        )

    @torch.no_grad()
    def score_batch(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        rows = self.rows[torch.as_tensor(np.asarray(user_ids), dtype=torch.long)].clone()
        for b, hist in enumerate(histories or ()):
            if len(hist):
                rows[b, torch.as_tensor(list(hist), dtype=torch.long)] = 1.0
        with evaluating(self.net):
            logits, _, _ = self.net(rows)
        return logits.numpy()

    def _state(self) -> dict[str, torch.Tensor]:
        return dict(self.net.state_dict())

    def _restore(self, state: Mapping[str, torch.Tensor]) -> None:
        self._build()
        self.net.load_state_dict(state)
        self.net.eval()


def _init(module: nn.Module, generator: torch.Generator) -> None:
    """Xavier-normal weights and N(0, 0.001) biases, as in the paper's code, from a seeded generator."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_normal_(module.weight, generator=generator)
        nn.init.normal_(module.bias, std=0.001, generator=generator)
