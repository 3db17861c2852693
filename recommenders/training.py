"""The training loop the neural recommenders share: epochs with early stopping on the valid split (RecBole's
convention), a wall-clock cap that is only a guard, and the BPR epoch (uniform negative sampling) that MF and
LightGCN both use.

Every `eval_every` epochs the model is scored on the valid split (`valid_metric`, Recall@20 by default, all items
ranked, train items masked); training stops after `patience` evaluations without improvement or after `epochs`,
and the weights of the best evaluation are restored. All randomness comes from generators seeded by the config,
so the same config and data give the same weights on any machine (same torch version and thread count). The
optional `time_cap_s` stops a run that takes far longer than expected; such a model depends on machine load, so
the report says `stopped_by = "time_cap"` and compare / validate flag it.

Progress: each epoch is reported to the callback installed with `training_progress(callback)` (a context
variable: the CLI shows epoch, valid metric and ETA), else logged at INFO on each evaluation.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from recommenders.base import BaseRecommender, RecommenderConfig, UserItems
from recommenders.evaluation import EvalResult, evaluate

log = logging.getLogger(__name__)

VALID_METRIC = re.compile(r"(recall|ndcg)@([1-9][0-9]*)")
STOPPED_BY = ("patience", "epochs", "time_cap")


@dataclass(frozen=True)
class TrainConfig(RecommenderConfig):
    """Optimisation and stopping options shared by the trained models.

    Every `eval_every` epochs the model is scored on the valid split by `valid_metric` ("recall@K" or
    "ndcg@K"); training stops after `patience` evaluations without improvement or after `epochs`, keeping the
    best evaluation's weights. `time_cap_s` is a guard, not a budget: when the elapsed wall clock passes it
    after an epoch, that epoch is validated and training stops with `stopped_by = "time_cap"` (a warning; the
    model then depends on machine load). Leave it None for exact reproducibility.
    """

    epochs: int = 100
    batch_size: int = 2048
    lr: float = 1e-3
    weight_decay: float = 0.0
    eval_every: int = 5
    patience: int = 3
    valid_metric: str = "recall@20"
    time_cap_s: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for field in ("epochs", "batch_size", "eval_every", "patience"):
            value = getattr(self, field)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{type(self).__name__}.{field} must be a positive int, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"{type(self).__name__}.lr must be positive, got {self.lr!r}")
        if not VALID_METRIC.fullmatch(str(self.valid_metric)):
            raise ValueError(
                f"{type(self).__name__}.valid_metric must be 'recall@K' or 'ndcg@K', got {self.valid_metric!r}"
            )
        if self.time_cap_s is not None and not self.time_cap_s > 0:
            raise ValueError(f"{type(self).__name__}.time_cap_s must be positive or None, got {self.time_cap_s}")


# ---- progress -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpochProgress:
    """One epoch of one model's training, as reported to a `training_progress` callback.

    `valid` is this epoch's valid metric (None when it was not evaluated); `stop_by` is the epoch at which
    patience ends training if the valid metric does not improve again (at most `max_epochs`); `stopped_by` is
    set on the last report only."""

    model: str
    epoch: int
    max_epochs: int
    loss: float
    seconds: float
    metric: str
    valid: float | None
    best: float | None
    best_epoch: int
    stop_by: int
    stopped_by: str | None = None

    @property
    def eta_s(self) -> float:
        """Seconds until `stop_by` at the mean epoch time so far (0 once stopped)."""
        if self.stopped_by is not None:
            return 0.0
        return self.seconds / max(self.epoch, 1) * max(self.stop_by - self.epoch, 0)

    def line(self) -> str:
        best = "—" if self.best is None else f"{self.best:.4f} @ {self.best_epoch}"
        if self.stopped_by is not None:
            return (
                f"{self.model}: trained {self.epoch} epochs in {self.seconds:.1f} s, stopped by {self.stopped_by}; "
                f"best valid {self.metric} {best}"
            )
        valid = "" if self.valid is None else f", valid {self.metric} {self.valid:.4f}"
        return (
            f"{self.model}: epoch {self.epoch}/{self.max_epochs}, loss {self.loss:.4f}{valid} (best {best}), "
            f"{self.seconds:.1f} s, ETA {self.eta_s:.0f} s (stops by epoch {self.stop_by} unless valid improves)"
        )


ProgressCallback = Callable[[EpochProgress], None]
_PROGRESS: ContextVar[ProgressCallback | None] = ContextVar("recommenders_training_progress", default=None)


_RUNNING: ContextVar[tuple[str, int, int, float] | None] = ContextVar("recommenders_training_epoch", default=None)


@contextmanager
def training_progress(callback: ProgressCallback | None) -> Iterator[None]:
    """Report every epoch of the models trained inside this block to `callback` (None: log only). A callback
    with a method `batch(model, epoch, max_epochs, seconds)` is also called after every training batch, so it can
    show a heartbeat within a long epoch."""
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def batch_done() -> None:
    """Called by the epoch loops after each batch: forwards (model, epoch, max epochs, seconds so far) to the
    progress callback's `batch` method, if it has one."""
    callback, running = _PROGRESS.get(), _RUNNING.get()
    batch = getattr(callback, "batch", None)
    if batch is not None and running is not None:
        name, epoch, max_epochs, start = running
        batch(name, epoch, max_epochs, time.perf_counter() - start)


