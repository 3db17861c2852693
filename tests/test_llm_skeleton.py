"""Skeleton decoding plans: which schemas fix the answer's shape, and that forced text plus any allowed values
is always an answer the schema accepts."""

from __future__ import annotations

import json

import pytest

from agents.llm_user import page_schema
from simenv.llm.schemas import interview_schema, page_reaction_schema, reflection_schema
from simenv.llm.skeleton import Forced, Value, skeleton
from simenv.llm.structured import validate_answer

FIXED = {
    "type": "object",
    "properties": {"watch": {"type": "boolean"}, "rating": {"type": "integer", "minimum": 1, "maximum": 10}},
    "required": ["watch", "rating"],
    "additionalProperties": False,
}


def _fill(pieces, pick):
    """The answer text with every value replaced by `pick(value)`."""
    return "".join(p.text if isinstance(p, Forced) else pick(p) for p in pieces)


@pytest.mark.parametrize(
    "schema",
    [FIXED, page_schema([5, 9, 2]), page_reaction_schema(2, True, 40, 60), page_reaction_schema(0, False),
     interview_schema(100)],
    ids=["fixed-keys", "page_decision", "page_reaction", "page_reaction-empty", "interview"],
)  # fmt: skip
def test_every_choice_of_values_gives_a_valid_answer(schema):
    pieces = skeleton(schema)
    assert pieces is not None
    assert not any(isinstance(a, Forced) and isinstance(b, Forced) for a, b in zip(pieces, pieces[1:], strict=False))
    first = _fill(pieces, lambda v: v.options[0] if v.options else '"a b"')
    last = _fill(pieces, lambda v: " " + v.options[-1] if v.options and not v.space_before else
                 (v.options[-1] if v.options else ' "' + "x" * 40 + '"'))  # fmt: skip
    for text in (first, last):
        validate_answer(text, schema, None)


def test_page_decision_ids_are_forced_and_only_values_are_chosen():
    pieces = skeleton(page_schema([5, 9]))
    forced = "".join(p.text for p in pieces if isinstance(p, Forced))
    assert '"id":5' in forced and '"id":9' in forced
    kinds = [p.options for p in pieces if isinstance(p, Value)]
    assert kinds.count(("true", "false")) == 2 + 1  # two watch values and the leave value


def test_shapes_that_are_not_fixed_fall_back_to_the_full_grammar():
    assert skeleton(reflection_schema()) is None  # 1..3 insights: the length is the model's choice
    optional = {**FIXED, "required": ["watch"]}
    assert skeleton(optional) is None
    open_ended = {**FIXED, "additionalProperties": True}
    assert skeleton(open_ended) is None
    unbounded = {**FIXED, "properties": {**FIXED["properties"], "rating": {"type": "integer"}}}
    assert skeleton(unbounded) is None


def test_value_completion_rules():
    (rating,) = [p for p in skeleton(FIXED) if isinstance(p, Value) and p.space_before]
    assert rating.complete("5") and not rating.complete("1")  # "1" may still become "10"
    assert rating.complete("10")
    string = skeleton({"type": "string", "maxLength": 8})[0]
    assert not string.complete(' "a') and string.complete(' "a"')
    assert not string.complete('"a\\"') and string.complete('"a\\\\"')  # an escaped quote does not end it
    assert json.loads('"a\\\\"') == "a\\"


def test_a_value_may_end_with_the_next_forced_character():
    """BPE writes `",` as one token; the value may take the comma and the forced text then starts after it."""
    pieces = skeleton(page_reaction_schema(2, True, 40, 60))
    first_feeling = next(p for p in pieces if isinstance(p, Value))
    assert first_feeling.follow == ","
    assert first_feeling.complete(' "fun",') and first_feeling.split(' "fun",') == (' "fun"', True)
    assert not first_feeling.complete(' "fun, but') and first_feeling.split(' "a"') == (' "a"', False)
    assert first_feeling.grammar.startswith("root ::=") and '","?' in first_feeling.grammar
    # every value taking its follow character, with the forced text after it skipping that character
    out, skip = [], 0
    for p in pieces:
        if isinstance(p, Forced):
            out.append(p.text[skip:])
            skip = 0
        else:
            text = ('"ok"' if not p.options else p.options[0]) + p.follow
            skip = len(p.follow)
            out.append(text)
    assert validate_answer("".join(out), page_reaction_schema(2, True, 40, 60), None)["feelings"] == ["ok", "ok"]
