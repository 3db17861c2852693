"""Real components: one page answered by the embedded SmolLM2 (llama-cpp) and the offline MiniLM embedder."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from agents.config import load_user
from agents.embedding import HashingEmbedder, MiniLMEmbedder
from agents.llm_user import LLMUserModel
from simenv.llm.structured import ask_json
from simenv.records import Page, PageFeedback
from tests.fixtures_agents import tiny_world


@pytest.mark.slow
def test_one_real_page_with_embedded_smollm2():
    pytest.importorskip("llama_cpp", reason="install with: pip install 'llama-cpp-python==0.3.36'")
    from simenv.llm import LLMConfig, make_llm

    ds, split, personas = tiny_world()
    llm = make_llm(LLMConfig(backend="llama-cpp", n_threads=2))
    config = replace(load_user("handset").user, page_prompt="decide")
    model = LLMUserModel(ds, llm, HashingEmbedder(64), config, train=split.train)
    persona = next(iter(personas.values()))
    session = model.start_session(persona, 0, np.random.default_rng(0))
    ids = (17,)  # one item keeps the constrained decoding short (~40 tokens)
    fb = session.react(Page(0, 0, ids), [ds.catalog[i] for i in ids])
    assert isinstance(fb, PageFeedback)
    assert not fb.fallback, [e.detail for e in model.events]  # the model's own JSON was valid
    assert [r.item_id for r in fb.reactions] == list(ids) and len(fb.llm_call_ids) == 1
    assert all((r.rating is not None) == r.watched for r in fb.reactions)
    assert len(session.memory) >= 1

    # the default grounded profile narrates: the model writes a feeling per watched movie and the leave reason
    ids = (17, 21)
    page, items = Page(0, 1, ids), [ds.catalog[i] for i in ids]
    request = model.prompts.reaction_request(
        persona, page, items, np.array([True, True]), np.array([5, 2]), True, [], 0
    )
    result = ask_json(llm, request, max_repairs=1)
    assert not result.failed, result.error
    assert len(result.value["feelings"]) == 2 and isinstance(result.value["reason"], str)


@pytest.mark.slow
def test_minilm_embedder_offline():
    pytest.importorskip("sentence_transformers", reason="install with: pip install 'simrec[embeddings]'")
    emb = MiniLMEmbedder()
    vecs = emb.embed(["A space opera with starships", "Sci-fi adventure among the stars", "A quiet romantic drama"])
    assert vecs.shape == (3, 384) and emb.dim == 384
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-4)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]