# ---- the loop -----------------------------------------------------------------------------------------
_TIME_CAP_WARNING = "%s: stopped by the time cap (%g s) after epoch %d of %d: the model depends on machine load"


@dataclass
class _BestSoFar:
    """Early stopping's state: the best valid value, its epoch, weights and scores, and evaluations since it."""

    value: float = -math.inf
    epoch: int = 0
    state: dict[str, Any] | None = None
    result: EvalResult | None = None
    bad: int = 0

    def update(self, value: float, epoch: int, result: EvalResult, module: nn.Module) -> None:
        if value > self.value:
            self.value, self.epoch, self.bad, self.result = value, epoch, 0, result
            self.state = copy.deepcopy(module.state_dict())
        else:
            self.bad += 1

    @property
    def known(self) -> float | None:
        return None if self.value == -math.inf else self.value


def _train_epoch(module: nn.Module, run_epoch: Callable[[int], float], name: str, epoch: int, epochs: int,
                 start: float) -> float:  # fmt: skip
    """One epoch in train mode (batches report to the progress callback); its mean loss, which must be finite."""
    module.train()
    running = _RUNNING.set((name, epoch, epochs, start))
    try:
        loss = run_epoch(epoch)
    finally:
        _RUNNING.reset(running)
    if not math.isfinite(loss):
        raise FloatingPointError(f"{name}: training loss became {loss} at epoch {epoch}; lower lr")
    return loss


def train_with_early_stopping(
    module: nn.Module,
    run_epoch: Callable[[int], float],
    validate: Callable[[], EvalResult] | None,
    config: TrainConfig,
    name: str,
) -> dict[str, Any]:
    """Run `run_epoch(epoch) -> mean loss` until a stop rule fires; return a JSON-able report.

    `validate()` scores the model on the valid split (called in eval mode without grad). Without it, all
    `epochs` run (or until the time cap) and the last weights are kept.
    """
    start = time.perf_counter()
    metric = config.valid_metric
    kind = metric.split("@", 1)[0]
    best = _BestSoFar()
    curve: list[dict[str, float]] = []
    stopped_by = "epochs"
    callback = _PROGRESS.get()
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        loss = _train_epoch(module, run_epoch, name, epoch, config.epochs, start)
        elapsed = time.perf_counter() - start
        capped = config.time_cap_s is not None and elapsed > config.time_cap_s
        point: dict[str, float] = {"epoch": epoch, "loss": round(loss, 6), "seconds": round(elapsed, 2)}
        value = None
        if validate is not None and (epoch % config.eval_every == 0 or epoch == config.epochs or capped):
            module.eval()
            with torch.no_grad():
                result = validate()
            value = float(result.recall if kind == "recall" else result.ndcg)
            point[f"valid_{metric}"] = round(value, 5)
            log.info("%s epoch %d loss %.4f valid %s %.4f (%.1fs)", name, epoch, loss, metric, value, elapsed)
            best.update(value, epoch, result, module)
            if best.bad >= config.patience:
                stopped_by = "patience"
        curve.append(point)
        if capped and stopped_by != "patience":
            stopped_by = "time_cap"
            log.warning(_TIME_CAP_WARNING, name, config.time_cap_s, epoch, config.epochs)
        done = stopped_by in ("patience", "time_cap") or epoch == config.epochs
        if callback is not None:
            stop_by = _stop_by(config, epoch, best.bad) if validate is not None else config.epochs
            progress = EpochProgress(
                model=name, epoch=epoch, max_epochs=config.epochs, loss=loss, seconds=elapsed, metric=metric,
                valid=value, best=best.known, best_epoch=best.epoch, stop_by=stop_by,
                stopped_by=stopped_by if done else None,
            )  # fmt: skip
            callback(progress)
        if done:
            break
    if best.state is not None:
        module.load_state_dict(best.state)
    module.eval()
    return _training_report(best, epoch, metric, stopped_by, config, time.perf_counter() - start, curve)


