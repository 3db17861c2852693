"""Echo detection on crafted answers: copies of the prompt's own words are caught, the model's own words are not."""

from __future__ import annotations

import numpy as np
import pytest

from agents.config import LLMUserConfig
from agents.embedding import HashingEmbedder
from agents.llm_user import LLMUserModel
from simenv.data.synthetic import make_synthetic
from simenv.llm.echo import MASK, EchoSource
from simenv.llm.prompt_spec import masked
from simenv.records import Page
from tests.fixtures_agents import hand_persona

QUESTION = "How satisfied are you with the recommendations, from 1 (not at all) to 10 (very)? Give one reason."
PROMPT = f'About you: {MASK}\nYou left after 3 page(s).\n{QUESTION}\nJSON: {{"score":7,"reason":"I liked most films"}}'


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        ("You are not satisfied with the recommendations, from 1 (not at all) to 10 (very)", "prompt_copy"),
        ("How satisfied are you with the recommendations", "prompt_copy"),  # the question itself
        ("Give one reason.", "prompt_copy"),  # a short answer that is wholly a run of the prompt
        ("I LIKED most films!!", "prompt_copy"),  # the example, case and punctuation changed
        ("...", "placeholder"),
        ("\u2026", "placeholder"),
        ("  ", "placeholder"),
        ("<reason>", "placeholder"),
        ("reason", "placeholder"),  # a key name of the answer
    ],
)
def test_copies_of_the_prompt_are_echoes(answer: str, kind: str) -> None:
    echo = EchoSource(PROMPT, {"score", "reason"}).find("reason", answer)
    assert echo is not None and echo.kind == kind
    assert "reason" in echo.reason


@pytest.mark.parametrize(
    "answer",
    [
        "Most films matched my taste and I found two new favourites",
        "Too many action films, not enough drama",
        "I liked it",  # three words but not a run of the prompt
        "the recommendations were fine",  # shares two words only
    ],
)
def test_own_words_are_not_echoes(answer: str) -> None:
    assert EchoSource(PROMPT, {"score", "reason"}).find("reason", answer) is None


def test_a_text_looping_on_itself_is_not_own_words() -> None:
    source = EchoSource(PROMPT, ())
    opening = "It was okay because "
    echo = source.find("feelings[0]", opening + "I am leaving to go, I am leaving to go,", opening)
    assert echo is not None and echo.kind == "repetition" and "repeats itself" in echo.reason
    looped = source.find("feelings[0]", "I loved it because I loved it because I", "I loved it because ")
    assert looped is not None and looped.kind == "repetition"  # the opening counts when looking for a loop
    assert source.find("f", opening + "the middle was slow but the end was good", opening) is None


def test_masked_data_is_not_the_prompts_own_words() -> None:
    """A feeling may name its movie: titles and memories are data, masked; runs never cross the mask."""
    source = EchoSource(f"You watched: {MASK}. You rated it 4 of 5 stars.", ())
    assert source.find("feeling", "The Good, the Bad and the Ugly was long") is None
    assert source.find("feeling", "watched you rated it 4 of 5") is not None  # the template's words still count
    variables = masked({"taste": "x", "watched": [{"text": "Heat", "rating": 4}], "left": True}, ("taste", "watched"))
    assert variables == {"taste": MASK, "watched": [{"text": MASK, "rating": 4}], "left": True}


def test_a_forced_opening_is_not_counted_as_a_copy() -> None:
    source = EchoSource('Finish each sentence. JSON: {"feelings":["I did not like it because"]}', ())
    opening = "I did not like it because "
    assert source.find("feelings[0]", opening + "the jokes fell flat", opening) is None
    assert source.find("feelings[0]", opening + "finish each sentence", opening) is not None
    assert source.find("feelings[0]", opening + "   ", opening).kind == "placeholder"


def test_the_user_models_checks_reject_echoes_of_their_rendered_prompts() -> None:
    """The check `PromptBuilder` pairs with a real page_reaction request rejects its own question copied back."""
    ds = make_synthetic(n_users=20, n_items=30, seed=1)
    model = LLMUserModel(ds, None, HashingEmbedder(16), LLMUserConfig(), train=ds.interactions)  # type: ignore[arg-type]
    page, items = Page(0, 2, (5, 9)), [ds.catalog[5], ds.catalog[9]]
    ask = model.prompts.reaction_ask(
        hand_persona(), page, items, np.array([True, False]), np.array([4, 2]), True, [], seed=0
    )
    good = {"feelings": ["I liked it because the two leads were great"], "reason": "I am leaving because it is late"}
    ask.check(good)
    echoed = dict(good, reason="I am leaving because say why, in a few words of your own")
    with pytest.raises(ValueError, match="copies the prompt"):
        ask.check(echoed)
    title = dict(good, feelings=[f"I liked it because {ds.catalog[5].title} was fun"])
    ask.check(title)  # naming the movie is not an echo
