"""Build the configured `LLM`: a backend by name, wrapped in budget, cache and call log as configured.

The stack is `CallLogLLM(CacheLLM(BudgetLLM(backend)))`: the log sees every call, cache hits included;
cache hits cost no budget. The config never holds an API key (the openai backend reads `OPENAI_API_KEY`
from the environment when it builds its client), so it is safe to repr, log and save with a run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from simenv.errors import ConfigError
from simenv.llm.mock import FAULT_KINDS, FaultConfig, MockLLM
from simenv.llm.types import LLM

Backend = Literal["mock", "llama-cpp", "transformers", "openai"]
BACKENDS: tuple[str, ...] = get_args(Backend)


@dataclass(frozen=True)
class LLMConfig:
    """Everything needed to build the run's LLM. `temperature`/`max_tokens`/`max_repairs` are the defaults
    callers put in their requests; each request's own values are what the backend honours. The defaults are
    the ones everywhere: `experiments.config.LLMSection` (the `[llm]` section and `--llm.*` flags) takes its
    defaults from this class. A bad value is a `ConfigError` (a `ValueError`) naming the field."""

    backend: Backend = "mock"
    model: str | None = None  # openai: model name; llama-cpp/transformers: use model_path
    base_url: str | tuple[str, ...] | None = None  # openai: one or several (round-robin); else OPENAI_BASE_URL
    http_client: str = "auto"  # openai: auto (SDK for api.openai.com, else direct) | aiohttp | httpx (SDK) | direct
    temperature: float = 0.0
    max_tokens: int = 256
    max_repairs: int = 2
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 3
    structured_output: str = "json_schema"  # openai: json_schema | json_object | none
    schema_mode: str = "auto"  # openai: auto | full | plain (schemas without prefixItems; OpenAIBackend)
    model_path: str | None = None  # llama-cpp: GGUF file; transformers: model dir or GGUF file
    n_ctx: int = 2048
    n_threads: int = 2
    ram_cache_bytes: int = 1 << 30  # llama-cpp: saved prompt states, so interleaved personas keep their prefix
    flash_attn: bool = True  # llama-cpp
    gguf_format: str = "f16"  # llama-cpp: source | f16 | q8_0, a cached local re-encoding (simenv.llm.model_files)
    seed: int = 0
    cache_dir: str | None = None
    call_log_dir: str | None = None
    call_log_flush_every: int = 256
    call_log_prompts: str = "off"  # off | full (store rendered prompts and raw answers)
    max_calls: int | None = None
    max_total_tokens: int | None = None
    fault_rate: float = 0.0  # mock only
    fault_kinds: tuple[str, ...] = FAULT_KINDS  # mock only

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"LLMConfig.backend: unknown backend {self.backend!r}; known: {list(BACKENDS)}")
        for name in ("max_tokens", "concurrency", "n_ctx", "n_threads", "call_log_flush_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"LLMConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("max_repairs", "max_retries", "ram_cache_bytes"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"LLMConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.timeout_s <= 0:
            raise ConfigError(f"LLMConfig.timeout_s must be > 0, got {self.timeout_s!r}")
        if self.call_log_prompts not in ("off", "full"):
            raise ConfigError(f"LLMConfig.call_log_prompts must be 'off' or 'full', got {self.call_log_prompts!r}")
        if self.backend == "openai":
            from simenv.llm.openai_backend import HTTP_CLIENTS, endpoint_urls

            if self.http_client not in HTTP_CLIENTS:
                raise ConfigError(f"LLMConfig.http_client must be one of {HTTP_CLIENTS}, got {self.http_client!r}")
            try:
                endpoint_urls(self.base_url)
            except ValueError as exc:
                raise ConfigError(f"LLMConfig.base_url: {exc}") from None
        if isinstance(self.base_url, list):
            object.__setattr__(self, "base_url", tuple(self.base_url))
        if self.backend == "openai" and not self.model:
            raise ConfigError("LLMConfig.model is required for the openai backend (e.g. model = 'gpt-4o-mini')")
        object.__setattr__(self, "fault_kinds", tuple(self.fault_kinds))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "llm config") -> LLMConfig:
        """Build from a TOML/JSON table; unknown keys are an error naming the source and the key."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            hint = (
                " (API keys come only from the OPENAI_API_KEY environment variable)"
                if any("key" in k.lower() for k in unknown)
                else ""
            )
            raise ConfigError(f"{source}: unknown llm field(s) {unknown}; known fields: {sorted(known)}{hint}")
        return cls(**dict(data))


def make_backend(config: LLMConfig) -> LLM:
    """The bare backend named by `config.backend` (heavy libraries load lazily, on first call)."""
    if config.backend == "mock":
        return MockLLM(seed=config.seed, faults=FaultConfig(config.fault_rate, config.fault_kinds))
    if config.backend == "llama-cpp":
        from simenv.llm.llama_cpp_backend import LlamaCppBackend

        return LlamaCppBackend(
            model_path=config.model_path,
            n_ctx=config.n_ctx,
            n_threads=config.n_threads,
            seed=config.seed,
            ram_cache_bytes=config.ram_cache_bytes,
            flash_attn=config.flash_attn,
            gguf_format=config.gguf_format,
        )
    if config.backend == "transformers":
        from simenv.llm.transformers_backend import TransformersBackend

        return TransformersBackend(model_path=config.model_path, seed=config.seed, torch_threads=config.n_threads)
    from simenv.llm.openai_backend import OpenAIBackend

    assert config.model is not None
    return OpenAIBackend(
        model=config.model,
        base_url=config.base_url,
        timeout_s=config.timeout_s,
        max_retries=config.max_retries,
        concurrency=config.concurrency,
        structured_output=config.structured_output,
        http_client=config.http_client,
        schema_mode=config.schema_mode,
    )


def make_llm(config: LLMConfig) -> LLM:
    """The backend wrapped in budget (if capped), cache (if `cache_dir`) and call log (if `call_log_dir`)."""
    from simenv.llm.budget import BudgetLLM
    from simenv.llm.cache import CacheLLM
    from simenv.llm.calllog import CallLogLLM

    llm = make_backend(config)
    if config.max_calls is not None or config.max_total_tokens is not None:
        llm = BudgetLLM(llm, max_calls=config.max_calls, max_tokens=config.max_total_tokens)
    if config.cache_dir:
        llm = CacheLLM(llm, config.cache_dir)
    if config.call_log_dir:
        llm = CallLogLLM(
            llm, config.call_log_dir, flush_every=config.call_log_flush_every, prompts=config.call_log_prompts
        )
    return llm
