"""Memory stream: retrieval scores against hand-computed numbers, reflection bookkeeping, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents.config import MemoryConfig
from agents.embedding import HashingEmbedder
from agents.memory import MemoryStream, minmax, page_memories


class FixedEmbedder:
    """Maps known texts to given unit vectors, so relevance is exactly known."""

    name = "fixed-2d"
    dim = 2

    def __init__(self, table: dict[str, tuple[float, float]]) -> None:
        self.table = table

    def embed(self, texts):
        return np.array([self.table[t] for t in texts], dtype=np.float32)


def _stream(cfg: MemoryConfig) -> MemoryStream:
    s = 0.5**0.5
    emb = FixedEmbedder({"a": (1.0, 0.0), "b": (0.0, 1.0), "c": (s, s), "q": (1.0, 0.0)})
    stream = MemoryStream(emb, cfg)
    stream.add("factual", "a", time=0.0, importance=2.0)
    stream.add("emotional", "b", time=1.0, importance=8.0)
    stream.add("factual", "c", time=3.0, importance=4.0)
    return stream


def test_scores_match_hand_computation():
    cfg = MemoryConfig(decay=0.5, w_recency=1.0, w_importance=2.0, w_relevance=3.0)
    stream = _stream(cfg)
    # now = 3: recency 0.125, 0.25, 1 -> minmax 0, 1/7, 1
    # importance 0.2, 0.8, 0.4 -> 0, 1, 1/3
    # relevance to (1,0): 1, 0, 0.7071 -> 1, 0, 0.7071
    expected = np.array(
        [
            0.0 + 2 * 0.0 + 3 * 1.0,
            1 / 7 + 2 * 1.0 + 3 * 0.0,
            1.0 + 2 * (1 / 3) + 3 * 0.5**0.5,
        ]
    )
    np.testing.assert_allclose(stream.scores("q", now=3.0), expected, rtol=1e-5)
    assert [r.text for r in stream.retrieve("q", now=3.0, k=2)] == ["c", "a"]


def test_recency_uses_simulation_time_and_constant_components_are_neutral():
    cfg = MemoryConfig(decay=0.5, w_recency=1.0, w_importance=0.0, w_relevance=0.0)
    stream = _stream(cfg)
    assert [r.text for r in stream.retrieve("q", now=10.0, k=3)] == ["c", "b", "a"]
    assert minmax(np.array([2.0, 2.0])).tolist() == [0.5, 0.5]
    only = MemoryStream(HashingEmbedder(16), cfg)
    only.add("factual", "one memory", time=0.0, importance=1.0)
    assert only.scores("anything", now=5.0).tolist() == [0.5]


def test_reflection_trigger_sums_importance_since_last_reflection():
    stream = MemoryStream(HashingEmbedder(16), MemoryConfig(reflection_threshold=10.0))
    stream.add("factual", "p1", 0, 4.0)
    stream.add("emotional", "p1 felt", 0, 5.0)
    assert stream.importance_since_reflection == 9.0 and not stream.should_reflect()
    stream.add("factual", "p2", 1, 2.0)
    assert stream.should_reflect()
    assert [r.text for r in stream.since_last_reflection()] == ["p1", "p1 felt", "p2"]
    stream.add("reflection", "I like drama", 1, 5.0, evidence=(0, 1, 2))
    assert stream.importance_since_reflection == 0.0 and not stream.should_reflect()
    assert stream.since_last_reflection() == []


def test_bad_records_are_rejected():
    stream = MemoryStream(HashingEmbedder(16))
    with pytest.raises(ValueError, match="kind"):
        stream.add("opinion", "x", 0, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="importance"):
        stream.add("factual", "x", 0, 11.0)


def test_save_load_round_trip(tmp_path):
    emb = HashingEmbedder(32)
    stream = MemoryStream(emb, MemoryConfig(reflection_threshold=100.0))
    for t in range(20):  # enough to grow the embedding matrix past its initial capacity
        stream.add("factual", f"page {t} showed movie {t}", t, 2.0)
    stream.add("reflection", "I watch a lot", 20, 3.0, evidence=(1, 2))
    stream.add("emotional", "loved movie 7", 20, 7.0)
    stream.clock = 21.0
    stream.save(tmp_path / "u1")
    back = MemoryStream.load(tmp_path / "u1", emb, stream.config)
    assert [(r.kind, r.text, r.time, r.importance, r.evidence) for r in back.records] == [
        (r.kind, r.text, r.time, r.importance, r.evidence) for r in stream.records
    ]
    assert back.clock == 21.0 and back.importance_since_reflection == 7.0
    np.testing.assert_allclose(back.scores("movie 7", 21.0), stream.scores("movie 7", 21.0))
    with pytest.raises(ValueError, match="embedder"):
        MemoryStream.load(tmp_path / "u1", HashingEmbedder(16))
    doc = json.loads((tmp_path / "u1" / "memory.json").read_text())
    doc["format_version"] = 99
    (tmp_path / "u1" / "memory.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="format_version"):
        MemoryStream.load(tmp_path / "u1", emb)


def test_page_memories_importance_rules():
    cfg = MemoryConfig(importance_factual=2.0, importance_by_strength=(1.0, 4.0, 7.0), importance_leave=3.0)
    entries = page_memories(cfg, 2, ["A", "B", "C"], [5, 6, 7], [None, 4, 1], ["", "nice", "awful"], True, "bored")
    (k1, fact, imp1, _), (k2, felt, imp2, _) = entries
    assert (k1, imp1) == ("factual", 5.0)  # factual + leaving
    assert "[6] rated 4" in fact and "[7] rated 1" in fact and "Left the site: bored" in fact
    assert (k2, imp2) == ("emotional", 7.0)  # strongest |rating - 3| = 2
    assert "B: nice" in felt and "C: awful" in felt
    only_fact = page_memories(cfg, 1, ["A"], [5], [None], [""], False, "")
    assert len(only_fact) == 1 and only_fact[0][2] == 2.0
