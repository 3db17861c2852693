"""How a persona decides a page, in the two modes of `[llm_user] page_prompt`, always for a batch of sessions
with ONE `ask_json_batch` call.

- decide (`page_decision`): the LLM answers watch / rating / leave per item; the grounded rule
  (`agents.decision.GroundedDecider`) blends the answer in by the profile's weights. An answer unusable after
  repairs is a recorded fallback and the non-LLM signals decide alone.
- narrate (`page_reaction`): the grounded rule decides first; the LLM only writes the feelings of the watched
  movies and the leave reason. A page with nothing watched and no exit has no text to write: no call.

Decisions are made for the whole batch at once (`decide_batch`: `GroundedDecider.decide_batch`, the one copy of
the page rule, array operations over all pages, one generator call per session).

Texts an answer lacks get plain defaults (`fallbacks.fill_texts`), logged at DEBUG and counted in
`LLMUserModel.default_texts`. `judge_many` answers pages outside any session by the same rule (fidelity);
`pick_pages` answers the fidelity protocol as peers run it ("you watched k of these": page_pick).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from agents.decision import BatchAnswers, GroundedDecider, top_k
from agents.embedding import normalise_rows
from agents.llm_user.fallbacks import answer_text, fill_texts, record_fallback, record_judge_fallback
from agents.llm_user.prompts import draw_seed
from agents.llm_user.session import LLMUserSession
from agents.llm_user.views import UserView
from agents.memory import MemoryRecord
from simenv.llm.schemas import check_page_decision
from simenv.llm.structured import StructuredResult, ask_json_batch
from simenv.records import Item, Page, PageFeedback, Persona

logger = logging.getLogger(__name__)

Pages = Sequence[tuple[Page, Sequence[Item]]]


class PageAnswer(NamedTuple):
    """A usable page_decision answer, per item in page order."""

    watch: np.ndarray  # bool
    ratings: np.ndarray  # float64 stars 1..5
    feelings: list[str]  # "" where the LLM did not watch or wrote a placeholder
    leave: bool
    reason: str  # "" for a placeholder


def parse_page_answer(value: Any) -> PageAnswer:
    items = value["items"]
    return PageAnswer(
        np.array([bool(a["watch"]) for a in items]),
        np.array([int(a["rating"]) for a in items], dtype=np.float64),
        [answer_text(a["feeling"]) if a["watch"] else "" for a in items],
        bool(value["leave"]),
        answer_text(value["reason"]),
    )


def page_memories_for(model: UserView, session: LLMUserSession, page: Page) -> list[MemoryRecord]:
    """The memories shown with a page: top-k by the mean embedding of its items."""
    query = normalise_rows(model.item_vectors.get(page.item_ids).mean(axis=0, keepdims=True))[0]
    return session.memory.retrieve(query, now=session.memory.clock)


Decision = tuple[np.ndarray, np.ndarray, bool]


def decide_batch(
    model: UserView,
    sessions: Sequence[LLMUserSession],
    pages: Pages,
    deciders: Sequence[GroundedDecider],
    answers: Sequence[PageAnswer | None],
) -> list[Decision]:
    """(watched, stars, left) of every page: one `GroundedDecider.decide_batch` per decider (the kind's and, for
    failed answers, its fallback)."""
    out: list[Decision | None] = [None] * len(sessions)
    for decider in {id(d): d for d in deciders}.values():
        idx = [i for i, d in enumerate(deciders) if d is decider]
        sizes = np.fromiter((len(pages[i][0].item_ids) for i in idx), dtype=np.int64, count=len(idx))
        width = int(sizes.max())
        ids = np.zeros((len(idx), width), dtype=np.int64)
        for row, i in enumerate(idx):
            ids[row, : sizes[row]] = pages[i][0].item_ids
        batch = _batch_answers([answers[i] for i in idx], width)
        watched, stars, left = decider.decide_batch(
            [sessions[i].persona for i in idx],
            ids,
            sizes,
            np.fromiter((pages[i][0].page_index for i in idx), dtype=np.int64, count=len(idx)),
            [sessions[i].rng for i in idx],
            batch,
        )
        for row, (i, k) in enumerate(zip(idx, sizes.tolist(), strict=True)):
            out[i] = (watched[row, :k], stars[row, :k], bool(left[row]))
    return [d for d in out if d is not None]


def _batch_answers(answers: Sequence[PageAnswer | None], width: int) -> BatchAnswers | None:
    """The answers padded to `width` items; None when no page has one."""
    if all(a is None for a in answers):
        return None
    b = len(answers)
    has = np.array([a is not None for a in answers])
    watch = np.zeros((b, width), dtype=bool)
    ratings = np.zeros((b, width), dtype=np.float64)
    leave = np.zeros(b, dtype=bool)
    for row, a in enumerate(answers):
        if a is not None:
            watch[row, : len(a.watch)] = a.watch
            ratings[row, : len(a.ratings)] = a.ratings
            leave[row] = a.leave
    return BatchAnswers(has, watch, ratings, leave)


def finish_page(
    model: UserView,
    session: LLMUserSession,
    page: Page,
    items: Sequence[Item],
    decision: tuple[np.ndarray, np.ndarray, bool],
    feelings: Sequence[str],
    reason: str,
    result: StructuredResult | None,
) -> PageFeedback:
    """Complete the page's texts (defaults are logged and counted unless the answer already fell back) and
    record it on the session."""
    watched, stars, left = decision
    texts = fill_texts(watched, stars, left, feelings, reason)
    failed = result is not None and result.failed
    if not failed and (texts.n_default_feelings or texts.default_reason):
        model.default_texts["feeling"] += texts.n_default_feelings
        model.default_texts["leave_reason"] += int(texts.default_reason)
        logger.debug(
            "default text: user=%s episode=%s page=%s feelings=%s leave_reason=%s",
            session.persona.user_id, session.episode, page.page_index, texts.n_default_feelings, texts.default_reason,
        )  # fmt: skip
    call_ids = () if result is None else result.call_ids
    return session.record_page(page, items, watched, stars, left, texts.feelings, texts.reason, failed, call_ids)


def decide_pages(model: UserView, sessions: Sequence[LLMUserSession], pages: Pages) -> list[PageFeedback]:
    """`page_decision`: the LLM answers watch/rating/leave per item; the grounded rule blends them in."""
    requests, checks = [], []
    with model.lock:
        for session, (page, _) in zip(sessions, pages, strict=True):
            ids = [int(i) for i in page.item_ids]
            seed = draw_seed(session.text_rng)
            memories = page_memories_for(model, session, page)
            requests.append(model.prompts.page_request(session.persona, page.page_index, ids, memories, seed))
            checks.append(check_page_decision(ids))
    results = ask_json_batch(model.llm, requests, checks, max_repairs=model.config.max_repairs)
    _prefetch(model, sessions, pages)
    with model.lock:
        return _decided_pages(model, sessions, pages, results)


def _prefetch(model: UserView, sessions: Sequence[LLMUserSession], pages: Pages) -> None:
    """A decider that asks the LLM itself (`agents.llm_feature.StackedDecider`) asks for these pages now, before
    the caller takes `model.lock`, so sessions' probe calls wait on the endpoint together."""
    prefetch = getattr(model.decider, "prefetch", None)
    if callable(prefetch):
        prefetch([s.persona for s in sessions], [page.item_ids for page, _ in pages])


