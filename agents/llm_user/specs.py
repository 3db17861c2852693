"""The user simulation's prompt specs (docs/CONTRACTS.md): page_decision, page_pick, page_reaction, reflection,
interview and taste_summary (templates in agents/prompts/), each a `PromptSpec`, registered for the mock at import.

Every domain string the mock answers with lives here, as the specs' samples; the mock's rules are the specs'
`mock` functions. Feelings and reasons whose sentiment is known in advance (the rating or satisfaction score is
in the context) start with a forced opening that says it (`OPENINGS`, `interview_opening`), and feelings must
not contradict their rating (`simenv.llm.sentiment`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simenv.llm.prompt_spec import Context, PromptSpec, Samples, example_answer, forced_string, require_keys
from simenv.llm.schemas import (
    check_page_decision,
    check_page_pick,
    interview_schema,
    page_decision_schema,
    page_pick_schema,
    reflection_schema,
    taste_summary_schema,
)
from simenv.llm.sentiment import compound, verdict, without
from simenv.llm.spec_registry import register_specs

FEELING_MAX_CHARS = 40  # a feeling's free part; tighter than the contract's caps: short strings decode fast
REASON_MAX_CHARS = 60
INTERVIEW_REASON_MAX_CHARS = 100
INSIGHT_MAX_CHARS = 100
MIN_OWN_CHARS = 4  # a forced opening must be followed by at least this many characters of the model's own
PAGE_MAX_TOKENS_BASE = 40
PAGE_MAX_TOKENS_PER_ITEM = 32
REFLECTION_MAX_TOKENS = 160
TASTE_SUMMARY_MAX_TOKENS = 120

OPENINGS = {
    5: "I loved it because ",
    4: "I liked it because ",
    3: "It was okay because ",
    2: "I did not like it because ",
    1: "I hated it because ",
}
LEAVE_OPENING = "I am leaving because "
_LONGEST_OPENING = max(len(o) for o in OPENINGS.values())
INSIGHT_OPENING = "I notice that "


def interview_opening(score: int) -> str:
    """The interview reason's forced opening for a fixed satisfaction score (1..10)."""
    if score >= 7:
        return "I am satisfied because "
    if score <= 4:
        return "I am not satisfied because "
    return "I am partly satisfied because "


# Real-looking text, by the sentiment it must carry. The first of each pool is what examples show.
_BECAUSE = {
    "positive": ("the story held me to the end", "the cast was wonderful", "it made me laugh a lot",
                 "the ending surprised me", "the music was lovely"),
    "mixed": ("parts of it dragged", "the middle was slow", "it felt a bit familiar", "the ending was flat"),
    "negative": ("the plot dragged on", "the jokes were not funny", "the story made no sense", "it was dull and long"),
}  # fmt: skip
_STAY = ("I want to see what comes next", "a few of these look promising", "the next page may suit me better")
_LEAVE = ("none of these films caught my eye", "I have seen enough for today", "I am tired of browsing")
_SATISFACTION = {
    "positive": ("most films matched my taste", "I found several films I enjoyed", "the picks suited my mood"),
    "mixed": ("some films matched my taste", "a few picks were good, others not", "half of the films suited me"),
    "negative": ("few films matched my taste", "most picks were not for me", "I skipped most of what I saw"),
}
_INSIGHTS = ("I keep choosing films in the genres I love", "the recommendations so far have suited me",
             "I should be pickier about what I watch", "I am getting tired of browsing")  # fmt: skip


def _tone(rating: int) -> str:
    return "positive" if rating >= 4 else ("negative" if rating <= 2 else "mixed")


def _score_tone(score: int) -> str:
    return "positive" if score >= 7 else ("negative" if score <= 4 else "mixed")


def _sentence(reason: str) -> str:
    """A reason as a feeling of its own (decide mode: the rating is the model's choice, so no forced opening)."""
    return reason[0].upper() + reason[1:]


