"""A deterministic, seeded, offline stand-in for a language model (the test double of the whole project).

It answers each contract template (docs/CONTRACTS.md) with valid JSON decided by the template's spec, as its
owner registered it (`simenv.llm.spec_registry`: one small readable rule per template, texts from the spec's
samples), from `request.context` only — never by parsing prompt text; this module holds no domain strings of its
own. Each answer is drawn from
a generator seeded by (seed, request.cache_key()), so answers do not depend on call order or batching
(the attempt number is mixed in, so a re-sent request after an injected exception gets a fresh draw). `FaultConfig`
injects malformed JSON, out-of-range values, unknown ids or exceptions at a given rate, for tests of the
structured layer and its callers.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from simenv.llm.prompt_spec import Rule
from simenv.llm.spec_registry import registered_names, registered_spec
from simenv.llm.types import LLMError, LLMRequest, LLMResponse

_ENCODER = json.JSONEncoder(check_circular=False)  # fallback for what orjson refuses (e.g. ints beyond 64 bits)
_PCG64_INC = 0xDA3E39CB94B95BDB
FAULT_KINDS = ("malformed_json", "out_of_range", "unknown_id", "exception")


@dataclass(frozen=True)
class FaultConfig:
    """Inject a fault into a fraction `rate` of calls, the kind drawn uniformly from `kinds`.

    A kind that does not apply to a template (e.g. `unknown_id` for `interview`) is skipped for it.
    """

    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"FaultConfig.rate must be in [0, 1], got {self.rate!r}")
        unknown = sorted(set(self.kinds) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"FaultConfig.kinds has unknown kinds {unknown}; known: {list(FAULT_KINDS)}")


class MockLLM:
    """Deterministic seeded fake LLM: same (seed, request) -> same answer, whatever the call order."""

    name = "mock"
    model = "mock"

    def __init__(
        self,
        seed: int = 0,
        faults: FaultConfig | None = None,
        rules: Mapping[str, Rule] | None = None,
    ) -> None:
        self.seed = int(seed)
        self.faults = faults or FaultConfig()
        self.rules: dict[str, Rule] = dict(rules or {})  # these first, then the registered specs' rules
        self._local = threading.local()
        self._key_prefix = f"{self.seed}:".encode()  # the generator is seeded by "<seed>:<cache key>:<attempt>"

    def _rng(self, key: str, attempt: int) -> np.random.Generator:
        """A generator positioned by (seed, request key, attempt). Re-seeding one PCG64 per thread in place (its
        state dict reused) is ~10x cheaper than building a generator per call."""
        local = self._local
        try:
            gen, state = local.gen, local.state
        except AttributeError:
            gen = local.gen = np.random.Generator(np.random.PCG64(0))
            state = local.state = {
                "bit_generator": "PCG64",
                "state": {"state": 0, "inc": _PCG64_INC},
                "has_uint32": 0,
                "uinteger": 0,
            }
        digest = hashlib.blake2b(b"%s%s:%d" % (self._key_prefix, key.encode(), attempt), digest_size=16).digest()
        state["state"]["state"] = int.from_bytes(digest, "little")
        gen.bit_generator.state = state
        return gen

    @property
    def identity(self) -> str:
        """What distinguishes this model's answers (used by the cache key)."""
        return f"mock(seed={self.seed},faults={self.faults.rate}:{','.join(self.faults.kinds)})"

    def __repr__(self) -> str:
        return f"MockLLM(seed={self.seed}, faults={self.faults!r})"

    def _answer(self, request: LLMRequest) -> LLMResponse:
        start = time.perf_counter()
        template = request.template
        spec = registered_spec(template)
        rule = self.rules.get(template) or (spec.mock if spec is not None else None)
        if rule is None:
            known = sorted({*self.rules, *registered_names()})
            raise ValueError(
                f"MockLLM has no rule for template {template!r}; known: {known} (a template's owner registers "
                "its spec when its spec module is imported)"
            )
        key = request.cache_key()
        rng = self._rng(key, request.attempt)
        fault = None
        if self.faults.rate > 0.0 and rng.random() < self.faults.rate:
            fault = self.faults.kinds[int(rng.integers(len(self.faults.kinds)))]
        answer = rule(request.context, rng)
        if fault is not None:
            if fault == "exception":
                raise LLMError(f"mock: injected failure for template {template!r}")
            breakers = {"out_of_range": spec.mock_out_of_range, "unknown_id": spec.mock_unknown_id} if spec else {}
            breaker = breakers.get(fault)
            if breaker is not None:
                breaker(answer)
        try:
            text = orjson.dumps(answer).decode()  # compact JSON; ~10x cheaper than the json module
        except (orjson.JSONEncodeError, TypeError):
            text = _ENCODER.encode(answer)
        parsed = None
        if fault == "malformed_json":
            text = text[: max(1, len(text) // 2)]
        elif request.json_schema is not None:
            parsed = answer
        prompt_chars = sum([len(m.content) for m in request.messages])
        return LLMResponse(
            text=text,
            backend=self.name,
            model=self.model,
            prompt_tokens=prompt_chars // 4 + 1,
            completion_tokens=len(text) // 4 + 1,
            latency_s=time.perf_counter() - start,
            parsed=parsed,
            call_id=request.call_id(key),
        )

    def complete(self, request: LLMRequest) -> LLMResponse:
        return self._answer(request)

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        """In order; an injected exception becomes a failed response (`error` set), never a lost request."""
        out = []
        for request in requests:
            try:
                out.append(self._answer(request))
            except LLMError as exc:
                out.append(
                    LLMResponse(text="", backend=self.name, model=self.model, call_id=request.call_id(), error=str(exc))
                )
        return out
