"""The fast paths added for speed give the same results as the slow ones they stand in for.

- Answer validation: the compiled per-shape validator with lifted `const`s accepts exactly what `jsonschema`
  accepts (on valid answers and many seeded mutations of them), and error messages are still `jsonschema`'s.
- `LLMRequest.cache_key`: equal for equal content, different when anything that determines the answer differs.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import jsonschema_rs
import numpy as np
import pytest

from agents.llm_user import page_schema
from simenv.llm.schemas import interview_schema, reflection_schema
from simenv.llm.structured import fast_valid, validate_answer
from tests.fixtures_llm import page_request


def _page_answer(ids: list[int]) -> dict[str, Any]:
    items = [{"id": i, "watch": k % 2 == 0, "rating": 1 + k % 5, "feeling": "fine"} for k, i in enumerate(ids)]
    return {"items": items, "leave": False, "reason": "next"}


def _mutations(answer: dict[str, Any], rng: np.random.Generator) -> list[Any]:
    """Valid and invalid variants of a page answer: one change each, at a random item."""
    out: list[Any] = []
    k = int(rng.integers(len(answer["items"])))
    changes = [
        ("id", answer["items"][k]["id"] + 1),  # breaks the const
        ("id", float(answer["items"][k]["id"])),  # 3.0 == 3: still valid
        ("id", True),
        ("rating", 0),
        ("rating", 6),
        ("rating", 4.0),  # an integer by JSON schema's rules
        ("rating", 4.5),
        ("rating", True),
        ("rating", "4"),
        ("watch", 1),
        ("watch", None),
        ("feeling", "x" * 41),
        ("feeling", "x" * 40),
        ("feeling", 3),
        ("extra", 1),
    ]
    for key, value in changes:
        mutated = copy.deepcopy(answer)
        mutated["items"][k][key] = value
        out.append(mutated)
    for key in ("id", "watch", "rating", "feeling"):
        mutated = copy.deepcopy(answer)
        del mutated["items"][k][key]
        out.append(mutated)
    swapped = copy.deepcopy(answer)
    swapped["items"][0], swapped["items"][-1] = swapped["items"][-1], swapped["items"][0]
    out.append(swapped)
    for top in (("leave", "no"), ("leave", 0), ("reason", 5), ("reason", "r" * 161), ("more", [])):
        mutated = copy.deepcopy(answer)
        mutated[top[0]] = top[1]
        out.append(mutated)
    out += [
        {**answer, "items": answer["items"][:-1]},
        {**answer, "items": answer["items"] + answer["items"][:1]},
        {**answer, "items": None},
        {k2: v for k2, v in answer.items() if k2 != "reason"},
        [answer],
        None,
        {**answer, "items": [list(answer["items"][0].values())] + answer["items"][1:]},
    ]
    return out


def test_fast_validation_agrees_with_jsonschema_on_page_answers() -> None:
    rng = np.random.default_rng(7)
    n_valid = n_invalid = 0
    for _ in range(30):
        ids = [int(i) for i in rng.choice(2000, size=int(rng.integers(1, 7)), replace=False)]
        schema = page_schema(ids)
        reference = jsonschema.Draft202012Validator(schema)
        for candidate in [_page_answer(ids), *_mutations(_page_answer(ids), rng)]:
            fast = fast_valid(candidate, schema)
            assert fast is not None, "page schemas are for the fast path"
            assert fast == reference.is_valid(candidate), candidate
            n_valid += fast
            n_invalid += not fast
    assert n_valid > 30 and n_invalid > 300  # both verdicts were exercised


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        (interview_schema(), {"score": 10, "reason": ""}, {"score": 11, "reason": ""}),
        (reflection_schema(), {"insights": ["a"]}, {"insights": []}),
        ({"type": "array", "items": {"const": "x"}}, ["x", "x"], ["x", "y"]),
        ({"type": "array", "prefixItems": [{"const": 1}], "items": {"const": 2}}, [1, 2, 2], [1, 2, 1]),
        ({"type": "object", "properties": {"a": {"const": False}}}, {"b": 0}, {"a": 0}),
        ({"type": "object", "properties": {"a": {"enum": [1, "b", None]}}}, {"a": "b"}, {"a": True}),
    ],
)
def test_fast_validation_on_other_schemas(schema: dict[str, Any], good: Any, bad: Any) -> None:
    assert fast_valid(good, schema) is True
    assert fast_valid(bad, schema) is False
    assert jsonschema.Draft202012Validator(schema).is_valid(good)
    assert not jsonschema.Draft202012Validator(schema).is_valid(bad)


def test_forced_openings_agree_with_jsonschema_and_share_one_compiled_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """page_reaction schemas differ per page in their ratings' openings and lengths; the fast path checks those
    itself, so one compiled shape serves every rating combination, with jsonschema's verdicts."""
    from agents.llm_user.specs import LEAVE_OPENING, OPENINGS, reaction_schema

    compiled: list[Any] = []  # every jsonschema_rs validator built while the 60 schemas are checked
    real = jsonschema_rs.Draft202012Validator

    def counting(schema: Any, *args: Any, **kwargs: Any) -> Any:
        compiled.append(schema)
        return real(schema, *args, **kwargs)

    monkeypatch.setattr(jsonschema_rs, "Draft202012Validator", counting)
    rng = np.random.default_rng(3)
    verdicts = set()
    for _ in range(60):
        ratings = [int(r) for r in rng.integers(1, 6, size=3)]
        schema = reaction_schema({"ratings": ratings, "left": True})
        reference = jsonschema.Draft202012Validator(schema)
        swapped = [OPENINGS[6 - r] if r != 3 else OPENINGS[4] for r in ratings]
        candidates = [
            [OPENINGS[r] + "the plot held me" for r in ratings],  # valid
            [OPENINGS[r] + "x" * 41 for r in ratings],  # free part over its cap
            [OPENINGS[r] + "ab" for r in ratings],  # free part under its minimum
            [o + "the plot held me" for o in swapped],  # another rating's opening
            [OPENINGS[r] + "the plot\theld me" for r in ratings],  # a control character
        ]
        for feelings in candidates:
            answer = {"feelings": feelings, "reason": LEAVE_OPENING + "it is late"}
            fast = fast_valid(answer, schema)
            assert fast == reference.is_valid(answer), answer
            verdicts.add(fast)
    assert verdicts == {True, False}
    assert len(compiled) <= 1
    # `$` ends the text as in ECMA regexes (and llama.cpp's grammar): no final newline, where Python's `re` allows one
    ratings = [4]
    answer = {"feelings": [OPENINGS[4] + "the plot held me\n"], "reason": LEAVE_OPENING + "it is late"}
    assert fast_valid(answer, reaction_schema({"ratings": ratings, "left": True})) is False


