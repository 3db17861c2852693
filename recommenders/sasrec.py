"""SASRec (Kang & McAuley, 2018): causal self-attention over the user's item sequence, trained to
predict the next item at every position, with full softmax cross-entropy (the stronger variant,
Klenitskiy & Vasilev 2023) or a sampled softmax over shared uniform negatives.

The sequence scored for a user is their train items in time order followed by the session history."""

from __future__ import annotations

import math
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
class SASRecConfig(TrainConfig):
    """Defaults were tuned on the temporal ML-1M split; early stopping on valid ends training.
    `loss` is "full" (softmax over all items) or "sampled" (`n_negatives` shared uniform negatives).
    `batch_size` counts users; `max_len` is the most recent items kept per sequence when scoring. In
    training, each epoch uses one window of max_len + 1 items per user: a random one when
    `random_windows` (every part of long histories is seen over the epochs), else the most recent."""

    dim: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    max_len: int = 50
    dropout: float = 0.2
    loss: str = "full"
    n_negatives: int = 256
    random_windows: bool = True
    batch_size: int = 128
    lr: float = 0.002
    epochs: int = 200
    eval_every: int = 2
    patience: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in ("full", "sampled"):
            raise ValueError(f"SASRecConfig.loss must be 'full' or 'sampled', got {self.loss!r}")
        if self.dim % self.n_heads:
            raise ValueError(f"SASRecConfig.dim={self.dim} must be divisible by n_heads={self.n_heads}")


class SASRecNet(nn.Module):
    """Item + position embeddings, pre-norm transformer blocks with a causal mask, final layer norm.
    Item id i is stored at row i + 1; row 0 is padding (sequences are left-padded)."""

    def __init__(self, n_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        self.items = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)
        self.positions = nn.Embedding(cfg.max_len, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            cfg.dim, cfg.n_heads, dim_feedforward=cfg.dim, dropout=cfg.dropout, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.n_blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.n_heads = cfg.n_heads

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L) padded item rows -> (B, L, dim) hidden states."""
        b, length = seq.shape
        pad = seq == 0
        x = self.items(seq) * math.sqrt(self.items.embedding_dim) + self.positions.weight[:length]
        x = self.drop(x) * (~pad).unsqueeze(-1)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
        mask = causal | pad[:, None, :]
        mask &= ~torch.eye(length, dtype=torch.bool)  # a position may always see itself: no all-masked rows
        mask = mask.repeat_interleave(self.n_heads, dim=0)
        return self.norm(self.blocks(x, mask=mask))

    def item_table(self) -> torch.Tensor:
        return self.items.weight[1:]


class SASRecRecommender(BaseRecommender):
    """Scores are the last hidden state . item embedding, for train sequence + session history."""

    name = "sasrec"
    Config = SASRecConfig

    def _build(self) -> None:
        self.net = SASRecNet(self.n_items, self.config)

    def _padded(self, sequences: Sequence[np.ndarray]) -> torch.Tensor:
        """Left-pad item-id sequences (shifted by +1) to max_len, keeping the most recent items."""
        length = self.config.max_len
        out = np.zeros((len(sequences), length), dtype=np.int64)
        for row, s in enumerate(sequences):
            s = np.asarray(s[-length:], dtype=np.int64)
            if s.size:
                out[row, length - s.size :] = s + 1
        return torch.from_numpy(out)

    def _fit(self, valid: pd.DataFrame | None) -> None:
        assert self.user_items is not None
        cfg = self.config
        self._build()
        init_generator = self.torch_generator(1)
        for p in self.net.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p, generator=init_generator)
        with torch.no_grad():
            self.net.items.weight[0].zero_()
        seqs = [self.user_items.items(u) for u in range(self.n_users)]
        users = np.array([u for u, s in enumerate(seqs) if s.size >= 2], dtype=np.int64)
        lengths = np.array([seqs[u].size for u in users])
        generator = self.torch_generator(2)

        def windows() -> tuple[torch.Tensor, torch.Tensor]:
            """(inputs, targets) for one epoch: a window of max_len + 1 items per user, shifted by one."""
            ends = lengths.copy()
            if cfg.random_windows:
                low = np.minimum(lengths, cfg.max_len + 1)
                draw = torch.rand(users.size, generator=generator, dtype=torch.float64).numpy()
                ends = low + np.floor(draw * (lengths - low + 1)).astype(np.int64)
            chunks = [seqs[u][max(0, e - cfg.max_len - 1) : e] for u, e in zip(users, ends, strict=True)]
            return self._padded([c[:-1] for c in chunks]), self._padded([c[1:] for c in chunks])

        optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        def run_epoch(_epoch: int) -> float:
            total, count = 0.0, 0
            inputs, targets = windows()
            order = torch.randperm(users.size, generator=generator)
            for start in range(0, users.size, cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                seq, tgt = inputs[idx], targets[idx]
                keep = tgt > 0
                hidden = self.net(seq)[keep]
                target = tgt[keep] - 1
                if cfg.loss == "full":
                    loss = F.cross_entropy(hidden @ self.net.item_table().T, target)
                else:
                    negatives = torch.randint(self.n_items, (cfg.n_negatives,), generator=generator)
                    table = self.net.item_table()
                    pos = (hidden * table[target]).sum(-1, keepdim=True)
                    neg = hidden @ table[negatives].T
                    neg = neg.masked_fill(negatives[None, :] == target[:, None], -torch.inf)
                    logits = torch.cat([pos, neg], dim=1)
                    loss = F.cross_entropy(logits, torch.zeros_like(target))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * target.numel()
                count += target.numel()
                batch_done()
            return total / max(count, 1)

        self.train_report = train_with_early_stopping(
            self.net, run_epoch, valid_validator(self, valid, cfg.valid_metric), cfg, self.name
        )

    @torch.no_grad()
    def score_batch(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        assert self.user_items is not None
        seqs = []
        for b, u in enumerate(user_ids):
            hist = np.asarray(histories[b] if histories else (), dtype=np.int64)
            seqs.append(np.concatenate([self.user_items.items(int(u)), hist]))
        with evaluating(self.net):
            hidden = self.net(self._padded(seqs))[:, -1]
        return (hidden @ self.net.item_table().T).numpy()

    def _state(self) -> dict[str, torch.Tensor]:
        return dict(self.net.state_dict())

    def _restore(self, state: Mapping[str, torch.Tensor]) -> None:
        self._build()
        self.net.load_state_dict(state)
        self.net.eval()
