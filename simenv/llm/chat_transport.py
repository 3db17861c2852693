"""One chat-completions attempt against one endpoint: through the `openai` SDK (the default) or a direct aiohttp POST.

Both transports send the same JSON body (bytes built once per call by the backend) to `<base_url>/chat/completions`
and return the raw response bytes; a failed attempt raises `AttemptError` with a transport-independent `kind`
(`http_429`, `http_503`, `timeout`, `connection`) and the server's `Retry-After` when it sent one. They never
retry: the SDK is built with `max_retries=0`, so every attempt is the backend's own and on record
(`simenv.llm.openai_backend`). Transports are built, used and closed on the backend's event-loop thread.

- `SDKTransport` (`http_client` "aiohttp" or "httpx"): `AsyncOpenAI.post`, the SDK's documented way to send a
  hand-made body; it adds the SDK's headers (organisation, project, platform) and honours its env variables.
- `DirectTransport` (`http_client` "direct"): an aiohttp session with a pooled connector and the bearer key in
  its default headers, plus the organisation and project headers from the SDK's variables (`OPENAI_ORG_ID`,
  `OPENAI_PROJECT_ID`) and the proxy from `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY`. ~3-4x less client CPU per
  call than the SDK path (`python -m benchmarks.bench_llm`), which matters against fast servers at high
  concurrency. `http_client` "auto" uses it for every endpoint other than OpenAI's own API (`is_openai_api`).

The API key lives only inside the client objects: never in an attribute of ours, a repr, a log or a message. A
query string in a base URL (`?api-key=...`) is sent with every request and, like the key, redacted from every
message and file (`simenv.llm.secrets.redact`).
"""

from __future__ import annotations

import email.utils
import importlib.metadata
import inspect
import math
import os
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Protocol

CHAT_PATH = "chat/completions"
DEFAULT_BASE_URL = "https://api.openai.com/v1"  # the SDK's default, used by the direct transport too
OPENAI_API_HOSTS = frozenset({"api.openai.com"})  # where "auto" keeps the SDK (its headers, its env handling)
_SDK_HEADER_VARIABLES = {"OpenAI-Organization": "OPENAI_ORG_ID", "OpenAI-Project": "OPENAI_PROJECT_ID"}
try:
    USER_AGENT = f"simrec/{importlib.metadata.version('simrec')} (direct transport)"
except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
    USER_AGENT = "simrec (direct transport)"
MAX_RETRY_AFTER_S = 60.0  # a longer Retry-After is ignored (backoff instead), as the SDK does
_RETRYABLE_STATUS = frozenset({408, 409, 429})


class AttemptError(Exception):
    """One failed attempt: `kind` names the error class, `retryable` says whether another attempt may succeed,
    `retry_after_s` is the wait the server asked for (None if it did not)."""

    def __init__(self, kind: str, detail: str = "", retry_after_s: float | None = None, retryable: bool = True):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail
        self.retry_after_s = retry_after_s
        self.retryable = retryable


def status_error(status: int, detail: str, headers: Mapping[str, str] | None) -> AttemptError:
    """The `AttemptError` of an HTTP error status (429, 408, 409 and 5xx are worth another attempt)."""
    retryable = status in _RETRYABLE_STATUS or status >= 500
    return AttemptError(f"http_{status}", detail, retry_after(headers), retryable)


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked to wait (`retry-after-ms`, or `retry-after` in seconds or as an HTTP date)."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        if "retry-after-ms" in lower:
            seconds = float(lower["retry-after-ms"]) / 1000
        elif "retry-after" in lower:
            value = lower["retry-after"].strip()
            try:
                seconds = float(value)
            except ValueError:
                date = email.utils.parsedate_to_datetime(value)
                seconds = date.timestamp() - time.time()
        else:
            return None
    except (TypeError, ValueError, OverflowError):
        return None
    return seconds if math.isfinite(seconds) and 0 <= seconds <= MAX_RETRY_AFTER_S else None


class ChatTransport(Protocol):
    """Sends one attempt; raises `AttemptError` for a failed one."""

    async def post(self, body: bytes, timeout_s: float) -> bytes: ...

    async def aclose(self) -> None: ...


