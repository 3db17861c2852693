"""The one configuration error of simrec, defined in the lowest layer so every layer raises the same class.

`agents.config.ConfigError` and `experiments.config.ConfigError` are this class (re-exported), so code that
catches one catches them all, and the CLI reports any of them as bad input (exit 2).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config file, section, key, flag or profile is invalid; the message names where and the value."""


class RunStopped(RuntimeError):
    """A run stopped on purpose before its end (e.g. too many fallbacks); what it wrote so far is resumable.
    The CLI reports it as a failed run (exit 1) on one line, its message as is."""


class FallbackShareExceeded(RunStopped):
    """The share of page decisions that fell back exceeded `[llm] max_fallback_share`."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM during a run; the message says what was kept and how to go on. The CLI prints it on one
    line and exits 130."""
