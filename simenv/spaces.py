"""Numeric, fixed-shape observations of a recommendation session, and the per-episode state they are built from.

The observation is a flat `gymnasium.spaces.Dict` of `Box`es with every value in [0, 1] (SB3's
`MultiInputPolicy` takes it as is). With G genres, C candidates and a history of H pages' items:

| key          | shape      | content                                                                         |
|--------------|------------|---------------------------------------------------------------------------------|
| `persona`    | (9 + 2G,)  | activity, conformity, diversity groups one-hot (3 each); liked and disliked genres |
| `candidates` | (C*(G+4),) | genre vector, log-popularity (train, scaled to [0, 1]), mean train rating / 5,  |
|              |            | shown on an earlier page, chosen for the page being filled (sequential mode)    |
| `history`    | (H*(G+3),) | most recent shown items first: genre vector, watched, rating / 5, row-in-use   |
| `session`    | (6,)       | page index / max pages, slot / page size, watch rate, like rate, mean rating / 5, |
|              |            | watch rate of the last page (fatigue and satisfaction signals)                  |
| `candidate_features` | (C, F + 3) | only with a `CandidateFeaturizer` (`simenv.protocols`): its F columns per   |
|              |            | candidate (base score, collaborative affinities, ...; in [-5, 5]), then the     |
|              |            | session flags shown, watched, liked (0/1)                                       |

`candidate_features` is the one 2-D Box (SB3's `MultiInputPolicy` flattens it; a set extractor such as
`experiments.rl.policy.CandidateSetExtractor` reads its rows with shared weights).
`candidates` and `history` are row-major flattenings of (C, G + 4) and (H, G + 3) tables (SB3 wants 1-D
vectors); `obs["candidates"].reshape(C, -1)` recovers the table. Everything comes from the training split
and the session so far; no text ever enters an observation.
`SessionState` is shared by the env and by `simenv.policies.SB3Recommender`, which rebuilds the same
observations outside an env.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import gymnasium as gym
import numpy as np
import pandas as pd

from simenv.data.dataset import Dataset
from simenv.protocols import CandidateFeaturizer
from simenv.records import ItemReaction, PageFeedback, Persona

N_TRAIT_FEATURES = 9
N_SESSION_FEATURES = 6
CANDIDATE_EXTRA = 4  # log-popularity, mean rating, shown, on current page
HISTORY_EXTRA = 3  # watched, rating, in use
N_HISTORY_VARIANTS = 7
N_CANDIDATE_FLAGS = 3  # shown, watched, liked: appended to a featurizer's columns in `candidate_features`
FEATURE_BOUND = 5.0  # `candidate_features` values lie in [-FEATURE_BOUND, FEATURE_BOUND]
FEATURES_KEY = "candidate_features"  # per item: not watched, watched unrated, watched and rated 1..5
_RATING_SCALE = np.float32(0.2)
_STAR_VARIANT = {stars: 1 + stars for stars in range(1, 6)}


@dataclass(frozen=True, eq=False)
class ItemFeatures:
    """Static per-item features computed once from the training split (never from held-out ratings).

    `table` is (n_items, G + 2): genre vector, log-popularity scaled to [0, 1], mean train rating / 5
    (the global train mean for items nobody rated in train). `popularity_order` lists item ids by
    train rating count, most popular first (ties by id).
    """

    genre_vocabulary: tuple[str, ...]
    genres: np.ndarray
    table: np.ndarray
    popularity_order: np.ndarray

    @property
    def n_items(self) -> int:
        return int(self.genres.shape[0])

    @property
    def n_genres(self) -> int:
        return int(self.genres.shape[1])

    @cached_property
    def candidate_rows(self) -> np.ndarray:
        """(n_items, G + 4) float32: each item's `candidates` row at reset (`table`, then shown = chosen = 0)."""
        rows = np.zeros((self.n_items, self.table.shape[1] + 2), dtype=np.float32)
        rows[:, : self.table.shape[1]] = self.table
        return rows

    @cached_property
    def history_rows(self) -> np.ndarray:
        """(n_items * 7 + 1, G + 3) float32: row `7 * item + v` is the item's `history` row for reaction variant `v`;
        the last row is all zeros (an unused history row).

        Variants: 0 not watched, 1 watched without a rating, 2..6 watched and rated 1..5. Columns: genres,
        watched, rating / 5 (float32 arithmetic), in use = 1. An observation's history is one `take` of rows.
        """
        g = self.n_genres
        rows = np.zeros((self.n_items * N_HISTORY_VARIANTS + 1, g + HISTORY_EXTRA), dtype=np.float32)
        by_item = rows[:-1].reshape(self.n_items, N_HISTORY_VARIANTS, g + HISTORY_EXTRA)
        by_item[:, :, :g] = self.genres[:, None, :]
        by_item[:, 1:, g] = 1.0
        for stars in range(1, 6):
            by_item[:, 1 + stars, g + 1] = np.float32(stars) * _RATING_SCALE
        by_item[:, :, -1] = 1.0
        return rows

    @classmethod
    def from_train(cls, dataset: Dataset, train: pd.DataFrame) -> ItemFeatures:
        missing = {"item_id", "rating"} - set(train.columns)
        if missing:
            raise ValueError(f"train interactions: missing column(s) {sorted(missing)}")
        n_items = dataset.n_items
        item_ids = train["item_id"].to_numpy(dtype=np.int64)
        if len(item_ids) and (item_ids.min() < 0 or item_ids.max() >= n_items):
            bad = int(item_ids[(item_ids < 0) | (item_ids >= n_items)][0])
            raise ValueError(f"train interactions: item_id {bad} outside the catalog of {n_items} items")
        ratings = train["rating"].to_numpy(dtype=np.float64)
        counts = np.bincount(item_ids, minlength=n_items).astype(np.float64)
        sums = np.bincount(item_ids, weights=ratings, minlength=n_items)
        global_mean = float(ratings.mean()) if len(ratings) else 3.0
        mean = np.where(counts > 0, sums / np.maximum(counts, 1.0), global_mean)
        log_pop = np.log1p(counts)
        log_pop = log_pop / log_pop.max() if log_pop.max() > 0 else log_pop
        genres = dataset.genre_matrix.astype(np.float32)
        table = np.concatenate([genres, log_pop[:, None], (mean / 5.0)[:, None]], axis=1).astype(np.float32)
        order = np.lexsort((np.arange(n_items), -counts)).astype(np.int64)
        return cls(dataset.genre_vocabulary, genres, table, order)


