"""Versioned prompt templates shipped as package files: `<package>/prompts/<name>.v<version>.j2`.

Templates are Jinja2 with StrictUndefined, so a missing variable is an error, never an empty string.
A template file may hold several messages separated by lines `--- system ---` / `--- user ---`; the roles are
taken from the template source, never from rendered text (a title cannot open a system message).

Text that comes from the catalog or from a model (titles, taste texts, memories) is untrusted data: templates
put it in user messages only, through the filters `line` (one line: every run of whitespace and control
characters becomes one space, so a title cannot start a line of its own) and `quoted` (`line`, then a JSON
string literal: the item's text between double quotes, its own quotes escaped).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jinja2

from simenv.llm.types import Message

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
_BREAKS = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(value: object) -> str:
    """`value` as one line: each run of whitespace or control characters becomes one space (the `line` filter)."""
    return _BREAKS.sub(" ", str(value)).strip()


def quoted(value: object) -> str:
    """`value` as one line inside double quotes, its own quotes and backslashes escaped (the `quoted` filter)."""
    return json.dumps(one_line(value), ensure_ascii=False)


_ENV.filters["line"] = one_line
_ENV.filters["quoted"] = quoted
_SECTION = re.compile(r"^--- (system|user|assistant) ---\s*$", re.MULTILINE)


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded template; `render` returns the chat messages."""

    package: str
    name: str
    version: int
    source: str

    @property
    def version_tag(self) -> str:
        return f"v{self.version}"

    def render(self, **variables: Any) -> tuple[Message, ...]:
        """The chat messages. Roles come from the template's own `--- role ---` lines, split before rendering,
        so a variable (an item title, a memory) that contains such a line stays text in its own message."""
        try:
            return tuple(Message(role, _compiled(body).render(**variables).strip()) for role, body in self.sections)
        except jinja2.UndefinedError as exc:
            raise ValueError(f"template {self.package}/prompts/{self.name}.v{self.version}.j2: {exc}") from exc

    @property
    def sections(self) -> tuple[tuple[str, str], ...]:
        """(role, template source) per message; a template without role lines is one user message."""
        return _sections(self.source)


@cache
def _sections(source: str) -> tuple[tuple[str, str], ...]:
    parts = _SECTION.split(source)
    if len(parts) == 1:
        return (("user", source),)
    return tuple(zip(parts[1::2], parts[2::2], strict=True))


@cache
def _compiled(source: str) -> jinja2.Template:
    """Compile each template source once (compiling costs milliseconds; rendering, microseconds)."""
    return _ENV.from_string(source)


@cache
def load_template(package: str, name: str, version: int = 1) -> PromptTemplate:
    """Load `<package>/prompts/<name>.v<version>.j2` from the installed package."""
    path = resources.files(package) / "prompts" / f"{name}.v{version}.j2"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt template {package}/prompts/{name}.v{version}.j2")
    return PromptTemplate(package=package, name=name, version=version, source=path.read_text(encoding="utf-8"))
