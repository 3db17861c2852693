"""The choice model of the page kernel: multinomial-logit watching, ratings by cut points, the leave rule.

Batched over R pages of k items. The numbers come from a user model's per-persona plan (`user_model.plan(persona)`:
`utility`, `null_utility`, `rating.prediction`, `cuts`, `rating.noise`, `leave_offset`, and the model's
`config` and `position_penalty`), read through duck typing so the core never imports the user model's package;
`agents.fast_user.FastUserModel` is the one shipped. A page draws 2k + 2 uniforms per row:

- watch: item j is watched when its Gumbel-perturbed utility minus the position penalty beats the perturbed null
  utility, which grows by `fatigue` per page (`mnl_watch`): the multinomial logit "pick items one at a time until
  the null option wins" in one comparison;
- rating: the rating prediction plus logistic noise, cut into 1..5 stars by the persona's cut points
  (`ratings_by_cuts`);
- leave: with probability sigmoid(leave_offset + leave_fatigue * page + satisfaction * liked / k) (`leaves`);
- interview: 1 + 9 * (0.6 * liked share + 0.4 * watched share), rounded, 1..10 (`interview_scores`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from simenv.records import Persona

TINY = 1e-12  # the clamp of the uniforms (as agents.fast_user)


def gumbel(u: np.ndarray) -> np.ndarray:
    """Standard Gumbel noise from uniforms (clamped away from 0)."""
    return -np.log(-np.log(np.maximum(u, TINY)))


def mnl_watch(utility: np.ndarray, null: np.ndarray, noise_items: np.ndarray, noise_null: np.ndarray) -> np.ndarray:
    """(R, k) watched: perturbed item utilities (position penalty included) beat the perturbed null utility."""
    return utility + noise_items > (null + noise_null)[:, None]


def ratings_by_cuts(prediction: np.ndarray, noise: np.ndarray, u: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """(R, k) stars 1..5: prediction (R, k) + noise (R,) * logistic(u), counted past the (R, 4) cut points."""
    q = np.clip(u, TINY, 1.0 - TINY)
    value = prediction + noise[:, None] * np.log(q / (1.0 - q))
    return 1 + (value[:, :, None] > cuts[:, None, :]).sum(axis=2)


def leaves(offset: np.ndarray, u: np.ndarray) -> np.ndarray:
    """(R,) left: a uniform below sigmoid(offset), offset being the whole leave logit of each page."""
    return u < 1.0 / (1.0 + np.exp(-offset))


def interview_scores(n_shown: np.ndarray, n_watched: np.ndarray, n_liked: np.ndarray) -> np.ndarray:
    """`agents.signals.stats_interview_score` over arrays: 1 + 9 * (0.6 * liked share + 0.4 * watched share),
    rounded half to even (as Python's `round`) and clipped to 1..10; 1 when nothing was shown."""
    shown = np.maximum(n_shown, 1)
    sat = 0.6 * n_liked / shown + 0.4 * n_watched / shown
    return np.where(n_shown > 0, np.clip(np.rint(1 + 9 * sat), 1, 10), 1).astype(np.int64)


class FastUserArrays:
    """A fast MNL user model's per-persona constants stacked into (n_personas, ...) arrays, filled on first use.

    Every number is read from `user_model.plan(persona)` and the model's config, so `react` computes what the
    model's own session (`agents.fast_user.FastUserSession.react`) computes, for many pages at once.
    """

    def __init__(self, user_model: Any, personas: Sequence[Persona], n_items: int, page_size: int) -> None:
        for attr in ("plan", "config", "position_penalty"):
            if not hasattr(user_model, attr):
                raise TypeError(
                    f"user_model {type(user_model).__name__}: the vectorised env needs the fast MNL user "
                    f"(agents.fast_user.FastUserModel); it has no {attr!r}"
                )
        if page_size > len(user_model.position_penalty):
            raise ValueError(f"page_size={page_size} exceeds the user model's max_page_size")
        self.model = user_model
        self.personas = personas
        n = len(personas)
        cfg = user_model.config
        self.position = np.asarray(user_model.position_penalty[:page_size], dtype=np.float64)
        self.fatigue = float(cfg.fatigue)
        self.leave_fatigue = float(cfg.leave.fatigue)
        self.satisfaction = float(cfg.leave.satisfaction)
        # np.empty: pages of personas never drawn are never touched (ml-1m's 6,040 x 3,883 stays virtual).
        self.utility = np.empty((n, n_items), dtype=np.float64)
        self.prediction = np.empty((n, n_items), dtype=np.float64)
        self.cuts = np.empty((n, 4), dtype=np.float64)
        self.noise = np.empty(n, dtype=np.float64)
        self.null_utility = np.empty(n, dtype=np.float64)
        self.leave_offset = np.empty(n, dtype=np.float64)
        self.ready = np.zeros(n, dtype=bool)

    def ensure(self, persona_index: np.ndarray) -> None:
        """Fill the rows of personas seen for the first time (a Python loop over those only)."""
        new = persona_index[~self.ready[persona_index]]
        for p in np.unique(new).tolist():
            plan = self.model.plan(self.personas[p])
            self.utility[p] = plan.utility
            self.prediction[p] = plan.rating.prediction  # float32 -> float64, as the session's Python floats
            self.cuts[p] = plan.cuts
            self.noise[p] = plan.rating.noise
            self.null_utility[p] = plan.null_utility
            self.leave_offset[p] = plan.leave_offset
            self.ready[p] = True

    def react(
        self, persona: np.ndarray, items: np.ndarray, page_index: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(watched (R, k) bool, stars (R, k) int64 with 0 = not watched, left (R,) bool) for R pages of k items
        shown to personas `persona` (indices into `personas`) on pages `page_index`; 2k + 2 uniforms per page."""
        r, k = items.shape
        u = rng.random((r, 2 * k + 2))
        g = gumbel(u[:, : k + 1])
        p = persona[:, None]
        null = self.null_utility[persona] + self.fatigue * page_index
        watched = mnl_watch(self.utility[p, items] - self.position, null, g[:, :k], g[:, k])
        stars = ratings_by_cuts(
            self.prediction[p, items], self.noise[persona], u[:, k + 1 : 2 * k + 1], self.cuts[persona]
        )
        stars *= watched
        n_liked = (stars >= 4).sum(axis=1)
        x = self.leave_offset[persona] + self.leave_fatigue * page_index + self.satisfaction * (n_liked / k)
        return watched, stars, leaves(x, u[:, 2 * k + 1])
