"""A persona's memory stream: records, generative-agents retrieval, rule-based importance, save/load.

Retrieval score = w_rec * recency + w_imp * importance + w_rel * relevance, each min-max normalised over the
candidate records (a component that is equal for all candidates becomes 0.5, as in generative agents).
recency = decay ** (now - t) in simulation time (pages shown to the user, not wall time); importance is 0..10
from rules (no LLM call); relevance is the cosine between the record's and the query's embeddings.

Embedding cost (it was ~90% of a mock-LLM simulation with MiniLM, one small encoder call per user and page):
- a page memory's vector is the normalised mean of its parts' vectors (`MemoryEntry`): the items it is about —
  the catalog's item vectors when the stream has them (`item_vectors`), else each title's embedding — and its
  short texts (the feelings, the reason for leaving). Parts repeat across pages and users, so each distinct text
  is embedded once (`MemoryEncoder`'s in-memory cache). Any other record is embedded from its whole text.
- embedding is deferred and batched across users: a new record waits until its stream next scores (or saves);
  then the encoder shared by every stream of that embedder embeds, in one call, that stream's waiting records and
  every stream's waiting page memories and reflections (the runner steps many users together and reads them at
  their next page). Other records of other streams (an interview's episode note, read only in a later episode)
  wait for their own stream.
Relevance is therefore the cosine to the mean of what a memory mentions, not to the embedding of its sentence;
retrieval results differ from a per-sentence encoder's (the query, the mean of the page's item vectors, is in the
same item space). Vectors do not depend on batching beyond the encoder's own floating-point noise.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from agents.config import MemoryConfig
from agents.embedding import Embedder

logger = logging.getLogger(__name__)

MemoryKind = Literal["factual", "emotional", "reflection"]
KINDS: tuple[str, ...] = ("factual", "emotional", "reflection")
FORMAT_VERSION = 1
ENCODER_CACHE_SIZE = 50_000  # distinct texts kept per embedder (384 float32 each for MiniLM: ~75 MB at most)


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """One memory. `time` is simulation time (pages); `evidence` holds ids of the memories it summarises.
    Its embedding is row `memory_id` of `MemoryStream.embeddings()`."""

    memory_id: int
    kind: MemoryKind
    text: str
    time: float
    importance: float
    evidence: tuple[int, ...] = ()


class ItemVectorSource(Protocol):
    """Catalog item vectors by item id (e.g. `agents.decision.ItemVectors`), unit rows of the embedder's dim."""

    def get(self, item_ids: Sequence[int] | np.ndarray) -> np.ndarray: ...


class MemoryEntry(tuple):
    """A memory to add: unpacks as `(kind, text, importance, evidence)` like a plain entry tuple, and carries
    its embedding parts: `items`, (item id, title) pairs it is about, and `parts`, short texts (module docstring).
    An entry with neither is embedded from its text."""

    items: tuple[tuple[int, str], ...]
    parts: tuple[str, ...]

    def __new__(
        cls,
        kind: MemoryKind,
        text: str,
        importance: float,
        evidence: tuple[int, ...] = (),
        items: Iterable[tuple[int, str]] = (),
        parts: Iterable[str] = (),
    ) -> MemoryEntry:
        entry = super().__new__(cls, (kind, text, importance, tuple(evidence)))
        entry.items = tuple((int(i), str(t)) for i, t in items)
        entry.parts = tuple(p for p in parts if p)
        return entry


@dataclass(frozen=True, slots=True)
class _Waiting:
    """A record whose vector is not computed yet: the mean of `texts`' and `items`' vectors."""

    stream: weakref.ReferenceType[MemoryStream]
    row: int
    texts: tuple[str, ...]
    items: tuple[int, ...]  # looked up in the stream's item_vectors


