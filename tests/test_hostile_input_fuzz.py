"""Issue 14 fuzz suite (hypothesis): the structured-answer parser, the config loader, the MovieLens readers and
action validation raise nothing but their typed errors, whatever they are given; the invalid-action repair
changes exactly the invalid slots."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import gymnasium as gym
import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simrec  # noqa: F401  (registers the env ids)
from experiments.config import ConfigError, load_config
from simenv.data import load_dataset
from simenv.data.dataset import DataError
from simenv.kernel import InvalidActionError, check_actions, repair_slates
from simenv.llm.schemas import check_page_decision, grammar_friendly, interview_schema, page_decision_schema
from simenv.llm.secrets import REDACTED, redact, shown
from simenv.llm.structured import _Invalid, decode_json, validate_answer
from tests.fixtures_data import ML1M_MOVIES, ML1M_RATINGS, ML1M_USERS

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(st.text(max_size=300) | json_values.map(json.dumps))
def test_answer_parser_raises_only_its_typed_error(text: str) -> None:
    for schema, check in ((interview_schema(), None), (page_decision_schema(2), check_page_decision([3, 5]))):
        try:
            validate_answer(text, schema, check)
        except _Invalid as exc:
            assert exc.args  # kind and message for the repair prompt


@FUZZ
@given(json_values)
def test_decoder_round_trips_and_tolerates_control_characters(value: object) -> None:
    assert decode_json(json.dumps(value)) == value
    assert decode_json('{"a": "line\nbreak\tand tab"}') == {"a": "line\nbreak\tand tab"}


@FUZZ
@given(st.integers(-50, 50) | st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
def test_grammar_friendly_schema_accepts_exactly_what_the_original_does(score: float, reason: str) -> None:
    original = interview_schema()
    sent = grammar_friendly(original)
    assert sent["properties"]["score"]["enum"] == list(range(1, 11)) and "enum" not in original["properties"]["score"]
    answer = {"score": score, "reason": reason}
    assert jsonschema.Draft202012Validator(sent).is_valid(answer) == jsonschema.Draft202012Validator(original).is_valid(
        answer
    )


@FUZZ
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_config_loader_raises_only_config_error(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_bytes(raw)
        try:
            load_config(path)
        except ConfigError as exc:
            assert "\n" not in str(exc) or str(exc).startswith("config ")


@FUZZ
@given(st.dictionaries(st.sampled_from(["api_key", "token", "password", "model", "name"]), st.text(min_size=6)))
def test_secret_named_values_never_show(values: dict[str, str]) -> None:
    for key, value in values.items():
        text = shown(value, ("llm", key))
        if key in ("api_key", "token", "password"):
            assert text == REDACTED
    assert "sk-abcdefghijkl" not in redact("x sk-abcdefghijkl y", ["sk-abcdefghijkl"])


FILES = {"ratings.dat": ML1M_RATINGS, "movies.dat": ML1M_MOVIES, "users.dat": ML1M_USERS}


@FUZZ
@given(
    st.sampled_from(sorted(FILES)),
    st.integers(0, 4),
    st.binary(max_size=60) | st.text(max_size=60).map(lambda t: t.encode("utf-8")),
    st.sampled_from(["latin-1", "utf-8", "utf-8-sig"]),
    st.booleans(),
)
def test_movielens_readers_raise_only_data_error(name: str, row: int, junk: bytes, encoding: str, crlf: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ml"
        root.mkdir()
        for file, lines in FILES.items():
            text = ("\r\n" if crlf else "\n").join(lines) + "\n"
            (root / file).write_bytes(text.encode(encoding))
        lines = (root / name).read_bytes().split(b"\n")
        lines[row % len(lines)] = junk
        (root / name).write_bytes(b"\n".join(lines))
        try:
            load_dataset(root, cache_dir=Path(tmp) / "cache")
        except DataError as exc:
            assert str(exc)
            assert not any((Path(tmp) / "cache").rglob("*.parquet")), "a failed load was cached"


# ---- action validation -------------------------------------------------------------------------------------
scalars = st.integers(-(2**70), 2**70) | st.floats() | st.booleans() | st.none() | st.text(max_size=4)
actions = (
    scalars
    | st.lists(scalars, max_size=6)
    | st.lists(st.lists(st.integers(-3, 12), max_size=3), max_size=3)  # nested, often ragged
    | st.lists(st.integers(-3, 12), min_size=1, max_size=6).flatmap(
        lambda xs: st.sampled_from(["int64", "int8", "uint8", "float32", "bool", "object"]).map(
            lambda dtype: np.array(xs).astype(dtype)
        )
    )
)


@FUZZ
@given(actions, st.sampled_from([(4,), (), (2, 4)]))
def test_action_check_raises_only_invalid_action_error(action: object, shape: tuple[int, ...]) -> None:
    try:
        checked = check_actions(action, shape, 10, batched=len(shape) == 2)
    except InvalidActionError as exc:
        assert str(exc).startswith("action") and len(str(exc)) < 600
    else:
        assert checked.shape == shape and checked.dtype.kind in "iu"
        assert ((0 <= checked) & (checked < 10)).all()


@FUZZ
@given(st.integers(1, 4).flatmap(lambda m: st.tuples(st.just(m), st.integers(4 * m, 16))).flatmap(
    lambda mc: st.tuples(
        st.lists(st.integers(0, mc[1] - 1), min_size=mc[0], max_size=mc[0]),
        st.sets(st.integers(0, mc[1] - 1), max_size=mc[1] - 2 * mc[0]),
        st.just(mc[1]),
    )
))  # fmt: skip
def test_repair_changes_exactly_the_invalid_slots(case: tuple[list[int], set[int], int]) -> None:
    page, shown, n_candidates = case
    mask = np.zeros((1, n_candidates), dtype=bool)
    mask[0, list(shown)] = True
    ids = 100 + np.arange(n_candidates)[None]
    invalid = [j for j, c in enumerate(page) if c in shown or c in page[:j]]
    chosen, n = repair_slates(np.array([page]), mask, ids, "repair")
    out = chosen[0].tolist()
    assert int(n[0]) == len(invalid)  # one repair per invalid slot: the fewest that make the page valid
    assert [j for j in range(len(page)) if out[j] != page[j]] == invalid  # valid slots never move
    assert len(set(out)) == len(out) and not set(out) & shown
    try:
        repair_slates(np.array([page]), mask, ids, "strict")
    except InvalidActionError:
        assert invalid
    else:
        assert not invalid


@pytest.fixture(scope="module", name="env")
def env_fixture(worker_cache: Path) -> gym.Env:
    """Built when the test runs (not at import, in every process that collects the suite), from the process's
    cache (`$SIMREC_CACHE_DIR`), which holds the synthetic world's fitted response model."""
    return gym.make("simrec/FastRec-v1", dataset="synthetic", invalid_action="repair")


@FUZZ
@given(action=actions | st.lists(st.integers(0, 9), min_size=4, max_size=4))
def test_env_step_raises_only_invalid_action_error(env: gym.Env, action: object) -> None:
    env.reset(seed=0)
    try:
        _, _, _, _, info = env.step(action)
    except InvalidActionError:
        return
    assert 0 <= info["n_repaired"] <= 4 and len(set(info["page_items"].tolist())) == 4
