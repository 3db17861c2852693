"""The vector env's info dict: per-key arrays with a leading `num_envs` axis and their `_key` masks (Gymnasium's
vector convention), and the mapping of a synthetic population's members to the personas they decide as."""

from __future__ import annotations

from typing import Any

import numpy as np

from simenv.synthetic_population import SyntheticPopulation

# Info keys of a shown page or an episode end: (shape per env given (page_size, n_candidates), dtype, fill).
INFO_KEYS: dict[str, tuple[str, Any, Any]] = {
    "candidate_ids": ("c", np.int64, 0),
    "page_items": ("k", np.int64, -1),
    "watched": ("k", bool, False),
    "rating": ("k", np.int64, 0),
    "n_watched": ("", np.int64, 0),
    "n_liked": ("", np.int64, 0),
    "left": ("", bool, False),
    "page_reward": ("", np.float64, 0.0),
    "interview_score": ("", np.int64, 0),
    "terminal_reward": ("", np.float64, 0.0),
}


class InfoArrays:
    """Builds the info arrays of `num_envs` sub-envs: every info has every `INFO_KEYS` key (fill values, all-False
    mask where a key applies to no sub-env this time)."""

    def __init__(self, num_envs: int, page_size: int, n_candidates: int) -> None:
        self.num_envs, self.page_size, self.n_candidates = num_envs, page_size, n_candidates

    def scatter(self, info: dict[str, Any], rows: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Per-row values of `rows` -> (num_envs, ...) info arrays (the `INFO_KEYS` fill elsewhere) and masks."""
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[rows] = True
        for key, value in values.items():
            out = self.blank(key)
            out[rows] = value
            info[key], info[f"_{key}"] = out, mask

    def blank(self, key: str) -> np.ndarray:
        width, dtype, fill = INFO_KEYS[key]
        shape = (self.num_envs,) + ({"c": (self.n_candidates,), "k": (self.page_size,)}.get(width, ()))
        return np.full(shape, fill, dtype=dtype)

    def complete(self, info: dict[str, Any]) -> dict[str, Any]:
        """Add the keys that apply to no sub-env this time (fill values, all-False mask): every info has the same
        keys."""
        none = np.zeros(self.num_envs, dtype=bool)
        for key in INFO_KEYS:
            if key not in info:
                info[key], info[f"_{key}"] = self.blank(key), none
        return info


def members(users: np.ndarray, population: SyntheticPopulation | None) -> tuple[np.ndarray, np.ndarray]:
    """(member user ids, index into `users` of the persona each member decides as)."""
    if population is None:
        return users, np.arange(len(users), dtype=np.int64)
    order = np.argsort(users, kind="stable")
    pos = np.minimum(np.searchsorted(users[order], population.source), len(users) - 1)
    missing = population.source[users[order][pos] != population.source]
    if len(missing):
        raise ValueError(f"population: source ids {np.unique(missing)[:5].tolist()} are not in the env's users")
    clash = np.intersect1d(population.user_ids, users)
    if len(clash):
        raise ValueError(f"population: member ids {clash[:5].tolist()} are also real user ids")
    return population.user_ids, order[pos]
