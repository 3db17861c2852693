"""A deterministic, seeded, offline stand-in for a language model (the test double of the whole project).

It answers each contract template (docs/CONTRACTS.md) with valid JSON decided by one small readable rule per
template, from `request.context` only — never by parsing prompt text. Each answer is drawn from a generator
seeded by (seed, request.cache_key()), so answers do not depend on call order or batching
(the attempt number is mixed in, so a re-sent request after an injected exception gets a fresh draw). `FaultConfig`
injects malformed JSON, out-of-range values, unknown ids or exceptions at a given rate, for tests of the
structured layer and its callers.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from simenv.llm.types import LLMError, LLMRequest, LLMResponse

Rule = Callable[[Mapping[str, Any], np.random.Generator], dict[str, Any]]

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


def _clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def _need(context: Mapping[str, Any], template: str, *keys: str) -> None:
    missing = [k for k in keys if k not in context]
    if missing:
        raise ValueError(f"mock rule for template {template!r}: request.context lacks keys {missing}")


_FEELINGS = {1: "Right up my alley.", 0: "It looks okay.", -1: "Not my kind of film."}  # by sign of the match


_PAGE_KEYS = ("item_ids", "item_genres", "liked_genres", "disliked_genres", "activity", "page_index")


def page_decision_rule(ctx: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Watch more often and rate higher the more an item's genres overlap the persona's liked genres (and less
    for disliked ones); active users watch more; the chance to leave grows with the page index and falls with
    each liked item."""
    try:
        ids, genres_per_item = ctx["item_ids"], ctx["item_genres"]
        liked, disliked = set(ctx["liked_genres"]), set(ctx["disliked_genres"])
        activity_shift = int(ctx["activity"]) - 2  # -1, 0, +1 for low, mid, high activity
        page_index = int(ctx["page_index"])
    except KeyError:
        _need(ctx, "page_decision", *_PAGE_KEYS)
        raise
    n = len(ids)
    if len(genres_per_item) != n:
        raise ValueError(f"mock rule for 'page_decision': {n} item_ids but {len(genres_per_item)} item_genres")
    u = rng.random(2 * n + 1).tolist()  # per item: watch draw, rating-noise draw; then the leave draw
    items = []
    n_liked = 0
    for k in range(n):  # the mock's hot loop, so _clip is inlined
        genres = genres_per_item[k]  # the mock user's whole notion of taste: liked minus disliked genres shared
        match = len(liked.intersection(genres)) - len(disliked.intersection(genres))
        p_watch = min(max(0.2 + 0.25 * match + 0.1 * activity_shift, 0.02), 0.95)
        watch = u[k] < p_watch
        rating = min(max(2 + match + int(u[n + k] * 3), 1), 5)  # 3 + match + noise (-1, 0 or +1)
        if watch and rating >= 4:
            n_liked += 1
        feeling = _FEELINGS[(match > 0) - (match < 0)]
        items.append({"id": int(ids[k]), "watch": watch, "rating": rating, "feeling": feeling})
    p_leave = _clip(0.1 + 0.12 * page_index - 0.08 * n_liked - 0.05 * activity_shift, 0.02, 0.9)
    leave = u[2 * n] < p_leave
    reason = "Nothing here holds my interest." if leave else "I want to see what comes next."
    return {"items": items, "leave": leave, "reason": reason}