@pytest.mark.parametrize(
    ("schema", "bad"),
    [
        ({"anyOf": [{"const": 1}, {"const": 2}]}, 3),
        ({"type": "string", "pattern": "^a"}, "b"),
        ({"$defs": {"x": {"type": "integer"}}, "$ref": "#/$defs/x"}, 1.5),
        ({"type": "object", "additionalProperties": {"const": 1}}, {"z": 2}),
        ({"const": [1, 2]}, [2, 1]),
    ],
)
def test_schemas_outside_the_fast_path_are_still_validated(schema: dict[str, Any], bad: Any) -> None:
    assert fast_valid(bad, schema) is None
    with pytest.raises(Exception, match="does not match the schema"):
        validate_answer(json.dumps(bad), schema, None)


def test_rejections_keep_jsonschema_messages() -> None:
    ids = [4, 8]
    schema = page_schema(ids)
    answer = _page_answer(ids)
    answer["items"][1]["rating"] = 9
    expected = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(answer))
    with pytest.raises(Exception) as info:
        validate_answer(json.dumps(answer), schema, None)
    assert info.value.kind == "schema_error"
    assert info.value.message == f"it does not match the schema at items/1/rating: {expected.message}"


def test_a_malformed_schema_still_fails_loudly() -> None:
    with pytest.raises(jsonschema.exceptions.SchemaError):
        validate_answer('{"a": 1}', {"type": "object", "properties": {"a": {"type": "intger"}}}, None)


def test_cache_key_follows_content_not_identity() -> None:
    base = page_request()
    assert page_request().cache_key() == base.cache_key()
    with_numpy = page_request(item_ids=tuple(np.array([3, 7, 9, 11])))
    assert with_numpy.cache_key() == base.cache_key()  # numpy ints hash as the ints they are
    for other in (
        page_request(item_ids=(3, 7, 9, 12)),
        page_request(page_index=1),
        page_request(user=2),
        page_request(activity=3),
    ):
        assert other.cache_key() != base.cache_key()


