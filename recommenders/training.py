"""The training loop the neural recommenders share: epochs with early stopping on validation Recall@20,
a wall-clock budget, and the BPR epoch (uniform negative sampling) that MF and LightGCN both use.

The loop keeps the weights of the best validation epoch and restores them at the end.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from recommenders.base import BaseRecommender, RecommenderConfig, UserItems
from recommenders.evaluation import evaluate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig(RecommenderConfig):
    """Optimisation and stopping options shared by the trained models.

    `eval_every` epochs the model is scored on the valid split (Recall@20); training stops after
    `patience` evaluations without improvement, after `epochs`, or before an epoch that would not end
    within `time_budget_s` seconds of wall clock (the last epoch is then validated too). A budget makes
    the result depend on machine load: leave it None where exact reproducibility matters.
    """

    epochs: int = 100
    batch_size: int = 2048
    lr: float = 1e-3
    weight_decay: float = 0.0
    eval_every: int = 5
    patience: int = 3
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for field in ("epochs", "batch_size", "eval_every", "patience"):
            value = getattr(self, field)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{type(self).__name__}.{field} must be a positive int, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"{type(self).__name__}.lr must be positive, got {self.lr!r}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"{type(self).__name__}.time_budget_s must be positive or None, got {self.time_budget_s}")


def train_with_early_stopping(
    module: nn.Module,
    run_epoch: Callable[[int], float],
    validate: Callable[[], float] | None,
    config: TrainConfig,
    name: str,
) -> dict[str, Any]:
    """Run `run_epoch(epoch) -> mean loss` until a stop rule fires; return a JSON-able report.

    `validate()` returns validation Recall@20 (called in eval mode without grad). Without it, all
    `epochs` run (or until the budget) and the last weights are kept.
    """
    start = time.perf_counter()
    best, best_epoch, best_state, bad = -math.inf, 0, None, 0
    curve: list[dict[str, float]] = []
    reason = "epochs"
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        module.train()
        epoch_start = time.perf_counter()
        loss = run_epoch(epoch)
        if not math.isfinite(loss):
            raise FloatingPointError(f"{name}: training loss became {loss} at epoch {epoch}; lower lr")
        elapsed = time.perf_counter() - start
        # Stop when another epoch of the same length would overrun the budget (so the total stays under it).
        epoch_seconds = time.perf_counter() - epoch_start
        over_budget = config.time_budget_s is not None and elapsed + epoch_seconds > config.time_budget_s
        point: dict[str, float] = {"epoch": epoch, "loss": round(loss, 6), "seconds": round(elapsed, 2)}
        if validate is not None and (epoch % config.eval_every == 0 or epoch == config.epochs or over_budget):
            module.eval()
            with torch.no_grad():
                recall = float(validate())
            point["valid_recall@20"] = round(recall, 5)
            log.info("%s epoch %d loss %.4f valid recall@20 %.4f (%.1fs)", name, epoch, loss, recall, elapsed)
            if recall > best:
                best, best_epoch, bad = recall, epoch, 0
                best_state = copy.deepcopy(module.state_dict())
            else:
                bad += 1
                if bad >= config.patience:
                    curve.append(point)
                    reason = "patience"
                    break
        curve.append(point)
        if over_budget:
            reason = "time_budget"
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return {
        "epochs_run": epoch,
        "best_epoch": best_epoch or epoch,
        "best_valid_recall@20": None if best == -math.inf else round(best, 5),
        "stopped": reason,
        "train_seconds": round(time.perf_counter() - start, 2),
        "curve": curve,
    }


def recall_validator(model: BaseRecommender, valid: pd.DataFrame | None, k: int = 20) -> Callable[[], float] | None:
    """A closure computing the model's validation Recall@k (train items masked), or None without valid data."""
    if valid is None or len(valid) == 0:
        return None
    target = UserItems.from_frame(valid, model.n_users)
    assert model.user_items is not None
    train = model.user_items
    return lambda: evaluate(model, target, [train], model.n_users, k=k).recall


class BPRSampler:
    """Shuffled (user, positive, negative) triples; negatives uniform over items the user has not
    consumed (one resampling round for collisions, then the rare remaining collision is kept)."""

    def __init__(self, user_items: UserItems, n_items: int, generator: torch.Generator) -> None:
        users, items = user_items.pairs()
        self.users = torch.from_numpy(users.astype(np.int64))
        self.items = torch.from_numpy(items.astype(np.int64))
        self.n_items = n_items
        self.generator = generator
        self.positive = torch.zeros((user_items.n_users, n_items), dtype=torch.bool)
        self.positive[self.users, self.items] = True

    def __len__(self) -> int:
        return int(self.users.numel())

    def batches(self, batch_size: int):
        order = torch.randperm(len(self), generator=self.generator)
        for start in range(0, len(self), batch_size):
            idx = order[start : start + batch_size]
            u, i = self.users[idx], self.items[idx]
            j = torch.randint(self.n_items, (idx.numel(),), generator=self.generator)
            clash = self.positive[u, j]
            if clash.any():
                j[clash] = torch.randint(self.n_items, (int(clash.sum()),), generator=self.generator)
            yield u, i, j


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: -log sigmoid(score(pos) - score(neg)), averaged."""
    return -torch.nn.functional.logsigmoid(pos - neg).mean()


def bpr_epoch(
    sampler: BPRSampler,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    batch_loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> float:
    """One pass over all positives; `batch_loss(users, pos, neg)` returns BPR loss + regularisation."""
    total, n = 0.0, 0
    for u, i, j in sampler.batches(batch_size):
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(u, i, j)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * u.numel()
        n += u.numel()
    return total / max(n, 1)