def reflection_rule(ctx: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One insight per ten memories (1..3); its tone follows the mean rating."""
    _need(ctx, "reflection", "n_memories", "mean_rating")
    n = int(_clip(1 + int(ctx["n_memories"]) // 10, 1, 3))
    mean = ctx["mean_rating"]
    tone = "unknown" if mean is None else ("good" if mean >= 3.5 else "poor")
    pool = [
        f"The recommendations so far have been {tone} for me.",
        "I keep choosing films in the genres I already love.",
        "I should be pickier about what I watch.",
    ]
    order = rng.permutation(len(pool))[:n]
    return {"insights": [pool[i] for i in sorted(order)]}


def interview_rule(ctx: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Score = 1 + 9 x (share of shown items liked, blended with share watched), plus -1/0/+1 noise."""
    _need(ctx, "interview", "n_shown", "n_watched", "n_liked", "mean_rating")
    shown = max(int(ctx["n_shown"]), 1)
    share = 0.7 * int(ctx["n_liked"]) / shown + 0.3 * int(ctx["n_watched"]) / shown
    noise = int(rng.random() * 3) - 1  # -1, 0 or +1
    score = int(_clip(round(1 + 9 * share) + noise, 1, 10))
    reason = "Many of the films suited me." if score >= 6 else "Few of the films suited me."
    return {"score": score, "reason": reason}


def taste_summary_rule(ctx: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A fixed sentence naming the liked and disliked genres."""
    _need(ctx, "taste_summary", "liked_genres", "disliked_genres")
    liked = ", ".join(ctx["liked_genres"]) or "nothing in particular"
    disliked = ", ".join(ctx["disliked_genres"]) or "nothing in particular"
    return {"summary": f"I enjoy {liked}; I avoid {disliked}."}


def rerank_rule(ctx: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Candidates sorted by how many of their genres appear in the history, ties broken at random."""
    _need(ctx, "rerank", "candidate_ids", "candidate_genres", "history_genres")
    history = set(ctx["history_genres"])
    ids = [int(i) for i in ctx["candidate_ids"]]
    overlap = [len(set(g) & history) for g in ctx["candidate_genres"]]
    if len(overlap) != len(ids):
        raise ValueError(f"mock rule for 'rerank': {len(ids)} candidate_ids but {len(overlap)} candidate_genres")
    tiebreak = rng.random(len(ids))
    order = sorted(range(len(ids)), key=lambda i: (-overlap[i], tiebreak[i]))
    return {"ranking": [ids[i] for i in order]}


_FEELING_BY_STARS = ("Did not like it.", "Not for me.", "It was fine.", "Good film.", "Loved it.")


def page_reaction_rule(ctx: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One feeling per watched movie, by its rating; a leave reason only when the user leaves."""
    _need(ctx, "page_reaction", "ratings", "left")
    answer: dict[str, Any] = {"feelings": [_FEELING_BY_STARS[int(r) - 1] for r in ctx["ratings"]]}
    if ctx["left"]:
        answer["reason"] = "I have seen enough for today."
    return answer


DEFAULT_RULES: dict[str, Rule] = {
    "page_decision": page_decision_rule,
    "page_reaction": page_reaction_rule,
    "reflection": reflection_rule,
    "interview": interview_rule,
    "taste_summary": taste_summary_rule,
    "rerank": rerank_rule,
}


def _out_of_range(template: str, answer: dict[str, Any]) -> bool:
    """Break a bound of the template's schema in place; False if the template has no such bound."""
    if template == "page_decision" and answer["items"]:
        answer["items"][0]["rating"] = 7
    elif template == "page_reaction":
        answer["feelings"] = [*answer["feelings"], "one feeling too many"]
    elif template == "interview":
        answer["score"] = 11
    elif template == "reflection":
        answer["insights"] = []
    elif template == "rerank":
        answer["ranking"] = answer["ranking"] + answer["ranking"][:1]
    else:
        return False
    return True


def _unknown_id(template: str, answer: dict[str, Any]) -> bool:
    """Replace one id by an id that was not shown; False if the template has no ids."""
    if template == "page_decision" and answer["items"]:
        answer["items"][0]["id"] = max(e["id"] for e in answer["items"]) + 100_000
    elif template == "rerank" and answer["ranking"]:
        answer["ranking"][0] = max(answer["ranking"]) + 100_000
    else:
        return False
    return True


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
        self.rules: dict[str, Rule] = {**DEFAULT_RULES, **(rules or {})}
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
        rule = self.rules.get(request.template)
        if rule is None:
            raise ValueError(f"MockLLM has no rule for template {request.template!r}; known: {sorted(self.rules)}")
        key = request.cache_key()
        rng = self._rng(key, request.attempt)
        fault = None
        if self.faults.rate > 0.0 and rng.random() < self.faults.rate:
            fault = self.faults.kinds[int(rng.integers(len(self.faults.kinds)))]
        answer = rule(request.context, rng)
        if fault is not None:
            if fault == "exception":
                raise LLMError(f"mock: injected failure for template {request.template!r}")
            if fault == "out_of_range":
                _out_of_range(request.template, answer)
            elif fault == "unknown_id":
                _unknown_id(request.template, answer)
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
