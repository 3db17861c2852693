"""What compare and validate show and record of recommender training: a progress line per model every few
seconds (epoch, valid metric, ETA; from `recommenders.training.training_progress`), each policy's training
summary for the run's json, and a warning line when a model was stopped by its wall-clock cap (such a model
depends on machine load, so the run is not reproducible)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from recommenders.training import EpochProgress, time_capped

SUMMARY_FIELDS = ("stopped_by", "epochs_run", "best_epoch", "valid_metric", "best_valid", "train_seconds", "time_cap_s")


class TrainingLog:
    """A `training_progress` callback printing one line per model at most every `every_s` seconds (on an
    evaluation), at least every `heartbeat_s` seconds, and when the model stops."""

    def __init__(self, console: Console, every_s: float = 5.0, heartbeat_s: float = 8.0, indent: str = "  ") -> None:
        self.console = console
        self.every_s = every_s
        self.heartbeat_s = heartbeat_s
        self.indent = indent
        self._last = time.monotonic()  # the first line comes after every_s / heartbeat_s

    def __call__(self, progress: EpochProgress) -> None:
        now = time.monotonic()
        if progress.epoch == 1:
            self._last = now  # a new model: its first line comes after every_s
        since = now - self._last
        due = progress.stopped_by is not None or since >= self.heartbeat_s
        if due or (progress.valid is not None and since >= self.every_s):
            self.console.print(f"{self.indent}{progress.line()}", highlight=False)
            self._last = now

    def batch(self, model: str, epoch: int, max_epochs: int, seconds: float) -> None:
        """A heartbeat within a long epoch: nothing printed for `heartbeat_s` seconds."""
        now = time.monotonic()
        if now - self._last >= self.heartbeat_s:
            self.console.print(
                f"{self.indent}{model}: epoch {epoch}/{max_epochs} running, {seconds:.0f} s", highlight=False
            )
            self._last = now


def training_summary(recommender: Any) -> dict[str, Any] | None:
    """The stopping facts of a trained registry model (its `train_report`, or its base's for a wrapper), or
    None for a model without a training loop."""
    model, report = recommender, None
    for _ in range(4):
        report = getattr(model, "train_report", None)
        if isinstance(report, dict) and "stopped_by" in report:
            break
        model, report = getattr(model, "base", None), None
        if model is None:
            break
    if not report:
        return None
    return {k: report.get(k) for k in SUMMARY_FIELDS} | {"time_capped": report.get("stopped_by") == "time_cap"}


def warn_if_time_capped(console: Console, name: str, recommender: Any) -> bool:
    """Print a warning line when `recommender` (or its base) was stopped by its time cap; True if so."""
    report = time_capped(recommender)
    if report is None:
        return False
    console.print(
        f"[bold yellow]WARNING[/] {name}: training was stopped by the time cap ({report.get('time_cap_s')} s) after "
        f"epoch {report.get('epochs_run')}, before early stopping on valid: this model depends on machine load and "
        "is not reproducible (raise time_cap_s or lower epochs)",
        highlight=False,
    )
    return True