def persona_features(persona: Persona, genre_vocabulary: tuple[str, ...]) -> np.ndarray:
    """(9 + 2G,) float32: trait groups one-hot, then liked and disliked genre indicators."""
    index = {g: j for j, g in enumerate(genre_vocabulary)}
    n = len(genre_vocabulary)
    out = np.zeros(N_TRAIT_FEATURES + 2 * n, dtype=np.float32)
    for k, (name, group) in enumerate(
        (("activity", persona.activity), ("conformity", persona.conformity), ("diversity", persona.diversity))
    ):
        if group not in (1, 2, 3):
            raise ValueError(f"persona {persona.user_id}: field {name}={group!r}, expected 1, 2 or 3")
        out[3 * k + group - 1] = 1.0
    for offset, field_name, genres in (
        (0, "liked_genres", persona.liked_genres),
        (n, "disliked_genres", persona.disliked_genres),
    ):
        for g in genres:
            if g not in index:
                raise ValueError(f"persona {persona.user_id}: field {field_name} has genre {g!r} not in the dataset")
            out[N_TRAIT_FEATURES + offset + index[g]] = 1.0
    return out


def observation_space(
    n_genres: int, n_candidates: int, history_len: int, n_candidate_features: int = 0
) -> gym.spaces.Dict:
    """The Dict space described in the module docstring (`candidate_features` when `n_candidate_features` > 0)."""

    def box(*shape: int) -> gym.spaces.Box:
        return gym.spaces.Box(0.0, 1.0, shape=shape, dtype=np.float32)

    spaces: dict[str, gym.spaces.Space] = {
        "persona": box(N_TRAIT_FEATURES + 2 * n_genres),
        "candidates": box(n_candidates * (n_genres + CANDIDATE_EXTRA)),
        "history": box(history_len * (n_genres + HISTORY_EXTRA)),
        "session": box(N_SESSION_FEATURES),
    }
    if n_candidate_features:
        shape = (n_candidates, n_candidate_features + N_CANDIDATE_FLAGS)
        spaces[FEATURES_KEY] = gym.spaces.Box(-FEATURE_BOUND, FEATURE_BOUND, shape=shape, dtype=np.float32)
    return gym.spaces.Dict(spaces)


def prior_column(featurizer: CandidateFeaturizer | None) -> int | None:
    """The featurizer's `base_score` column (the weights mode's prior), or None."""
    names = () if featurizer is None else tuple(featurizer.names)
    return names.index("base_score") if "base_score" in names else None


