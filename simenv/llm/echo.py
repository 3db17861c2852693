"""Echo detection: is an answer's text the prompt copied back instead of the model's own words?

Small models copy what they see: the `"..."` of a JSON skeleton, a key name, the question itself ("You are not
satisfied with the recommendations, from 1 (not at all) to 10 (very)"), the example answer. A text is an echo
when, after its forced opening (if the prompt prescribed one) is removed, it is

- a placeholder: empty, punctuation only, an angle-bracket slot like `<true|false>`, or a key name of the answer;
- or a copy of the prompt's own words: it shares a run of `min_words` consecutive words with the prompt, or the
  whole text (at least `min_short` words) appears in the prompt as one run;
- or a loop: the text (opening included) repeats a run of `REPEAT_WORDS` words ("I am leaving to go, I am leaving
  to go").

"The prompt's own words" are the template's text, its question and its example, rendered with the data (titles,
taste text, memories: `PromptSpec.data_vars`) masked: a feeling may name its movie, and repeating a feeling the
user wrote on an earlier page is not an echo of the prompt. Words are lower-cased letter/digit runs, so quoting
and punctuation do not hide a copy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

MASK = "\u2016"  # stands in for data in the masked prompt; never a word, so no run crosses it
MIN_WORDS = 5
MIN_SHORT = 3
REPEAT_WORDS = 4
_WORD = re.compile(rf"\w+|{MASK}")
_SLOT = re.compile(r"<[^<>]*>")
PLACEHOLDERS = frozenset({"", ".", "..", "...", "\u2026", "<...>"})


@dataclass(frozen=True, slots=True)
class Echo:
    """Why a text is not the model's own: the field, the kind of copy and the copied words."""

    field: str
    kind: str  # "placeholder" | "prompt_copy" | "repetition"
    copied: str

    @property
    def reason(self) -> str:
        if self.kind == "placeholder":
            return f"{self.field} is the placeholder {self.copied!r}, not your own words"
        if self.kind == "repetition":
            return f"{self.field} repeats itself ({self.copied!r}): say it once, in your own words"
        return f"{self.field} copies the prompt ({self.copied!r}): write your own words"


def words(text: str) -> list[str]:
    """Lower-cased word tokens; the data mask is a token of its own (it matches no answer word)."""
    return _WORD.findall(text.lower())


def repeated_run(tokens: Sequence[str], n: int = REPEAT_WORDS) -> str:
    """The first run of `n` words that occurs twice in `tokens` ("" if none): a small model looping on itself."""
    seen: set[tuple[str, ...]] = set()
    for i in range(len(tokens) - n + 1):
        run = tuple(tokens[i : i + n])
        if run in seen:
            return " ".join(run)
        seen.add(run)
    return ""


@lru_cache(maxsize=1024)
def _index(prompt_text: str, n: int) -> tuple[tuple[str, ...], str, frozenset[tuple[str, ...]]]:
    """A prompt's words, their text and their `n`-word runs, remembered: the masked prompts of one template repeat
    (every answer is checked against its prompt's own words)."""
    tokens = tuple(words(prompt_text))
    return tokens, " ".join(tokens), frozenset(tokens[i : i + n] for i in range(len(tokens) - n + 1))


class EchoSource:
    """The prompt's own words (data masked), indexed for `find`."""

    def __init__(self, prompt_text: str, key_names: Iterable[str] = (), min_words: int = MIN_WORDS) -> None:
        self.min_words = min_words
        self.tokens, self.text, self.ngrams = _index(prompt_text, min_words)
        self.key_names = frozenset(k.lower() for k in key_names)

    def _contains(self, run: Sequence[str]) -> bool:
        return MASK not in run and f" {' '.join(run)} " in f" {self.text} "

    def find(self, field: str, text: str, opening: str = "", min_short: int = MIN_SHORT) -> Echo | None:
        """The echo in `text` (the value of answer field `field`), or None when the text is the model's own."""
        body = str(text).strip()
        if opening.strip() and body.startswith(opening.rstrip()):
            body = body[len(opening.rstrip()) :]
        stripped = body.strip()
        if stripped in PLACEHOLDERS or not words(stripped) or _SLOT.fullmatch(stripped):
            return Echo(field, "placeholder", stripped)
        tokens = words(stripped)
        if len(tokens) == 1 and tokens[0] in self.key_names:
            return Echo(field, "placeholder", stripped)
        loop = repeated_run(words(str(text)))
        if loop:
            return Echo(field, "repetition", loop)
        n = self.min_words
        for i in range(len(tokens) - n + 1):
            if tuple(tokens[i : i + n]) in self.ngrams:
                j = i + n
                while j < len(tokens) and self._contains(tokens[i : j + 1]):
                    j += 1
                return Echo(field, "prompt_copy", " ".join(tokens[i:j]))
        if min_short <= len(tokens) < n and self._contains(tokens):
            return Echo(field, "prompt_copy", " ".join(tokens))
        return None