def feeling_pool(rating: int) -> tuple[str, ...]:
    """Sample feelings for a `rating`-star movie: its forced opening, then a reason of the same sentiment."""
    return tuple(OPENINGS[int(rating)] + r for r in _BECAUSE[_tone(int(rating))])


# ---- page_reaction --------------------------------------------------------------------------------------------
def reaction_schema(context: Context) -> dict[str, Any]:
    """`{"feelings": [one per watched movie, opened by its rating's OPENINGS], "reason": (when leaving)}`."""
    require_keys(context, "page_reaction", "ratings", "left")
    feelings = [forced_string(OPENINGS[int(r)], MIN_OWN_CHARS, FEELING_MAX_CHARS) for r in context["ratings"]]
    n = len(feelings)
    array: dict[str, Any] = {"type": "array", "prefixItems": feelings, "items": False, "minItems": n, "maxItems": n}
    if not n:  # a schema's prefixItems may not be empty
        array = {"type": "array", "items": {"type": "string"}, "minItems": 0, "maxItems": 0}
    properties: dict[str, Any] = {"feelings": array}
    if context["left"]:
        properties["reason"] = forced_string(LEAVE_OPENING, MIN_OWN_CHARS, REASON_MAX_CHARS)
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def reaction_samples(context: Context) -> Samples:
    pools = [feeling_pool(int(r)) for r in context["ratings"]] or [feeling_pool(4)]
    return {"feelings": pools, "reason": [tuple(LEAVE_OPENING + r for r in _LEAVE)]}


def check_feelings_agree(ratings: Sequence[int], data_words: Sequence[str] = ()) -> Any:
    """No feeling may contradict its movie's rating (VADER; `simenv.llm.sentiment`), read without `data_words`
    (the watched movies' titles and genres: "Star Wars", "Horror" are not what the user felt)."""
    expected = [int(r) for r in ratings]
    words = tuple(data_words)

    def check(value: Any) -> None:
        for k, (rating, text) in enumerate(zip(expected, value["feelings"], strict=True)):
            if verdict(rating, compound(without(text, words))) == "contradict":
                raise ValueError(f"feelings[{k}] {text!r} contradicts the rating {rating} of 5: say what you felt")

    return check


def reaction_mock(context: Context, rng: np.random.Generator) -> dict[str, Any]:
    """One feeling per watched movie in the sentiment of its rating; a leave reason only when the user leaves."""
    return example_answer(reaction_schema(context), reaction_samples(context), rng)


def reaction_budget(context: Context) -> int:
    """JSON punctuation plus one token per character of each capped string (every answer can close its JSON)."""
    n = len(context["ratings"])
    per_feeling = 6 + max(len(o) for o in OPENINGS.values()) + FEELING_MAX_CHARS
    return 12 + per_feeling * n + (8 + len(LEAVE_OPENING) + REASON_MAX_CHARS if context["left"] else 0)


def reaction_out_of_range(answer: dict[str, Any]) -> None:
    """A mock fault: one feeling too many, and an empty one."""
    answer["feelings"] = [*answer["feelings"], *answer["feelings"][:1], ""]


PAGE_REACTION = PromptSpec(
    name="page_reaction",
    package="agents",
    schema=reaction_schema,
    samples=reaction_samples,
    mock=reaction_mock,
    check=lambda context: check_feelings_agree(context["ratings"], context.get("data_words", ())),
    data_vars=("taste", "memories", "watched", "skipped"),
    max_tokens=reaction_budget,
    mock_out_of_range=reaction_out_of_range,
)