def _decided_pages(
    model: UserView, sessions: Sequence[LLMUserSession], pages: Pages, results: Sequence[StructuredResult]
) -> list[PageFeedback]:
    """The pages of `decide_pages` once their answers are in: the rule applied, texts filled, pages recorded."""
    answers: list[PageAnswer | None] = []
    deciders = []
    for session, (page, _), result in zip(sessions, pages, results, strict=True):
        if result.failed:
            record_fallback(model.events, session, page.page_index, "page_decision", result)
            answers.append(None)
            deciders.append(model.decider.fallback_decider())
        else:
            answers.append(parse_page_answer(result.value))
            deciders.append(model.decider)
    decisions = decide_batch(model, sessions, pages, deciders, answers)
    feedback = []
    for session, (page, items), result, answer, decision in zip(
        sessions, pages, results, answers, decisions, strict=True
    ):
        feelings = [""] * len(items) if answer is None else answer.feelings
        # The LLM's reason is the user's only when the user did what the LLM said (leave or stay).
        reason = answer.reason if answer is not None and answer.leave == decision[2] else ""
        feedback.append(finish_page(model, session, page, items, decision, feelings, reason, result))
    return feedback


def narrate_pages(model: UserView, sessions: Sequence[LLMUserSession], pages: Pages) -> list[PageFeedback]:
    """`page_reaction`: the grounded rule decides each page first; the LLM writes the feelings of the watched
    movies and the leave reason. A page with nothing watched and no exit has no text to write: no call."""
    requests, checks, asked = [], [], []
    _prefetch(model, sessions, pages)
    with model.lock:
        decided = decide_batch(model, sessions, pages, [model.decider] * len(sessions), [None] * len(sessions))
        for k, (session, (page, items), decision) in enumerate(zip(sessions, pages, decided, strict=True)):
            watched, stars, left = decision
            if watched.any() or left:
                seed = draw_seed(session.text_rng)
                memories = page_memories_for(model, session, page)
                persona = session.persona
                ask = model.prompts.reaction_ask(persona, page, items, watched, stars, left, memories, seed)
                requests.append(ask.request)
                checks.append(ask.check)  # feelings agree with their ratings; nothing copies the prompt
                asked.append(k)
    results: list[StructuredResult | None] = [None] * len(sessions)
    answers = ask_json_batch(model.llm, requests, checks, max_repairs=model.config.text_repairs)
    for k, result in zip(asked, answers, strict=True):
        results[k] = result
    with model.lock:
        return _narrated_pages(model, sessions, pages, decided, results)