def candidate_table(features: np.ndarray, n_candidates: int) -> np.ndarray:
    """A featurizer's (C, F) output checked and clipped, with the three session-flag columns (zeros) appended."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != n_candidates or not np.isfinite(x).all():
        raise ValueError(f"candidate features: expected finite values of shape ({n_candidates}, F), got {x.shape}")
    out = np.zeros((n_candidates, x.shape[1] + N_CANDIDATE_FLAGS), dtype=np.float32)
    out[:, : x.shape[1]] = np.clip(x, -FEATURE_BOUND, FEATURE_BOUND)
    return out


_SCALED_STARS = {r: float(np.float32(r) * _RATING_SCALE) for r in range(1, 6)}


def _scaled_rating(rating: float) -> float:
    """rating / 5 as the history column holds it (float32 arithmetic, as a vectorised write would give)."""
    scaled = _SCALED_STARS.get(rating)  # type: ignore[call-overload]
    return float(np.float32(rating) * _RATING_SCALE) if scaled is None else scaled


class SessionState:
    """Mutable state of one session: candidate set, what was shown, history and running counts.

    Candidate indices (0..C-1) are what actions refer to; `candidate_ids` maps them to item ids.
    """

    def __init__(
        self,
        persona: Persona,
        persona_vector: np.ndarray,
        candidate_ids: np.ndarray,
        features: ItemFeatures,
        page_size: int,
        max_pages: int,
        history_len: int,
        candidate_features: np.ndarray | None = None,
    ) -> None:
        self.persona = persona
        self.candidate_ids = candidate_ids
        self.candidate_list: list[int] = candidate_ids.tolist()  # the same ids as Python ints (per-step lookups)
        self.page_size = page_size
        self.max_pages = max_pages
        self.page_index = 0
        self.pending: list[int] = []
        n_c = len(candidate_ids)
        g = features.n_genres
        self._features = features
        self.shown = np.zeros(n_c, dtype=bool)
        self.shown_set: set[int] = set()  # the same candidates as `shown`, for O(1) checks in Python
        self._available = np.ones(n_c, dtype=bool)  # ~shown, kept up to date (a copy is cheaper than an invert)
        self._persona = persona_vector
        # Flat buffers (what observations copy) with 2-D views (what page updates write through).
        self._candidates_flat = features.candidate_rows.take(candidate_ids, axis=0).reshape(-1)
        self._candidates = self._candidates_flat.reshape(n_c, g + CANDIDATE_EXTRA)
        # History: `history_rows` indices, most recent first, padded with the all-zero row; the observation takes
        # them in one call. Ratings outside 1..5 integers get rows of their own in `_odd_rows` (negative indices).
        self._history_len = history_len
        self._history_rows = features.history_rows
        self._recent: list[int] = [len(features.history_rows) - 1] * history_len
        self._odd_rows: list[np.ndarray] = []
        self._session = np.zeros(N_SESSION_FEATURES, dtype=np.float32)
        self._g = g
        self.n_shown = 0
        self.n_watched = 0
        self.n_liked = 0
        self.rating_sum = 0.0
        self.n_rated = 0
        self.watched_items: list[int] = []
        self.shown_items: list[int] = []
        self._position: dict[int, int] | None = None
        # (C, F + 3) featurizer columns then shown / watched / liked flags; None without a featurizer
        self.feature_table = None if candidate_features is None else candidate_table(candidate_features, n_c)

    def candidate_index(self, item_id: int) -> int | None:
        """Index of `item_id` in the candidate set, or None if it is not a candidate."""
        if self._position is None:
            self._position = {item: k for k, item in enumerate(self.candidate_list)}
        return self._position.get(int(item_id))

    def action_mask(self) -> np.ndarray:
        """True for candidates that may still be chosen (not shown, not already on the page being filled)."""
        mask = self._available.copy()
        if self.pending:
            mask[self.pending] = False
        return mask

    def set_pending(self, pending: list[int]) -> None:
        """Candidates chosen so far for the page being filled (sequential mode)."""
        if self.pending:
            self._candidates[self.pending, -1] = 0.0
        self.pending = pending
        if pending:
            self._candidates[pending, -1] = 1.0

    def record_page(self, chosen: list[int], feedback: PageFeedback) -> None:
        """Mark the chosen candidates shown and push the page's items onto the history (most recent first).

        Pages hold a handful of items and this runs on every env step: one Python pass over the reactions, scalar
        writes for the flags, and one `take` of precomputed history rows (no shifting of older rows).
        """
        items = self._mark_shown(chosen)
        rows, odd, page_watched = self._read_reactions(chosen, items, feedback.reactions)
        self.shown_items.extend(items)
        n = len(chosen)
        if self._history_len and n:
            self._push_history(rows, odd)
        self.n_shown += n
        self.n_watched += page_watched
        self.page_index += 1
        s = self._session
        s[2] = self.n_watched / self.n_shown
        s[3] = self.n_liked / self.n_shown
        s[4] = (self.rating_sum / self.n_rated / 5.0) if self.n_rated else 0.0
        s[5] = page_watched / n if n else 0.0

    def _mark_shown(self, chosen: list[int]) -> list[int]:
        """Flag the chosen candidates shown (and no longer pending or available); their item ids, page order."""
        shown, cand = self.shown, self._candidates
        shown_col = cand.shape[1] - 2
        item_list = self.candidate_list
        items = [item_list[k] for k in chosen]
        available = self._available
        for k in chosen:
            shown[k] = True
            available[k] = False
            cand[k, shown_col] = 1.0
        self.shown_set.update(chosen)
        if self.pending:
            cand[self.pending, -1] = 0.0
            self.pending = []
        if self.feature_table is not None:
            self.feature_table[chosen, -3] = 1.0
        return items

    def _read_reactions(
        self, chosen: list[int], items: list[int], reactions: Sequence[ItemReaction]
    ) -> tuple[list[int], list[tuple[int, float]], int]:
        """Count the page's watches and ratings and pick each item's history row: (history_rows indices in page
        order, (position, rating) of ratings outside 1..5 integers, number watched)."""
        rows: list[int] = []
        odd: list[tuple[int, float]] = []
        page_watched = 0
        table = self.feature_table
        for j, (item, reaction) in enumerate(zip(items, reactions, strict=True)):
            if reaction.watched:
                if table is not None:
                    table[chosen[j], -2] = 1.0
                    table[chosen[j], -1] = 1.0 if (reaction.rating or 0) >= 4 else 0.0
                page_watched += 1
                self.watched_items.append(item)
                r = reaction.rating
                if r:
                    self.rating_sum += r
                    self.n_rated += 1
                    if r >= 4:
                        self.n_liked += 1
                    variant = _STAR_VARIANT.get(r, -1)
                    if variant < 0:
                        odd.append((j, r))
                        variant = 1
                else:
                    variant = 1
            else:
                variant = 0
            rows.append(N_HISTORY_VARIANTS * item + variant)
        return rows, odd, page_watched

    def _push_history(self, rows: list[int], odd: list[tuple[int, float]]) -> None:
        """Put the page's history rows on top of the recent history (most recent first), capped at its length."""
        for j, r in odd:  # rare: a rating outside 1..5 integers gets a row of its own
            row = self._history_rows[rows[j]].copy()
            row[self._g + 1] = _scaled_rating(r)
            self._odd_rows.append(row)
            rows[j] = -len(self._odd_rows)
        rows.reverse()  # most recent first: the page's last item goes on top
        self._recent = (rows + self._recent)[: self._history_len]

    def observation(self) -> dict[str, np.ndarray]:
        """A fresh copy of the current observation (safe to keep across steps)."""
        s = self._session
        page = self.page_index
        s[0] = 1.0 if page >= self.max_pages else page / self.max_pages
        s[1] = len(self.pending) / self.page_size
        obs = {
            "persona": self._persona.copy(),
            "candidates": self._candidates_flat.copy(),
            "history": self._history_observation(),
            "session": s.copy(),
        }
        if self.feature_table is not None:
            obs[FEATURES_KEY] = self.feature_table.copy()
        return obs

    def _history_observation(self) -> np.ndarray:
        if not self._odd_rows:
            return self._history_rows.take(self._recent, axis=0).reshape(-1)
        rows = [self._history_rows[i] if i >= 0 else self._odd_rows[-i - 1] for i in self._recent]
        return np.concatenate(rows) if rows else np.zeros(0, dtype=np.float32)


def observation_keys() -> Mapping[str, str]:
    """One-line meaning of each observation key (for docs and reports)."""
    return {
        "persona": "trait groups one-hot; liked and disliked genres",
        "candidates": "per candidate: genres, log-popularity, mean train rating/5, shown, on current page",
        "history": "recent shown items, most recent first: genres, watched, rating/5, in use",
        "session": "page/max_pages, slot/page_size, watch rate, like rate, mean rating/5, last page watch rate",
        FEATURES_KEY: "per candidate (C, F+3): the featurizer's columns, then shown, watched, liked",
    }