# ---- page_decision --------------------------------------------------------------------------------------------
def decision_schema(context: Context) -> dict[str, Any]:
    """The contract's page_decision schema with each position's id fixed (`prefixItems` + `const`), so
    grammar-constrained backends cannot write an unknown or out-of-order id."""
    require_keys(context, "page_decision", "item_ids")
    ids = [int(i) for i in context["item_ids"]]
    schema = page_decision_schema(len(ids))
    item = schema["properties"]["items"]["items"]
    item["properties"]["feeling"] = {"type": "string", "maxLength": _LONGEST_OPENING + FEELING_MAX_CHARS}
    schema["properties"]["reason"] = {"type": "string", "maxLength": REASON_MAX_CHARS}
    fixed = [{**item, "properties": {**item["properties"], "id": {"type": "integer", "const": i}}} for i in ids]
    schema["properties"]["items"] = {
        "type": "array", "prefixItems": fixed, "items": False, "minItems": len(ids), "maxItems": len(ids),
    }  # fmt: skip
    return schema


def decision_samples(context: Context) -> Samples:
    n = max(len(context.get("item_ids", ())), 1)
    ratings = [4, 2, 5, 3][:n] * (n // 4 + 1)
    return {
        "watch": [(r >= 3,) for r in ratings[:n]],
        "rating": [(r,) for r in ratings[:n]],
        "feeling": [tuple(_sentence(t) for t in _BECAUSE[_tone(r)]) for r in ratings[:n]],
        "leave": [(False,)],
        "reason": [_STAY],
    }


_PAGE_KEYS = ("item_ids", "item_genres", "liked_genres", "disliked_genres", "activity", "page_index")


def decision_mock(ctx: Context, rng: np.random.Generator) -> dict[str, Any]:
    """Watch more often and rate higher the more an item's genres overlap the persona's liked genres (and less
    for disliked ones); active users watch more; the chance to leave grows with the page index and falls with
    each liked item. Texts: the spec's samples for the rating, and for leaving or staying."""
    try:
        ids, genres_per_item = ctx["item_ids"], ctx["item_genres"]
        liked, disliked = set(ctx["liked_genres"]), set(ctx["disliked_genres"])
        activity_shift = int(ctx["activity"]) - 2  # -1, 0, +1 for low, mid, high activity
        page_index = int(ctx["page_index"])
    except KeyError:
        require_keys(ctx, "page_decision", *_PAGE_KEYS)
        raise
    n = len(ids)
    if len(genres_per_item) != n:
        raise ValueError(f"mock rule for 'page_decision': {n} item_ids but {len(genres_per_item)} item_genres")
    u = rng.random(2 * n + 1).tolist()  # per item: watch draw, rating-noise draw; then the leave draw
    items = []
    n_liked = 0
    for k in range(n):  # the mock's hot loop, so the clip is inlined
        genres = genres_per_item[k]  # the mock user's whole notion of taste: liked minus disliked genres shared
        match = len(liked.intersection(genres)) - len(disliked.intersection(genres))
        p_watch = min(max(0.2 + 0.25 * match + 0.1 * activity_shift, 0.02), 0.95)
        watch = u[k] < p_watch
        rating = min(max(2 + match + int(u[n + k] * 3), 1), 5)  # 3 + match + noise (-1, 0 or +1)
        if watch and rating >= 4:
            n_liked += 1
        pool = _BECAUSE[_tone(rating)]
        feeling = _sentence(pool[1 + (int(ids[k]) + page_index) % (len(pool) - 1)])
        items.append({"id": int(ids[k]), "watch": watch, "rating": rating, "feeling": feeling})
    p_leave = min(max(0.1 + 0.12 * page_index - 0.08 * n_liked - 0.05 * activity_shift, 0.02), 0.9)
    leave = u[2 * n] < p_leave
    pool = _LEAVE if leave else _STAY
    reason = pool[1 + page_index % (len(pool) - 1)]
    return {"items": items, "leave": leave, "reason": reason}


def decision_out_of_range(answer: dict[str, Any]) -> None:
    """A mock fault: the first rating out of 1..5."""
    if answer["items"]:
        answer["items"][0]["rating"] = 7


def decision_unknown_id(answer: dict[str, Any]) -> None:
    """A mock fault: the first id replaced by one the page did not show."""
    if answer["items"]:
        answer["items"][0]["id"] = max(e["id"] for e in answer["items"]) + 100_000


PAGE_DECISION = PromptSpec(
    name="page_decision",
    package="agents",
    schema=decision_schema,
    samples=decision_samples,
    mock=decision_mock,
    check=lambda context: check_page_decision(context["item_ids"]),
    data_vars=("taste", "memories", "items"),
    max_tokens=lambda context: PAGE_MAX_TOKENS_BASE + PAGE_MAX_TOKENS_PER_ITEM * len(context["item_ids"]),
    mock_out_of_range=decision_out_of_range,
    mock_unknown_id=decision_unknown_id,
)


# ---- page_pick (the fidelity protocol as peers run it: "you watched k of these") -------------------------------
def pick_samples(context: Context) -> Samples:
    return {"watched": [(int(i),) for i in context.get("item_ids", ())] or [(0,)]}


def pick_mock(ctx: Context, rng: np.random.Generator) -> dict[str, Any]:
    """The k items whose genres overlap the liked genres most (minus disliked ones), ties at random; page order."""
    require_keys(ctx, "page_pick", "item_ids", "item_genres", "liked_genres", "disliked_genres", "watched_count")
    ids = [int(i) for i in ctx["item_ids"]]
    liked, disliked = set(ctx["liked_genres"]), set(ctx["disliked_genres"])
    if len(ctx["item_genres"]) != len(ids):
        raise ValueError(f"mock rule for 'page_pick': {len(ids)} item_ids but {len(ctx['item_genres'])} item_genres")
    match = [len(liked.intersection(g)) - len(disliked.intersection(g)) for g in ctx["item_genres"]]
    tiebreak = rng.random(len(ids))
    order = sorted(range(len(ids)), key=lambda i: (-match[i], tiebreak[i]))
    chosen = sorted(order[: int(ctx["watched_count"])])
    return {"watched": [ids[i] for i in chosen]}


PAGE_PICK = PromptSpec(
    name="page_pick",
    package="agents",
    schema=lambda context: page_pick_schema(int(context["watched_count"])),
    samples=pick_samples,
    mock=pick_mock,
    check=lambda context: check_page_pick(context["item_ids"], int(context["watched_count"])),
    data_vars=("taste", "items"),
)


# ---- reflection -----------------------------------------------------------------------------------------------
def insights_schema(context: Context) -> dict[str, Any]:
    """`{"insights": [1..3 strings opened by INSIGHT_OPENING]}`."""
    schema = reflection_schema()
    schema["properties"]["insights"]["items"] = forced_string(INSIGHT_OPENING, MIN_OWN_CHARS, INSIGHT_MAX_CHARS)
    return schema


def insights_samples(context: Context) -> Samples:
    return {"insights": [tuple(INSIGHT_OPENING + t for t in _INSIGHTS)]}


def reflection_mock(ctx: Context, rng: np.random.Generator) -> dict[str, Any]:
    """One insight per ten memories (1..3); the first names the tone the mean rating sets."""
    require_keys(ctx, "reflection", "n_memories", "mean_rating")
    n = min(max(1 + int(ctx["n_memories"]) // 10, 1), 3)
    mean = ctx["mean_rating"]
    first = _INSIGHTS[1] if mean is not None and mean >= 3.5 else _INSIGHTS[2]
    rest = [t for t in _INSIGHTS if t != first]
    order = rng.permutation(len(rest))[: n - 1]
    return {"insights": [INSIGHT_OPENING + t for t in [first, *(rest[i] for i in sorted(order))]]}


REFLECTION = PromptSpec(
    name="reflection",
    package="agents",
    schema=insights_schema,
    samples=insights_samples,
    mock=reflection_mock,
    data_vars=("taste", "memories"),
    max_tokens=lambda context: REFLECTION_MAX_TOKENS,
    mock_out_of_range=lambda answer: answer.update(insights=[]),  # a mock fault: no insight at all
)


# ---- interview ------------------------------------------------------------------------------------------------
def exit_interview_schema(context: Context) -> dict[str, Any]:
    """`{"score", "reason"}`; when the context fixes the score (the profile ignores the model's), the score is a
    constant and the reason opens with the satisfaction it states."""
    score = context.get("score")
    if score is None:
        return interview_schema(INTERVIEW_REASON_MAX_CHARS)
    properties = {
        "score": {"type": "integer", "const": int(score)},
        "reason": forced_string(interview_opening(int(score)), MIN_OWN_CHARS, INTERVIEW_REASON_MAX_CHARS),
    }
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _stats_score(ctx: Context, rng: np.random.Generator) -> int:
    shown = max(int(ctx["n_shown"]), 1)
    share = 0.7 * int(ctx["n_liked"]) / shown + 0.3 * int(ctx["n_watched"]) / shown
    noise = int(rng.random() * 3) - 1  # -1, 0 or +1
    return int(min(max(round(1 + 9 * share) + noise, 1), 10))


def interview_samples(context: Context) -> Samples:
    score = context.get("score")
    if score is None:
        return {"score": [(7,)], "reason": [_SATISFACTION["positive"]]}
    opening = interview_opening(int(score))
    return {"reason": [tuple(opening + r for r in _SATISFACTION[_score_tone(int(score))])]}


def interview_mock(ctx: Context, rng: np.random.Generator) -> dict[str, Any]:
    """The fixed score when the context has one, else 1 + 9 x (share of shown items liked, blended with share
    watched) plus -1/0/+1 noise; a reason in the score's tone."""
    require_keys(ctx, "interview", "n_shown", "n_watched", "n_liked", "mean_rating")
    drawn = _stats_score(ctx, rng)
    score = int(ctx["score"]) if ctx.get("score") is not None else drawn
    pool = _SATISFACTION[_score_tone(score)]
    reason = pool[1 + int(rng.random() * (len(pool) - 1))]
    if ctx.get("score") is not None:
        reason = interview_opening(score) + reason
    return {"score": score, "reason": reason}


INTERVIEW = PromptSpec(
    name="interview",
    package="agents",
    schema=exit_interview_schema,
    samples=interview_samples,
    mock=interview_mock,
    data_vars=("taste", "memories"),
    mock_out_of_range=lambda answer: answer.update(score=11),  # a mock fault: a score beyond 1..10
)


# ---- taste_summary --------------------------------------------------------------------------------------------
def summary_samples(context: Context) -> Samples:
    liked = ", ".join(context.get("liked_genres") or ()) or "many kinds of"
    disliked = ", ".join(context.get("disliked_genres") or ()) or "very little"
    return {
        "summary": [
            (
                "You love a gripping story and strong characters.",
                f"You enjoy {liked} films and avoid {disliked}.",
                f"You mostly watch {liked} films; {disliked} rarely suits you.",
            )
        ]
    }


def summary_mock(ctx: Context, rng: np.random.Generator) -> dict[str, Any]:
    """A sentence naming the liked and disliked genres."""
    require_keys(ctx, "taste_summary", "liked_genres", "disliked_genres")
    return example_answer(taste_summary_schema(), summary_samples(ctx), rng)


TASTE_SUMMARY = PromptSpec(
    name="taste_summary",
    package="agents",
    schema=lambda context: taste_summary_schema(),
    samples=summary_samples,
    mock=summary_mock,
    data_vars=("liked_genres", "disliked_genres", "liked_titles", "disliked_titles"),
    max_tokens=lambda context: TASTE_SUMMARY_MAX_TOKENS,
)


SPECS: Mapping[str, PromptSpec] = register_specs(
    PAGE_DECISION, PAGE_PICK, PAGE_REACTION, REFLECTION, INTERVIEW, TASTE_SUMMARY
)


def spec_for(template: str) -> PromptSpec:
    """The spec of a user-simulation template, by name."""
    try:
        return SPECS[template]
    except KeyError:
        raise KeyError(f"no prompt spec for template {template!r}; known: {sorted(SPECS)}") from None
