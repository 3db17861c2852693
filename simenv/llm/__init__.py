"""The LLM layer: one request/response interface over mock, llama.cpp, transformers and OpenAI-compatible
backends, wrappers (cache, budget, call log) and validated structured answers. Heavy libraries load lazily."""

from simenv.llm.budget import BudgetLLM
from simenv.llm.cache import CacheLLM
from simenv.llm.calllog import CallLogLLM, read_call_log
from simenv.llm.factory import BACKENDS, LLMConfig, make_backend, make_llm
from simenv.llm.llama_cpp_backend import LlamaCppBackend, smollm2_gguf_path
from simenv.llm.mock import FAULT_KINDS, FaultConfig, MockLLM
from simenv.llm.openai_backend import OpenAIBackend
from simenv.llm.structured import OutcomeRecorder, StructuredResult, ask_json, ask_json_batch, validate_answer
from simenv.llm.templates import PromptTemplate, load_template
from simenv.llm.transformers_backend import TransformersBackend
from simenv.llm.types import LLM, BudgetExceeded, LLMError, LLMRequest, LLMResponse, Message
from simenv.llm.wrapper import LLMWrapper

__all__ = [
    "BACKENDS",
    "FAULT_KINDS",
    "LLM",
    "BudgetExceeded",
    "BudgetLLM",
    "CacheLLM",
    "CallLogLLM",
    "FaultConfig",
    "LLMConfig",
    "LLMError",
    "LLMRequest",
    "LLMResponse",
    "LLMWrapper",
    "LlamaCppBackend",
    "Message",
    "MockLLM",
    "OpenAIBackend",
    "OutcomeRecorder",
    "PromptTemplate",
    "StructuredResult",
    "TransformersBackend",
    "ask_json",
    "ask_json_batch",
    "load_template",
    "make_backend",
    "make_llm",
    "read_call_log",
    "smollm2_gguf_path",
    "validate_answer",
]
