"""One-off LLM taste summaries of personas (template `taste_summary`), used once per run and cached with it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from agents.llm_user.fallbacks import answer_text
from agents.llm_user.prompts import taste_summary_ask
from simenv.llm.structured import ask_json_batch
from simenv.llm.types import LLM
from simenv.records import Persona

logger = logging.getLogger(__name__)


def summarise_tastes(
    llm: LLM, personas: Sequence[Persona], max_repairs: int = 2, version: int = 1
) -> dict[int, tuple[str, bool]]:
    """Taste summaries with one batched call. Returns user id -> (summary, fallback); a failed or placeholder
    answer keeps the persona's templated `taste_text` and is logged, so callers can still
    `dataclasses.replace(persona, taste_text=summary)` for every persona. A summary that copies the prompt fails
    its check (`simenv.llm.echo`)."""
    asks = [taste_summary_ask(p, version) for p in personas]
    results = ask_json_batch(llm, [a.request for a in asks], [a.check for a in asks], max_repairs=max_repairs)
    out: dict[int, tuple[str, bool]] = {}
    for p, result in zip(personas, results, strict=True):
        summary = "" if result.failed else answer_text(result.value["summary"])
        if not summary:
            logger.warning("fallback: taste_summary user=%s unusable (%s); kept taste_text", p.user_id, result.error)
            out[p.user_id] = (p.taste_text, True)
        else:
            out[p.user_id] = (summary, False)
    return out