@pytest.mark.parametrize(
    ("action_mode", "history_len", "ratings"),
    [
        ("slate", 8, None),
        ("slate", 3, None),
        ("sequential", 6, None),
        ("slate", 8, (1, 2.5, 3.5, 4, None, 5)),  # ratings without a precomputed history row
        ("slate", 0, None),
    ],
)
def test_observation_follows_the_pages_shown(action_mode: str, history_len: int, ratings: tuple | None) -> None:
    """History rows, shown flags and session rates rebuilt from `info` alone match the env's observation."""
    from simenv.env import RecEnv
    from tests.fixtures_env import NoisyUser, tiny_world

    ds, personas, split = tiny_world()
    user = NoisyUser(rating_values=ratings)
    env = RecEnv(ds, personas, user, split.train, action_mode=action_mode, history_len=history_len, max_pages=4)
    table = env.features.table
    g = env.features.n_genres
    for episode in range(3):
        obs, info = env.reset(seed=episode)
        cands = info["candidate_ids"].tolist()
        order = np.random.default_rng(episode).permutation(env.n_candidates)
        shown_items: list[int] = []  # most recent last
        rows: list[np.ndarray] = []  # expected history rows, most recent first
        watched = liked = n_shown = 0
        done, t = False, 0
        while not done:
            action = order[t * env.page_size : (t + 1) * env.page_size] if action_mode == "slate" else order[t]
            obs, _, term, trunc, info = env.step(action)
            t += 1
            done = term or trunc
            if "page_items" not in info:
                continue  # a slot step of the sequential mode
            for reaction in info["feedback"].reactions:
                row = np.zeros(g + 3, dtype=np.float32)
                row[:g] = table[reaction.item_id, :g]
                row[g] = float(reaction.watched)
                if reaction.watched and reaction.rating:
                    row[g + 1] = np.float32(reaction.rating) * np.float32(0.2)
                row[g + 2] = 1.0
                rows.insert(0, row)
                shown_items.append(reaction.item_id)
                watched += reaction.watched
                liked += reaction.liked
                n_shown += 1
            expected = np.zeros((history_len, g + 3), dtype=np.float32)
            for r, row in enumerate(rows[:history_len]):
                expected[r] = row
            np.testing.assert_array_equal(obs["history"].reshape(history_len, g + 3), expected)
            shown_flags = obs["candidates"].reshape(env.n_candidates, -1)[:, -2]
            assert sorted(np.flatnonzero(shown_flags).tolist()) == sorted(cands.index(i) for i in shown_items)
            assert obs["session"][2] == pytest.approx(watched / n_shown)
            assert obs["session"][3] == pytest.approx(liked / n_shown)
            assert env.state.shown_items == shown_items


class _BatchCountingLLM:
    """Forwards to the mock; records the size of every batch of interview requests."""

    name = "batch-counting"

    def __init__(self, inner) -> None:
        self.inner = inner
        self.interview_batches: list[int] = []

    def complete(self, request):
        if request.template == "interview":
            self.interview_batches.append(1)
        return self.inner.complete(request)

    def complete_batch(self, requests):
        n = sum(r.template == "interview" for r in requests)
        if n:
            self.interview_batches.append(n)
        return self.inner.complete_batch(requests)


@pytest.mark.parametrize("fault_rate", [0.0, 0.4])
def test_interview_batch_equals_one_by_one_interviews(fault_rate: float) -> None:
    from agents.embedding import HashingEmbedder
    from agents.llm_user import LLMUserModel
    from simenv.llm.mock import FaultConfig, MockLLM
    from simenv.records import Page
    from tests.fixtures_agents import tiny_world

    ds, split, personas = tiny_world()
    chosen = list(personas.values())[:5]
    # The same user twice with carried-over memory (second interview must see the first one's memory).
    order = [*chosen, chosen[1]]

    def sessions_for(model: LLMUserModel) -> list:
        rng = np.random.default_rng(3)
        out = []
        for episode, persona in enumerate(order):
            session = model.start_session(persona, episode, np.random.default_rng(rng.integers(2**32)))
            for index in range(1 + episode % 2):
                if session.left:
                    break
                ids = tuple(int(i) for i in rng.choice(ds.n_items, 4, replace=False))
                session.react(Page(episode, index, ids), [ds.catalog[i] for i in ids])
            out.append(session)
        return out

    def model() -> tuple[LLMUserModel, _BatchCountingLLM]:
        # fault kinds that apply to an interview answer (an interview has no ids to make unknown)
        faults = FaultConfig(rate=fault_rate, kinds=("malformed_json", "out_of_range", "exception"))
        llm = _BatchCountingLLM(MockLLM(seed=5, faults=faults))
        return LLMUserModel(ds, llm, HashingEmbedder(64), train=split.train), llm

    one_model, one_llm = model()
    one_by_one = [s.interview() for s in sessions_for(one_model)]
    batch_model, batch_llm = model()
    batched = batch_model.interview_batch(sessions_for(batch_model))

    assert batched == one_by_one
    assert batch_model.events == one_model.events
    for persona in chosen:
        one_mem = [(r.text, r.time) for r in one_model.memories[persona.user_id].records]
        assert [(r.text, r.time) for r in batch_model.memories[persona.user_id].records] == one_mem
    assert one_llm.interview_batches[:6] == [1] * 6
    # the five distinct users go in one batch; the repeated user waits for a later one (after any repairs)
    assert batch_llm.interview_batches[0] == 5 and len(batch_llm.interview_batches) >= 2
    if not fault_rate:
        assert batch_llm.interview_batches == [5, 1]
    else:
        assert any(iv.fallback for iv in batched) or len(batch_llm.interview_batches) > 2  # faults were exercised
