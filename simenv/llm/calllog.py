"""The run's LLM call log: one row per call, appended as numbered parquet part files.

`CallLogLLM` wraps any `LLM` and writes `<directory>/part-NNNNN.parquet` (normally `<run_dir>/llm_calls/`).
Rows wait in memory until `flush_every` have gathered; they are flushed at the start of the next call (or on
`close`), so the structured layer's outcome report for a response — parse status, repair index, fallback —
lands in the row before it is written. A crash loses at most the calls since the last part file. Reopening a
directory continues the numbering (resume). `read_call_log` concatenates the parts.

Every attempt is on record: `attempts` (HTTP requests sent for the call: 1 + `retries`; 0 for a cache hit or a
call that never reached a backend), `attempt_errors` (the error kind of each failed attempt, comma-separated, e.g.
`http_429,timeout`) and `retry_wait_s` (seconds waited between attempts). With `prompts="full"` (the run's
`--log.prompts full`) each row also stores the rendered prompt (`prompt`, the messages as JSON; `prompt_hash`
identifies it either way) and the raw answer text (`answer`), so a run can be audited; by default both are null.
Neither ever holds the API key: requests carry none, and secret values from the environment are redacted.

Call ids: the backend's deterministic `request.call_id()`; a repeat of the same id within the log gets a
`-N` suffix so every row's id is unique and the user layer can link feedback rows to it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from simenv.llm.secrets import redact
from simenv.llm.types import LLM, BudgetExceeded, LLMError, LLMRequest, LLMResponse
from simenv.llm.wrapper import LLMWrapper

logger = logging.getLogger(__name__)

CALL_LOG_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("call_id", pa.string()),
        ("template", pa.string()),
        ("template_version", pa.string()),
        ("purpose", pa.string()),
        ("attempt", pa.int64()),
        ("backend", pa.string()),
        ("model", pa.string()),
        ("prompt_hash", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("latency_s", pa.float64()),
        ("cache_hit", pa.bool_()),
        ("error", pa.string()),
        ("parse_status", pa.string()),
        ("repairs", pa.int64()),
        ("fallback", pa.bool_()),
        ("retries", pa.int64()),
        ("prompt", pa.string()),
        ("attempts", pa.int64()),
        ("attempt_errors", pa.string()),
        ("retry_wait_s", pa.float64()),
        ("answer", pa.string()),
    ]
)
PROMPT_LOGGING = ("off", "full")


def _part_index(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


class CallLogLLM(LLMWrapper):
    """Logs every call of the wrapped `LLM`; implements `record_outcome` for the structured layer. `prompts`:
    "off" (default) or "full" (store each rendered prompt and raw answer)."""

    label = "calllog"

    def __init__(self, inner: LLM, directory: str | Path, flush_every: int = 256, prompts: str = "off") -> None:
        super().__init__(inner)
        if prompts not in PROMPT_LOGGING:
            raise ValueError(f"CallLogLLM.prompts must be one of {PROMPT_LOGGING}, got {prompts!r}")
        self.prompts = prompts
        if flush_every < 1:
            raise ValueError(f"CallLogLLM.flush_every must be >= 1, got {flush_every}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.flush_every = flush_every
        self._lock = threading.Lock()
        self._pending: dict[str, dict[str, Any]] = {}
        parts = sorted(self.directory.glob("part-*.parquet"), key=_part_index)
        self._next_part = _part_index(parts[-1]) + 1 if parts else 0
        self._seen: Counter[str] = Counter()
        self._seq = 0
        for part in parts:  # resume: keep ids unique and seq increasing across restarts
            ids = pq.read_table(part, columns=["call_id"]).column("call_id").to_pylist()
            self._seen.update(i.split("-", 1)[0] for i in ids)
            self._seq += len(ids)

    @property
    def n_calls(self) -> int:
        """Calls logged so far, including those from earlier processes of a resumed run."""
        return self._seq

    # -- rows ---------------------------------------------------------------------------------------------
    def _unique_id(self, base: str) -> str:
        n = self._seen[base]
        self._seen[base] += 1
        return base if n == 0 else f"{base}-{n}"

    def _row(
        self,
        request: LLMRequest,
        response: LLMResponse | None,
        error: str,
        latency_s: float,
        raised: LLMError | None = None,
    ) -> dict[str, Any]:
        """One row; `response` is None for a call that raised `raised` (which carries its attempt record)."""
        if error:
            status = "call_error"
        else:
            status = "unstructured" if request.json_schema is None else "unchecked"
        record: Any = response if response is not None else raised
        retries = int(getattr(record, "retries", 0))
        kinds = tuple(getattr(record, "attempt_errors", ()))
        cache_hit = bool(response.cache_hit) if response else False
        attempts = 0 if cache_hit or isinstance(raised, BudgetExceeded) else 1 + retries  # the budget refuses unsent
        full = self.prompts == "full"
        row = {
            "seq": self._seq,
            "call_id": "",
            "template": request.template,
            "template_version": request.template_version,
            "purpose": request.purpose,
            "attempt": request.attempt,
            "backend": response.backend if response else self.inner.name,
            "model": response.model if response else self.model,
            "prompt_hash": request.prompt_hash(),
            "prompt_tokens": response.prompt_tokens if response else 0,
            "completion_tokens": response.completion_tokens if response else 0,
            "latency_s": response.latency_s if response and not error else latency_s,
            "cache_hit": cache_hit,
            "error": error,
            "parse_status": status,
            "repairs": request.attempt,
            "fallback": False,
            "retries": retries,
            "prompt": redact(request.prompt_text()) if full else None,
            "attempts": attempts,
            "attempt_errors": ",".join(kinds),
            "retry_wait_s": float(getattr(record, "retry_wait_s", 0.0)),
            "answer": redact(response.text) if full and response is not None else None,
        }
        self._seq += 1
        return row

    def _log(self, request: LLMRequest, response: LLMResponse) -> LLMResponse:
        with self._lock:
            row = self._row(request, response, response.error, response.latency_s)
            call_id = self._unique_id(response.call_id or request.call_id())
            row["call_id"] = call_id
            self._pending[call_id] = row
        return response if call_id == response.call_id else dataclasses.replace(response, call_id=call_id)

    def _log_failure(self, request: LLMRequest, exc: LLMError, latency_s: float) -> None:
        with self._lock:
            row = self._row(request, None, str(exc) or type(exc).__name__, latency_s, exc)
            call_id = self._unique_id(getattr(exc, "call_id", None) or request.call_id())
            row["call_id"] = call_id
            self._pending[call_id] = row
        exc.call_id = call_id  # type: ignore[attr-defined]  # lets ask_json report this call's outcome

    def record_outcome(self, call_id: str, parse_status: str, repairs: int, fallback: bool) -> None:
        with self._lock:
            row = self._pending.get(call_id)
            if row is None:
                logger.warning("call log: outcome for call %s arrived after its row was written; dropped", call_id)
                return
            row.update(parse_status=parse_status, repairs=repairs, fallback=fallback)
        super().record_outcome(call_id, parse_status, repairs, fallback)

    # -- LLM ------------------------------------------------------------------------------------------------
    def complete(self, request: LLMRequest) -> LLMResponse:
        self._flush_if_due()
        start = time.perf_counter()
        try:
            response = self.inner.complete(request)
        except LLMError as exc:
            self._log_failure(request, exc, time.perf_counter() - start)
            raise
        return self._log(request, response)

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        self._flush_if_due()
        responses = self.inner.complete_batch(requests)
        return [self._log(r, resp) for r, resp in zip(requests, responses, strict=True)]

    # -- files ----------------------------------------------------------------------------------------------
    def _flush_if_due(self) -> None:
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write all pending rows as the next part file (atomically: temp file, then rename)."""
        with self._lock:
            if not self._pending:
                return
            rows = list(self._pending.values())
            self._pending = {}
            path = self.directory / f"part-{self._next_part:05d}.parquet"
            self._next_part += 1
        table = pa.Table.from_pylist(rows, schema=CALL_LOG_SCHEMA)
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)

    def close(self) -> None:
        self.flush()
        super().close()

    def __enter__(self) -> CallLogLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CallLogLLM({self.inner!r}, directory={str(self.directory)!r})"


