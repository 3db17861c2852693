"""The LLM ranker with the real structured layer and the seeded mock LLM: a valid reranking, a hallucinated
id repaired, the fallback applied and logged, exclusions honoured, save/load."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence

import numpy as np
import pytest

from recommenders.llm_ranker import LLMRanker
from recommenders.registry import load, make
from simenv.llm.mock import FaultConfig, MockLLM
from simenv.llm.types import LLMRequest, LLMResponse
from tests.fixtures_recommenders import (  # noqa: F401  (the *_fixture names register pytest fixtures)
    random_split_fixture,
    rng,
    synthetic_fixture,
    train_items,
)

USER = 9


class HallucinateOnce:
    """An LLM around the mock that swaps the first ranked id for an unknown one on the first ask only."""

    name = "hallucinate-once"

    def __init__(self, inner: MockLLM) -> None:
        self.inner = inner
        self.requests: list[LLMRequest] = []

    def complete(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        response = self.inner.complete(request)
        if request.attempt == 0:
            answer = json.loads(response.text)
            answer["ranking"][0] = 123456
            return dataclasses.replace(response, text=json.dumps(answer), parsed=answer)
        return response

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        return [self.complete(r) for r in requests]


def ranker(split, llm, **config) -> LLMRanker:
    model = make("llm-rank", base="pop", llm=llm, catalog=split.dataset, **config)
    return model.fit(split.train, split.dataset.n_users, split.dataset.n_items, split.valid)


def candidates_of(model: LLMRanker, exclude, n: int = 20) -> list[int]:
    return list(model.base.recommend(USER, n, exclude, rng()).item_ids)


def test_rerank_is_a_valid_permutation_following_the_answer(random_split) -> None:
    model = ranker(random_split, MockLLM(seed=0))
    exclude = set(train_items(random_split, USER))
    page = model.recommend(USER, 5, exclude, rng())
    candidates = candidates_of(model, exclude)
    assert len(page.item_ids) == 5 == len(set(page.item_ids)) and set(page.item_ids) <= set(candidates)
    assert not set(page.item_ids) & exclude
    assert page.propensities is None
    assert model.results == ["ok"] and model.fallbacks == []
    # The mock ranks by genre overlap with the last 10 watched items: the page must carry the best overlaps.
    recent = random_split.train[random_split.train["user_id"] == USER].sort_values("timestamp")["item_id"].tolist()
    liked = {g for i in recent[-10:] for g in random_split.dataset.catalog[i].genres}
    overlap = {c: len(set(random_split.dataset.catalog[c].genres) & liked) for c in candidates}
    shown = [overlap[i] for i in page.item_ids]
    assert shown == sorted(shown, reverse=True)
    assert min(shown) >= max(overlap[c] for c in candidates if c not in page.item_ids)
    assert list(page.item_ids) != candidates[:5]  # the LLM actually changed the base order here


def test_hallucinated_id_is_rejected_and_repaired(random_split) -> None:
    llm = HallucinateOnce(MockLLM(seed=0))
    model = ranker(random_split, llm)
    exclude = set(train_items(random_split, USER))
    page = model.recommend(USER, 5, exclude, rng())
    assert model.results == ["repaired"] and model.fallbacks == []
    assert len(llm.requests) == 2 and llm.requests[1].attempt == 1
    assert "123456" in llm.requests[1].messages[-2].content  # the bad answer was shown back for repair
    assert set(page.item_ids) <= set(candidates_of(model, exclude)) and len(set(page.item_ids)) == 5


@pytest.mark.parametrize("kind", ["malformed_json", "exception"])
def test_unusable_answers_fall_back_to_the_base_order_and_are_logged(kind, random_split, caplog) -> None:
    model = ranker(random_split, MockLLM(seed=0, faults=FaultConfig(rate=1.0, kinds=(kind,))), max_repairs=1)
    exclude = set(train_items(random_split, USER))
    with caplog.at_level(logging.WARNING, logger="recommenders.llm_ranker"):
        page = model.recommend(USER, 6, exclude, rng())
    assert list(page.item_ids) == candidates_of(model, exclude)[:6]
    assert model.results == ["failed"]
    (event,) = model.fallbacks
    assert (event.user_id, event.action, event.kept) == (USER, "base_order", 0)
    assert len(event.call_ids) == 2 and event.error
    assert "llm-rank fallback for user 9 (base_order" in caplog.text


def test_partly_valid_answer_keeps_its_valid_ids_then_the_base_order(random_split) -> None:
    model = ranker(random_split, MockLLM(seed=0, faults=FaultConfig(rate=1.0, kinds=("unknown_id",))), max_repairs=0)
    exclude = set(train_items(random_split, USER))
    page = model.recommend(USER, 20, exclude, rng())
    candidates = candidates_of(model, exclude)
    (event,) = model.fallbacks
    assert (event.action, event.kept) == ("completed", 19)
    assert sorted(page.item_ids) == sorted(candidates)  # every candidate once: 19 from the LLM, 1 from base
    assert list(page.item_ids) != candidates


def test_prompt_request_carries_schema_context_and_template(random_split) -> None:
    model = ranker(random_split, MockLLM(seed=0))
    candidates = [3, 1, 4]
    request = model.request(USER, candidates, history=[5], seed=None)
    assert (request.template, request.template_version) == ("rerank", "v1")
    ranking = request.json_schema["properties"]["ranking"]
    assert ranking["minItems"] == ranking["maxItems"] == 3 and ranking["items"]["enum"] == candidates
    assert request.context["candidate_ids"] == candidates
    assert request.context["candidate_genres"] == [list(random_split.dataset.catalog[c].genres) for c in candidates]
    text = "\n".join(m.content for m in request.messages)
    assert all(f'[{c}] "{random_split.dataset.catalog[c].text}"' in text for c in candidates)
    assert random_split.dataset.catalog[5].text in text  # the session item is the latest history line


def test_save_load_and_errors(random_split, tmp_path) -> None:
    model = ranker(random_split, MockLLM(seed=0))
    model.save(tmp_path / "r")
    with pytest.raises(TypeError, match="needs llm= and catalog="):
        load(tmp_path / "r")
    again = load(tmp_path / "r", llm=MockLLM(seed=0), catalog=random_split.dataset)
    exclude = set(train_items(random_split, USER))
    assert again.recommend(USER, 5, exclude, rng()) == model.recommend(USER, 5, exclude, rng())
    np.testing.assert_array_equal(again.score(USER), model.score(USER))
    with pytest.raises(ValueError, match="catalog has 3 items but n_items=300"):
        make("llm-rank", base="pop", llm=MockLLM(), catalog=random_split.dataset.catalog[:3]).fit(
            random_split.train, 200, 300
        )


def test_rerank_template_golden_rendering() -> None:
    from simenv.llm.templates import load_template

    messages = load_template("recommenders", "rerank", 1).render(
        history=["Heat (1995) — Action, Crime"],
        candidates=[{"id": 7, "text": "Casino (1995) — Drama"}, {"id": 2, "text": "Babe (1995) — Comedy"}],
        example='{"ranking":[7,2]}',
    )
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[1].content == (
        "Movies the viewer watched most recently (oldest first):\n"
        '- "Heat (1995) — Action, Crime"\n\n'
        "Candidate movies, by id:\n"
        '[7] "Casino (1995) — Drama"\n'
        '[2] "Babe (1995) — Comedy"\n\n'
        "Rank all 2 candidates from best to worst for this viewer. Use each candidate id exactly once and no "
        "other ids.\n"
        'JSON (every candidate id once, best first): {"ranking":[7,2]}'
    )
