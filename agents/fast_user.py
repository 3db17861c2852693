"""The fast non-LLM user: a RecSim-style multinomial-logit choice model driven by the persona's features.

Utility of item j for persona p at position k on page t:
    u_pj = genre * z_genre(p, j) + popularity * conformity_scale[conformity - 1] * z_pop(j) - position * k
and the "watch nothing more" option has utility u0_p + fatigue * t. The user picks items one at a time by
multinomial logit among the remaining items and the null option, stopping when the null option wins; with
Gumbel noise this is exactly "watch every item whose perturbed utility beats the perturbed null utility",
which costs one vector comparison. Each item's marginal watch probability is sigmoid(u_pj - u0_p), so u0_p is
calibrated like the grounded bias: mean over the catalog of sigmoid(u - u0) = watch_rate[activity - 1].
Ratings: the shared rating baseline plus logistic noise, cut into stars by the persona's cut points (so the
histogram follows the persona's train histogram). Leaving: the shared logistic leave rule.
All per-persona arrays are computed once; a page costs a few uniforms (drawn in blocks) and scalar arithmetic.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from math import exp, log
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from agents.config import FastUserConfig, load_fast_user_config
from agents.signals import (
    RatingPlan,
    TrainStats,
    genre_signal,
    leave_logit,
    rating_plan,
    sigmoid,
    solve_bias,
    stats_interview_score,
)
from simenv.data.dataset import Dataset
from simenv.records import Interview, Item, ItemReaction, Page, PageFeedback, Persona

if TYPE_CHECKING:
    from agents.response import ResponseModel

_TINY = 1e-12
_ONE_MINUS_TINY = 1.0 - _TINY
_UNIFORM_BLOCK = 48  # uniforms drawn at once by a session (a 5-page episode of 4-item pages uses 50)
# The score depends on three small counts only; memoised because the shared function's numpy clip costs more
# than a whole page decision.
_interview_score = lru_cache(maxsize=4096)(stats_interview_score)


@dataclass(frozen=True, eq=False)
class FastPersona:
    """Per-persona arrays: utility over the catalog, null utility, rating plan."""

    utility: np.ndarray  # (n_items,) float64
    null_utility: float
    rating: RatingPlan
    leave_offset: float  # leave logit terms that do not change within a session
    utility_list: Sequence[float]  # the same numbers as flat Python arrays for the per-page hot path
    prediction_list: Sequence[float]
    cuts: tuple[float, float, float, float]
    hot: tuple = ()  # everything `FastUserSession.react` reads, in one tuple (set by `FastUserModel.plan`)


class FastUserSession:
    """One episode of the MNL user; `react` is the hot path (one page in a few microseconds)."""

    __slots__ = (
        "model",
        "persona",
        "episode",
        "rng",
        "plan",
        "n_shown",
        "n_watched",
        "n_liked",
        "n_pages",
        "_hot",
        "_uniforms",
        "_pos",
    )

    def __init__(self, model: FastUserModel, persona: Persona, episode: int, rng: np.random.Generator) -> None:
        self.model = model
        self.persona = persona
        self.episode = episode
        self.rng = rng
        self.plan = plan = model.plan(persona)
        self.n_shown = 0
        self.n_watched = 0
        self.n_liked = 0
        self.n_pages = 0
        self._hot = plan.hot
        self._uniforms: list[float] = []  # drawn from `rng` in blocks, consumed 2k + 2 per page of k items
        self._pos = 0

    def react(self, page: Page, items: Sequence[Item] = ()) -> PageFeedback:
        # Pages hold a handful of items, where plain Python floats beat numpy's per-call overhead; every
        # constant of the persona and config comes in one tuple (`FastPersona.hot`).
        utility, prediction, cuts, noise, penalty, null_utility, fatigue, leave_offset, leave_fatigue, satisfaction = (
            self._hot
        )
        ids = page.item_ids
        k = len(ids)
        if k > len(penalty):
            raise ValueError(f"page of {k} items exceeds max_page_size {len(penalty)}")
        need = 2 * k + 2
        pos = self._pos
        if pos + need > len(self._uniforms):  # one draw serves several pages: a numpy call costs ~1 us
            self._uniforms = self._uniforms[pos:] + self.rng.random(max(_UNIFORM_BLOCK, need)).tolist()
            pos = 0
        self._pos = pos + need
        u = self._uniforms[pos : pos + need]
        page_index = page.page_index
        null = null_utility + fatigue * page_index - log(-log(max(u[k], _TINY)))
        c0, c1, c2, c3 = cuts
        reactions = []
        n_watched = n_liked = 0
        known = self.model.reaction_rows  # immutable records, shared: building them cost more than deciding
        for j, item in enumerate(ids):
            if utility[item] - penalty[j] - log(-log(max(u[j], _TINY))) > null:
                q = min(max(u[k + 1 + j], _TINY), _ONE_MINUS_TINY)
                value = prediction[item] + noise * log(q / (1.0 - q))
                stars = 1 + (value > c0) + (value > c1) + (value > c2) + (value > c3)
                n_watched += 1
                if stars >= 4:
                    n_liked += 1
            else:
                stars = 0
            row = known[item]
            if row is None:
                row = known[item] = [ItemReaction(int(item), False)] + [
                    ItemReaction(int(item), True, s) for s in range(1, 6)
                ]
            reactions.append(row[stars])
        x = leave_offset + leave_fatigue * page_index + satisfaction * (n_liked / max(k, 1))
        left = u[2 * k + 1] < 1.0 / (1.0 + exp(-x))
        self.n_shown += k
        self.n_watched += n_watched
        self.n_liked += n_liked
        self.n_pages += 1
        reason = ("Nothing here for me." if n_liked == 0 else "Seen enough for now.") if left else ""
        return PageFeedback(tuple(reactions), left, reason)

    def interview(self) -> Interview:
        score = _interview_score(self.n_shown, self.n_watched, self.n_liked)
        return Interview(self.persona.user_id, score, f"Watched {self.n_watched} and liked {self.n_liked}.")


class FastUserModel:
    """Multinomial-logit users (see module docstring). Implements `simenv.protocols.UserModel`."""

    name = "fast-user"

    def __init__(
        self,
        dataset: Dataset,
        config: FastUserConfig | None = None,
        train: pd.DataFrame | None = None,
        personas: Iterable[Persona] = (),
        max_page_size: int = 64,
        response: ResponseModel | None = None,
    ) -> None:
        if train is None:
            raise ValueError("FastUserModel needs the TRAIN interactions (train=split.train); never valid/test")
        self.dataset = dataset
        self.config = config or load_fast_user_config()
        if self.config.response and response is None:
            raise ValueError(
                f"fast user config uses the fitted response model {self.config.response!r}; pass response="
            )
        self.response = response if self.config.response else None
        self.stats = TrainStats.from_train(dataset, train)
        self.position_penalty = self.config.position * np.arange(max_page_size, dtype=np.float64)
        self.position_list = self.position_penalty.tolist()
        self._plans: dict[int, FastPersona] = {}
        # Shared immutable records: per item, [not watched, watched with 1..5 stars]; built on first use.
        self.reaction_rows: list[list[ItemReaction] | None] = [None] * dataset.n_items
        personas = list(personas)
        if self.response is not None:
            self.response.prepare(personas)  # batched predictions
        for p in personas:
            self.plan(p)

    def plan(self, persona: Persona) -> FastPersona:
        cached = self._plans.get(persona.user_id)
        if cached is not None:
            return cached
        cfg = self.config
        if not (1 <= persona.activity <= 3 and 1 <= persona.conformity <= 3):
            raise ValueError(
                f"persona {persona.user_id}: activity/conformity must be 1..3, "
                f"got {persona.activity!r}/{persona.conformity!r}"
            )
        if self.response is not None:  # fitted watch logit (null utility 0) and fitted rating plan
            fitted = self.response.plan(persona)
            utility, bias = fitted.watch_logit.astype(np.float64), 0.0
            rp = fitted.rating
        else:
            pop_weight = cfg.popularity * cfg.conformity_scale[persona.conformity - 1]
            genre = genre_signal(self.stats, persona).astype(np.float64)
            utility = cfg.genre * genre + pop_weight * self.stats.popularity
            bias = solve_bias(utility, cfg.watch_rate[persona.activity - 1])
            rp = rating_plan(self.stats, persona, noise=cfg.rating_noise, spread=cfg.rating_spread)
        lc = cfg.leave
        # the leave terms fixed for a session (liked share 0 here; `react` adds fatigue and satisfaction * share)
        offset = leave_logit(lc.base, 0.0, lc.activity, lc.satisfaction, 0.0, 0, persona.activity, 0.0, None)
        cuts = tuple(float(c) for c in rp.cuts)
        # array('d'): Python floats on access like a list, but 8 contiguous bytes per item instead of a pointer to
        # a float object, so a persona's arrays stay in cache across the many personas an env cycles through.
        utility_list, prediction_list = array("d", utility.tolist()), array("d", rp.prediction.astype(float).tolist())
        hot = (
            utility_list,
            prediction_list,
            cuts,
            float(rp.noise),
            self.position_list,
            float(-bias),
            float(cfg.fatigue),
            float(offset),
            float(lc.fatigue),
            float(lc.satisfaction),
        )
        fp = FastPersona(utility, -bias, rp, offset, utility_list, prediction_list, cuts, hot)
        self._plans[persona.user_id] = fp
        return fp

    def start_session(self, persona: Persona, episode: int, rng: np.random.Generator) -> FastUserSession:
        return FastUserSession(self, persona, episode, rng)

    def react_batch(
        self, sessions: Sequence[FastUserSession], pages: Sequence[tuple[Page, Sequence[Item]]]
    ) -> list[PageFeedback]:
        if len(sessions) != len(pages):
            raise ValueError(f"react_batch: {len(sessions)} sessions but {len(pages)} pages")
        return [s.react(page, items) for s, (page, items) in zip(sessions, pages, strict=True)]

    def judge_many(
        self, asks: Sequence[tuple[Persona, Sequence[int]]], rng: np.random.Generator
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """For the fidelity harness: each ask is one page at index 0; returns (watch, stars as if watched)."""
        out = []
        for persona, ids in asks:
            plan = self.plan(persona)
            idx = np.asarray(ids, dtype=np.int64)
            if idx.size > self.position_penalty.size:
                raise ValueError(f"page of {idx.size} items exceeds max_page_size {self.position_penalty.size}")
            g = rng.gumbel(size=idx.size + 1)
            watch = plan.utility[idx] - self.position_penalty[: idx.size] + g[:-1] > plan.null_utility + g[-1]
            out.append((watch, plan.rating.stars(plan.rating.prediction[idx], rng)))
        return out

    def watch_probability(self, persona: Persona, item_ids: Sequence[int]) -> np.ndarray:
        """Marginal watch probability of each item at page 0, position ignored (used by tests and benchmarks)."""
        plan = self.plan(persona)
        return sigmoid(plan.utility[np.asarray(item_ids, dtype=np.int64)] - plan.null_utility)
