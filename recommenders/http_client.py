"""A recommender served over HTTP: each page is one JSON POST to the service.

The contract (also in docs/CONTRACTS.md):

    POST <url>   {"user_id": "196", "k": 4, "exclude": ["242", "302", ...], "history": ["51"]}
    200          {"item_ids": ["1", "50", "181", "100"]}

Ids are the dataset's raw ids as strings (`ids="raw"`, default) or dense integers (`ids="dense"`).
`exclude` holds the user's consumed items plus everything already shown this session; `history` the items
watched this session, oldest first. The service should answer `k` distinct ids not in `exclude`, best first.

Transport: httpx2 (or httpx), which the openai dependency installs. Every request has a timeout; timeouts,
connection errors, 429/5xx and unreadable bodies are retried (`max_retries`, exponential backoff from
`backoff_s`, honouring a short Retry-After); other 4xx are not retried. At most `concurrency` requests are
in flight (`recommend_batch` fans a batch out up to that bound).
Every failed attempt and every dropped id is logged (`logging`, logger `recommenders.http_client`) and
counted (`stats`, `failures`). A page never goes out with an excluded or unknown id: bad ids are dropped,
and whatever the service did not supply comes from the fallback policy.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from recommenders.external import ExternalConfig, ExternalRecommender, IdMap
from simenv.records import PageRequest, Recommendation

log = logging.getLogger(__name__)

MAX_FAILURE_RECORDS = 1000
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class HTTPRecommenderError(RuntimeError):
    """The service failed a request for good (after retries); the message names URL, status and body."""


@dataclass(frozen=True)
class HTTPConfig(ExternalConfig):
    """`url` of the POST endpoint; `timeout_s` per attempt; `max_retries` extra attempts; `backoff_s` first
    wait (doubling); `concurrency` requests in flight at most; `score_depth` items asked for by `score`."""

    url: str = ""
    timeout_s: float = 5.0
    max_retries: int = 2
    backoff_s: float = 0.05
    concurrency: int = 4
    score_depth: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"HTTPConfig.url must start with http:// or https://, got {self.url!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"HTTPConfig.timeout_s must be positive, got {self.timeout_s!r}")
        for field in ("max_retries", "concurrency", "score_depth"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < (0 if field == "max_retries" else 1):
                least = "non-negative" if field == "max_retries" else "positive"
                raise ValueError(f"HTTPConfig.{field} must be a {least} int, got {value!r}")
        if self.backoff_s < 0:
            raise ValueError(f"HTTPConfig.backoff_s must be >= 0, got {self.backoff_s!r}")


@dataclass(frozen=True)
class Failure:
    """One failed attempt: which user, which attempt (0 = first), what kind, and the detail logged."""

    user_id: int
    attempt: int
    kind: str
    detail: str


class HTTPRecommender(ExternalRecommender):
    """Pages from an HTTP service (the JSON contract in the module docstring); `fit` trains only the fallback.

    Scores (for offline metrics) come from asking the service for its top `score_depth` items with nothing
    excluded: those rank above every other item, which follow by train popularity.
    """

    name: ClassVar[str] = "http"
    Config = HTTPConfig

    def __init__(self, config: Any = None, *, id_map: IdMap | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        if self.config.ids == "raw" and id_map is None:
            raise ValueError(f"http {self.config.url}: ids='raw' needs the dataset's id map (id_map=IdMap.of(dataset))")
        self.id_map = id_map
        self.failures: list[Failure] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.config.concurrency)
        self._client: Any = None

    def __repr__(self) -> str:
        return f"HTTPRecommender(url={self.config.url!r}, ids={self.config.ids!r}, fallback={self.config.fallback!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_client=None, _lock=None, _slots=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.config.concurrency)

    # ---- wire format ----------------------------------------------------------------------------------
    def _wire_items(self, ids: Collection[int]) -> list[Any]:
        if self.config.ids == "dense":
            return [int(i) for i in ids]
        assert self.id_map is not None
        return [str(self.id_map.item_raw[int(i)]) for i in ids]

    def payload(self, user_id: int, k: int, exclude: Collection[int], history: Sequence[int]) -> dict[str, Any]:
        """The JSON body of one page request."""
        user: Any = int(user_id)
        if self.config.ids == "raw":
            assert self.id_map is not None
            user = str(self.id_map.user_raw[int(user_id)])
        return {
            "user_id": user,
            "k": int(k),
            "exclude": self._wire_items(sorted(int(i) for i in exclude)),
            "history": self._wire_items(history),
        }

    def _dense_answer(self, answer: list[Any]) -> list[Any]:
        """Dense ids of the answer; an unknown or malformed id becomes an `<unknown ...>` marker string (then
        dropped and logged), never an int that could pass for a dense id."""
        if self.config.ids == "dense":
            return [a if isinstance(a, int) and not isinstance(a, bool) else f"<unknown {a!r}>" for a in answer]
        assert self.id_map is not None
        mapped = self.id_map.dense_items(answer)
        return [m if m is not None else f"<unknown {a!r}>" for a, m in zip(answer, mapped, strict=True)]

    # ---- transport ------------------------------------------------------------------------------------
    def client(self) -> Any:
        if self._client is None:
            httpx = _httpx()
            limits = httpx.Limits(
                max_connections=self.config.concurrency, max_keepalive_connections=self.config.concurrency
            )
            self._client = httpx.Client(timeout=httpx.Timeout(self.config.timeout_s), limits=limits)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _record(self, user_id: int, attempt: int, kind: str, detail: str, final: bool) -> None:
        with self._lock:
            self.stats[f"fail_{kind}"] += 1
            if len(self.failures) < MAX_FAILURE_RECORDS:
                self.failures.append(Failure(user_id, attempt, kind, detail))
        what = "giving up, page from the fallback" if final else "retrying"
        log.warning("http %s: user %d attempt %d: %s (%s); %s", self.config.url, user_id, attempt, kind, detail, what)

    def request(self, user_id: int, body: dict[str, Any], k: int) -> list[Any]:
        """POST `body`, retrying transient failures; the answer's `item_ids` (dense where known), or
        `HTTPRecommenderError` after the last attempt."""
        httpx = _httpx()
        attempts = self.config.max_retries + 1
        last = ""
        for attempt in range(attempts):
            final = attempt == attempts - 1
            retry_after = 0.0
            try:
                with self._slots:
                    with self._lock:
                        self.stats["requests"] += 1
                    response = self.client().post(self.config.url, json=body)
                if response.status_code != 200:
                    detail = f"HTTP {response.status_code}: {response.text[:200]!r}"
                    kind = f"http_{response.status_code}"
                    retryable = response.status_code in RETRY_STATUS
                    retry_after = _retry_after(response.headers.get("retry-after"), self.config.timeout_s)
                else:
                    return self._dense_answer(_item_ids(response.content))
            except httpx.TimeoutException as exc:
                kind, detail, retryable = (
                    "timeout",
                    f"no answer within {self.config.timeout_s} s ({type(exc).__name__})",
                    True,
                )
            except httpx.TransportError as exc:
                kind, detail, retryable = "connection", f"{type(exc).__name__}: {exc}", True
            except ValueError as exc:
                kind, detail, retryable = "invalid_body", str(exc), True
            last = f"{kind}: {detail}"
            self._record(user_id, attempt, kind, detail, final or not retryable)
            if not retryable:
                break
            if not final:
                time.sleep(max(retry_after, self.config.backoff_s * 2**attempt))
        raise HTTPRecommenderError(f"http {self.config.url}: user {user_id}: {last}")

    # ---- the policy -----------------------------------------------------------------------------------
    def _external_page(
        self, user_id: int, k: int, exclude: Collection[int], history: Sequence[int]
    ) -> list[Any] | None:
        try:
            return self.request(user_id, self.payload(user_id, k, exclude, history), k)
        except HTTPRecommenderError:
            with self._lock:
                self.stats["failed_pages"] += 1
            return []

    def keep_valid(self, user_id: int, proposed: Sequence[Any], allowed: np.ndarray, k: int) -> list[int]:
        with self._lock:
            return super().keep_valid(user_id, proposed, allowed, k)

    def fill(
        self, user_id: int, chosen: list[int], k: int, allowed: np.ndarray, rng: np.random.Generator
    ) -> Recommendation:
        with self._lock:
            return super().fill(user_id, chosen, k, allowed, rng)

    def recommend_batch(self, requests: Sequence[PageRequest]) -> list[Recommendation]:
        """`recommend` for each request, at most `concurrency` requests in flight; results in order (the
        runner's page-by-page loop serves a step's sessions this way). Each request has its own generator, so
        the pages do not depend on completion order."""

        def one(r: PageRequest) -> Recommendation:
            return self.recommend(r.user_id, r.k, r.exclude, r.rng, r.history)

        if len(requests) <= 1 or self.config.concurrency == 1:
            return [one(r) for r in requests]
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            return list(pool.map(one, requests))

    def score_batch(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        base = (self.popularity / (float(self.popularity.max()) + 1.0)).astype(np.float32)
        out = np.tile(base, (len(user_ids), 1))
        depth = min(self.config.score_depth, self.n_items)
        for row, user in enumerate(user_ids):
            history = histories[row] if histories is not None else ()
            try:
                answer = self.request(int(user), self.payload(int(user), depth, (), history), depth)
            except HTTPRecommenderError:
                continue  # logged; popularity order only
            ranked = self.keep_valid(int(user), answer, np.ones(self.n_items, dtype=bool), depth)
            out[row, ranked] = 1.0 + np.arange(len(ranked), 0, -1, dtype=np.float32)
        return out

    def probe(self, user_id: int, k: int, exclude: Collection[int]) -> list[int]:
        """One request without the fallback: raises `HTTPRecommenderError` if the service fails or answers
        unknown, excluded, repeated or too few ids (used to fail before a simulation starts)."""
        answer = self.request(user_id, self.payload(user_id, k, exclude, ()), k)
        excluded = set(int(i) for i in exclude)
        bad = [a for a in answer if not isinstance(a, int) or not 0 <= a < self.n_items or a in excluded]
        if bad or len(set(answer)) != k:
            raise HTTPRecommenderError(
                f"http {self.config.url}: user {self.source_user(user_id)}: answered {len(answer)} id(s) for k={k} "
                f"with {len(bad)} unknown or excluded, e.g. {self.source_items(bad[:5])}"
            )
        return answer

    @classmethod
    def load(cls, path: Any) -> HTTPRecommender:  # type: ignore[override]
        meta, state = cls.read_saved(path)
        model = cls(meta["config"], id_map=cls.read_id_map(path))
        model.apply_saved(meta, state)
        return model

    def _fit(self, valid: pd.DataFrame | None) -> None:
        super()._fit(valid)
        if self.id_map is not None and (len(self.id_map.item_raw) != self.n_items):
            raise ValueError(
                f"http {self.config.url}: id map has {len(self.id_map.item_raw)} items, data {self.n_items}"
            )


def _httpx() -> Any:
    """The httpx API: `httpx2` (what openai >= 2 installs) or `httpx` (older openai); both are thread-safe."""
    try:
        import httpx2

        return httpx2
    except ImportError:
        pass
    try:
        import httpx

        return httpx
    except ImportError as exc:  # pragma: no cover - one of them comes with openai, a core dependency
        raise ImportError("the HTTP recommender needs httpx2 or httpx: pip install httpx2") from exc


def _item_ids(content: bytes) -> list[Any]:
    """The `item_ids` list of a 200 answer; ValueError names what is wrong with the body."""
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        raise ValueError(f"body is not JSON ({exc}): {content[:120]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("item_ids"), list):
        raise ValueError(f"body has no item_ids list: {content[:120]!r}")
    return data["item_ids"]


def _retry_after(header: str | None, cap: float) -> float:
    """Seconds from a Retry-After header (numbers only), capped at the request timeout."""
    try:
        return min(max(float(header), 0.0), cap) if header else 0.0
    except ValueError:
        return 0.0
