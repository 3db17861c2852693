"""A persona's memory stream: records, generative-agents retrieval, rule-based importance, save/load.

Retrieval score = w_rec * recency + w_imp * importance + w_rel * relevance, each min-max normalised over the
candidate records (a component that is equal for all candidates becomes 0.5, as in generative agents).
recency = decay ** (now - t) in simulation time (pages shown to the user, not wall time); importance is 0..10
from rules (no LLM call); relevance is the cosine between the record's and the query's embeddings.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from agents.config import MemoryConfig
from agents.embedding import Embedder

logger = logging.getLogger(__name__)

MemoryKind = Literal["factual", "emotional", "reflection"]
KINDS: tuple[str, ...] = ("factual", "emotional", "reflection")
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """One memory. `time` is simulation time (pages); `evidence` holds ids of the memories it summarises."""

    memory_id: int
    kind: MemoryKind
    text: str
    time: float
    importance: float
    evidence: tuple[int, ...] = ()
    embedding: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), compare=False, repr=False)


def minmax(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a constant vector maps to 0.5 everywhere."""
    if values.size == 0:
        return values
    lo, hi = float(values.min()), float(values.max())
    if hi - lo <= 1e-12:
        return np.full_like(values, 0.5, dtype=np.float64)
    return (values - lo) / (hi - lo)