class MemoryEncoder:
    """Embeds memory records for every stream sharing one embedder: deferred, batched across streams, and each
    distinct text once (a bounded in-memory cache; the oldest entries go first). See the module docstring."""

    def __init__(self, embedder: Embedder, cache_size: int = ENCODER_CACHE_SIZE) -> None:
        self.embedder = embedder
        self.cache_size = cache_size
        self._cache: dict[str, np.ndarray] = {}
        self._shared: list[_Waiting] = []  # page memories and reflections of every stream
        self.texts_embedded = 0
        self.calls = 0

    def submit(self, stream: MemoryStream, row: int, entry: Sequence[object]) -> None:
        """Row `row` of `stream` gets `entry`'s vector when the stream next needs it."""
        items: tuple[tuple[int, str], ...] = getattr(entry, "items", ())
        parts: tuple[str, ...] = getattr(entry, "parts", ())
        if stream.item_vectors is not None:
            waiting = _Waiting(weakref.ref(stream), row, parts, tuple(i for i, _ in items))
        else:
            waiting = _Waiting(weakref.ref(stream), row, (*(t for _, t in items), *parts), ())
        if not waiting.texts and not waiting.items:
            waiting = _Waiting(waiting.stream, row, (str(entry[1]),), ())
        if isinstance(entry, MemoryEntry) or entry[0] == "reflection":
            self._shared.append(waiting)
        else:
            stream._own.append(waiting)

    def flush(self, stream: MemoryStream) -> None:
        """Embed `stream`'s waiting records and every stream's waiting page memories and reflections."""
        shared = [(w.stream(), w) for w in self._shared]
        batch = [(s, w) for s, w in shared if s is not None] + [(stream, w) for w in stream._own]
        self._shared, stream._own = [], []
        if not batch:
            return
        texts = self.vectors([t for _, w in batch for t in w.texts])
        sums = np.zeros((len(batch), self.embedder.dim), dtype=np.float64)
        start = 0
        for k, (_, w) in enumerate(batch):
            sums[k] = texts[start : start + len(w.texts)].sum(axis=0)
            start += len(w.texts)
        by_source: dict[int, list[int]] = {}
        for k, (owner, w) in enumerate(batch):
            if w.items:
                by_source.setdefault(id(owner.item_vectors), []).append(k)
        for ks in by_source.values():  # one lookup per catalog for all its records
            source = batch[ks[0]][0].item_vectors
            assert source is not None
            vecs = source.get(np.array([i for k in ks for i in batch[k][1].items], dtype=np.int64))
            start = 0
            for k in ks:
                n = len(batch[k][1].items)
                sums[k] += vecs[start : start + n].sum(axis=0)
                start += n
        for k, (owner, w) in enumerate(batch):
            owner._set_row(w.row, _unit(sums[k].astype(np.float32)))

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) vectors, embedding only the distinct texts not in the cache, in one call."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        fresh: dict[str, np.ndarray] = {}
        if missing:
            vecs = np.asarray(self.embedder.embed(missing), dtype=np.float32)
            self.calls += 1
            self.texts_embedded += len(missing)
            fresh = dict(zip(missing, vecs, strict=True))
            self._cache.update(fresh)
            while len(self._cache) > self.cache_size:
                self._cache.pop(next(iter(self._cache)))
        out = np.empty((len(texts), self.embedder.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            vec = self._cache.get(text)
            out[i] = vec if vec is not None else fresh[text]  # fresh: evicted by this very call
        return out


_ENCODERS: weakref.WeakKeyDictionary[Embedder, MemoryEncoder] = weakref.WeakKeyDictionary()


def memory_encoder(embedder: Embedder) -> MemoryEncoder:
    """The encoder shared by every stream using `embedder` (a private one if it cannot be a weak dict key)."""
    try:
        encoder = _ENCODERS.get(embedder)
        if encoder is None:
            encoder = _ENCODERS[embedder] = MemoryEncoder(embedder)
        return encoder
    except TypeError:  # unhashable or not weak-referenceable
        return MemoryEncoder(embedder)


def _unit(vec: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vec))
    return (vec / norm if norm > 0 else vec).astype(np.float32, copy=False)


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

    `clock` is the user's simulation time: the number of pages seen so far across all episodes. With
    `item_vectors` (the catalog's), page memories reuse the vectors of the items they mention.
    """

    def __init__(
        self, embedder: Embedder, config: MemoryConfig | None = None, item_vectors: ItemVectorSource | None = None
    ) -> None:
        self.embedder = embedder
        self.item_vectors = item_vectors
        self.encoder = memory_encoder(embedder)
        self.config = config or MemoryConfig()
        self.records: list[MemoryRecord] = []
        self.clock = 0.0
        self._emb = np.zeros((16, embedder.dim), dtype=np.float32)
        self._times = np.zeros(16, dtype=np.float64)
        self._importance = np.zeros(16, dtype=np.float64)
        self._since_reflection = 0.0
        self._waiting = 0  # records whose embedding the encoder has not filled in yet
        self._own: list[_Waiting] = []  # those of them only this stream's scoring embeds (MemoryEncoder.submit)

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

    def _set_row(self, row: int, vec: np.ndarray) -> None:
        self._emb[row] = vec
        self._waiting -= 1

    def embeddings(self) -> np.ndarray:
        """(len(self), dim) record embeddings (embedding any waiting records first)."""
        self._embed_waiting()
        return self._emb[: len(self.records)].copy()

    def _embed_waiting(self) -> None:
        if self._waiting:
            self.encoder.flush(self)

    def add_many(
        self,
        entries: Sequence[tuple[MemoryKind, str, float, tuple[int, ...]]],
        time: float,
        embeddings: np.ndarray | None = None,
    ) -> list[MemoryRecord]:
        """Add (kind, text, importance, evidence) entries (or `MemoryEntry`s) at `time`. Without `embeddings`,
        their vectors are computed by the shared encoder before the stream next scores (module docstring)."""
        if not entries:
            return []
        for kind, text, importance, _ in entries:
            if kind not in KINDS:
                raise ValueError(f"memory kind must be one of {KINDS}, got {kind!r} for text {text[:40]!r}")
            if not 0.0 <= importance <= 10.0:
                raise ValueError(f"memory importance must be in [0, 10], got {importance!r} for {text[:40]!r}")
        if embeddings is not None and embeddings.shape != (len(entries), self.embedder.dim):
            raise ValueError(f"embeddings shape {embeddings.shape} != ({len(entries)}, {self.embedder.dim})")
        start = len(self.records)
        self._grow(start + len(entries))
        out = []
        for offset, entry in enumerate(entries):
            kind, text, importance, evidence = entry
            i = start + offset
            if embeddings is not None:
                self._emb[i] = embeddings[offset]
            else:
                self._waiting += 1
                self.encoder.submit(self, i, entry)
            self._times[i] = time
            self._importance[i] = importance
            rec = MemoryRecord(i, kind, text, float(time), float(importance), tuple(evidence))
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
        """Add one memory (its text is embedded before the stream next scores)."""
        return self.add_many([(kind, text, importance, evidence)], time)[0]

    def scores(self, query: str | np.ndarray, now: float) -> np.ndarray:
        """The retrieval score of every record (see module docstring)."""
        n = len(self.records)
        if n == 0:
            return np.zeros(0)
        self._embed_waiting()
        q = self.encoder.vectors([query])[0] if isinstance(query, str) else np.asarray(query, dtype=np.float32)
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
        self._embed_waiting()
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
    def load(
        cls,
        directory: Path,
        embedder: Embedder,
        config: MemoryConfig | None = None,
        item_vectors: ItemVectorSource | None = None,
    ) -> MemoryStream:
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
        stream = cls(embedder, config, item_vectors)
        stream._grow(len(doc["records"]))
        for i, r in enumerate(doc["records"]):
            if r["memory_id"] != i or r["kind"] not in KINDS:
                raise ValueError(f"{path}: record {i}: bad memory_id/kind {r['memory_id']!r}/{r['kind']!r}")
            stream._emb[i] = emb[i]
            stream._times[i] = r["time"]
            stream._importance[i] = r["importance"]
            stream.records.append(
                MemoryRecord(i, r["kind"], r["text"], r["time"], r["importance"], tuple(r["evidence"]))
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
) -> list[MemoryEntry]:
    """The factual and (if anything was watched) emotional memories one page leaves, with rule importance.

    Embedding parts: the factual memory is about the shown items (and the reason for leaving), the emotional one
    about each watched item and what was felt about it."""
    seen = ", ".join(f"[{i}] {t}" for i, t in zip(item_ids, titles, strict=True))
    watched = [f"[{i}] rated {r}" for i, r in zip(item_ids, ratings, strict=True) if r is not None]
    fact = f"Page {page_number}: shown {seen}. Watched: {', '.join(watched) if watched else 'nothing'}."
    if left:
        fact += f" Left the site: {reason}" if reason else " Left the site."
    fact_importance = config.importance_factual + (config.importance_leave if left else 0.0)
    shown = list(zip(item_ids, titles, strict=True))
    entries = [MemoryEntry("factual", fact, fact_importance, (), shown, [reason] if left else [])]
    felt = [
        (abs(r - 3), (i, t), f if f else f"rated {r}")
        for i, t, r, f in zip(item_ids, titles, ratings, feelings, strict=True)
        if r is not None
    ]
    if felt:
        strength = max(s for s, _, _ in felt)
        text = "Felt about " + "; ".join(f"{t}: {f}" for _, (_, t), f in felt)
        items, parts = [it for _, it, _ in felt], [f for _, _, f in felt]
        entries.append(MemoryEntry("emotional", text, config.importance_by_strength[strength], (), items, parts))
    return entries
