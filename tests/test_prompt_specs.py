"""One spec per prompt: each spec's example is generated from its schema and validates against it (and its own
check); the mock answers every spec validly without copying the example the prompt shows; templates render it."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest

import simenv.llm.mock as mock_module
from agents.llm_user.specs import SPECS as USER_SPECS
from recommenders.llm_rerank_spec import RERANK
from simenv.llm.mock import MockLLM
from simenv.llm.prompt_spec import example_answer, forced_string, opening_of, prompt_example, string_leaves
from simenv.llm.spec_registry import register_specs, registered_spec
from simenv.llm.structured import validate_answer
from simenv.llm.types import LLMRequest, Message

CONTEXTS = {
    "page_decision": [
        {"item_ids": [3, 7, 9, 11], "item_genres": [["Drama"], ["Comedy"], ["Horror"], []],
         "liked_genres": ["Drama"], "disliked_genres": ["Horror"], "activity": 2, "page_index": 1},
        {"item_ids": [5], "item_genres": [["Drama"]], "liked_genres": [], "disliked_genres": [], "activity": 3,
         "page_index": 4},
    ],
    "page_pick": [
        {"item_ids": [3, 7, 9, 11], "item_genres": [["Drama"], ["Comedy"], ["Horror"], []],
         "liked_genres": ["Drama"], "disliked_genres": ["Horror"], "watched_count": 2},
        {"item_ids": [5, 6], "item_genres": [["Drama"], []], "liked_genres": [], "disliked_genres": [],
         "watched_count": 1},
    ],
    "page_reaction": [
        {"ratings": [5, 4, 3, 2, 1], "left": True, "page_index": 0},
        {"ratings": [], "left": True, "page_index": 2},
        {"ratings": [3], "left": False, "page_index": 1},
    ],
    "reflection": [{"n_memories": 25, "mean_rating": 4.2}, {"n_memories": 3, "mean_rating": None}],
    "interview": [
        {"n_shown": 20, "n_watched": 8, "n_liked": 6, "mean_rating": 4.0},
        *({"n_shown": 8, "n_watched": 2, "n_liked": 1, "mean_rating": 3.0, "score": s} for s in (1, 5, 9)),
    ],
    "taste_summary": [{"liked_genres": ["Drama", "Comedy"], "disliked_genres": []}],
    "rerank": [{"candidate_ids": [4, 8, 15], "candidate_genres": [["Drama"], ["Comedy"], []],
                "history_genres": ["Drama"]}],
}  # fmt: skip
SPECS = {**USER_SPECS, RERANK.name: RERANK}
CASES = [(name, ctx) for name, contexts in CONTEXTS.items() for ctx in contexts]


def test_every_spec_has_cases() -> None:
    assert set(CONTEXTS) == set(SPECS)


@pytest.mark.parametrize(("name", "context"), CASES)
def test_the_example_is_generated_from_the_schema_and_validates(name: str, context: dict) -> None:
    spec = SPECS[name]
    schema = spec.schema(context)
    example = spec.example(context)
    check = spec.check(context)
    assert validate_answer(json.dumps(example), schema, check) == example
    texts = [text for _, text, _ in string_leaves(example, schema)]
    assert all(len(t.split()) >= 2 and "..." not in t and "<" not in t for t in texts)  # real-looking, no skeleton
    assert spec.budget(context) >= len(json.dumps(example)) // 4  # the budget leaves room for the answer


@pytest.mark.parametrize(("name", "context"), CASES)
def test_the_mock_answers_every_spec_without_copying_the_shown_example(name: str, context: dict) -> None:
    spec = SPECS[name]
    schema = spec.schema(context)
    shown = prompt_example(spec.example(context), schema)
    check = spec.full_check(context, f"Answer. JSON: {shown}", schema)
    for seed in range(4):
        request = LLMRequest((Message("user", f"q{seed}"),), name, "v1", json_schema=schema, context=context, seed=seed)
        answer = validate_answer(MockLLM(seed=seed).complete(request).text, schema, check)
        assert answer == MockLLM(seed=seed).complete(request).parsed


def test_forced_openings_are_shown_cut_and_enforced() -> None:
    schema = forced_string("I liked it because ", 4, 20)
    assert opening_of(schema) == "I liked it because "
    example = example_answer({"type": "object", "properties": {"f": schema}}, {"f": [("I liked it because fun",)]})
    assert prompt_example(example, {"type": "object", "properties": {"f": schema}}) == '{"f":"I liked it because"}'
    assert validate_answer('"I liked it because it was fun"', schema, None)
    for bad in ('"I hated it because it was fun"', '"I liked it because"', '"I liked it because ' + "x" * 30 + '"'):
        with pytest.raises(Exception, match="does not match"):
            validate_answer(bad, schema, None)
    with pytest.raises(ValueError, match="letters, spaces"):
        forced_string('I "liked" it', 1, 2)


def test_a_string_without_a_sample_is_an_error_not_a_placeholder() -> None:
    with pytest.raises(ValueError, match="no sample value for string field 'reason'"):
        example_answer({"type": "object", "properties": {"reason": {"type": "string"}}}, {})


def test_the_mock_holds_no_domain_strings_of_its_own() -> None:
    source = inspect.getsource(mock_module)
    for name, contexts in CONTEXTS.items():
        for context in contexts:
            for pool in SPECS[name].samples(context).values():
                for value in (v for p in pool for v in p if isinstance(v, str)):
                    assert value not in source
    literals = re.findall(r'"([A-Z][a-z]+(?: [a-z]+){2,}[.!]?)"', source)  # sentence-like string literals
    assert literals == []


def test_the_mock_draws_depend_on_the_seed() -> None:
    spec = SPECS["page_reaction"]
    context = CONTEXTS["page_reaction"][0]
    drawn = {tuple(spec.example(context, np.random.default_rng(s))["feelings"]) for s in range(8)}
    assert len(drawn) > 1


def _code_strings(path: Path) -> list[str]:
    """The string constants of a module's code (docstrings left out: they may name an owner's template)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }  # fmt: skip
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_the_core_names_no_owners_template_nor_module() -> None:
    """simenv answers the owners' templates through the registry: its code names none of them, and no owner
    module even as a string (import-linter sees only import statements)."""
    core = Path(mock_module.__file__).parents[1]
    for path in sorted(core.rglob("*.py")):
        for text in _code_strings(path):
            assert text not in SPECS, f"{path} names the template {text!r}"
            assert not re.match(r"(agents|recommenders|experiments)(\.|$)", text), f"{path}: {text!r}"


def test_the_mock_answers_through_the_registered_specs() -> None:
    assert {name: registered_spec(name) for name in SPECS} == SPECS
    with pytest.raises(ValueError, match="registered by 'agents', not 'recommenders'"):
        register_specs(dataclasses.replace(SPECS["interview"], package="recommenders"))