class MemoryStream:
    """Append-only list of memories with their embeddings in one growing matrix (fast cosine retrieval).

    `clock` is the user's simulation time: the number of pages seen so far across all episodes.
    """

    def __init__(self, embedder: Embedder, config: MemoryConfig | None = None) -> None:
        self.embedder = embedder
        self.config = config or MemoryConfig()
        self.records: list[MemoryRecord] = []
        self.clock = 0.0
        self._emb = np.zeros((16, embedder.dim), dtype=np.float32)
        self._times = np.zeros(16, dtype=np.float64)
        self._importance = np.zeros(16, dtype=np.float64)
        self._since_reflection = 0.0

    def __len__(self) -> int:
        return len(self.records)

    @property
    def importance_since_reflection(self) -> float:
        """Summed importance of non-reflection memories added since the last reflection."""
        return self._since_reflection

    def should_reflect(self) -> bool:
        return self._since_reflection >= self.config.reflection_threshold

    def _grow(self, need: int) -> None:
        cap = self._emb.shape[0]
        if need <= cap:
            return
        new_cap = max(need, 2 * cap)
        self._emb = np.resize(self._emb, (new_cap, self._emb.shape[1]))
        self._times = np.resize(self._times, new_cap)
        self._importance = np.resize(self._importance, new_cap)

    def add_many(
        self,
        entries: Sequence[tuple[MemoryKind, str, float, tuple[int, ...]]],
        time: float,
        embeddings: np.ndarray | None = None,
    ) -> list[MemoryRecord]:
        """Add (kind, text, importance, evidence) entries at `time`, embedding all texts in one call."""
        if not entries:
            return []
        for kind, text, importance, _ in entries:
            if kind not in KINDS:
                raise ValueError(f"memory kind must be one of {KINDS}, got {kind!r} for text {text[:40]!r}")
            if not 0.0 <= importance <= 10.0:
                raise ValueError(f"memory importance must be in [0, 10], got {importance!r} for {text[:40]!r}")
        if embeddings is None:
            embeddings = self.embedder.embed([e[1] for e in entries])
        if embeddings.shape != (len(entries), self.embedder.dim):
            raise ValueError(f"embeddings shape {embeddings.shape} != ({len(entries)}, {self.embedder.dim})")
        start = len(self.records)
        self._grow(start + len(entries))
        out = []
        for offset, ((kind, text, importance, evidence), vec) in enumerate(zip(entries, embeddings, strict=True)):
            i = start + offset
            self._emb[i] = vec
            self._times[i] = time
            self._importance[i] = importance
            rec = MemoryRecord(i, kind, text, float(time), float(importance), tuple(evidence), self._emb[i].copy())
            self.records.append(rec)
            if kind == "reflection":
                self._since_reflection = 0.0
            else:
                self._since_reflection += importance
            out.append(rec)
        return out

    def add(
        self, kind: MemoryKind, text: str, time: float, importance: float, evidence: tuple[int, ...] = ()
    ) -> MemoryRecord:
        """Add one memory (embeds its text)."""
        return self.add_many([(kind, text, importance, evidence)], time)[0]

    def scores(self, query: str | np.ndarray, now: float) -> np.ndarray:
        """The retrieval score of every record (see module docstring)."""
        n = len(self.records)
        if n == 0:
            return np.zeros(0)
        q = self.embedder.embed([query])[0] if isinstance(query, str) else np.asarray(query, dtype=np.float32)
        cfg = self.config
        recency = cfg.decay ** (now - self._times[:n])
        relevance = self._emb[:n] @ q
        return (
            cfg.w_recency * minmax(recency)
            + cfg.w_importance * minmax(self._importance[:n] / 10.0)
            + cfg.w_relevance * minmax(relevance.astype(np.float64))
        )

    def retrieve(self, query: str | np.ndarray, now: float, k: int | None = None) -> list[MemoryRecord]:
        """The top-k records by score, best first (ties broken by newer first)."""
        k = self.config.top_k if k is None else k
        n = len(self.records)
        if n == 0 or k <= 0:
            return []
        s = self.scores(query, now)
        order = np.lexsort((-np.arange(n), -s))[:k]
        return [self.records[i] for i in order]

    def since_last_reflection(self) -> list[MemoryRecord]:
        """Non-reflection records added after the most recent reflection, oldest first."""
        out: list[MemoryRecord] = []
        for rec in reversed(self.records):
            if rec.kind == "reflection":
                break
            out.append(rec)
        return out[::-1]

    def save(self, directory: Path) -> None:
        """Write `memory.json` (records, clock, embedder name) and `embeddings.npy` into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        doc = {
            "format_version": FORMAT_VERSION,
            "embedder": self.embedder.name,
            "dim": self.embedder.dim,
            "clock": self.clock,
            "since_reflection": self._since_reflection,
            "records": [
                {
                    "memory_id": r.memory_id,
                    "kind": r.kind,
                    "text": r.text,
                    "time": r.time,
                    "importance": r.importance,
                    "evidence": list(r.evidence),
                }
                for r in self.records
            ],
        }
        (directory / "memory.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
        np.save(directory / "embeddings.npy", self._emb[: len(self.records)])

    @classmethod
    def load(cls, directory: Path, embedder: Embedder, config: MemoryConfig | None = None) -> MemoryStream:
        """Restore a stream saved by `save`; the embedder must be the one it was saved with."""
        directory = Path(directory)
        path = directory / "memory.json"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"no saved memory at {path}") from exc
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {exc.lineno}: {exc.msg}") from exc
        if doc.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: field format_version = {doc.get('format_version')!r}, want {FORMAT_VERSION}")
        if doc.get("embedder") != embedder.name:
            got = doc.get("embedder")
            raise ValueError(f"{path}: field embedder = {got!r} but the given embedder is {embedder.name!r}")
        emb = np.load(directory / "embeddings.npy")
        if emb.shape != (len(doc["records"]), embedder.dim):
            n = len(doc["records"])
            raise ValueError(f"{directory / 'embeddings.npy'}: shape {emb.shape} does not match {n} records")
        stream = cls(embedder, config)
        stream._grow(len(doc["records"]))
        for i, r in enumerate(doc["records"]):
            if r["memory_id"] != i or r["kind"] not in KINDS:
                raise ValueError(f"{path}: record {i}: bad memory_id/kind {r['memory_id']!r}/{r['kind']!r}")
            stream._emb[i] = emb[i]
            stream._times[i] = r["time"]
            stream._importance[i] = r["importance"]
            stream.records.append(
                MemoryRecord(i, r["kind"], r["text"], r["time"], r["importance"], tuple(r["evidence"]), emb[i].copy())
            )
        stream.clock = float(doc["clock"])
        stream._since_reflection = float(doc["since_reflection"])
        return stream


def page_memories(
    config: MemoryConfig,
    page_number: int,
    titles: Sequence[str],
    item_ids: Sequence[int],
    ratings: Sequence[int | None],
    feelings: Sequence[str],
    left: bool,
    reason: str,
) -> list[tuple[MemoryKind, str, float, tuple[int, ...]]]:
    """The factual and (if anything was watched) emotional memories one page leaves, with rule importance."""
    seen = ", ".join(f"[{i}] {t}" for i, t in zip(item_ids, titles, strict=True))
    watched = [f"[{i}] rated {r}" for i, r in zip(item_ids, ratings, strict=True) if r is not None]
    fact = f"Page {page_number}: shown {seen}. Watched: {', '.join(watched) if watched else 'nothing'}."
    if left:
        fact += f" Left the site: {reason}" if reason else " Left the site."
    fact_importance = config.importance_factual + (config.importance_leave if left else 0.0)
    entries: list[tuple[MemoryKind, str, float, tuple[int, ...]]] = [("factual", fact, fact_importance, ())]
    felt = [
        (abs(r - 3), f"{t}: {f}" if f else f"{t}: rated {r}")
        for t, r, f in zip(titles, ratings, feelings, strict=True)
        if r is not None
    ]
    if felt:
        strength = max(s for s, _ in felt)
        text = "Felt about " + "; ".join(line for _, line in felt)
        entries.append(("emotional", text, config.importance_by_strength[strength], ()))
    return entries
