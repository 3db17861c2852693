"""Sentiment agreement of feelings with ratings (VADER) on crafted feelings, and the report's tables from logs."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from agents.llm_user.specs import check_feelings_agree, feeling_pool
from experiments.text_quality import feelings_frame, own_text_table, sentiment_table
from simenv.llm.sentiment import agreement, compound, verdict, without


@pytest.mark.parametrize(
    ("rating", "text", "expected"),
    [
        (5, "I loved it, a wonderful film", "agree"),
        (4, "Great fun, I enjoyed it", "agree"),
        (5, "I hated it, a terrible bore", "contradict"),
        (1, "I hated it, a terrible bore", "agree"),
        (2, "I loved it, a wonderful film", "contradict"),
        (3, "It was okay", "agree"),
        (3, "The best, most wonderful film I have ever loved", "contradict"),
        (4, "It is a film about a ship", "neutral"),
        (1, "It is a film about a ship", "neutral"),
    ],
)
def test_verdicts_on_crafted_feelings(rating: int, text: str, expected: str) -> None:
    assert verdict(rating, compound(text)) == expected


def test_titles_and_genres_are_read_past() -> None:
    """VADER reads "Star Wars" and "Horror" as negative: the check strips the watched movies' titles and genres."""
    feeling = {"feelings": ["I liked it because of the action scenes in Star Wars (1977)"]}
    with pytest.raises(ValueError, match="contradicts the rating 4"):
        check_feelings_agree([4])(feeling)
    check_feelings_agree([4], ["Star Wars", "Action", "Sci-Fi"])(feeling)
    assert without("A HORROR classic, War and more war", ["horror", "war"]).split() == ["A", "classic,", "and", "more"]


def test_agreement_counts_and_rates() -> None:
    pairs = [(5, "I loved it"), (1, "I hated it"), (5, "I hated it"), (4, "It is about a ship")]
    got = agreement(pairs)
    assert (got.n, got.agree, got.contradict) == (4, 2, 1)
    assert got.rate == 0.5 and got.contradiction_rate == 0.25
    assert math.isnan(agreement([]).rate)
    with pytest.raises(ValueError, match="rating must be 1..5"):
        verdict(0, 0.3)


def test_the_specs_sample_feelings_agree_and_the_check_rejects_contradictions() -> None:
    for rating in range(1, 6):
        assert agreement((rating, f) for f in feeling_pool(rating)).rate == 1.0
    check = check_feelings_agree([5, 1])
    check({"feelings": ["I loved it because the cast was wonderful", "I hated it because it was dull"]})
    with pytest.raises(ValueError, match=r"feelings\[1\].*contradicts the rating 1"):
        check({"feelings": ["I loved it because the cast was great", "I hated it because it was wonderful and fun"]})


def test_report_tables_from_logged_rows() -> None:
    calls = pd.DataFrame(
        {
            "policy": ["p"] * 5,
            "backend": ["llama-cpp"] * 5,
            "template": ["page_reaction", "page_reaction", "page_reaction", "interview", "interview"],
            "attempt": [0, 0, 1, 0, 1],
            "fallback": [False, False, True, False, False],
        }
    )
    own = own_text_table(calls)
    assert own.loc[("llama-cpp", "page_reaction"), "requests"] == 2
    assert own.loc[("llama-cpp", "page_reaction"), "fallbacks"] == 1
    assert own.loc[("llama-cpp", "page_reaction"), "own_share"] == 0.5
    assert own.loc[("llama-cpp", "interview"), "own_share"] == 1.0
    keys = {"policy": "p", "episode": 0, "user": 1}
    events = pd.DataFrame(
        [
            {**keys, "page": 0, "watched": True, "rating": 5, "feeling": "I loved it because it was wonderful"},
            {**keys, "page": 0, "watched": True, "rating": 1, "feeling": "I loved it so much"},
            {**keys, "page": 0, "watched": False, "rating": 0, "feeling": ""},
            {**keys, "page": 1, "watched": True, "rating": 4, "feeling": "Enjoyed it."},
        ]
    )
    pages = pd.DataFrame([{**keys, "page": 0, "fallback": False}, {**keys, "page": 1, "fallback": True}])
    feelings = feelings_frame(events, pages, calls)
    assert feelings["own"].tolist() == [True, True, False]
    table = sentiment_table(feelings)
    row = table.loc["llama-cpp"]
    assert (row["feelings"], row["own"]) == (3, 2)
    assert row["own_agree"] == 0.5 and row["own_contradict"] == 0.5 and row["all_agree"] == round(2 / 3, 3)


def test_phrases_are_removed_longest_first_whatever_their_order() -> None:
    """The compiled patterns are cached per phrase set: the same text comes out for the phrases in any order or
    container, and equal-length phrases go in a fixed order (before: the set's hash order)."""
    text = "Alien vs Predator: the alien is great"
    out = without(text, ["Alien", "Alien vs Predator", "Predator"])
    assert out.split() == [":", "the", "is", "great"]
    assert (
        without(text, ("Predator", "Alien vs Predator", "Alien"))
        == out
        == without(text, {"Alien", "Predator", "Alien vs Predator"})
    )
    assert without("abc", ["ab", "bc"]) == without("abc", ["bc", "ab"]) == " c"  # "ab" before "bc": alphabetical
