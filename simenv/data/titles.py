"""Render MovieLens titles naturally: "Big Squeeze, The (1996)" -> title "The Big Squeeze", year 1996.

MovieLens moves leading articles to the end ("Usual Suspects, The") and appends the year in parentheses;
alternative titles in parentheses get the same treatment ("Hate (Haine, La)" -> "Hate (La Haine)").
"""

from __future__ import annotations

import re

# Articles MovieLens moves to the end of a title, in the languages its catalog uses.
ARTICLES = ("The", "A", "An", "La", "Le", "Les", "L'", "Il", "El", "Das", "Der", "Die", "Los", "Las", "Un", "Une")

_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")
_ARTICLE = re.compile(r"^(?P<main>.+?), (?P<article>" + "|".join(re.escape(a) for a in ARTICLES) + r")$")
_PAREN = re.compile(r"\(([^()]*)\)")
_SPACES = re.compile(r"\s+")


def split_year(title: str) -> tuple[str, int | None]:
    """Strip a trailing "(1995)" from a title; return the bare title and the year (None when absent)."""
    match = _YEAR.search(title)
    if match is None:
        return title.strip(), None
    return title[: match.start()].strip(), int(match.group(1))


def _front_article(text: str) -> str:
    match = _ARTICLE.match(text.strip())
    if match is None:
        return text.strip()
    article = match.group("article")
    joiner = "" if article.endswith("'") else " "
    return f"{article}{joiner}{match.group('main')}"


def natural_title(title: str) -> str:
    """Move a trailing article to the front, in the main title and in each parenthesised alternative title."""
    title = _SPACES.sub(" ", title).replace(" )", ")").replace("( ", "(").strip()
    paren = title.find(" (")
    main, rest = (title, "") if paren < 0 else (title[:paren], title[paren:])
    rest = _PAREN.sub(lambda m: f"({_front_article(m.group(1))})", rest)
    return _front_article(main) + rest