def _stop_by(config: TrainConfig, epoch: int, bad: int) -> int:
    """The last epoch training can reach unless the valid metric improves (patience counts evaluations)."""
    return min(config.epochs, (epoch // config.eval_every + config.patience - bad) * config.eval_every)


def _training_report(
    best: _BestSoFar,
    epoch: int,
    metric: str,
    stopped_by: str,
    config: TrainConfig,
    seconds: float,
    curve: list[dict[str, float]],
) -> dict[str, Any]:
    """The JSON-able summary of a training run (`train_with_early_stopping`'s return value)."""
    at20 = best.result is not None and best.result.k == 20
    return {
        "epochs_run": epoch,
        "best_epoch": best.epoch or epoch,
        "valid_metric": metric,
        "best_valid": None if best.known is None else round(best.value, 5),
        "best_valid_recall@20": round(best.result.recall, 5) if at20 and best.result is not None else None,
        "best_valid_ndcg@20": round(best.result.ndcg, 5) if at20 and best.result is not None else None,
        "stopped_by": stopped_by,
        "time_cap_s": config.time_cap_s,
        "train_seconds": round(seconds, 2),
        "curve": curve,
    }


def valid_validator(
    model: BaseRecommender, valid: pd.DataFrame | None, metric: str = "recall@20"
) -> Callable[[], EvalResult] | None:
    """A closure scoring the model on `valid` at the metric's k (train items masked), or None without data."""
    if valid is None or len(valid) == 0:
        return None
    match = VALID_METRIC.fullmatch(metric)
    if match is None:
        raise ValueError(f"valid metric must be 'recall@K' or 'ndcg@K', got {metric!r}")
    k = int(match.group(2))
    target = UserItems.from_frame(valid, model.n_users)
    assert model.user_items is not None
    train = model.user_items
    return lambda: evaluate(model, target, [train], model.n_users, k=k)


def time_capped(model: Any) -> dict[str, Any] | None:
    """The training report of `model` (or of the model it wraps, via `.base`) when its training was stopped
    by the time cap, else None: such a model is not reproducible, and compare / validate flag it."""
    seen = 0
    while model is not None and seen < 4:
        report = getattr(model, "train_report", None)
        if isinstance(report, dict) and report.get("stopped_by") == "time_cap":
            return report
        model, seen = getattr(model, "base", None), seen + 1
    return None


# ---- BPR ----------------------------------------------------------------------------------------------
class BPRSampler:
    """Shuffled (user, positive, negative) triples; negatives uniform over the items the user has not consumed.

    One epoch's negatives are drawn at once, vectorised: collisions with a positive are redrawn (up to 10
    rounds; a remaining collision, only possible for a user who consumed nearly everything, is kept). Positives
    are looked up by sorted user * n_items + item keys, so memory is O(interactions)."""

    ROUNDS = 10

    def __init__(self, user_items: UserItems, n_items: int, generator: torch.Generator) -> None:
        users, items = user_items.pairs()
        self.users = torch.from_numpy(users.astype(np.int64))
        self.items = torch.from_numpy(items.astype(np.int64))
        self.n_items = n_items
        self.generator = generator
        self.keys = torch.unique(self.users * n_items + self.items)  # sorted

    def __len__(self) -> int:
        return int(self.users.numel())

    def is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        keys = users * self.n_items + items
        pos = torch.searchsorted(self.keys, keys).clamp_(max=self.keys.numel() - 1)
        return self.keys[pos] == keys

    def epoch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All triples of one epoch, shuffled."""
        order = torch.randperm(len(self), generator=self.generator)
        u, i = self.users[order], self.items[order]
        j = torch.randint(self.n_items, (u.numel(),), generator=self.generator)
        clash = torch.nonzero(self.is_positive(u, j)).squeeze(1)
        for _ in range(self.ROUNDS):
            if clash.numel() == 0:
                break
            j[clash] = torch.randint(self.n_items, (clash.numel(),), generator=self.generator)
            clash = clash[self.is_positive(u[clash], j[clash])]
        return u, i, j

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        u, i, j = self.epoch()
        for start in range(0, u.numel(), batch_size):
            yield u[start : start + batch_size], i[start : start + batch_size], j[start : start + batch_size]


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
        batch_done()
    return total / max(n, 1)
