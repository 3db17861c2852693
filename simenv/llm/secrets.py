"""Keep secrets out of every message: config errors, logs, call logs, run directories and reprs.

A *secret name* is a key or flag whose last part is `key`, `token`, `secret`, `password` (or `passwd`,
`credential(s)`, `auth`), e.g. `api_key`, `llm.api-key`, `HF_TOKEN`; plural counters such as `max_tokens` are
not secrets. A *secret value* is the value of an environment variable with a secret name (at least 6
characters, so that `TOKEN=1` does not blank every "1"). `redact` replaces every secret value in a text;
`shown` is how a config value appears in an error message.

`redact` also blanks what a URL or a header can carry: the userinfo of a URL (`http://user:pass@host` ->
`http://<redacted>@host`), the whole query string of an http(s) URL (`?api-key=...` -> `?<redacted>`: any
parameter may be a key or a signature) and the value of an `Authorization` header or of a header whose name ends
in a secret word (`X-Api-Key: ...`, `"api-key": "..."`) when the value looks like a key (8+ characters of a
token's alphabet: a title such as "The Secret: A Story" is left alone).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "<redacted>"
MIN_SECRET_LENGTH = 6
_SECRET_NAME = re.compile(r"(?:^|[_.\-])(?:api_?key|key|token|secret|password|passwd|credentials?|auth)$", re.I)
_SECRET_PREFIX = re.compile(r"^(?:sk|pk|rk|hf|ghp|gho|xox[bap])[-_][A-Za-z0-9_\-]{8,}$")
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.\-]*://)[^/\s@?#\"'<>]+@", re.I)
_URL_QUERY = re.compile(r"(\bhttps?://[^\s?#\"'<>]*)\?[^\s#\"'<>]+", re.I)
_HEADER = re.compile(
    r"""((?:proxy-)?authorization|[\w-]*(?:api[-_]?key|token|secret|password))(["']?\s*[:=]\s*["']?)"""
    r"""(?:(?:bearer|basic|token)\s+)?(?!<redacted>)[A-Za-z0-9._~+/=\-]{8,}""",  # key-like values, not prose
    re.I,
)


def is_secret_name(name: object) -> bool:
    """True for a key, flag or variable name that names a secret (`api_key`, `--llm.api-key`, `HF_TOKEN`)."""
    text = str(name).lstrip("-")
    return bool(text) and (_SECRET_NAME.search(text) is not None or text.lower() in ("key", "token"))


def looks_like_secret(value: object) -> bool:
    """True for a string shaped like a vendor API key (`sk-...`, `hf_...`, `ghp_...`)."""
    return isinstance(value, str) and _SECRET_PREFIX.match(value.strip()) is not None


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of secret-named environment variables, longest first (so overlapping values redact fully)."""
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if is_secret_name(k) and len(v) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact(text: str, extra: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> str:
    """`text` with every secret value (from the environment, plus `extra`) replaced by `<redacted>`."""
    given = {s for s in extra if len(s) >= 4}  # a secret given explicitly is redacted even when short
    secrets = sorted({*env_secrets(environ), *given}, key=len)
    for secret in reversed(secrets):
        text = text.replace(secret, REDACTED)
    if "://" in text:
        text = redact_urls(text)
    if ":" in text or "=" in text:
        text = _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return text


def redact_urls(text: str) -> str:
    """`text` with the userinfo and the query string of every URL in it replaced by `<redacted>`."""
    text = _URL_QUERY.sub(lambda m: f"{m.group(1)}?{REDACTED}", text)
    return _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)


def url_userinfo(url: str) -> bool:
    """True if `url` carries credentials in its userinfo (`scheme://user:pass@host`)."""
    return _URL_USERINFO.match(url.strip()) is not None


def scrub(value: Any, name: object = "") -> Any:
    """A copy of `value` (nested dicts/lists) with secret-named entries and key-shaped strings redacted."""
    if is_secret_name(name):
        return REDACTED
    if isinstance(value, Mapping):
        return {k: scrub(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub(v) for v in value)
    if looks_like_secret(value):
        return REDACTED
    return value


def shown(value: Any, path: Iterable[object] = ()) -> str:
    """`repr(value)` for an error message: `<redacted>` if any part of its path names a secret, if it looks like
    an API key, or if it contains an environment secret; nested secret entries are redacted too."""
    if any(is_secret_name(p) for p in path):
        return REDACTED
    text = repr(scrub(value))
    if len(text) > 80:
        text = text[:77] + "..."
    return redact(text)


def secret_argv_values(argv: Iterable[str]) -> list[str]:
    """Values given on a command line to secret-named flags (`--x.api-key V` or `--x.api-key=V`)."""
    out: list[str] = []
    args = list(argv)
    for i, arg in enumerate(args):
        if not arg.startswith("-"):
            continue
        flag, eq, value = arg.partition("=")
        if not is_secret_name(flag):
            continue
        if eq:
            out.append(value)
        elif i + 1 < len(args):
            out.append(args[i + 1])
    return [v for v in out if v]
