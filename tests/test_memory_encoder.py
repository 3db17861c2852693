"""Memory embedding cost: page memories embedded from their parts (item vectors, cached texts), deferred and
batched across the streams sharing an embedder."""

from __future__ import annotations

import gc

import numpy as np

from agents.config import MemoryConfig
from agents.embedding import HashingEmbedder, normalise_rows
from agents.memory import MemoryEncoder, MemoryStream, page_memories


class CountingEmbedder(HashingEmbedder):
    """The hashing embedder, counting calls and texts."""

    def __init__(self) -> None:
        super().__init__(32)
        self.calls: list[list[str]] = []

    def embed(self, texts):
        self.calls.append(list(texts))
        return super().embed(texts)


class Catalog:
    """Item vectors by id, counting lookups."""

    def __init__(self, n: int, dim: int) -> None:
        self.vectors = normalise_rows(np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32))
        self.lookups = 0

    def get(self, item_ids):
        self.lookups += 1
        return self.vectors[np.asarray(item_ids, dtype=np.int64)]


def _page(stream: MemoryStream, page: int, ids: list[int], ratings: list[int | None], left: bool = False) -> None:
    titles = [f"Movie {i}" for i in ids]
    feelings = ["Enjoyed it." if r else "" for r in ratings]
    entries = page_memories(MemoryConfig(), page, titles, ids, ratings, feelings, left, "Bored." if left else "")
    stream.add_many(entries, time=stream.clock)
    stream.clock += 1


def test_embedding_waits_for_scoring_and_batches_every_stream_once_per_text():
    embedder = CountingEmbedder()
    a, b = MemoryStream(embedder), MemoryStream(embedder)
    _page(a, 1, [1, 2, 3], [4, None, None])
    _page(b, 1, [1, 2, 4], [None, 5, None])
    assert embedder.calls == []  # nothing embedded yet
    a.retrieve(np.ones(32, np.float32) / 32**0.5, now=a.clock)
    assert len(embedder.calls) == 1  # both streams' page memories in one call
    assert sorted(embedder.calls[0]) == sorted(["Movie 1", "Movie 2", "Movie 3", "Movie 4", "Enjoyed it."])
    b.retrieve(np.ones(32, np.float32) / 32**0.5, now=b.clock)
    assert len(embedder.calls) == 1  # b's records were filled by a's flush
    _page(a, 2, [1, 3, 5], [4, None, None])
    a.retrieve(np.ones(32, np.float32) / 32**0.5, now=a.clock)
    assert embedder.calls[-1] == ["Movie 5"]  # known texts come from the cache


def test_page_memory_vector_is_the_mean_of_its_parts():
    embedder = HashingEmbedder(32)
    stream = MemoryStream(embedder)
    _page(stream, 1, [1, 2], [None, 5], left=True)
    fact, felt = stream.embeddings()
    want = normalise_rows(embedder.embed(["Movie 1", "Movie 2", "Bored."]).sum(axis=0, keepdims=True))[0]
    np.testing.assert_allclose(fact, want, atol=1e-6)
    want = normalise_rows(embedder.embed(["Movie 2", "Enjoyed it."]).sum(axis=0, keepdims=True))[0]
    np.testing.assert_allclose(felt, want, atol=1e-6)


def test_item_vectors_replace_title_embeddings():
    embedder = CountingEmbedder()
    catalog = Catalog(10, 32)
    streams = [MemoryStream(embedder, item_vectors=catalog) for _ in range(3)]
    for k, stream in enumerate(streams):
        _page(stream, 1, [k, k + 1, k + 2], [None, None, None])
    fact = streams[0].embeddings()[0]
    want = normalise_rows(catalog.vectors[[0, 1, 2]].sum(axis=0, keepdims=True))[0]
    np.testing.assert_allclose(fact, want, atol=1e-6)
    assert embedder.calls == [] and catalog.lookups == 1  # one catalog lookup for all three streams


def test_other_streams_notes_wait_for_their_own_stream():
    embedder = CountingEmbedder()
    a, b = MemoryStream(embedder), MemoryStream(embedder)
    b.add("factual", "Episode 0 ended; satisfaction 7/10: fine.", time=0.0, importance=2.0)
    a.add("factual", "a note", time=0.0, importance=2.0)
    a.scores("query", now=1.0)
    assert "Episode 0 ended; satisfaction 7/10: fine." not in sum(embedder.calls, [])
    b.scores("query", now=1.0)
    assert "Episode 0 ended; satisfaction 7/10: fine." in sum(embedder.calls, [])


def test_save_embeds_waiting_records_and_dead_streams_are_skipped(tmp_path):
    embedder = CountingEmbedder()
    dead = MemoryStream(embedder)
    _page(dead, 1, [7], [3])
    del dead
    gc.collect()
    stream = MemoryStream(embedder)
    _page(stream, 1, [1], [None])
    stream.save(tmp_path / "u")
    assert embedder.calls == [["Movie 1"]]
    back = MemoryStream.load(tmp_path / "u", embedder)
    np.testing.assert_allclose(back.embeddings(), stream.embeddings())


def test_encoder_cache_is_bounded():
    encoder = MemoryEncoder(HashingEmbedder(16), cache_size=2)
    out = encoder.vectors(["a", "b", "c", "a"])
    assert out.shape == (4, 16) and encoder.texts_embedded == 3
    np.testing.assert_allclose(out[0], out[3])
    encoder.vectors(["b", "c"])  # the two newest are kept ...
    assert encoder.texts_embedded == 3
    encoder.vectors(["a"])  # ... and the oldest went first
    assert encoder.texts_embedded == 4
