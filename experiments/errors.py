"""How the CLI reports errors: one line on stderr, secrets redacted, exit 2 for bad input, 1 for a failed run.

Bad input is anything the user can fix by changing what they gave: a config file, flag or user profile
(`simenv.errors.ConfigError`, the one config error every layer raises; pydantic's `ValidationError` from flag
parsing), data (`DataError`), a run directory that already exists or is missing. Anything else raised during
a run is a failure of the run (exit 1).
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from pydantic import ValidationError

from experiments.config import format_validation_error
from simenv.data.dataset import DataError
from simenv.errors import ConfigError, RunStopped
from simenv.llm.secrets import redact

BAD_INPUT = 2
RUN_FAILED = 1
MAX_MESSAGE = 2000


class EndpointUnreachable(RuntimeError):
    """The pre-flight request to an LLM endpoint failed (wrong key, model or address): exit 1 before any write."""


def bad_input_types() -> tuple[type[BaseException], ...]:
    """Exception types that mean "fix your input" (exit 2)."""
    return (ConfigError, DataError, FileExistsError, FileNotFoundError, NotADirectoryError)


def one_line(text: str) -> str:
    """Collapse a message onto one line (newlines become ' | '), capped at MAX_MESSAGE characters; bytes of a
    file name that are not UTF-8 are shown as escapes."""
    parts = [p.strip() for p in str(text).splitlines() if p.strip()]
    line = " | ".join(parts).encode("utf-8", "backslashreplace").decode("utf-8")  # undecodable path bytes
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."


def describe_error(exc: BaseException, extra_secrets: Iterable[str] = ()) -> tuple[int, str]:
    """(exit code, one-line redacted message) for an exception that reached the CLI."""
    if isinstance(exc, ValidationError):  # flag parsing: locations start with the subcommand
        text, code = format_validation_error(exc, "command line", flags=None, skip=1), BAD_INPUT
    elif isinstance(exc, bad_input_types()):
        text, code = str(exc) or type(exc).__name__, BAD_INPUT
        if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in text:
            text = f"{exc.filename}: {exc.strerror or text}"
    elif isinstance(exc, EndpointUnreachable | RunStopped):
        text, code = str(exc), RUN_FAILED
    elif type(exc).__name__ == "SettingsError":  # pydantic-settings could not parse the command line
        first = (str(exc).strip().splitlines() or [""])[0].removeprefix("error parsing CLI: ")
        text, code = f"bad command line: {first} (see `simrec --help`)", BAD_INPUT
    else:
        text, code = f"run failed: {type(exc).__name__}: {exc}", RUN_FAILED
    return code, one_line(redact(text, extra_secrets))


class _RedactingWriter(io.TextIOBase):
    """A text stream that redacts secrets line by line before writing to `target`."""

    def __init__(self, target: TextIO, secrets: tuple[str, ...]) -> None:
        self.target = target
        self.secrets = secrets
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        if "\n" in self._buffer:
            head, _, self._buffer = self._buffer.rpartition("\n")
            self.target.write(redact(head + "\n", self.secrets))
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self.target.write(redact(self._buffer, self.secrets))
            self._buffer = ""
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


@contextlib.contextmanager
def redacted_stderr(secrets: Iterable[str] = ()) -> Iterator[None]:
    """Redact environment secrets and `secrets` from everything written to sys.stderr (argparse's usage errors
    echo the offending arguments)."""
    original = sys.stderr
    writer = _RedactingWriter(original, tuple(secrets))
    sys.stderr = writer  # type: ignore[assignment]
    try:
        yield
    finally:
        writer.flush()
        sys.stderr = original
