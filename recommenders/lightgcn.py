"""LightGCN (He et al., 2020): embeddings smoothed over the user-item graph by parameter-free
propagation with the symmetric normalisation D^-1/2 A D^-1/2, layer outputs averaged, trained with BPR."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recommenders.base import BaseRecommender, UserItems
from recommenders.evaluation import EvalResult
from recommenders.mf import Factors
from recommenders.training import (
    BPRSampler,
    TrainConfig,
    bpr_epoch,
    bpr_loss,
    train_with_early_stopping,
    valid_validator,
)


@dataclass(frozen=True)
class LightGCNConfig(TrainConfig):
    """`reg` is the L2 weight on the batch's layer-0 embeddings, as in the paper's code. Defaults were tuned
    on the Agent4Rec ML-1M split; the large batch keeps the per-batch graph propagation affordable on CPU.
    Early stopping on valid ends training."""

    dim: int = 64
    n_layers: int = 3
    reg: float = 1e-3
    init_std: float = 0.1
    lr: float = 0.005
    batch_size: int = 4096
    epochs: int = 300
    eval_every: int = 5
    patience: int = 3


def normalized_adjacency(user_items: UserItems, n_items: int) -> torch.Tensor:
    """Sparse CSR (n_users + n_items)^2 matrix D^-1/2 A D^-1/2 of the bipartite interaction graph."""
    users, items = user_items.pairs()
    n_users = user_items.n_users
    rows = np.concatenate([users, items + n_users])
    cols = np.concatenate([items + n_users, users])
    degree = np.bincount(rows, minlength=n_users + n_items).astype(np.float64)
    inv_sqrt = np.zeros_like(degree)
    inv_sqrt[degree > 0] = degree[degree > 0] ** -0.5
    values = (inv_sqrt[rows] * inv_sqrt[cols]).astype(np.float32)
    index = torch.from_numpy(np.stack([rows, cols]).astype(np.int64))
    size = (n_users + n_items, n_users + n_items)
    coo = torch.sparse_coo_tensor(index, torch.from_numpy(values), size, check_invariants=True).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()


class SymmetricPropagation(torch.autograd.Function):
    """y = G x for a symmetric sparse G; the gradient is G g, so no transpose is ever built (2x faster
    than autograd through torch.sparse.mm on CPU)."""

    @staticmethod
    def forward(ctx, graph: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.graph = graph
        return graph @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:  # type: ignore[override]
        return None, ctx.graph @ grad


class LightGCNRecommender(BaseRecommender):
    """Scores are dot products of the propagated user and item embeddings; session history is not used."""

    name = "lightgcn"
    Config = LightGCNConfig

    def _build(self) -> None:
        assert self.user_items is not None
        cfg = self.config
        self.net = Factors(self.n_users, self.n_items, cfg.dim, cfg.init_std, self.torch_generator(1))
        self.graph = normalized_adjacency(self.user_items, self.n_items)
        self._final: tuple[torch.Tensor, torch.Tensor] | None = None

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean of the layer-0..L embeddings; returns (users, items)."""
        x = torch.cat([self.net.users, self.net.items])
        layers = [x]
        for _ in range(self.config.n_layers):
            x = SymmetricPropagation.apply(self.graph, x)
            layers.append(x)
        out = torch.stack(layers).mean(0)
        return out[: self.n_users], out[self.n_users :]

    def _fit(self, valid: pd.DataFrame | None) -> None:
        assert self.user_items is not None
        cfg = self.config
        self._build()
        sampler = BPRSampler(self.user_items, self.n_items, self.torch_generator(2))
        optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        def batch_loss(u: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
            users, items = self.propagate()
            eu, ei, ej = users.index_select(0, u), items.index_select(0, i), items.index_select(0, j)
            e0 = (
                self.net.users.index_select(0, u).square().sum()
                + self.net.items.index_select(0, i).square().sum()
                + self.net.items.index_select(0, j).square().sum()
            )
            return bpr_loss((eu * ei).sum(-1), (eu * ej).sum(-1)) + cfg.reg * e0 / (2 * u.numel())

        check = valid_validator(self, valid, cfg.valid_metric)

        def validate() -> EvalResult:
            self._final = None
            assert check is not None
            return check()

        self.train_report = train_with_early_stopping(
            self.net,
            lambda _epoch: bpr_epoch(sampler, cfg.batch_size, optimizer, batch_loss),
            validate if check is not None else None,
            cfg,
            self.name,
        )
        self._final = None

    @torch.no_grad()
    def score_batch(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        if self._final is None:
            self._final = self.propagate()
        users, items = self._final
        return (users[torch.as_tensor(np.asarray(user_ids), dtype=torch.long)] @ items.T).numpy()

    def _state(self) -> dict[str, torch.Tensor]:
        return dict(self.net.state_dict())

    def _restore(self, state: Mapping[str, torch.Tensor]) -> None:
        self._build()
        self.net.load_state_dict(state)