def _narrated_pages(
    model: UserView,
    sessions: Sequence[LLMUserSession],
    pages: Pages,
    decided: Sequence[Decision],
    results: Sequence[StructuredResult | None],
) -> list[PageFeedback]:
    """The pages of `narrate_pages` once their texts are in: texts filled (or fallen back), pages recorded."""
    feedback = []
    for session, (page, items), decision, result in zip(sessions, pages, decided, results, strict=True):
        watched, _, left = decision
        feelings, reason = [""] * len(items), ""
        if result is not None and result.failed:
            record_fallback(model.events, session, page.page_index, "page_reaction", result, logging.INFO)
        elif result is not None:
            texts = iter(answer_text(t) for t in result.value["feelings"])
            feelings = [next(texts) if w else "" for w in watched]
            reason = answer_text(result.value.get("reason", "")) if left else ""
        feedback.append(finish_page(model, session, page, items, decision, feelings, reason, result))
    return feedback


def judge_pages(
    model: UserView, asks: Sequence[tuple[Persona, Sequence[int]]], rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pages answered outside any session (no memory read or written): per item (watch, stars as if watched),
    with one batched page_decision call. In narrate mode the LLM's answer would not change a decision, so the
    grounded rule answers alone (no LLM call)."""
    if model.config.narrates:
        return model.decider.judge_many(asks, rng)
    requests = [model.prompts.page_request(p, 0, [int(i) for i in ids], (), draw_seed(rng)) for p, ids in asks]
    checks = [check_page_decision([int(i) for i in ids]) for _, ids in asks]
    results = ask_json_batch(model.llm, requests, checks, max_repairs=model.config.max_repairs)
    out = []
    for (persona, ids), result in zip(asks, results, strict=True):
        if result.failed:
            record_judge_fallback(model.events, persona.user_id, result)
            llm_watch, llm_ratings, decider = None, None, model.decider.fallback_decider()
        else:
            answer = parse_page_answer(result.value)
            llm_watch, llm_ratings, decider = answer.watch, answer.ratings, model.decider
        ids = np.asarray(ids, dtype=np.int64)
        out.append(decider.decide_page(persona, ids, 0, rng, llm_watch, llm_ratings, False)[:2])
    return out


def pick_pages(
    model: UserView, asks: Sequence[tuple[Persona, Sequence[int]]], ks: Sequence[int], rng: np.random.Generator
) -> list[np.ndarray]:
    """The fidelity protocol as peers run it: told it watched exactly `ks[i]` of ask i's items, the persona names
    them (one batched page_pick call; none for k = 0 or all items). The kind's rule then decides with that answer
    as the LLM's watch answer: the top k by base logit + 2 * w_llm * picked, so an LLM-only kind takes the LLM's
    picks and a kind with signals blends them. In narrate mode the LLM's answer would not change a decision, so
    the grounded rule picks alone (no call); an answer unusable after repairs is a recorded fallback (the fallback
    decider's top k)."""
    decider = model.decider
    if model.config.narrates:
        return decider.pick_many(asks, ks, rng)
    out: list[np.ndarray | None] = [None] * len(asks)
    requests, checks, asked = [], [], []
    for n, ((persona, ids), k) in enumerate(zip(asks, ks, strict=True)):
        if 0 < k < len(ids):
            ask = model.prompts.pick_ask(persona, [int(i) for i in ids], int(k), draw_seed(rng))
            requests.append(ask.request)
            checks.append(ask.check)
            asked.append(n)
        else:
            out[n] = np.full(len(ids), k > 0)
    results = ask_json_batch(model.llm, requests, checks, max_repairs=model.config.max_repairs)
    w_llm = decider.config.w_llm
    for n, result in zip(asked, results, strict=True):
        persona, ids = asks[n]
        if result.failed:
            record_judge_fallback(model.events, persona.user_id, result)
            out[n] = decider.fallback_decider().pick_many([asks[n]], [ks[n]], rng)[0]
            continue
        picked = np.isin(np.asarray(ids, dtype=np.int64), [int(i) for i in result.value["watched"]])
        base = decider.base_logits(persona, ids).astype(np.float64)
        out[n] = top_k(base + 2.0 * w_llm * picked, ks[n])
    return [o for o in out if o is not None]
