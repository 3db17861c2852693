"""The LLM persona user with the seeded mock: golden prompts, page decisions, repairs and fallbacks,
reflection, memory across episodes, persistence, interview."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pytest

from agents.config import ConfigError, DecisionConfig, LLMUserConfig, MemoryConfig, load_user
from agents.embedding import HashingEmbedder
from agents.llm_user import FEELING_BY_RATING, LLMUserModel, persona_system_prompt, summarise_tastes
from agents.llm_user.fallbacks import INTERVIEW_NO_ANSWER_REASON
from agents.llm_user.specs import LEAVE_OPENING, OPENINGS, feeling_pool, spec_for
from agents.memory import MemoryRecord
from simenv.data.synthetic import make_synthetic
from simenv.llm.mock import FaultConfig, MockLLM
from simenv.llm.prompt_spec import opening_of
from simenv.llm.types import LLMResponse
from simenv.protocols import UserModel, UserSession
from simenv.records import Page, PageFeedback
from tests.fixtures_agents import hand_persona, tiny_world

GOLDEN_SYSTEM = (
    "You play one movie viewer in a recommendation study. Stay in character and answer only with JSON.\n"
    "You watch movies fairly often, you often disagree with popular opinion, and your taste is focused on a few "
    "genres."
)
# The taste text names titles, so it opens the user message (catalog text never reaches the system role).
GOLDEN_TASTE = "About you: You enjoy Drama movies, such as Movie 0003 (1990). You rarely dislike a movie.\n"
GOLDEN_PAGE = (
    GOLDEN_TASTE + "Page 2 of recommendations.\n"
    "You remember:\n"
    "- Page 1: shown [4] Movie 0004. Watched: nothing.\n"
    "- (insight) I like drama.\n"
    "Movies shown:\n"
    '[5] "Movie 0005 (1982) — Action, Drama"\n'
    '[9] "Movie 0009 (1991) — Comedy"\n'
    "\n"
    "For each id in order: would you watch it, your rating 1-5, and a short feeling if you watch. Then: do you "
    "leave the site now, and why. Refer to movies by id only; the example shows the form, use your own words.\n"
    'JSON: {"items":[{"id":5,"watch":true,"rating":4,"feeling":"The story held me to the end"},'
    '{"id":9,"watch":false,"rating":2,"feeling":"The plot dragged on"}],"leave":false,'
    '"reason":"I want to see what comes next"}'
)


# The shipped `[llm_user] page_prompt` ("auto"): with the default profile the user narrates (page_reaction).
SHIPPED_PAGE_PROMPT = load_user("handset").user.page_prompt
BOTH_MODES = pytest.mark.parametrize("page_prompt", [SHIPPED_PAGE_PROMPT, "decide"], ids=["shipped", "decide"])


def _page_template(model) -> str:
    return "page_reaction" if model.config.narrates else "page_decision"


def _model(
    llm=None,
    decision: DecisionConfig | None = None,
    memory: MemoryConfig | None = None,
    world=None,
    page_prompt: str = "decide",
):
    """The default user config with overrides, on the decide path (page_decision) unless `page_prompt` says
    otherwise; tests of behaviour both modes share run on both (`BOTH_MODES`)."""
    ds, split, personas = world or tiny_world()
    base = load_user("handset").user
    cfg = replace(base, decision=decision or base.decision, memory=memory or base.memory, page_prompt=page_prompt)
    return LLMUserModel(ds, llm or MockLLM(seed=1), HashingEmbedder(64), cfg, train=split.train), ds, personas


def _page(ds, rng, index, k=4):
    ids = tuple(int(i) for i in rng.choice(ds.n_items, k, replace=False))
    return Page(0, index, ids), [ds.catalog[i] for i in ids]


def test_golden_persona_system_and_page_prompt():
    ds = make_synthetic(n_users=20, n_items=30, seed=1)
    model = LLMUserModel(ds, MockLLM(), HashingEmbedder(16), LLMUserConfig(), train=ds.interactions)
    persona = hand_persona()
    assert persona_system_prompt(persona).content == GOLDEN_SYSTEM
    memories = [
        MemoryRecord(0, "factual", "Page 1: shown [4] Movie 0004. Watched: nothing.", 0, 2.0),
        MemoryRecord(1, "reflection", "I like drama.", 1, 4.0),
    ]
    request = model.page_request(persona, 1, [5, 9], memories, seed=0)
    assert [m.role for m in request.messages] == ["system", "user"]
    assert request.messages[0].content == GOLDEN_SYSTEM
    assert request.messages[1].content == GOLDEN_PAGE
    assert request.template == "page_decision" and request.template_version == "v1"
    assert dict(request.context) == {
        "item_ids": [5, 9],
        "item_genres": [["Action", "Drama"], ["Comedy"]],
        "liked_genres": ["Drama"],
        "disliked_genres": ["Horror"],
        "activity": 2,
        "page_index": 1,
    }
    ids_schema = request.json_schema["properties"]["items"]["prefixItems"]
    assert [s["properties"]["id"]["const"] for s in ids_schema] == [5, 9]


class RecordingLLM:
    """Wraps the mock and keeps every request, to inspect what the user model sent."""

    name = "recording"

    def __init__(self, inner) -> None:
        self.inner = inner
        self.requests = []

    def complete(self, request):
        self.requests.append(request)
        return self.inner.complete(request)

    def complete_batch(self, requests):
        self.requests.extend(requests)
        return self.inner.complete_batch(requests)


@BOTH_MODES
def test_pages_are_valid_and_the_system_prompt_is_byte_identical(page_prompt):
    llm = RecordingLLM(MockLLM(seed=2))
    model, ds, personas = _model(llm, page_prompt=page_prompt)
    assert isinstance(model, UserModel)
    persona = next(iter(personas.values()))
    rng = np.random.default_rng(0)
    session = model.start_session(persona, 0, rng)
    assert isinstance(session, UserSession)
    for t in range(4):
        page, items = _page(ds, rng, t)
        fb = session.react(page, items)
        assert isinstance(fb, PageFeedback) and not fb.fallback
        assert [r.item_id for r in fb.reactions] == list(page.item_ids)
        for r in fb.reactions:
            assert (r.rating is not None) == r.watched
            assert r.rating is None or 1 <= r.rating <= 5
            assert bool(r.feeling) == r.watched
        asked = fb.n_watched or fb.left or not model.config.narrates  # narrate: no call with nothing to write
        assert len(fb.llm_call_ids) == (1 if asked else 0)
        if fb.left:
            break
    page_requests = [r for r in llm.requests if r.template == _page_template(model)]
    assert len({r.messages[0].content for r in page_requests}) == 1
    assert page_requests[0].messages[0].role == "system"
    # memory: a factual record per page and it shows up in later prompts
    assert sum(m.kind == "factual" for m in session.memory.records) == len(session.pages)
    assert "You remember:" in page_requests[-1].messages[1].content


@BOTH_MODES
def test_one_batched_llm_call_per_round_of_pages(page_prompt):
    llm = RecordingLLM(MockLLM(seed=3))
    calls = []
    original = llm.complete_batch

    def counting(requests):
        calls.append(len(requests))
        return original(requests)

    llm.complete_batch = counting
    model, ds, personas = _model(llm, page_prompt=page_prompt)
    rng = np.random.default_rng(1)
    sessions = [model.start_session(p, 0, np.random.default_rng(i)) for i, p in enumerate(list(personas.values())[:6])]
    pages = [_page(ds, rng, 0) for _ in sessions]
    out = model.react_batch(sessions, pages)
    asked = sum(bool(fb.n_watched or fb.left) for fb in out) if model.config.narrates else 6
    assert len(out) == 6 and calls == [asked] and asked > 0


class ScriptedLLM:
    """Answers page_decision requests with scripted texts in order (then delegates to the mock)."""

    name = "scripted"

    def __init__(self, texts) -> None:
        self.texts = list(texts)
        self.mock = MockLLM(seed=0)

    def _one(self, request):
        if request.template == "page_decision" and self.texts:
            text = self.texts.pop(0)
            return LLMResponse(text=text, backend="scripted", model="s", call_id=request.call_id())
        return self.mock.complete(request)

    def complete(self, request):
        return self._one(request)

    def complete_batch(self, requests):
        return [self._one(r) for r in requests]


def test_malformed_answer_is_repaired():
    ds, _, personas = tiny_world()
    persona = next(iter(personas.values()))
    page, items = _page(ds, np.random.default_rng(5), 0, k=2)
    good = (
        '{"items": ['
        + ", ".join(f'{{"id": {i}, "watch": true, "rating": 5, "feeling": "great"}}' for i in page.item_ids)
        + '], "leave": false, "reason": "more"}'
    )
    llm = ScriptedLLM(['{"items": [', good])
    decision = DecisionConfig(name="llm", w_llm=1.0, w_genre=0.0, calibrate=False, decide="threshold")
    model, _, _ = _model(llm, decision=decision)
    fb = model.start_session(persona, 0, np.random.default_rng(0)).react(page, items)
    assert not fb.fallback and len(fb.llm_call_ids) == 2
    assert all(r.watched and r.feeling == "great" for r in fb.reactions)
    assert model.events == []


def test_unusable_answers_become_logged_fallback_events(caplog):
    model, ds, personas = _model(MockLLM(seed=4, faults=FaultConfig(rate=1.0, kinds=("malformed_json",))))
    persona = next(iter(personas.values()))
    rng = np.random.default_rng(2)
    session = model.start_session(persona, 3, rng)
    with caplog.at_level(logging.WARNING, logger="agents.llm_user"):
        page, items = _page(ds, rng, 0)
        fb = session.react(page, items)
    assert fb.fallback and len(fb.llm_call_ids) == 1 + model.config.max_repairs
    assert [r.item_id for r in fb.reactions] == list(page.item_ids)  # the page still gets a decision
    (event,) = [e for e in session.events if e.kind == "fallback"]
    assert event.template == "page_decision" and event.episode == 3 and "invalid_json" in event.detail
    assert "fallback" in caplog.text
    interview = session.interview()
    assert interview.fallback and 1 <= interview.score <= 10


def test_llm_only_profile_falls_back_to_signals_when_the_llm_fails():
    decision = DecisionConfig(name="llm-only", w_llm=1.0, w_genre=0.0, calibrate=False, decide="threshold")
    model, ds, personas = _model(MockLLM(seed=4, faults=FaultConfig(rate=1.0, kinds=("unknown_id",))), decision)
    rng = np.random.default_rng(3)
    watched = 0
    for persona in list(personas.values())[:20]:
        session = model.start_session(persona, 0, rng)
        page, items = _page(ds, rng, 0, k=10)
        fb = session.react(page, items)
        assert fb.fallback
        watched += fb.n_watched
    assert watched > 0  # the calibrated genre signal decided, not "watch nothing"


def test_llm_only_follows_the_llm_answer_exactly():
    decision = DecisionConfig(
        name="llm-only", w_llm=1.0, w_genre=0.0, calibrate=False, decide="threshold", rating_llm=1.0
    )
    llm = RecordingLLM(MockLLM(seed=6))
    model, ds, personas = _model(llm, decision)
    persona = next(iter(personas.values()))
    rng = np.random.default_rng(4)
    session = model.start_session(persona, 0, rng)
    page, items = _page(ds, rng, 0, k=8)
    fb = session.react(page, items)
    answer = llm.inner.complete(llm.requests[0]).parsed
    assert [r.watched for r in fb.reactions] == [a["watch"] for a in answer["items"]]
    assert [r.rating for r in fb.reactions if r.watched] == [a["rating"] for a in answer["items"] if a["watch"]]


def test_texts_a_usable_decide_answer_lacks_are_counted_defaults_not_fallbacks(caplog):
    ds, _, personas = tiny_world()
    persona = next(iter(personas.values()))
    page, items = _page(ds, np.random.default_rng(5), 0, k=2)
    entries = ", ".join(f'{{"id": {i}, "watch": true, "rating": 5, "feeling": "..."}}' for i in page.item_ids)
    llm = ScriptedLLM([f'{{"items": [{entries}], "leave": false, "reason": "..."}}'])
    decision = DecisionConfig(name="llm", w_llm=1.0, w_genre=0.0, calibrate=False, decide="threshold")
    model, _, _ = _model(llm, decision=decision)
    with caplog.at_level(logging.DEBUG, logger="agents.llm_user"):
        fb = model.start_session(persona, 0, np.random.default_rng(0)).react(page, items)
    assert not fb.fallback and all(r.watched for r in fb.reactions)
    assert [r.feeling for r in fb.reactions] == [FEELING_BY_RATING[r.rating] for r in fb.reactions]
    assert model.default_texts["feeling"] == 2 and model.default_texts["leave_reason"] == int(fb.left)
    assert fb.reason == "" or fb.left  # the placeholder reason is never kept
    assert not [e for e in model.events if e.kind == "fallback"]  # the decision used the answer
    assert "default text: user=" in caplog.text


def test_reflection_triggers_on_importance_and_stays_within_call_budget():
    llm = RecordingLLM(MockLLM(seed=7))
    model, ds, personas = _model(llm, memory=MemoryConfig(reflection_threshold=12.0))
    rng = np.random.default_rng(5)
    persona = next(iter(personas.values()))
    pages = 0
    for episode in range(4):
        session = model.start_session(persona, episode, rng)
        for t in range(5):
            session.react(*_page(ds, rng, t))
            pages += 1
            if session.left:
                break
    stream = model.memories[persona.user_id]
    reflections = [r for r in stream.records if r.kind == "reflection"]
    n_reflection_calls = sum(r.template == "reflection" for r in llm.requests)
    assert n_reflection_calls >= 1 and reflections
    assert all(r.evidence and max(r.evidence) < r.memory_id for r in reflections)
    assert any(e.kind == "reflection" for e in model.events)
    # each reflection call followed >= 12 importance, at most a few pages apart
    assert (pages + n_reflection_calls) / pages <= 1.5


@BOTH_MODES
def test_default_config_calls_per_page_budget(page_prompt):
    llm = RecordingLLM(MockLLM(seed=8))
    model, ds, personas = _model(llm, page_prompt=page_prompt)
    assert model.config.narrates == (page_prompt == SHIPPED_PAGE_PROMPT)  # the shipped default narrates
    rng = np.random.default_rng(6)
    pages = 0
    for persona in list(personas.values())[:10]:
        for episode in range(3):
            session = model.start_session(persona, episode, rng)
            for t in range(5):
                session.react(*_page(ds, rng, t))
                pages += 1
                if session.left:
                    break
    page_and_reflection = sum(r.template in (_page_template(model), "reflection") for r in llm.requests)
    assert 0 < page_and_reflection / pages <= 1.25
    assert {r.template for r in llm.requests} <= {_page_template(model), "reflection"}


def test_memory_persists_across_episodes_unless_reset(tmp_path):
    model, ds, personas = _model()
    persona = next(iter(personas.values()))
    rng = np.random.default_rng(7)
    s1 = model.start_session(persona, 0, rng)
    s1.react(*_page(ds, rng, 0))
    s1.interview()
    n = len(model.memories[persona.user_id])
    s2 = model.start_session(persona, 1, rng)
    assert s2.memory is s1.memory and len(s2.memory) == n and s2.memory.clock == 1.0
    model.save_memories(tmp_path)
    other, _, _ = _model()
    other.load_memories(tmp_path)
    assert [r.text for r in other.memories[persona.user_id].records] == [r.text for r in s1.memory.records]
    s3 = model.start_session(persona, 2, rng, reset_memory=True)
    assert len(s3.memory) == 0


@BOTH_MODES
def test_same_seed_same_feedback(page_prompt):
    def run():
        model, ds, personas = _model(MockLLM(seed=9), page_prompt=page_prompt)
        rng = np.random.default_rng(11)
        out = []
        for persona in list(personas.values())[:5]:
            session = model.start_session(persona, 0, rng)
            out.append(session.react(*_page(ds, rng, 0)))
            out.append(session.interview())
        return out

    assert run() == run()


def test_interview_uses_the_answer_and_is_blended_by_config():
    decision = replace(load_user("handset").user.decision, interview_llm=1.0)
    llm = RecordingLLM(MockLLM(seed=10))
    model, ds, personas = _model(llm, decision)
    persona = next(iter(personas.values()))
    rng = np.random.default_rng(8)
    session = model.start_session(persona, 0, rng)
    session.react(*_page(ds, rng, 0))
    interview = session.interview()
    request = next(r for r in llm.requests if r.template == "interview")
    assert set(request.context) == {"n_shown", "n_watched", "n_liked", "mean_rating"}
    assert interview.score == llm.inner.complete(request).parsed["score"]
    assert not interview.fallback and interview.user_id == persona.user_id
    assert session.memory.records[-1].text.startswith("Episode 0 ended; satisfaction")


def test_bad_pages_raise_clear_errors():
    model, ds, personas = _model()
    persona = next(iter(personas.values()))
    session = model.start_session(persona, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="do not match"):
        session.react(Page(0, 0, (1, 2)), [ds.catalog[2], ds.catalog[1]])
    with pytest.raises(ValueError, match="sessions but"):
        model.react_batch([session], [])


def test_taste_summaries_with_fallback():
    _, _, personas = tiny_world()
    ps = list(personas.values())[:4]
    good = summarise_tastes(MockLLM(seed=1), ps)
    assert all(not fb and text != personas[u].taste_text for u, (text, fb) in good.items())
    bad = summarise_tastes(MockLLM(seed=1, faults=FaultConfig(rate=1.0, kinds=("malformed_json",))), ps)
    assert all(fb and text == personas[u].taste_text for u, (text, fb) in bad.items())


# ---- narrate mode (page_reaction): the grounded rule decides, the LLM only writes the text -----------------------
GOLDEN_REACTION = (
    GOLDEN_TASTE + "Page 3 of recommendations.\n"
    "You watched:\n"
    '1. "Movie 0005 (1982) — Action, Drama": you rated it 4 of 5 stars.\n'
    'You skipped: "Movie 0009".\n'
    "After this page you leave the site.\n"
    "\n"
    "For each movie you watched, in order, finish its sentence: say why, in a few words of your own. Then finish "
    "the sentence on why you leave.\n"
    'JSON: {"feelings":["I liked it because"],"reason":"I am leaving because"}'
)


def test_golden_page_reaction_prompt_and_schema():
    ds = make_synthetic(n_users=20, n_items=30, seed=1)
    model = LLMUserModel(ds, MockLLM(), HashingEmbedder(16), LLMUserConfig(), train=ds.interactions)
    page, items = Page(0, 2, (5, 9)), [ds.catalog[5], ds.catalog[9]]
    watched, stars = np.array([True, False]), np.array([4, 2])
    request = model.prompts.reaction_request(hand_persona(), page, items, watched, stars, True, [], seed=0)
    assert request.messages[0].content == GOLDEN_SYSTEM
    assert request.messages[1].content == GOLDEN_REACTION
    assert request.template == "page_reaction" and request.purpose == "page_reaction"
    context = {
        "ratings": [4],
        "left": True,
        "page_index": 2,
        "data_words": sorted({ds.catalog[5].title, *ds.catalog[5].genres}),
    }
    assert dict(request.context) == context
    feelings = request.json_schema["properties"]["feelings"]
    assert (feelings["minItems"], feelings["maxItems"]) == (1, 1)
    assert request.json_schema["required"] == ["feelings", "reason"]
    stay = model.prompts.reaction_request(hand_persona(), page, items, watched, stars, False, [], seed=0)
    assert stay.json_schema["required"] == ["feelings"] and "leave" not in stay.messages[1].content


def test_auto_narrates_exactly_when_the_profile_discards_the_page_answer():
    assert load_user("persona").user.narrates  # the fitted decisions, narrated
    assert load_user("handset").user.narrates
    assert load_user("llm").user.narrates  # the LLM feature is asked apart; pages are still narrated
    assert not load_user("llm-only").user.narrates
    assert not replace(load_user("handset").user, page_prompt="decide").narrates


def test_narrate_is_refused_for_a_profile_that_uses_the_page_answer(tmp_path):
    from agents.config import default_config_path

    text = default_config_path().read_text() + '\n[llm_user]\npage_prompt = "narrate"\n'
    path = tmp_path / "users.toml"
    path.write_text(text)
    assert load_user("handset", path).user.narrates
    with pytest.raises(ConfigError, match="llm-only.*uses the LLM's page answer"):
        load_user("llm-only", path)
    path.write_text(text.replace('page_prompt = "narrate"', 'page_prompt = "sometimes"'))
    with pytest.raises(ConfigError, match="page_prompt must be.*'sometimes'"):
        load_user("handset", path)


def _narrated_run(llm, n_users=12, pages=4):
    model, ds, personas = _model(llm, page_prompt="auto")
    assert model.config.narrates
    sessions = [
        model.start_session(p, 0, np.random.default_rng(i)) for i, p in enumerate(list(personas.values())[:n_users])
    ]
    rng = np.random.default_rng(99)
    out = []
    for t in range(pages):
        live = [s for s in sessions if not s.left]
        if not live:
            break
        out.extend(model.react_batch(live, [_page(ds, rng, t) for _ in live]))
    return model, sessions, out


def test_narrated_pages_call_the_llm_only_for_text_and_use_its_feelings():
    llm = RecordingLLM(MockLLM(seed=12))
    model, sessions, feedback = _narrated_run(llm)
    asked = [fb for fb in feedback if fb.n_watched or fb.left]
    assert asked and len(asked) < len(feedback)  # some pages had nothing to narrate: no call for them
    assert all(len(fb.llm_call_ids) == 1 for fb in asked)
    assert all(fb.llm_call_ids == () for fb in feedback if not (fb.n_watched or fb.left))
    assert {r.template for r in llm.requests} <= {"page_reaction", "reflection"}
    assert sum(r.template == "page_reaction" for r in llm.requests) == len(asked)
    for fb in feedback:  # the mock writes the spec's samples: opened by the rating, never the prompt's example
        assert not fb.fallback
        for r in fb.reactions:
            assert bool(r.feeling) == r.watched
            assert r.feeling == "" or (
                r.feeling.startswith(OPENINGS[r.rating]) and r.feeling in feeling_pool(r.rating)[1:]
            )
        assert fb.reason.startswith(LEAVE_OPENING) if fb.left else fb.reason == ""
    # the feelings reach memory, so later prompts can recall them
    texts = " ".join(m.text for s in sessions for m in s.memory.records)
    assert any(r.feeling in texts for fb in feedback for r in fb.reactions if r.watched)


def test_narrated_decisions_do_not_depend_on_the_llm_and_failures_are_logged(caplog):
    def decisions(feedback):
        return [(tuple((r.watched, r.rating) for r in fb.reactions), fb.left) for fb in feedback]

    _, _, a = _narrated_run(MockLLM(seed=1))
    _, _, b = _narrated_run(MockLLM(seed=2))
    with caplog.at_level(logging.INFO, logger="agents.llm_user"):  # text-only fallbacks log at INFO
        broken, _, c = _narrated_run(MockLLM(seed=3, faults=FaultConfig(rate=1.0, kinds=("out_of_range",))))
    assert decisions(a) == decisions(b) == decisions(c)
    asked = [fb for fb in c if fb.n_watched or fb.left]
    assert asked and all(fb.fallback and len(fb.llm_call_ids) == 1 + broken.config.text_repairs for fb in asked)
    for fb in asked:  # text falls back to plain defaults, recorded as fallback events
        assert all(r.feeling == FEELING_BY_RATING[r.rating] for r in fb.reactions if r.watched)
    events = [e for e in broken.events if e.kind == "fallback"]
    assert len(events) == len(asked) and {e.template for e in events} == {"page_reaction"}
    assert "fallback" in caplog.text


def test_narrated_fidelity_judging_asks_no_llm_and_matches_the_grounded_rule():
    llm = RecordingLLM(MockLLM(seed=13))
    model, ds, personas = _model(llm, page_prompt="auto")
    asks = [(p, [int(i) for i in np.random.default_rng(k).choice(ds.n_items, 5, replace=False)]) for k, p in
            enumerate(list(personas.values())[:8])]  # fmt: skip
    got = model.judge_many(asks, np.random.default_rng(3))
    want = model.decider.judge_many(asks, np.random.default_rng(3))
    assert llm.requests == []
    for (w1, r1), (w2, r2) in zip(got, want, strict=True):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(r1, r2)


class EchoingLLM:
    """Answers page_reaction and interview requests with the prompt's own question copied back after each string's
    forced opening (as SmolLM2 copies what it sees), so the answers pass the schema but not the echo check."""

    name = "echoing"

    def __init__(self) -> None:
        self.mock = MockLLM(seed=0)

    def _one(self, request):
        if request.template not in ("page_reaction", "interview"):
            return self.mock.complete(request)
        lines = request.messages[1].content.splitlines()
        question = lines[-2][-36:]  # the question, just before the JSON example (of the first ask, not a repair)

        def copy(value, schema):
            if isinstance(value, str):
                return opening_of(schema) + question
            if isinstance(value, dict):
                return {k: copy(v, schema["properties"][k]) for k, v in value.items()}
            if isinstance(value, list):
                return [
                    copy(v, schema.get("prefixItems", [schema["items"]] * len(value))[i]) for i, v in enumerate(value)
                ]
            return value

        answer = copy(spec_for(request.template).example(request.context), request.json_schema)
        text = json.dumps(answer)
        return LLMResponse(text=text, backend="echo", model="e", parsed=answer, call_id=request.call_id())

    def complete(self, request):
        return self._one(request)

    def complete_batch(self, requests):
        return [self._one(r) for r in requests]


def test_echoed_placeholders_are_recorded_fallbacks_not_text():
    model, sessions, feedback = _narrated_run(EchoingLLM(), pages=2)
    asked = [fb for fb in feedback if fb.n_watched or fb.left]
    assert asked and all(fb.fallback for fb in asked)
    assert all(r.feeling == FEELING_BY_RATING[r.rating] for fb in asked for r in fb.reactions if r.watched)
    assert all("copies the prompt" in e.detail for e in model.events if e.kind == "fallback")
    interview = model.interview(sessions[0])
    assert interview.fallback and interview.reason == INTERVIEW_NO_ANSWER_REASON  # nothing echoed is stored
    assert model.events[-1].template == "interview" and "copies the prompt" in model.events[-1].detail
