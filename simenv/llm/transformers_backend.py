"""A local Hugging Face `transformers` causal LM: any model directory, or a GGUF file (needs `gguf`).

Offline only: files are read from disk (set HF_HUB_OFFLINE=1). There is no grammar here, so a structured
request gets the JSON-only instruction appended to its last user message and the structured layer validates
and repairs. Greedy decoding at temperature 0; when sampling, torch is seeded from the request's seed (or
the backend's). Calls are serialized by a lock; batches run one request after another.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simenv.llm.batching import run_serially
from simenv.llm.llama_cpp_backend import smollm2_gguf_path
from simenv.llm.structured import parse_if_json, with_json_instruction
from simenv.llm.types import LLMError, LLMRequest, LLMResponse


class TransformersBackend:
    """`LLM` over a transformers model loaded lazily on first call (default: the SmolLM2 GGUF)."""

    name = "transformers"

    def __init__(self, model_path: str | Path | None = None, seed: int = 0, torch_threads: int | None = None) -> None:
        path = Path(model_path) if model_path else smollm2_gguf_path()
        if not path.exists():
            raise FileNotFoundError(f"transformers backend: model path {path} does not exist")
        if path.is_file():
            self.model_dir, self.gguf_file = path.parent, path.name
        else:
            self.model_dir, self.gguf_file = path, None
        self.model = path.stem if path.is_file() else path.name
        self.seed = int(seed)
        self.torch_threads = torch_threads
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def identity(self) -> str:
        return f"transformers(model={self.model},seed={self.seed})"

    def __repr__(self) -> str:
        return f"TransformersBackend(model_dir={str(self.model_dir)!r}, gguf_file={self.gguf_file!r}, seed={self.seed})"

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            try:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer
            except ImportError as exc:
                raise ImportError("the transformers backend needs torch and transformers: pip install -e .") from exc
            if self.torch_threads:
                torch.set_num_threads(self.torch_threads)
            extra = {"gguf_file": self.gguf_file} if self.gguf_file else {}
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), **extra)
                self._model = AutoModelForCausalLM.from_pretrained(str(self.model_dir), **extra)
            except ImportError as exc:
                raise ImportError(f"loading {self.gguf_file} needs the gguf package: pip install gguf ({exc})") from exc
            self._model.eval()
        return self._model, self._tokenizer

    def complete(self, request: LLMRequest) -> LLMResponse:
        import torch

        messages = request.messages
        if request.json_schema is not None:
            messages = with_json_instruction(messages, request.json_schema)
        with self._lock:
            model, tokenizer = self._load()
            start = time.perf_counter()
            try:
                inputs = tokenizer.apply_chat_template(
                    [{"role": m.role, "content": m.content} for m in messages],
                    add_generation_prompt=True,
                    return_tensors="pt",
                    return_dict=True,
                )
                sampling = request.temperature > 0
                gen: dict[str, Any] = {"max_new_tokens": request.max_tokens, "do_sample": sampling}
                if sampling:
                    torch.manual_seed(self.seed if request.seed is None else request.seed)
                    gen["temperature"] = request.temperature
                pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
                with torch.no_grad():
                    out = model.generate(**inputs, **gen, pad_token_id=pad)
            except (ValueError, RuntimeError) as exc:
                raise LLMError(f"transformers backend: call for template {request.template!r} failed: {exc}") from exc
            latency = time.perf_counter() - start
        n_prompt = int(inputs["input_ids"].shape[1])
        new_tokens = out[0, n_prompt:]
        text = tokenizer.decode(new_tokens, skip_special_tokens=True)
        return LLMResponse(
            text=text,
            backend=self.name,
            model=self.model,
            prompt_tokens=n_prompt,
            completion_tokens=int(new_tokens.shape[0]),
            latency_s=latency,
            parsed=parse_if_json(text, request.json_schema),
            call_id=request.call_id(),
        )

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        return run_serially(self.complete, requests, self.name, self.model)
