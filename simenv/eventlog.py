"""A run directory's log: `config.json` plus tables appended as numbered parquet part files.

Layout: `<run_dir>/config.json`, `<run_dir>/<table>/part-NNNNN.parquet` for tables `events` (one row per
shown item), `pages`, `interviews` (and `llm_calls`, written by the LLM call log the same way).
Each part is written to a temporary file and renamed, so a crash (even kill -9) leaves only whole parts;
`checkpoint` records how many parts each table had at a consistent point so a resumed run can drop the
parts of the work it redoes (see `simenv.runner`). `read_table` concatenates the parts in order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from simenv.records import Interview, Page, PageFeedback

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.json"
_PART = "part-{:05d}.parquet"

EVENTS_SCHEMA = pa.schema(
    [
        ("run", pa.string()),
        ("policy", pa.string()),
        ("episode", pa.int64()),
        ("user", pa.int64()),
        ("page", pa.int32()),
        ("position", pa.int32()),
        ("item", pa.int64()),
        ("watched", pa.bool_()),
        ("rating", pa.int8()),
        ("liked", pa.bool_()),
        ("left", pa.bool_()),
        ("reward", pa.float64()),
        ("llm_call_id", pa.string()),
        ("propensity", pa.float64()),
        ("feeling", pa.string()),
    ]
)
PAGES_SCHEMA = pa.schema(
    [
        ("run", pa.string()),
        ("policy", pa.string()),
        ("episode", pa.int64()),
        ("user", pa.int64()),
        ("page", pa.int32()),
        ("n_items", pa.int32()),
        ("n_watched", pa.int32()),
        ("n_liked", pa.int32()),
        ("left", pa.bool_()),
        ("reward", pa.float64()),
        ("n_repaired", pa.int32()),
        ("fallback", pa.bool_()),
        ("reason", pa.string()),
        ("llm_call_ids", pa.string()),
    ]
)
INTERVIEWS_SCHEMA = pa.schema(
    [
        ("run", pa.string()),
        ("policy", pa.string()),
        ("episode", pa.int64()),
        ("user", pa.int64()),
        ("n_pages", pa.int32()),
        ("score", pa.int32()),
        ("fallback", pa.bool_()),
        ("reason", pa.string()),
        ("llm_call_ids", pa.string()),
    ]
)
SCHEMAS: dict[str, pa.Schema] = {"events": EVENTS_SCHEMA, "pages": PAGES_SCHEMA, "interviews": INTERVIEWS_SCHEMA}


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _parts(table_dir: Path) -> list[Path]:
    return sorted(table_dir.glob("part-*.parquet"))


class RunLog:
    """Appends rows to a run directory's tables; one call to `append` writes one whole part file."""

    def __init__(self, run_dir: str | Path, run_id: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id or self.run_dir.name
        for stale in self.run_dir.glob("**/*.tmp"):  # half-written parts of a crashed process
            stale.unlink()
        self._next: dict[str, int] = {}

    def write_config(self, config: Mapping[str, Any]) -> None:
        text = json.dumps(dict(config), indent=2, sort_keys=True, default=str)
        _atomic_write_bytes(self.run_dir / CONFIG_FILE, text.encode())

    def read_config(self) -> dict[str, Any] | None:
        path = self.run_dir / CONFIG_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def append(self, table: str, rows: Sequence[Mapping[str, Any]]) -> Path | None:
        """Write `rows` as the table's next part file; nothing is written for no rows."""
        if not rows:
            return None
        table_dir = self.run_dir / table
        if table not in self._next:
            table_dir.mkdir(exist_ok=True)
            self._next[table] = len(_parts(table_dir))
        schema = SCHEMAS.get(table)
        try:
            arrow = pa.Table.from_pylist(list(rows), schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(f"{table} rows do not fit the table schema: {exc}") from exc
        path = table_dir / _PART.format(self._next[table])
        sink = pa.BufferOutputStream()
        pq.write_table(arrow, sink)
        _atomic_write_bytes(path, sink.getvalue().to_pybytes())
        self._next[table] += 1
        return path

    def part_counts(self) -> dict[str, int]:
        """Number of part files per table currently on disk."""
        return {p.name: len(_parts(p)) for p in sorted(self.run_dir.iterdir()) if p.is_dir()}

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        """Record a consistent point: `state` plus the current part counts of every table."""
        payload = {"state": dict(state), "parts": self.part_counts()}
        _atomic_write_bytes(self.run_dir / CHECKPOINT_FILE, json.dumps(payload, sort_keys=True).encode())

    def read_checkpoint(self) -> dict[str, Any] | None:
        path = self.run_dir / CHECKPOINT_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def rollback(self, parts: Mapping[str, int]) -> None:
        """Delete part files written after a checkpoint (`parts` maps table -> count to keep; absent -> 0)."""
        for table_dir in sorted(p for p in self.run_dir.iterdir() if p.is_dir()):
            keep = int(parts.get(table_dir.name, 0))
            for path in _parts(table_dir)[keep:]:
                path.unlink()
        self._next.clear()


def read_table(run_dir: str | Path, name: str) -> pd.DataFrame:
    """All rows of a table, parts in order; an empty frame with the table's columns if nothing was written."""
    table_dir = Path(run_dir) / name
    parts = _parts(table_dir) if table_dir.is_dir() else []
    if not parts:
        schema = SCHEMAS.get(name)
        return schema.empty_table().to_pandas() if schema is not None else pd.DataFrame()
    tables = [pq.read_table(p) for p in parts]
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def event_rows(
    run: str,
    policy: str,
    episode: int,
    user: int,
    page: Page,
    feedback: PageFeedback,
    rewards: Sequence[float],
) -> list[dict[str, Any]]:
    """One `events` row per shown item. Propensity: the page's if the policy is stochastic, else NaN (unknown)."""
    call_id = ",".join(feedback.llm_call_ids)
    props = page.propensities
    return [
        {
            "run": run,
            "policy": policy,
            "episode": episode,
            "user": user,
            "page": page.page_index,
            "position": pos,
            "item": item,
            "watched": reaction.watched,
            "rating": reaction.rating if reaction.watched else None,
            "liked": reaction.liked,
            "left": feedback.left,
            "reward": float(rewards[pos]),
            "llm_call_id": call_id,
            "propensity": float(props[pos]) if props is not None else float("nan"),
            "feeling": reaction.feeling,
        }
        for pos, (item, reaction) in enumerate(zip(page.item_ids, feedback.reactions, strict=True))
    ]


def page_row(
    run: str, policy: str, episode: int, user: int, page: Page, feedback: PageFeedback, reward: float, n_repaired: int
) -> dict[str, Any]:
    return {
        "run": run,
        "policy": policy,
        "episode": episode,
        "user": user,
        "page": page.page_index,
        "n_items": len(page.item_ids),
        "n_watched": feedback.n_watched,
        "n_liked": feedback.n_liked,
        "left": feedback.left,
        "reward": float(reward),
        "n_repaired": n_repaired,
        "fallback": feedback.fallback,
        "reason": feedback.reason,
        "llm_call_ids": ",".join(feedback.llm_call_ids),
    }


def interview_row(run: str, policy: str, episode: int, n_pages: int, interview: Interview) -> dict[str, Any]:
    return {
        "run": run,
        "policy": policy,
        "episode": episode,
        "user": interview.user_id,
        "n_pages": n_pages,
        "score": interview.score,
        "fallback": interview.fallback,
        "reason": interview.reason,
        "llm_call_ids": ",".join(interview.llm_call_ids),
    }