def read_call_log(directory: str | Path) -> pd.DataFrame:
    """All rows of a call-log directory, in call order (empty frame with the log's columns if none)."""
    parts = sorted(Path(directory).glob("part-*.parquet"), key=_part_index)
    if not parts:
        return CALL_LOG_SCHEMA.empty_table().to_pandas()
    frame = pa.concat_tables([_read_part(p) for p in parts]).to_pandas()
    return frame.sort_values("seq", kind="stable").reset_index(drop=True)


def _read_part(path: Path) -> pa.Table:
    """One part file in CALL_LOG_SCHEMA. Columns added since it was written read as: retries 0, attempts 1 +
    retries (0 for a cache hit: those logs counted every SDK retry), attempt_errors "" (kinds unknown), retry_wait_s
    null (not measured), prompt and answer null."""
    table = pq.read_table(path)
    n = len(table)
    for field in CALL_LOG_SCHEMA:
        if field.name in table.column_names:
            continue
        if field.name == "retries":
            fill = pa.array([0] * n, pa.int64())
        elif field.name == "attempts":
            retries = table.column("retries").to_pylist()
            hits = table.column("cache_hit").to_pylist() if "cache_hit" in table.column_names else [False] * n
            fill = pa.array([0 if h else 1 + int(r or 0) for r, h in zip(retries, hits, strict=True)], pa.int64())
        elif field.name == "attempt_errors":
            fill = pa.array([""] * n, pa.string())
        else:
            fill = pa.nulls(n, field.type)
        table = table.append_column(field, fill)
    return table.select(CALL_LOG_SCHEMA.names).cast(CALL_LOG_SCHEMA)
