"""The LLM reranker's prompt spec (`rerank`, template recommenders/prompts/rerank.v1.j2), registered for the mock
at import: the answer is a permutation of the candidate ids; the mock ranks by genre overlap with the history."""

from __future__ import annotations

from typing import Any

import numpy as np

from simenv.llm.prompt_spec import Context, PromptSpec, Samples, require_keys
from simenv.llm.schemas import check_rerank, rerank_schema
from simenv.llm.spec_registry import register_specs


def rerank_samples(context: Context) -> Samples:
    return {"ranking": [(int(i),) for i in context.get("candidate_ids", ())] or [(0,)]}


def rerank_mock(ctx: Context, rng: np.random.Generator) -> dict[str, Any]:
    """Candidates sorted by how many of their genres appear in the history, ties broken at random."""
    require_keys(ctx, "rerank", "candidate_ids", "candidate_genres", "history_genres")
    history = set(ctx["history_genres"])
    ids = [int(i) for i in ctx["candidate_ids"]]
    overlap = [len(set(g) & history) for g in ctx["candidate_genres"]]
    if len(overlap) != len(ids):
        raise ValueError(f"mock rule for 'rerank': {len(ids)} candidate_ids but {len(overlap)} candidate_genres")
    tiebreak = rng.random(len(ids))
    order = sorted(range(len(ids)), key=lambda i: (-overlap[i], tiebreak[i]))
    return {"ranking": [ids[i] for i in order]}


def rerank_out_of_range(answer: dict[str, Any]) -> None:
    """A mock fault: the ranking one id too long (its first repeated)."""
    answer["ranking"] = answer["ranking"] + answer["ranking"][:1]


def rerank_unknown_id(answer: dict[str, Any]) -> None:
    """A mock fault: the first id replaced by one that was not a candidate."""
    if answer["ranking"]:
        answer["ranking"][0] = max(answer["ranking"]) + 100_000


RERANK = PromptSpec(
    name="rerank",
    package="recommenders",
    schema=lambda context: rerank_schema(len(context["candidate_ids"])),
    samples=rerank_samples,
    mock=rerank_mock,
    check=lambda context: check_rerank(context["candidate_ids"]),
    data_vars=("history", "candidates"),
    mock_out_of_range=rerank_out_of_range,
    mock_unknown_id=rerank_unknown_id,
)
register_specs(RERANK)
