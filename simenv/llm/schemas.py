"""Reference answer schemas and semantic checks for the templates in docs/CONTRACTS.md.

The schema says what shape an answer must have (and, for llama.cpp, constrains generation); the check says
what JSON schema cannot, e.g. "the ids must be exactly the shown ids, in order". Arrays are always bounded
(minItems/maxItems) and strings capped, because unbounded arrays make small models ramble to max_tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Check = Callable[[Any], None]

FEELING_MAX_CHARS = 80
REASON_MAX_CHARS = 160


def page_decision_schema(n_items: int) -> dict[str, Any]:
    """`{"items": [{"id", "watch", "rating", "feeling"}] x n_items, "leave", "reason"}`."""
    item = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "watch": {"type": "boolean"},
            "rating": {"type": "integer", "minimum": 1, "maximum": 5},
            "feeling": {"type": "string", "maxLength": FEELING_MAX_CHARS},
        },
        "required": ["id", "watch", "rating", "feeling"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": item, "minItems": n_items, "maxItems": n_items},
            "leave": {"type": "boolean"},
            "reason": {"type": "string", "maxLength": REASON_MAX_CHARS},
        },
        "required": ["items", "leave", "reason"],
        "additionalProperties": False,
    }


def page_reaction_schema(
    n_watched: int, left: bool, feeling_chars: int = FEELING_MAX_CHARS, reason_chars: int = REASON_MAX_CHARS
) -> dict[str, Any]:
    """`{"feelings": [str] x n_watched, "reason": str (only when the user leaves)}`: the text a grounded page
    decision needs, and nothing it would discard (see agents.llm_user, `page_prompt = "narrate"`). Callers may
    cap the strings tighter than the contract (short strings keep constrained decoding fast)."""
    properties: dict[str, Any] = {
        "feelings": {
            "type": "array",
            "items": {"type": "string", "maxLength": min(feeling_chars, FEELING_MAX_CHARS)},
            "minItems": n_watched,
            "maxItems": n_watched,
        }
    }
    if left:
        properties["reason"] = {"type": "string", "maxLength": min(reason_chars, REASON_MAX_CHARS)}
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def reflection_schema() -> dict[str, Any]:
    """`{"insights": [str] (1..3)}`."""
    return {
        "type": "object",
        "properties": {
            "insights": {
                "type": "array",
                "items": {"type": "string", "maxLength": REASON_MAX_CHARS},
                "minItems": 1,
                "maxItems": 3,
            }
        },
        "required": ["insights"],
        "additionalProperties": False,
    }


def interview_schema(reason_chars: int = REASON_MAX_CHARS) -> dict[str, Any]:
    """`{"score": 1..10, "reason": str}` (the reason may be capped tighter than the contract's maximum)."""
    return {
        "type": "object",
        "properties": {
            "score": {"type": "integer", "minimum": 1, "maximum": 10},
            "reason": {"type": "string", "maxLength": min(reason_chars, REASON_MAX_CHARS)},
        },
        "required": ["score", "reason"],
        "additionalProperties": False,
    }


def taste_summary_schema() -> dict[str, Any]:
    """`{"summary": str}`."""
    return {
        "type": "object",
        "properties": {"summary": {"type": "string", "maxLength": 400}},
        "required": ["summary"],
        "additionalProperties": False,
    }


def rerank_schema(n_candidates: int) -> dict[str, Any]:
    """`{"ranking": [int] x n_candidates}`; that it is a permutation is the check's job."""
    return {
        "type": "object",
        "properties": {
            "ranking": {
                "type": "array",
                "items": {"type": "integer"},
                "minItems": n_candidates,
                "maxItems": n_candidates,
            }
        },
        "required": ["ranking"],
        "additionalProperties": False,
    }


def check_page_decision(item_ids: Sequence[int]) -> Check:
    """The answer must list exactly the shown ids, in page order."""
    expected = [int(i) for i in item_ids]

    def check(value: Any) -> None:
        got = [entry["id"] for entry in value["items"]]
        if got != expected:
            raise ValueError(f"items must have the ids {expected} in this order, one entry each; you gave {got}")

    return check


PLACEHOLDER_TEXTS = frozenset({"", ".", "..", "...", "…", "<...>"})  # see simenv.llm.echo for the full echo test


def page_pick_schema(k: int) -> dict[str, Any]:
    """`{"watched": [int] x k}`; that they are k distinct shown ids is the check's job."""
    return {
        "type": "object",
        "properties": {"watched": {"type": "array", "items": {"type": "integer"}, "minItems": k, "maxItems": k}},
        "required": ["watched"],
        "additionalProperties": False,
    }


def check_page_pick(item_ids: Sequence[int], k: int) -> Check:
    """The answer must name exactly `k` distinct ids, all of them shown."""
    shown = {int(i) for i in item_ids}

    def check(value: Any) -> None:
        picked = [int(i) for i in value["watched"]]
        unknown = sorted(set(picked) - shown)
        if len(picked) != k or len(set(picked)) != k or unknown:
            raise ValueError(f"watched must name exactly {k} distinct shown ids; got {picked} (unknown {unknown})")

    return check


def check_rerank(candidate_ids: Sequence[int]) -> Check:
    """The ranking must be a permutation of the candidate ids."""
    expected = sorted(int(i) for i in candidate_ids)

    def check(value: Any) -> None:
        ranking = list(value["ranking"])
        if sorted(ranking) != expected:
            unknown = sorted(set(ranking) - set(expected))
            missing = sorted(set(expected) - set(ranking))
            raise ValueError(
                f"ranking must contain each candidate id exactly once; unknown ids {unknown}, missing ids {missing}"
            )

    return check


ENUM_MAX_RANGE = 32  # integer ranges up to this many values are also sent as `enum`


def grammar_friendly(schema: Any) -> Any:
    """A copy of `schema` in forms that grammar-constrained servers enforce: every integer with a `minimum` and a
    `maximum` at most ENUM_MAX_RANGE values apart also gets an `enum` of those values (llama.cpp's server turns
    `enum` into its grammar but ignores `minimum`/`maximum`: SmolLM2 wrote ratings of -5 and 8). Answers are
    still validated against the original schema."""
    if isinstance(schema, list):
        return [grammar_friendly(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: grammar_friendly(v) for k, v in schema.items()}
    low, high = out.get("minimum"), out.get("maximum")
    if (
        out.get("type") == "integer"
        and "enum" not in out
        and "const" not in out
        and isinstance(low, int)
        and isinstance(high, int)
        and 0 <= high - low < ENUM_MAX_RANGE
    ):
        out["enum"] = list(range(low, high + 1))
    return out


def without_prefix_items(schema: Any) -> Any:
    """A copy of `schema` for servers whose JSON-Schema support predates `prefixItems` (draft 2020-12): every
    `prefixItems` list becomes `items: {"anyOf": [...]}` (the same subschemas, in any order; one subschema when they
    are all alike) and its `items: false` goes. The length bounds stay. Looser than the original, so answers are
    still validated against the original schema on the client (`simenv.llm.structured`)."""
    if isinstance(schema, list):
        return [without_prefix_items(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: without_prefix_items(v) for k, v in schema.items() if k != "prefixItems"}
    if "prefixItems" in schema:
        subs = [without_prefix_items(s) for s in schema["prefixItems"]]
        unique = [s for k, s in enumerate(subs) if s not in subs[:k]]
        out["items"] = unique[0] if len(unique) == 1 else {"anyOf": unique}
    return out
