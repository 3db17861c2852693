"""LLMRank-style reranker: a base recommender proposes candidates, an LLM reorders them listwise from
the user's recent history, answering with candidate ids only.

Answer rule: the JSON answer `{"ranking": [...]}` must be a permutation of the candidate ids (schema fixes
the length and, for grammar-constrained backends, the allowed ids; the check rejects unknown or repeated
ids and the structured layer asks the model to repair, up to `max_repairs` times). If it still fails, the
last answer is salvaged: its candidate ids are kept in the LLM's order (unknown and repeated ids dropped)
and the rest follow in the base order; with nothing usable the base order is used. Every such case is a
`FallbackEvent` in `fallbacks` and a warning in the log; the `Recommendation` itself never depends on the LLM
being reachable.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd

from recommenders.base import BaseRecommender, RecommenderConfig
from recommenders.llm_rerank_spec import RERANK
from simenv.data.dataset import Dataset
from simenv.llm.prompt_spec import prompt_example
from simenv.llm.schemas import check_rerank, rerank_schema
from simenv.llm.structured import StructuredResult, ask_json, decode_json
from simenv.llm.templates import load_template
from simenv.llm.types import LLM, LLMRequest
from simenv.protocols import Recommender
from simenv.records import Item, Page, PageFeedback, Recommendation, as_int_tuple

log = logging.getLogger(__name__)

TEMPLATE = "rerank"
BASE_DIR = "base"
BASE_CLASS_FILE = "base_class.json"


@dataclass(frozen=True)
class LLMRankConfig(RecommenderConfig):
    """`n_candidates` from the base model are reranked; the prompt shows the last `history_len` items.
    With `fit_base=False`, `fit` leaves an already-fitted base model as it is."""

    n_candidates: int = 20
    history_len: int = 10
    max_repairs: int = 2
    temperature: float = 0.0
    max_tokens: int = 256
    template_version: int = 1
    fit_base: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for field in ("n_candidates", "history_len", "max_tokens", "template_version"):
            value = getattr(self, field)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"LLMRankConfig.{field} must be a positive int, got {value!r}")
        if not isinstance(self.max_repairs, int) or self.max_repairs < 0:
            raise ValueError(f"LLMRankConfig.max_repairs must be a non-negative int, got {self.max_repairs!r}")


@dataclass(frozen=True)
class FallbackEvent:
    """One page where the LLM answer was unusable. `action` is "completed" (salvaged ids first, then the
    base order) or "base_order"; `kept` counts the LLM ids kept."""

    user_id: int
    action: str
    error: str
    kept: int
    call_ids: tuple[str, ...]


class LLMRanker(BaseRecommender):
    """Reranks the top `n_candidates` of `base` with `llm`. `score`/`score_batch` are the base model's
    scores (the LLM acts only on a page); propensities are None (the LLM step is not a sampled policy)."""

    name = "llm-rank"
    Config = LLMRankConfig
    base_dir = BASE_DIR  # a wrapper: `recommenders.registry` builds/loads `base` (saved in `path/base_dir`)

    def __init__(
        self,
        base: Recommender,
        llm: LLM,
        catalog: Dataset | Sequence[Item],
        config: LLMRankConfig | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(config, **overrides)
        if isinstance(base, str):
            raise TypeError(
                f"LLMRanker(base={base!r}): pass a Recommender, or name it through "
                f"recommenders.registry.make('llm-rank', base={base!r}, base_config=...)"
            )
        self.base = base
        self.llm = llm
        self.catalog: Sequence[Item] = catalog.catalog if isinstance(catalog, Dataset) else tuple(catalog)
        self.template = load_template("recommenders", TEMPLATE, self.config.template_version)
        self.fallbacks: list[FallbackEvent] = []
        self.results: list[str] = []

    def __repr__(self) -> str:
        return f"LLMRanker(base={self.base!r}, llm={getattr(self.llm, 'name', '?')}, config={self.config})"

    def fit(self, train: pd.DataFrame, n_users: int, n_items: int, valid: pd.DataFrame | None = None) -> Self:
        if len(self.catalog) != n_items:
            raise ValueError(f"llm-rank: catalog has {len(self.catalog)} items but n_items={n_items}")
        super().fit(train, n_users, n_items, valid)
        if self.config.fit_base:
            self.base.fit(train, n_users, n_items, valid)
        self.fallbacks.clear()
        self.results.clear()
        return self

    def score_batch(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        return np.stack([self.base.score(int(u), histories[b] if histories else ()) for b, u in enumerate(user_ids)])

    def observe(self, user_id: int, page: Page, feedback: PageFeedback) -> None:
        super().observe(user_id, page, feedback)
        self.base.observe(user_id, page, feedback)

    def end_session(self, user_id: int | None = None) -> None:
        super().end_session(user_id)
        end = getattr(self.base, "end_session", None)
        if callable(end):
            end(user_id)

    # ---- the LLM step ---------------------------------------------------------------------------------
    def request(self, user_id: int, candidates: Sequence[int], history: Sequence[int], seed: int | None) -> LLMRequest:
        """The rerank request for one page: rendered prompt, answer schema and the mock's context."""
        assert self.user_items is not None
        recent = [*self.user_items.items(user_id).tolist(), *history][-self.config.history_len :]
        genre_counts = Counter(g for i in recent for g in self.catalog[i].genres)
        schema = rerank_schema(len(candidates))
        schema["properties"]["ranking"]["items"]["enum"] = [int(c) for c in candidates]
        context = {
            "candidate_ids": [int(c) for c in candidates],
            "candidate_genres": [list(self.catalog[c].genres) for c in candidates],
            "history_genres": [g for g, _ in sorted(genre_counts.items(), key=lambda kv: (-kv[1], kv[0]))],
        }
        messages = self.template.render(
            history=[self.catalog[i].text for i in recent],
            candidates=[{"id": int(c), "text": self.catalog[c].text} for c in candidates],
            example=prompt_example(RERANK.example(context), schema),  # the spec's example, no "..." skeleton
        )
        return LLMRequest(
            messages=messages,
            template=TEMPLATE,
            template_version=self.template.version_tag,
            purpose="rerank",
            temperature=self.config.temperature,
            max_tokens=self.config.max_tokens,
            seed=seed,
            json_schema=schema,
            context=context,
        )

    def recommend(
        self,
        user_id: int,
        k: int,
        exclude: Collection[int],
        rng: np.random.Generator,
        history: Sequence[int] = (),
    ) -> Recommendation:
        """Base top-`n_candidates` (at least k), reranked by the LLM; the first k are the page."""
        self._check_user(user_id)
        n_allowed = int(self.allowed_mask(exclude, k).sum())
        hist = self.session_history(user_id, history)
        n = min(max(k, self.config.n_candidates), n_allowed)
        base = self.base.recommend(user_id, n, exclude, rng, history=hist)
        candidates = list(base.item_ids)
        seed = int(rng.integers(2**31 - 1)) if self.config.temperature > 0 else None
        result = ask_json(
            self.llm, self.request(user_id, candidates, hist, seed), check_rerank(candidates), self.config.max_repairs
        )
        self.results.append(result.status)
        if result.failed:
            order = self._fallback(user_id, candidates, result)
        else:
            order = [int(i) for i in result.value["ranking"]]
        return Recommendation(item_ids=as_int_tuple(order[:k]))

    def _fallback(self, user_id: int, candidates: list[int], result: StructuredResult) -> list[int]:
        """Salvage the last answer's valid ids (in its order), then the remaining candidates in base order."""
        kept: list[int] = []
        allowed = set(candidates)
        if result.responses:
            try:
                answer = decode_json(result.responses[-1].text)
                ranking = answer.get("ranking", []) if isinstance(answer, dict) else []
            except json.JSONDecodeError:
                ranking = []
            for i in ranking if isinstance(ranking, list) else []:
                if isinstance(i, int) and not isinstance(i, bool) and i in allowed and i not in kept:
                    kept.append(i)
        order = kept + [c for c in candidates if c not in set(kept)]
        event = FallbackEvent(
            user_id=int(user_id),
            action="completed" if kept else "base_order",
            error=result.error or "",
            kept=len(kept),
            call_ids=result.call_ids,
        )
        self.fallbacks.append(event)
        log.warning(
            "llm-rank fallback for user %d (%s, kept %d ids): %s", user_id, event.action, event.kept, event.error
        )
        return order

    # ---- persistence ----------------------------------------------------------------------------------
    def save(self, path: Path | str) -> None:
        """Save this ranker's config and the base model (in `path/base`, with its class in `base_class.json`)."""
        super().save(path)
        self.base.save(Path(path) / BASE_DIR)
        cls = type(self.base)
        (Path(path) / BASE_CLASS_FILE).write_text(json.dumps({"class": f"{cls.__module__}:{cls.__qualname__}"}))

    @classmethod
    def load(  # type: ignore[override]
        cls,
        path: Path | str,
        llm: LLM | None = None,
        catalog: Dataset | Sequence[Item] | None = None,
        base: Recommender | None = None,
    ) -> Self:
        """Load a saved ranker; the LLM and catalog are not saved and must be passed again. `base` (what
        `recommenders.registry.load` passes) defaults to the saved base model, loaded by the class recorded at save."""
        if llm is None or catalog is None:
            raise TypeError(f"LLMRanker.load({path}) needs llm= and catalog= (they are not saved)")
        if base is None:
            base = _load_base(Path(path))
        meta, state = cls.read_saved(path)
        model = cls(base, llm, catalog, meta["config"])
        model.apply_saved(meta, state)
        return model


def _load_base(path: Path) -> Recommender:
    """The base model saved in `path/base`, by the class `save` recorded (no registry lookup: the registry
    imports this module, so this module does not import the registry)."""
    file = path / BASE_CLASS_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (saved by an older version); load with recommenders.registry.load")
    module, _, qualname = json.loads(file.read_text())["class"].partition(":")
    base_cls = getattr(importlib.import_module(module), qualname)
    return base_cls.load(path / BASE_DIR)
