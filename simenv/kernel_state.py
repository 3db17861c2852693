"""The session state of the page kernel for a batch of sessions: arrays of shape (num_sessions, ...), the
transition of a shown page and the observations `simenv.spaces` describes.

`simenv.spaces.SessionState` is the same state for one session with any user model (Python lists and records,
what a single env step can afford); both produce the same observations (tests replay one against the other).
"""

from __future__ import annotations

import numpy as np

from simenv.spaces import (
    FEATURE_BOUND,
    FEATURES_KEY,
    N_CANDIDATE_FLAGS,
    N_HISTORY_VARIANTS,
    N_SESSION_FEATURES,
    ItemFeatures,
)


def session_rates(
    n_shown: np.ndarray, n_watched: np.ndarray, n_liked: np.ndarray, rating_sum: np.ndarray, n_rated: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The session features after a page: watch rate, like rate, mean rating / 5 (0 before any rating)."""
    mean = np.where(n_rated > 0, rating_sum / np.maximum(n_rated, 1) / 5.0, 0.0)
    return n_watched / n_shown, n_liked / n_shown, mean


class SessionArrays:
    """Candidates, what was shown, the page being filled, history and running counts of `n` sessions.

    Public arrays (one row per session): `persona` (index into the env's persona list), `candidates` (item ids),
    `shown` (bool per candidate), `pending` / `n_pending` (sequential mode's page being filled), `page` (pages
    shown), `elapsed` (steps), `n_shown`, `n_watched`, `n_liked`, `n_rated`, `rating_sum`.
    """

    def __init__(
        self,
        n: int,
        n_candidates: int,
        page_size: int,
        history_len: int,
        features: ItemFeatures,
        sequential: bool,
        n_candidate_features: int = 0,
    ) -> None:
        c, k, g = n_candidates, page_size, features.n_genres
        self.features = features
        self.sequential = sequential  # pages filled one slot per step (the pending arrays are in use)
        self.page_size = page_size
        self.history_len = history_len
        self.persona = np.zeros(n, dtype=np.int64)
        self.candidates = np.zeros((n, c), dtype=np.int64)
        self.shown = np.zeros((n, c), dtype=bool)
        self.pending = np.zeros((n, k), dtype=np.int64)
        self.n_pending = np.zeros(n, dtype=np.int64)
        self.page = np.zeros(n, dtype=np.int64)
        self.elapsed = np.zeros(n, dtype=np.int64)
        self.n_shown = np.zeros(n, dtype=np.int64)
        self.n_watched = np.zeros(n, dtype=np.int64)
        self.n_liked = np.zeros(n, dtype=np.int64)
        self.n_rated = np.zeros(n, dtype=np.int64)
        self.rating_sum = np.zeros(n, dtype=np.float64)
        self.candidate_obs = np.zeros((n, c, g + 4), dtype=np.float32)  # the observation's candidate table
        self._zero_row = len(features.history_rows) - 1
        self.recent = np.full((n, history_len), self._zero_row, dtype=np.int64)  # history_rows indices, newest first
        self.session_obs = np.zeros((n, N_SESSION_FEATURES), dtype=np.float32)
        # the `candidate_features` table (featurizer columns, then shown / watched / liked), if there is one
        width = n_candidate_features + N_CANDIDATE_FLAGS if n_candidate_features else 0
        self.feature_obs = np.zeros((n, c, width), dtype=np.float32) if width else None

    def reset(
        self, rows: np.ndarray, persona: np.ndarray, candidates: np.ndarray, features: np.ndarray | None = None
    ) -> None:
        """Start new sessions in `rows`: persona indices, candidate item ids (R, C), nothing shown; `features`
        (R, C, F) the featurizer's columns when the state has a feature table."""
        self.persona[rows] = persona
        self.candidates[rows] = candidates
        for counter in (self.shown, self.pending, self.n_pending, self.page, self.elapsed):
            counter[rows] = 0
        for counter in (self.n_shown, self.n_watched, self.n_liked, self.n_rated, self.rating_sum):
            counter[rows] = 0
        self.candidate_obs[rows] = self.features.candidate_rows[candidates]
        self.recent[rows] = self._zero_row
        self.session_obs[rows] = 0.0
        if self.feature_obs is not None:
            if features is None or not np.isfinite(features).all():
                raise ValueError("SessionArrays.reset: this state keeps candidate features; pass finite ones")
            self.feature_obs[rows] = 0.0
            self.feature_obs[rows, :, :-N_CANDIDATE_FLAGS] = np.clip(features, -FEATURE_BOUND, FEATURE_BOUND)

    def pending_mask(self, rows: np.ndarray) -> np.ndarray:
        """(R, C) bool: candidates on the page being filled (sequential mode)."""
        return self.candidate_obs[rows, :, -1] > 0

    def add_slot(self, rows: np.ndarray, slot_choice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sequential mode: put one (valid) candidate on each row's page; returns (rows whose page is now full,
        their pages (R', k))."""
        slot = self.n_pending[rows]
        self.pending[rows, slot] = slot_choice
        self.candidate_obs[rows, slot_choice, -1] = 1.0
        self.n_pending[rows] = slot + 1
        full = rows[slot + 1 == self.page_size]
        return full, self.pending[full].copy()

    def record_pages(self, rows: np.ndarray, chosen: np.ndarray, watched: np.ndarray, stars: np.ndarray) -> None:
        """The transition of a shown page: shown flags, history (the page's last item on top), counts, features."""
        k, g = self.page_size, self.features.n_genres
        items = self.candidates[rows[:, None], chosen]
        n_watched = watched.sum(axis=1)
        self.shown[rows[:, None], chosen] = True
        self.candidate_obs[rows[:, None], chosen, g + 2] = 1.0
        if self.sequential:
            self.candidate_obs[rows[:, None], chosen, g + 3] = 0.0
            self.n_pending[rows] = 0
        if self.feature_obs is not None:
            f = self.feature_obs
            f[rows[:, None], chosen, -3] = 1.0
            f[rows[:, None], chosen, -2] = watched
            f[rows[:, None], chosen, -1] = watched & (stars >= 4)
        if self.history_len:
            new = N_HISTORY_VARIANTS * items + np.where(watched, 1 + stars, 0)
            recent = np.concatenate((new[:, ::-1], self.recent[rows]), axis=1)
            self.recent[rows] = recent[:, : self.history_len]
        self.n_shown[rows] += k
        self.n_watched[rows] += n_watched
        self.n_liked[rows] += (stars >= 4).sum(axis=1)
        self.n_rated[rows] += n_watched
        self.rating_sum[rows] += stars.sum(axis=1)
        self.page[rows] += 1
        s = self.session_obs
        rates = session_rates(
            self.n_shown[rows], self.n_watched[rows], self.n_liked[rows], self.rating_sum[rows], self.n_rated[rows]
        )
        s[rows, 2], s[rows, 3], s[rows, 4] = rates
        s[rows, 5] = n_watched / k

    def action_mask(self) -> np.ndarray:
        """(n, C) bool: candidates that may still be chosen."""
        mask = ~self.shown
        if self.sequential:
            mask &= self.candidate_obs[:, :, -1] == 0
        return mask

    def observation(self, persona_vectors: np.ndarray, max_pages: int) -> dict[str, np.ndarray]:
        """Fresh observation arrays of every session (`persona_vectors`: (n_personas, P) rows by persona index)."""
        n = len(self.persona)
        s = self.session_obs
        page = self.page
        s[:, 0] = np.where(page >= max_pages, 1.0, page / max_pages)
        s[:, 1] = self.n_pending / self.page_size
        obs = {
            "persona": persona_vectors[self.persona],
            "candidates": self.candidate_obs.reshape(n, -1).copy(),
            "history": self.features.history_rows.take(self.recent, axis=0).reshape(n, -1),
            "session": s.copy(),
        }
        if self.feature_obs is not None:
            obs[FEATURES_KEY] = self.feature_obs.copy()
        return obs
