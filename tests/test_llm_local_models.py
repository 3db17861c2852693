"""In-process backends on the SmolLM2-135M GGUF: embedded llama.cpp (grammar, prefix cache) and transformers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from simenv.llm import LlamaCppBackend, TransformersBackend, ask_json, make_llm
from simenv.llm.factory import LLMConfig
from simenv.llm.structured import validate_answer
from simenv.llm.types import LLMRequest, LLMResponse, Message
from tests.fixtures_llm import page_request

PERSONA = (
    "You are a simulated movie watcher. You love Action and Sci-Fi films, dislike Horror, rate honestly, "
    "and watch only what fits your taste. You answer every question as this person would."
)


SMALL_SCHEMA = {
    "type": "object",
    "properties": {"watch": {"type": "boolean"}, "rating": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["watch", "rating"],
    "additionalProperties": False,
}


def _page(page_index: int, max_tokens: int = 1, schema: dict | None = None) -> LLMRequest:
    """A persona system prompt (the shared prefix) and one page question (the suffix)."""
    base = page_request(page_index=page_index, item_ids=(10 * page_index + 1,), item_genres=(("Action",),))
    return LLMRequest(
        messages=(Message("system", PERSONA), base.messages[1]),
        template=base.template,
        template_version=base.template_version,
        json_schema=schema,
        max_tokens=max_tokens,
    )


@pytest.fixture(scope="module")
def embedded() -> Iterator[LlamaCppBackend]:
    backend = make_llm(LLMConfig(backend="llama-cpp"))
    assert isinstance(backend, LlamaCppBackend)
    yield backend
    backend.close()


def test_embedded_answers_are_grammar_constrained_json(embedded: LlamaCppBackend) -> None:
    request = _page(0, max_tokens=24, schema=SMALL_SCHEMA)
    response = embedded.complete(request)
    value = validate_answer(response.text, SMALL_SCHEMA, None)  # the grammar guarantees the shape
    assert response.parsed == value and isinstance(value["watch"], bool) and 1 <= value["rating"] <= 5
    assert response.backend == "llama-cpp" and 0 < response.completion_tokens <= 24
    result = ask_json(embedded, request, max_repairs=0)
    assert result.status == "ok"  # small integer ranges are enforced by the grammar too (as enums)


def _complete_counting_prompt_tokens(embedded: LlamaCppBackend, request: LLMRequest) -> tuple[LLMResponse, int]:
    """Complete `request`, counting the prompt tokens llama.cpp actually evaluated (its first `eval` call)."""
    llama = embedded.llama
    evaluated: list[int] = []
    original_eval = llama.eval

    def counting_eval(tokens):  # noqa: ANN001, ANN202
        evaluated.append(len(tokens))
        return original_eval(tokens)

    llama.eval = counting_eval
    try:
        response = embedded.complete(request)
    finally:
        del llama.eval
    return response, evaluated[0]


def test_embedded_reuses_the_persona_prefix_across_calls(embedded: LlamaCppBackend) -> None:
    """The second page with the same system prompt evaluates only the new suffix, not the whole prompt."""
    embedded.complete(_page(1))
    llama = embedded.llama
    response, prompt_evaluated = _complete_counting_prompt_tokens(embedded, _page(2))
    assert response.prompt_tokens > 60
    assert prompt_evaluated < response.prompt_tokens - 40  # the shared system prefix was not re-evaluated
    assert embedded.llama is llama  # one model instance for the backend's life


def test_transformers_backend_runs_the_gguf_offline() -> None:
    backend = TransformersBackend(seed=0, torch_threads=2)
    request = LLMRequest(
        messages=(Message("user", "Name one movie genre."),), template="probe", template_version="v1", max_tokens=6
    )
    first = backend.complete(request)
    second = backend.complete(request)
    assert first.text.strip() and first.text == second.text  # greedy decoding is deterministic
    assert 0 < first.completion_tokens <= 6 and first.prompt_tokens > 5
    assert first.backend == "transformers" and first.model == "SmolLM2-135M-Instruct.Q4_1"


def test_interleaved_personas_get_their_prefix_back_from_the_ram_cache(embedded: LlamaCppBackend) -> None:
    """Batches alternate personas; the RAM cache restores persona A's state after persona B's call."""
    other = "You are a different simulated viewer. You love Romance and Drama, dislike Action, and rate kindly."
    embedded.complete(_page(3))
    b = _page(3)
    embedded.complete(
        LLMRequest(messages=(Message("system", other), b.messages[1]), template="t", template_version="v1")
    )
    llama = embedded.llama
    response, prompt_evaluated = _complete_counting_prompt_tokens(embedded, _page(4))
    assert prompt_evaluated < response.prompt_tokens - 40  # persona A's system prefix came back from the cache
    states = list(llama.cache.cache_state.values())
    assert len(states) >= 3 and all(st.scores.shape[0] == 1 for st in states)  # ~200 KB of logits each, not ~90 MB


def test_f16_reencoding_is_cached_and_keeps_the_model(tmp_path) -> None:  # noqa: ANN001
    import numpy as np
    from llama_cpp import Llama

    from simenv.llm.llama_cpp_backend import smollm2_gguf_path
    from simenv.llm.model_files import converted_gguf

    source = smollm2_gguf_path()
    f16 = converted_gguf(source, "f16", tmp_path)
    assert f16.parent == tmp_path / "models" and f16.stat().st_size > source.stat().st_size
    inode = f16.stat().st_ino  # a conversion writes a new file and renames it over: a new inode
    os.utime(f16, (1e9, 1e9))  # as if last used in 2001
    assert converted_gguf(source, "f16", tmp_path) == f16 and f16.stat().st_ino == inode  # made once
    assert f16.stat().st_mtime > 1e9 + 1  # and marked used (its mtime is its last use, `simrec cache`)
    # the key is the content, not the install: a copy of the source with a new mtime (a fresh virtualenv's
    # install) finds the same entry
    reinstalled = tmp_path / "venv2" / source.name
    reinstalled.parent.mkdir()
    shutil.copyfile(source, reinstalled)
    assert reinstalled.stat().st_mtime_ns != source.stat().st_mtime_ns
    assert converted_gguf(reinstalled, "f16", tmp_path) == f16 and f16.stat().st_ino == inode
    # another version of the source (other bytes) gets its own entry, and the older version's entry is removed
    other = tmp_path / "venv3" / source.name
    other.parent.mkdir()
    shutil.copyfile(source, other)
    with other.open("r+b") as fh:  # the last byte of the last tensor's data: still a loadable GGUF
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([last[0] ^ 1]))
    newer = converted_gguf(other, "f16", tmp_path)
    assert newer != f16 and newer.is_file() and not f16.exists()
    assert sorted(p.name for p in (tmp_path / "models").glob("*.gguf")) == [newer.name]
    f16 = converted_gguf(source, "f16", tmp_path)  # the shipped file again, for the comparison below
    assert converted_gguf(source, "source", tmp_path) == source
    with pytest.raises(ValueError, match="'q2'"):
        converted_gguf(source, "q2", tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        converted_gguf(tmp_path / "nope.gguf", "f16", tmp_path)
    # same weights: next-token distributions over a persona prompt match the shipped Q4_1 file's (measured mean
    # KL 0.004; a lossy re-quantization such as Q4_0 gives 0.26). Argmax flips only on near-ties.
    logp = []
    for path in (source, f16):
        llama = Llama(model_path=str(path), n_ctx=256, n_threads=2, logits_all=True, verbose=False)
        tokens = llama.tokenize(PERSONA.encode(), add_bos=True)
        llama.eval(tokens)
        scores = np.asarray(llama.scores[: len(tokens)], dtype=np.float64)
        llama.close()
        scores -= scores.max(axis=1, keepdims=True)
        logp.append(scores - np.log(np.exp(scores).sum(axis=1, keepdims=True)))
    kl = float((np.exp(logp[0]) * (logp[0] - logp[1])).sum(axis=1).mean())
    agree = float((logp[0].argmax(axis=1) == logp[1].argmax(axis=1)).mean())
    assert len(logp[0]) > 30 and kl < 0.02 and agree >= 0.8, (kl, agree)


def test_skeleton_and_full_grammar_answers_are_both_valid(embedded: LlamaCppBackend) -> None:
    """Skeleton decoding (default) writes the fixed keys itself; the full-grammar path is the fallback."""
    from simenv.llm.skeleton import skeleton

    request = _page(5, max_tokens=40, schema=SMALL_SCHEMA)
    assert skeleton(SMALL_SCHEMA) is not None and embedded.skeleton == "choices"
    fast = embedded.complete(request)
    full = LlamaCppBackend(skeleton="off", ram_cache_bytes=0)
    try:
        slow = full.complete(request)
    finally:
        full.close()
    for response in (fast, slow):
        value = validate_answer(response.text, SMALL_SCHEMA, None)
        assert isinstance(value["watch"], bool) and 1 <= value["rating"] <= 5
    assert fast.text.startswith('{"watch":') and fast.prompt_tokens == slow.prompt_tokens
