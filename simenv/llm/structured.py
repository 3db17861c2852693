"""Structured (JSON) answers: validate every answer, repair a bounded number of times, then fail loudly.

Validation is JSON decoding, then the request's JSON schema, then the caller's semantic `check(value)`, which
raises `ValueError` with a message the repair prompt shows the model. A repair re-asks with the original
messages, the previous answer and the error (template `simenv/llm/prompts/repair.v1.j2`); a failed call is
re-sent unchanged. After `max_repairs` re-asks the result is `status="failed"`: the caller must apply its
fallback and record it — there is never a silent default.

Schema validation has a fast path (`_FastValidator`): for schemas made only of the plain keywords the contract
schemas use, a compiled `jsonschema_rs` validator is cached per schema *shape* (the schema without its `const`
keywords; per-page schemas that differ only in the shown ids share one) and the lifted `const` values are
checked at their instance locations. An answer it rejects goes through `jsonschema` as before, so the error
message a repair shows is unchanged, and `jsonschema`'s verdict is final; anything it cannot handle exactly uses
`jsonschema` alone.

Each response's outcome (parse status, repair index, whether it ended in a fallback) is reported to an
`OutcomeRecorder`: the one passed in, else the `llm` itself when it has `record_outcome` (the call-log
wrapper does, and the other wrappers forward it), so `llm_calls` rows say how each answer fared.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Protocol

import jsonschema
import jsonschema_rs
import orjson

from simenv.llm.templates import load_template
from simenv.llm.types import LLM, BudgetExceeded, LLMError, LLMRequest, LLMResponse, Message

Check = Callable[[Any], None]
Status = Literal["ok", "repaired", "failed"]
ParseStatus = Literal["ok", "invalid_json", "schema_error", "check_error", "call_error"]

_PREVIOUS_ANSWER_MAX_CHARS = 2000
_LONG_DIGITS = re.compile(r"[0-9](?=[0-9]{18})")  # 19+ digits: maybe an integer beyond 64 bits (see decode_json)


class OutcomeRecorder(Protocol):
    """Receives one outcome per response of a structured call (the call log implements it)."""

    def record_outcome(self, call_id: str, parse_status: str, repairs: int, fallback: bool) -> None: ...


@dataclass(frozen=True)
class StructuredResult:
    """The validated value (None when failed), how it was obtained, and every response on the way."""

    value: Any
    status: Status
    repairs: int
    error: str | None
    responses: tuple[LLMResponse, ...]

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def call_ids(self) -> tuple[str, ...]:
        return tuple(r.call_id for r in self.responses)


class _Invalid(Exception):
    def __init__(self, kind: ParseStatus, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _shape(schema: Any) -> Any:
    """The schema with every `const` value blanked: per-request schemas that differ only in constants (e.g. the
    shown ids of a page) share one shape, so the costly metaschema check runs once per shape."""
    if isinstance(schema, dict):
        return {k: (None if k == "const" else _shape(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_shape(v) for v in schema]
    return schema


@lru_cache(maxsize=256)
def _check_shape(cls: type, shape_json: str) -> None:
    cls.check_schema(json.loads(shape_json))  # type: ignore[attr-defined]


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    _check_shape(cls, json.dumps(_shape(schema), sort_keys=True))
    return cls(schema)


# Keywords whose meaning is the same in every draft-2020-12 validator and that apply a subschema only at
# locations fixed by the instance's keys/indices (so a lifted `const` can be checked there). Anything else
# (`$ref`, `anyOf`, `if`, `format`, `$schema`, ...) sends the schema down the `jsonschema`-only path. `pattern` is
# in only in the shape of the specs' forced openings (`^<letters>[^"\\\x00-\x1f]{m,n}$`), which means the same in
# Rust's and Python's regex syntax; any other pattern takes the `jsonschema`-only path.
_FAST_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "enum", "const",
        "title", "description", "pattern",
    }
)  # fmt: skip
_SCALAR = (str, int, float, bool, type(None))
_PLAIN_PATTERN = re.compile(r"\^[A-Za-z ,']*" + re.escape('[^"\\\\\\x00-\\x1f]') + r"\{\d+,\d+\}\$")
_ConstAt = tuple[tuple[Any, ...], Any]  # (instance path: keys, indices or ("*", first index)), required value


class _NotFast(Exception):
    """The schema uses something the fast path does not reproduce exactly."""


@dataclass(frozen=True)
class _Pattern:
    """A lifted `pattern` with its string's length bounds: forced openings (and so their lengths) differ per request
    with the ratings, so they are checked here and the shape, compiled once per structure, holds none."""

    regex: re.Pattern[str]
    min_length: int | None
    max_length: int | None

    def holds(self, value: str) -> bool:
        if self.min_length is not None and len(value) < self.min_length:
            return False
        if self.max_length is not None and len(value) > self.max_length:
            return False
        return self.regex.search(value) is not None


@lru_cache(maxsize=256)
def _anchored(pattern: str) -> re.Pattern[str]:
    """`^...$` as JSON Schema (ECMA/Rust) means it: `$` at the very end, not before a final newline as in `re`."""
    return re.compile(pattern[:-1] + r"\Z")


def _lengths(node: dict[str, Any]) -> tuple[int | None, int | None]:
    bounds = (node.get("minLength"), node.get("maxLength"))
    if any(b is not None and (isinstance(b, bool) or not isinstance(b, int)) for b in bounds):
        raise _NotFast
    return bounds


def _lift(node: Any, path: tuple[Any, ...], consts: list[_ConstAt]) -> Any:
    """The schema without its `const` and `pattern` keywords (appended to `consts` with their instance paths)."""
    if isinstance(node, bool):
        return node
    if not isinstance(node, dict):
        raise _NotFast
    out: dict[str, Any] = {}
    lifted_lengths = "pattern" in node
    for key, value in node.items():
        if key not in _FAST_KEYWORDS:
            raise _NotFast
        if key == "pattern":
            if not (isinstance(value, str) and _PLAIN_PATTERN.fullmatch(value)):
                raise _NotFast
            consts.append((path, _Pattern(_anchored(value), *_lengths(node))))
        elif lifted_lengths and key in ("minLength", "maxLength"):
            continue  # checked with the pattern
        elif key == "const":
            if not isinstance(value, _SCALAR):
                raise _NotFast
            consts.append((path, value))
        elif key == "properties":
            if not isinstance(value, dict):
                raise _NotFast
            out[key] = {name: _lift(sub, (*path, name), consts) for name, sub in value.items()}
        elif key == "prefixItems":
            if not isinstance(value, list):
                raise _NotFast
            out[key] = [_lift(sub, (*path, k), consts) for k, sub in enumerate(value)]
        elif key == "items":
            first = len(node.get("prefixItems", ()))
            out[key] = _lift(value, (*path, ("*", first)), consts)
        elif key == "additionalProperties":
            n_before = len(consts)
            out[key] = _lift(value, (*path, ("?",)), consts)
            if len(consts) != n_before:  # which keys it applies to depends on `properties`: keep it simple
                raise _NotFast
        else:
            out[key] = value
    return out


def _const_equal(value: Any, const: Any) -> bool:
    """`jsonschema`'s equality for scalars: booleans equal only booleans; 1 == 1.0. A lifted pattern applies to
    strings only."""
    if isinstance(const, _Pattern):
        return not isinstance(value, str) or const.holds(value)
    if isinstance(value, bool) or isinstance(const, bool):
        return type(value) is type(const) and value == const
    if isinstance(value, int | float) and isinstance(const, int | float):
        return value == const
    return type(value) is type(const) and value == const


def _consts_hold(instance: Any, path: tuple[Any, ...], const: Any) -> bool:
    """Does every instance location `path` reaches (if any) equal `const`? Mirrors how `properties`,
    `prefixItems` and `items` apply: only to objects/arrays, only where the key or index exists."""
    if not path:
        return _const_equal(instance, const)
    step, rest = path[0], path[1:]
    if isinstance(step, tuple):  # ("*", first): `items` after `prefixItems`
        if not isinstance(instance, list):
            return True
        return all(_consts_hold(v, rest, const) for v in instance[step[1] :])
    if isinstance(step, int):
        if not isinstance(instance, list) or step >= len(instance):
            return True
        return _consts_hold(instance[step], rest, const)
    if not isinstance(instance, dict) or step not in instance:
        return True
    return _consts_hold(instance[step], rest, const)


@lru_cache(maxsize=256)
def _shape_validator(shape_json: bytes) -> jsonschema_rs.Validator:
    shape = json.loads(shape_json)
    _check_shape(jsonschema.Draft202012Validator, shape_json.decode())  # a bad schema fails as loudly as before
    return jsonschema_rs.Draft202012Validator(shape)


@lru_cache(maxsize=1024)
def _fast_plan(schema_json: bytes) -> tuple[jsonschema_rs.Validator, tuple[_ConstAt, ...]] | None:
    """The compiled shape validator and the lifted consts of one schema (None if not for the fast path), cached
    per schema so that a call costs one serialisation of the schema, not a walk over it."""
    consts: list[_ConstAt] = []
    try:
        shape = _lift(json.loads(schema_json), (), consts)
    except _NotFast:
        return None
    return _shape_validator(orjson.dumps(shape, option=orjson.OPT_SORT_KEYS)), tuple(consts)


def fast_valid(value: Any, schema: Any) -> bool | None:
    """The fast path of `validate_answer`: True if `value` matches `schema` (compiled validator per shape +
    lifted consts); False if it may not; None if the schema is not for the fast path."""
    if not isinstance(schema, dict):
        return None
    try:
        plan = _fast_plan(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    except orjson.JSONEncodeError:  # not plain JSON (e.g. non-string keys): jsonschema alone
        return None
    if plan is None:
        return None
    validator, consts = plan
    try:
        if not validator.is_valid(value):
            return False
    except (ValueError, OverflowError, TypeError):  # a value the Rust side cannot hold: let jsonschema judge
        return False
    return all(_consts_hold(value, path, const) for path, const in consts)


def decode_json(text: str) -> Any:
    """Decode a JSON answer, tolerating surrounding whitespace, a Markdown code fence and raw control characters
    inside strings (nothing else).

    orjson first (~5x faster); what it refuses (e.g. NaN) goes to the json module, whose verdict and error
    message stand. Text with a run of 19+ digits goes to the json module directly: orjson would read an
    integer beyond 64 bits as a float."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    if _LONG_DIGITS.search(body) is not None:
        return _loads_lenient(body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _loads_lenient(body)


def _loads_lenient(body: str) -> Any:
    """json.loads, accepting raw control characters (a newline or tab typed inside a string): small models
    behind grammars that allow them write them, and the text is still unambiguous."""
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        if "Invalid control character" not in exc.msg:
            raise
        return json.loads(body, strict=False)


def validate_answer(text: str, schema: Any, check: Check | None) -> Any:
    """Return the decoded value, or raise `_Invalid` with the kind of failure and a message for the model."""
    try:
        value = decode_json(text)
    except json.JSONDecodeError as exc:
        raise _Invalid("invalid_json", f"it is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if schema is not None and not fast_valid(value, schema):
        validator = _validator(json.dumps(schema, sort_keys=True))
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
            raise _Invalid("schema_error", f"it does not match the schema at {where}: {error.message}")
    if check is not None:
        try:
            check(value)
        except ValueError as exc:
            raise _Invalid("check_error", str(exc)) from None
    return value


def answer_valid(text: str, schema: Any, check: Check | None = None) -> bool:
    """True if `text` decodes as JSON that matches `schema` (and passes `check`): `validate_answer` as a verdict."""
    try:
        validate_answer(text, schema, check)
    except _Invalid:
        return False
    return True


def repair_request(original: LLMRequest, previous: LLMResponse, error: str, attempt: int) -> LLMRequest:
    """The original messages, the bad answer, and the error: asks the model to correct itself."""
    prompt = load_template("simenv.llm", "repair", 1).render(error=error)
    messages = (
        *original.messages,
        Message("assistant", previous.text[:_PREVIOUS_ANSWER_MAX_CHARS]),
        *prompt,
    )
    return dataclasses.replace(original, messages=messages, attempt=attempt)


def with_json_instruction(messages: Sequence[Message], schema: Any) -> tuple[Message, ...]:
    """Append the JSON-only instruction (template `json_instruction.v1.j2`) to the last user message.

    For backends without constrained decoding. Appending at the end keeps a persona's system prefix intact.
    """
    instruction = load_template("simenv.llm", "json_instruction", 1).render(schema=json.dumps(schema))[0].content
    out = list(messages)
    for i in range(len(out) - 1, -1, -1):
        if out[i].role == "user":
            out[i] = Message("user", f"{out[i].content}\n\n{instruction}")
            return tuple(out)
    return (*out, Message("user", instruction))


def parse_if_json(text: str, schema: Any) -> Any:
    """What a backend puts in `LLMResponse.parsed`: the decoded JSON when a schema was asked for, else None."""
    if schema is None:
        return None
    try:
        return decode_json(text)
    except json.JSONDecodeError:
        return None


def _complete_one(llm: LLM, request: LLMRequest) -> LLMResponse:
    """`llm.complete`, with a failed call turned into a failed response (budget stops still propagate)."""
    try:
        return llm.complete(request)
    except BudgetExceeded:
        raise
    except LLMError as exc:
        call_id = getattr(exc, "call_id", None) or request.call_id()
        return LLMResponse(text="", backend=llm.name, model=request.model or "", call_id=call_id, error=str(exc))


def _run(
    send: Callable[[list[LLMRequest]], list[LLMResponse]],
    requests: Sequence[LLMRequest],
    checks: Sequence[Check | None],
    max_repairs: int,
    recorder: OutcomeRecorder | None,
) -> list[StructuredResult]:
    if max_repairs < 0:
        raise ValueError(f"max_repairs must be >= 0, got {max_repairs}")
    if len(checks) != len(requests):
        raise ValueError(f"ask_json_batch: {len(requests)} requests but {len(checks)} checks")
    history: list[list[LLMResponse]] = [[] for _ in requests]
    results: list[StructuredResult | None] = [None] * len(requests)
    current = list(requests)
    pending = list(range(len(requests)))
    while pending:
        responses = send([current[i] for i in pending])
        if len(responses) != len(pending):
            raise LLMError(f"backend returned {len(responses)} responses for {len(pending)} requests")
        next_pending = []
        for i, response in zip(pending, responses, strict=True):
            history[i].append(response)
            attempt = len(history[i]) - 1
            try:
                if response.error:
                    raise _Invalid("call_error", f"the call failed: {response.error}")
                value = validate_answer(response.text, requests[i].json_schema, checks[i])
            except _Invalid as bad:
                final = attempt >= max_repairs
                if recorder is not None:
                    recorder.record_outcome(response.call_id, bad.kind, attempt, final)
                if final:
                    results[i] = StructuredResult(None, "failed", attempt, f"{bad.kind}: {bad.message}", ())
                elif bad.kind == "call_error":
                    current[i] = dataclasses.replace(requests[i], attempt=attempt + 1)
                    next_pending.append(i)
                else:
                    current[i] = repair_request(requests[i], response, bad.message, attempt + 1)
                    next_pending.append(i)
                continue
            if recorder is not None:
                recorder.record_outcome(response.call_id, "ok", attempt, False)
            results[i] = StructuredResult(value, "ok" if attempt == 0 else "repaired", attempt, None, ())
        pending = next_pending
    out = []
    for result, responses_i in zip(results, history, strict=True):
        assert result is not None
        out.append(dataclasses.replace(result, responses=tuple(responses_i)))
    return out


def _recorder_of(llm: LLM, recorder: OutcomeRecorder | None) -> OutcomeRecorder | None:
    if recorder is not None:
        return recorder
    return llm if callable(getattr(llm, "record_outcome", None)) else None  # type: ignore[return-value]


def ask_json(
    llm: LLM,
    request: LLMRequest,
    check: Check | None = None,
    max_repairs: int = 2,
    recorder: OutcomeRecorder | None = None,
) -> StructuredResult:
    """Ask for a JSON answer and validate it, repairing up to `max_repairs` times; see the module doc."""
    return _run(
        lambda reqs: [_complete_one(llm, reqs[0])],
        [request],
        [check],
        max_repairs,
        _recorder_of(llm, recorder),
    )[0]


def ask_json_batch(
    llm: LLM,
    requests: Sequence[LLMRequest],
    checks: Sequence[Check | None] | None = None,
    max_repairs: int = 2,
    recorder: OutcomeRecorder | None = None,
) -> list[StructuredResult]:
    """`ask_json` for many requests: each round is one concurrent `complete_batch`; results in request order."""
    checks = [None] * len(requests) if checks is None else list(checks)
    return _run(lambda reqs: llm.complete_batch(reqs), requests, checks, max_repairs, _recorder_of(llm, recorder))
