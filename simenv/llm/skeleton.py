"""Skeleton decoding: write a fixed-shape JSON answer's structure directly and let the model choose only the values.

A grammar-constrained answer like `{"watch_1": true, "rating_1": 4, ...}` is mostly forced text (keys, quotes,
commas) that the model would otherwise decode one token at a time. When the schema fixes the whole shape (every
key required and in order, arrays of fixed length, leaves that are booleans, small integer ranges, enums,
consts or bounded strings), the answer is a sequence of forced pieces and free values. Forced pieces are
appended as tokens and evaluated in one batch with the next value's prompt (prompt speed, several times decode
speed on CPU); each value is sampled under a tiny grammar of its own, and sampling stops as soon as the value is
complete. The result is the same JSON shape the full grammar would allow, validated by the caller as usual.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

_MAX_ENUM = 64
_STRING_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


@dataclass(frozen=True)
class Forced:
    """Text written as is."""

    text: str


@dataclass(frozen=True)
class Value:
    """A leaf the model chooses: its GBNF expression (`root`, plus helper `rules`), the complete texts it may
    end as (empty = a string, complete at its closing quote), and a token budget. Forced text ends without a
    space and every value may start with one, so the model can write its natural ` true` token; and a value may
    end with `follow`, the first character of the forced text after it, because BPE merges `",` and `"}` into
    one token — forbidding them makes a model write strings to their maximum length.
    """

    root: str
    options: tuple[str, ...]
    max_tokens: int
    rules: str = ""
    space_before: bool = False  # the forced text before it ends with " " (numbers: " 4" is two tokens anyway)
    follow: str = ""

    @property
    def free_text(self) -> bool:
        """A string the model writes, not a choice among options."""
        return not self.options

    @property
    def grammar(self) -> str:
        tail = f" {json.dumps(self.follow)}?" if self.follow else ""
        return f"root ::= {self.root}{tail}\n{self.rules}".strip()

    def split(self, text: str) -> tuple[str, bool]:
        """(the value's own text, whether `follow` was written too)."""
        if self.follow and text.endswith(self.follow) and self._whole(text[: -len(self.follow)]):
            return text[: -len(self.follow)], True
        return text, False

    def complete(self, text: str) -> bool:
        """True when `text` is a whole value (maybe with `follow`) and no longer option could still follow."""
        value, followed = self.split(text)
        if followed:
            return True
        value = value.lstrip(" ")
        if self.free_text:
            return self._whole(value)
        return value in self.options and not any(o != value and o.startswith(value) for o in self.options)

    def _whole(self, text: str) -> bool:
        text = text.lstrip(" ")
        if self.free_text:
            return len(text) >= 2 and text.startswith('"') and text.endswith('"') and not _escaped_quote(text)
        return text in self.options


Piece = Forced | Value


def _escaped_quote(text: str) -> bool:
    backslashes = len(text[:-1]) - len(text[:-1].rstrip("\\"))
    return backslashes % 2 == 1


def _choice(options: list[str], max_tokens: int) -> Value:
    alternatives = " | ".join(json.dumps(o) for o in options)
    if all(o[:1].isdigit() or o[:1] == "-" for o in options):  # SmolLM2/GPT-style BPE: ": 4" is ":", " ", "4"
        return Value(f"({alternatives})", tuple(options), max_tokens, space_before=True)
    return Value(f'" "? ({alternatives})', tuple(options), max_tokens)


def _leaf(schema: dict[str, Any]) -> Piece | None:
    if "const" in schema:
        return Forced(json.dumps(schema["const"]))
    if "enum" in schema and len(schema["enum"]) <= _MAX_ENUM:
        options = [json.dumps(v) for v in schema["enum"]]
        return _choice(options, max(len(o) for o in options) + 1)
    kind = schema.get("type")
    if kind == "boolean":
        return _choice(["true", "false"], 2)
    if kind == "integer":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if isinstance(lo, int) and isinstance(hi, int) and 0 <= hi - lo <= _MAX_ENUM:
            return _choice([str(v) for v in range(lo, hi + 1)], len(str(hi)) + 2)
        return None
    if kind == "string" and isinstance(schema.get("maxLength"), int) and not set(schema) & {"pattern", "enum"}:
        n = int(schema["maxLength"])
        return Value(f'" "? "\\"" char{{0,{n}}} "\\""', (), n + 4, rules=f"char ::= {_STRING_CHAR}")
    return None


def skeleton(schema: Any) -> list[Piece] | None:
    """The answer as forced pieces and values, or None when the schema does not fix the shape."""
    pieces: list[Piece] = []
    if not _walk(schema, pieces):
        return None
    merged: list[Piece] = []
    for piece in pieces:  # adjacent forced text is one piece
        if isinstance(piece, Value) and piece.space_before and merged and isinstance(merged[-1], Forced):
            merged[-1] = Forced(merged[-1].text + " ")
        if isinstance(piece, Forced) and merged and isinstance(merged[-1], Forced):
            merged[-1] = Forced(merged[-1].text + piece.text)
        else:
            merged.append(piece)
    for k, piece in enumerate(merged[:-1]):
        after = merged[k + 1]
        if isinstance(piece, Value) and isinstance(after, Forced) and after.text[:1] in (",", "}", "]"):
            merged[k] = replace(piece, follow=after.text[0])
    return merged


def _walk(schema: Any, out: list[Piece]) -> bool:
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    if kind == "object" and "const" not in schema:
        props = schema.get("properties", {})
        if schema.get("additionalProperties", True) is not False or list(schema.get("required", [])) != list(props):
            return False
        out.append(Forced("{"))
        for k, (key, sub) in enumerate(props.items()):
            out.append(Forced(("" if k == 0 else ",") + json.dumps(key) + ":"))
            if not _walk(sub, out):
                return False
        out.append(Forced("}"))
        return True
    if kind == "array":
        if "prefixItems" in schema:
            items = list(schema["prefixItems"])
            if schema.get("items", True) is not False or schema.get("minItems", len(items)) != len(items):
                return False
        else:
            n = schema.get("minItems")
            if n is None or schema.get("maxItems") != n or not isinstance(schema.get("items"), dict):
                return False
            items = [schema["items"]] * int(n)
        out.append(Forced("["))
        for k, sub in enumerate(items):
            if k:
                out.append(Forced(","))
            if not _walk(sub, out):
                return False
        out.append(Forced("]"))
        return True
    leaf = _leaf(schema)
    if leaf is None:
        return False
    out.append(leaf)
    return True