class SDKTransport:
    """An `openai.AsyncOpenAI` client with retries off and a pool of >= `concurrency` connections."""

    def __init__(self, base_url: str | None, api_key: str, concurrency: int, http_client: str) -> None:
        try:
            import openai
        except ImportError as exc:
            raise ImportError("the openai backend needs the openai SDK: pip install 'openai[aiohttp]>=1.40'") from exc
        self._openai = openai
        default = openai.DEFAULT_CONNECTION_LIMITS  # an httpx Limits: same class whatever httpx the SDK ships
        limits = type(default)(
            max_connections=max(concurrency, default.max_connections or 0),
            max_keepalive_connections=max(concurrency, default.max_keepalive_connections or 0),
            keepalive_expiry=default.keepalive_expiry,
        )
        cls = openai.DefaultAioHttpClient if http_client == "aiohttp" else openai.DefaultAsyncHttpxClient
        http = cls(limits=limits)
        base_url, query = split_query(base_url)
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, http_client=http, default_query=query or None
        )
        # raw bytes go in `content` (SDKs of 2026+); older ones took them as `body`
        self._bytes_arg = "content" if "content" in inspect.signature(self._client.post).parameters else "body"

    async def post(self, body: bytes, timeout_s: float) -> bytes:
        openai = self._openai
        start = time.monotonic()
        try:
            options = {"timeout": timeout_s, "max_retries": 0}
            return await self._client.post("/" + CHAT_PATH, cast_to=bytes, options=options, **{self._bytes_arg: body})
        except openai.APIStatusError as exc:
            raise status_error(exc.status_code, _first_line(exc), exc.response.headers) from None
        except openai.APITimeoutError as exc:
            # the aiohttp client reports a refused connection as a connect *timeout*; a refusal comes at once, so
            # one that took the whole timeout is a timeout whatever its exception's context holds
            refused = _refusal(exc) if time.monotonic() - start < 0.9 * timeout_s else None
            if refused is not None:
                raise AttemptError("connection", _first_line(refused)) from None
            raise AttemptError("timeout", f"no answer within {timeout_s:g} s") from None
        except openai.APIConnectionError as exc:
            raise AttemptError("connection", _first_line(exc.__cause__ or exc)) from None

    async def aclose(self) -> None:
        await self._client.close()


class DirectTransport:
    """A pooled aiohttp session posting straight to `<base_url>/chat/completions` (no SDK in the path)."""

    def __init__(self, base_url: str | None, api_key: str, concurrency: int) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        base_url, query = split_query(base_url)
        self.url = (base_url or DEFAULT_BASE_URL).rstrip("/") + "/" + CHAT_PATH
        if query:
            self.url += "?" + urllib.parse.urlencode(query)
        self._proxy = env_proxy(self.url)  # not aiohttp's trust_env: that also reads ~/.netrc credentials
        headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,  # some gateways' firewalls refuse requests without one
            **sdk_headers(),
        }
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(connector=connector, headers=headers)

    async def post(self, body: bytes, timeout_s: float) -> bytes:
        aiohttp = self._aiohttp
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self._session.post(self.url, data=body, timeout=timeout, proxy=self._proxy) as r:
                raw = await r.read()
                if r.status >= 400:
                    raise status_error(r.status, raw[:200].decode("utf-8", "replace"), r.headers)
                return raw
        except TimeoutError:
            raise AttemptError("timeout", f"no answer within {timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise AttemptError("connection", _first_line(exc)) from None

    async def aclose(self) -> None:
        await self._session.close()


def is_openai_api(base_url: str | None) -> bool:
    """True for OpenAI's hosted API (no base URL means the SDK's default, which is it)."""
    if base_url is None:
        return True
    return (urllib.parse.urlsplit(base_url.strip()).hostname or "").lower() in OPENAI_API_HOSTS


def sdk_headers() -> dict[str, str]:
    """The organisation and project headers the SDK sends when its variables are set (same names, same headers)."""
    return {header: os.environ[name] for header, name in _SDK_HEADER_VARIABLES.items() if os.environ.get(name)}


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (`HTTPS_PROXY`/`HTTP_PROXY`, else `ALL_PROXY`, unless `NO_PROXY`
    exempts its host), as httpx under the SDK reads them."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


def split_query(base_url: str | None) -> tuple[str | None, dict[str, str]]:
    """A base URL without its query string, and the query's parameters: sent with every request (some gateways
    take the key as `?api-key=...`), after the path, where the SDK would otherwise have appended it to the query."""
    if base_url is None or "?" not in base_url:
        return base_url, {}
    parts = urllib.parse.urlsplit(base_url)
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit(parts._replace(query="", fragment="")), query


def _refusal(exc: BaseException) -> BaseException | None:
    """The refused connection or failed name lookup in `exc`'s causes (not a timeout), if any."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionError | socket.gaierror):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
