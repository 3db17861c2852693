"""Does a feeling's sentiment agree with its star rating? VADER (`vadersentiment`, rule-based, lexicon shipped in
the package: no download) scores the text; the rating sets what agrees.

VADER's compound score c in [-1, 1] is positive at c >= 0.05 and negative at c <= -0.05 (its authors'
thresholds). A rating of 4-5 agrees with positive text, 1-2 with negative text, 3 with text that is not strongly
either way (|c| < 0.5). Text that is the opposite of its rating contradicts it (4-5 negative, 1-2 positive, 3
strongly either way); neutral text for a 1-2 or 4-5 rating neither agrees nor contradicts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

POSITIVE = 0.05
STRONG = 0.5


@cache
def _analyzer() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@lru_cache(maxsize=8192)
def compound(text: str) -> float:
    """VADER's compound sentiment of `text`, in [-1, 1] (cached: the mock's feelings repeat)."""
    return float(_analyzer().polarity_scores(str(text))["compound"])


def without(text: str, phrases: Iterable[str]) -> str:
    """`text` with every occurrence of `phrases` (titles, genre names: data, not sentiment) removed, longest first,
    ignoring case: VADER reads "Star Wars" or "Horror" as negative words."""
    for pattern in _patterns(frozenset(phrases)):
        text = pattern.sub(" ", text)
    return text


@lru_cache(maxsize=4096)
def _patterns(phrases: frozenset[str]) -> tuple[re.Pattern[str], ...]:
    """The compiled patterns of `without`, longest phrase first (a page's feelings share its phrases: compiled
    once, not escaped and looked up per feeling)."""
    ordered = sorted({p for p in phrases if p.strip()}, key=lambda p: (-len(p), p))
    return tuple(re.compile(re.escape(p), re.IGNORECASE) for p in ordered)


def verdict(rating: int, score: float) -> str:
    """ "agree", "contradict" or "neutral" for a feeling with VADER compound `score` about a `rating`-star movie."""
    if not 1 <= int(rating) <= 5:
        raise ValueError(f"rating must be 1..5, got {rating!r}")
    if rating >= 4:
        return "agree" if score >= POSITIVE else ("contradict" if score <= -POSITIVE else "neutral")
    if rating <= 2:
        return "agree" if score <= -POSITIVE else ("contradict" if score >= POSITIVE else "neutral")
    return "agree" if abs(score) < STRONG else "contradict"


@dataclass(frozen=True, slots=True)
class Agreement:
    """How many feelings agree with, contradict or are neutral to their ratings."""

    n: int
    agree: int
    contradict: int

    @property
    def rate(self) -> float:
        """Share that agrees (NaN when there are none)."""
        return self.agree / self.n if self.n else float("nan")

    @property
    def contradiction_rate(self) -> float:
        return self.contradict / self.n if self.n else float("nan")


def agreement(pairs: Iterable[tuple[int, str]]) -> Agreement:
    """Agreement over (rating, feeling) pairs."""
    verdicts = [verdict(int(r), compound(t)) for r, t in pairs]
    return Agreement(len(verdicts), verdicts.count("agree"), verdicts.count("contradict"))
