"""The rules of a page, once: pure functions over batches of sessions that every front end calls.

RecSim's factoring: a session's state, the user's choice model, the reward and the transition are small
separate parts, and an env's `step` calls them in order. Here:

- settings and action spaces: `apply_settings` (every argument check and default, e.g. `default_n_candidates`),
  `action_space`;
- actions: `check_actions` (shape, dtype, range: always an error) and `repair_slates` (already shown or
  duplicate candidates: the one invalid-action rule, "repair" or "strict"), with `page_is_clean` as its
  batch-of-one shortcut;
- rewards of arrays of outcomes: `page_rewards`, `terminal_rewards` (`simenv.rewards` holds the weights and the
  same terms over `PageFeedback` records);
- episode end: `episode_end`; the counts-based satisfaction score: `interview_scores`; user feedback checks:
  `check_feedback`;
- seeding: `child_rng` (an env's per-episode user generator), `episode_rngs` (the runner's per-episode
  `SeedSequence`).

The user's choice (watch, rating, leave) is the user model's (`agents.decision.GroundedDecider.decide_batch`,
reached through `simenv.protocols.BatchDecider`); the batched session state and observations are in
`simenv.kernel_state`. `simenv.env.RecEnv` (a batch of one, with any `UserModel`),
`simenv.vector_env.FastRecVectorEnv`, the runner and the SB3 adapter use these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from numpy.random.bit_generator import ISeedSequence

from simenv import defaults
from simenv.records import Page, PageFeedback, Persona
from simenv.rewards import RewardConfig, reward_config

ActionMode = Literal["slate", "sequential", "weights"]
ACTION_MODES = ("slate", "sequential", "weights")
InvalidActionRule = Literal["repair", "strict"]


class InvalidActionError(ValueError):
    """An action outside the action space, or (in strict mode) a duplicate or already-shown candidate."""


class NoCandidateLeftError(RuntimeError):
    """A page cannot be filled: every candidate of the session was shown or is excluded."""


# -- settings -----------------------------------------------------------------------------------------------


def default_n_candidates(page_size: int, max_pages: int) -> int:
    """The candidate set size when none is given: twice what an episode can show, at least 40."""
    return max(40, 2 * page_size * max_pages)


def apply_settings(
    env: Any,
    personas: Mapping[int, Persona],
    *,
    page_size: int = defaults.PAGE_SIZE,
    max_pages: int = defaults.MAX_PAGES,
    n_candidates: int | None = None,
    explore_fraction: float = defaults.EXPLORE_FRACTION,
    history_len: int = defaults.HISTORY_LEN,
    reward: RewardConfig | str | Mapping[str, float] | None = None,
    action_mode: ActionMode = "slate",
    invalid_action: InvalidActionRule = "repair",
    interview: bool = True,
    users: Sequence[int] | None = None,
) -> None:
    """Check an env's page settings and set them as its attributes (`page_size`, `max_pages`, `n_candidates`,
    `n_explore`, `history_len`, `reward_config`, `action_mode`, `invalid_action`, `interview`, `personas`,
    `users`); a bad value is a `ValueError` naming it. The defaults here are every env's defaults (the envs
    take these settings as keyword arguments and pass them on), documented in `simenv.env.RecEnv`."""
    if page_size < 1 or max_pages < 1:
        raise ValueError(f"page_size={page_size} and max_pages={max_pages} must be >= 1")
    if n_candidates is None:
        n_candidates = default_n_candidates(page_size, max_pages)
    if n_candidates < page_size * max_pages:
        raise ValueError(f"n_candidates={n_candidates} must be >= page_size * max_pages = {page_size * max_pages}")
    if not 0.0 <= explore_fraction <= 1.0:
        raise ValueError(f"explore_fraction={explore_fraction} must be in [0, 1]")
    if action_mode not in ACTION_MODES:
        raise ValueError(f"action_mode={action_mode!r}: expected one of {', '.join(ACTION_MODES)}")
    if invalid_action not in ("repair", "strict"):
        raise ValueError(f"invalid_action={invalid_action!r}: expected 'repair' or 'strict'")
    if not personas:
        raise ValueError("personas: empty; the env needs at least one simulated user")
    ids = tuple(sorted(personas)) if users is None else tuple(int(u) for u in users)
    unknown = [u for u in ids if u not in personas]
    if unknown:
        raise ValueError(f"users: ids {unknown[:5]} have no persona")
    env.page_size, env.max_pages, env.n_candidates = page_size, max_pages, n_candidates
    env.n_explore = int(round(explore_fraction * n_candidates))
    env.history_len = history_len
    env.reward_config = reward_config(reward)
    env.action_mode, env.invalid_action, env.interview = action_mode, invalid_action, interview
    env.personas = dict(personas)
    env.users = ids


def action_space(action_mode: ActionMode, page_size: int, n_candidates: int, n_weights: int = 0) -> gym.spaces.Space:
    """One session's action space: a slate of candidate indices, one slot (sequential mode, for DQN), or a weight
    per candidate feature (weights mode: `Box(-1, 1, (n_weights,))`, see `rank_by_weights`)."""
    if action_mode == "slate":
        return gym.spaces.MultiDiscrete(np.full(page_size, n_candidates, dtype=np.int64))
    if action_mode == "weights":
        if n_weights < 1:
            raise ValueError("action_mode='weights' needs candidate features (a CandidateFeaturizer)")
        return gym.spaces.Box(-1.0, 1.0, shape=(n_weights,), dtype=np.float32)
    return gym.spaces.Discrete(n_candidates)


def check_weights(action: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A weights-mode action as a finite float64 array of `shape`, clipped to [-1, 1]; else `InvalidActionError`."""
    try:
        a = np.asarray(action, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise InvalidActionError(f"action {_short(action)}: not an array of feature weights ({exc})") from None
    if a.shape != shape:
        raise InvalidActionError(f"action {_short(action)}: expected feature weights of shape {shape}, got {a.shape}")
    if not np.isfinite(a).all():
        raise InvalidActionError(f"action {_short(action)}: feature weights must be finite")
    return np.clip(a, -1.0, 1.0)


def rank_by_weights(
    weights: np.ndarray, features: np.ndarray, available: np.ndarray, page_size: int, prior_column: int | None
) -> np.ndarray:
    """Weights mode's page rule (Virtual-Taobao's): each session shows the `page_size` available candidates with the
    highest `prior + w . x`, best first; ties go to the lower candidate index (the base's rank).

    `weights` (R, F), `features` (R, C, >= F) (the first F columns are weighted; the session flags after them are
    not), `available` (R, C) bool, `prior_column` the featurizer's `base_score` column (None: no prior). Returns
    (R, page_size) int64 candidate indices. Every page is valid by construction: nothing to repair.
    """
    f = weights.shape[1]
    x = features[:, :, :f].astype(np.float64)
    score = np.einsum("rcf,rf->rc", x, weights)
    if prior_column is not None:
        score = score + x[:, :, prior_column]
    score = np.where(available, score, -np.inf)
    return np.argsort(-score, axis=1, kind="stable")[:, :page_size].astype(np.int64)


# -- actions ------------------------------------------------------------------------------------------------


def check_actions(action: Any, shape: tuple[int, ...], n_candidates: int, batched: bool = False) -> np.ndarray:
    """`action` as an integer array of `shape` with every index in 0..n_candidates-1, else `InvalidActionError`.

    `batched`: the first axis is the env (errors name "env i"); a single sequential action (`shape == ()`) may
    also come as a one-element array.
    """
    if type(action) is np.ndarray:
        a = action
    else:
        try:
            a = np.asarray(action)
        except (ValueError, TypeError, OverflowError) as exc:  # ragged nesting, objects numpy cannot hold
            raise InvalidActionError(f"action {_short(action)}: not an array of candidate indices ({exc})") from None
    if a.shape != shape and not (shape == () and a.shape == (1,)):
        raise InvalidActionError(
            f"action {_short(action)}: expected integer candidate indices of shape {shape}, got shape {a.shape} "
            f"dtype {a.dtype}"
        )
    if a.dtype.kind not in "iu":
        raise InvalidActionError(f"action {_short(action)}: expected integer candidate indices, got dtype {a.dtype}")
    if not batched:  # a handful of values: Python's min/max beat numpy's reductions
        values = a.tolist()
        if type(values) is int:
            if 0 <= values < n_candidates:
                return a
        elif min(values) >= 0 and max(values) < n_candidates:
            return a if a.shape == shape else a.reshape(shape)
    bad = (a < 0) | (a >= n_candidates)
    if not bad.any():
        return a.astype(np.int64, copy=False)
    where = tuple(int(w) for w in np.argwhere(bad.reshape(a.shape))[0])
    names = (["env"] if batched else []) + ["slot"]
    at = " ".join(f"{name} {w}" for name, w in zip(names, where, strict=False))
    raise InvalidActionError(
        f"action: {at + ': ' if at else ''}candidate index {int(a[where])} outside 0..{n_candidates - 1}"
    )


def _short(action: Any, limit: int = 120) -> str:
    """`repr(action)` cut to `limit` characters, for error messages (an action may be any object)."""
    text = repr(action)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def page_is_clean(indices: Sequence[int], unavailable: set[int]) -> bool:
    """Batch-of-one shortcut of `repair_slates`: True when no index repeats or is in `unavailable` (the common
    case, where the rule changes nothing)."""
    return len(set(indices)) == len(indices) and unavailable.isdisjoint(indices)


def repair_slates(
    chosen: np.ndarray,
    shown: np.ndarray,
    candidate_ids: np.ndarray,
    rule: InvalidActionRule,
    pending: np.ndarray | None = None,
    first_slot: np.ndarray | int = 0,
    env_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The invalid-action rule over R pages: (chosen (R, m), repairs per page (R,)).

    A slot is invalid when its candidate was shown on an earlier page (`shown`, (R, C) bool), is already on the
    page being filled (`pending`, (R, C) bool, sequential mode), or repeats an earlier slot of `chosen`. With
    `rule="repair"` each invalid slot, in slot order, gets the lowest-index candidate that is neither shown,
    pending, nor chosen by another slot of the page; valid slots never change, so one bad slot costs one repair
    (`[0, 0, 1, 2]` on a fresh page becomes `[0, 3, 1, 2]`). With `"strict"` the first invalid slot raises
    `InvalidActionError` naming the env (`env_ids[r]`, when given), the slot (`first_slot + j`), the candidate
    and its item id (`candidate_ids`: item ids by candidate index, one row per env of `env_ids`, or per page
    when `env_ids` is None; only read for that message).
    """
    r, m = chosen.shape
    unavailable = shown if pending is None else shown | pending
    bad = unavailable[np.arange(r)[:, None], chosen]
    if m > 1:  # repeats: a sort finds the pages that have any, then slot by slot for those only
        ordered = np.sort(chosen, axis=1)
        dup = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
        if len(dup):
            c = chosen[dup]
            same = c[:, :, None] == c[:, None, :]  # [page, j, i]: slot j holds slot i's candidate
            bad[dup] |= (same & np.tri(m, m, -1, dtype=bool)).any(axis=2)  # ... for an earlier slot i < j
    if not bad.any():
        return chosen, np.zeros(r, dtype=np.int64)
    n_repaired = bad.sum(axis=1)
    if rule == "strict":
        row, j = (int(w) for w in np.argwhere(bad)[0])
        k = int(chosen[row, j])
        why = "was shown on an earlier page" if shown[row, k] else "is already on this page"
        env_row = row if env_ids is None else int(env_ids[row])
        env = "" if env_ids is None else f"env {env_row} "
        slot = j + int(np.broadcast_to(first_slot, (r,))[row])
        raise InvalidActionError(
            f"{env}slot {slot}: candidate {k} (item {int(candidate_ids[env_row, k])}) {why}; "
            f"see info['action_mask'] or use invalid_action='repair'"
        )
    fix = np.flatnonzero(n_repaired)
    sub, sub_bad = chosen[fix].copy(), bad[fix]
    free = ~unavailable[fix]
    kept_row, kept_slot = np.nonzero(~sub_bad)
    free[kept_row, sub[kept_row, kept_slot]] = False
    for j in range(m):
        todo = np.flatnonzero(sub_bad[:, j])
        if len(todo):
            pick = np.argmax(free[todo], axis=1)  # the lowest-index (best-ranked) free candidate
            if not free[todo, pick].all():
                raise NoCandidateLeftError("no candidate left to show; n_candidates must be >= page_size * max_pages")
            sub[todo, j] = pick
            free[todo, pick] = False
    out = chosen.copy()
    out[fix] = sub
    return out, n_repaired


# -- rewards and episode end --------------------------------------------------------------------------------


def page_rewards(watched: np.ndarray, stars: np.ndarray, left: np.ndarray, config: RewardConfig) -> np.ndarray:
    """(R,) page rewards from (R, k) watched flags and stars (0 = not watched) and (R,) left flags: the terms
    of `simenv.rewards.page_reward`, added in the same order (bit-identical totals)."""
    liked = stars >= 4
    item_value = np.where(watched, config.watch + config.rating * stars + config.like * liked, 0.0)
    return item_value.sum(axis=1) - config.exit_penalty * left


def terminal_rewards(scores: np.ndarray, config: RewardConfig) -> np.ndarray:
    """Satisfaction term of episodes that end, from their interview scores (0 with weight 0)."""
    if config.satisfaction == 0.0:
        return np.zeros(len(scores))
    return config.satisfaction * scores


def episode_end(left: Any, pages_shown: Any, max_pages: int) -> tuple[Any, Any]:
    """(terminated, truncated): the user left; or the page limit was reached without leaving. Works on bools
    and ints as on arrays."""
    stayed = ~left if isinstance(left, np.ndarray) else not left
    return left, stayed & (pages_shown >= max_pages)


def interview_scores(n_shown: np.ndarray, n_watched: np.ndarray, n_liked: np.ndarray) -> np.ndarray:
    """Satisfaction 1..10 from session counts: 1 + 9 * (0.6 * liked share + 0.4 * watched share), rounded half
    to even and clipped; 1 when nothing was shown. The no-text user's interview and the LLM user's fallback."""
    n_shown, n_watched, n_liked = np.asarray(n_shown), np.asarray(n_watched), np.asarray(n_liked)
    shown = np.maximum(n_shown, 1)
    sat = 0.6 * n_liked / shown + 0.4 * n_watched / shown
    return np.where(n_shown > 0, np.clip(np.rint(1 + 9 * sat), 1, 10), 1).astype(np.int64)


def check_feedback(page: Page, feedback: PageFeedback) -> None:
    """A user model must react to every shown item, in page order; anything else is a bug worth naming."""
    feedback_counts(page, feedback)


def feedback_counts(page: Page, feedback: PageFeedback) -> tuple[int, int]:
    """`check_feedback`, then (`feedback.n_watched`, `feedback.n_liked`), in one pass over the reactions."""
    reactions = feedback.reactions
    ids = page.item_ids
    if len(reactions) != len(ids):
        _bad_order(page, feedback)
    n_watched = n_liked = 0
    bad_rating = None
    for r, item in zip(reactions, ids):  # noqa: B905 - lengths checked above
        if r.item_id != item:
            _bad_order(page, feedback)
        rating = r.rating
        if r.watched:
            n_watched += 1
            if rating is not None and not 1 <= rating <= 5 and bad_rating is None:
                bad_rating = r
        if rating is not None and rating >= 4:
            n_liked += 1
    if bad_rating is not None:
        raise ValueError(f"user model feedback: item {bad_rating.item_id} rating={bad_rating.rating}, expected 1..5")
    return n_watched, n_liked


def _bad_order(page: Page, feedback: PageFeedback) -> None:
    got = tuple(r.item_id for r in feedback.reactions)
    raise ValueError(
        f"user model feedback for episode {page.episode} page {page.page_index}: reactions for items {got}, "
        f"expected {page.item_ids}"
    )


# -- seeding ------------------------------------------------------------------------------------------------


def episode_rngs(seed: int, episode: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(user rng, policy rng) for episode `episode` of a run seeded `seed`, independent of everything else in
    the run (`SeedSequence([seed, episode])`, spawned in two)."""
    user_ss, policy_ss = np.random.SeedSequence([seed, episode]).spawn(2)
    return np.random.default_rng(user_ss), np.random.default_rng(policy_ss)


class _DrawnSeed(ISeedSequence):
    """Seed words already drawn from a parent generator, in the form a numpy bit generator takes a seed."""

    __slots__ = ("_words",)

    def __init__(self, words: np.ndarray) -> None:
        self._words = words

    def generate_state(self, n_words: int, dtype: Any = np.uint64) -> np.ndarray:
        words = self._words.view(np.uint32) if np.dtype(dtype) == np.uint32 else self._words
        if len(words) < n_words:
            raise ValueError(f"_DrawnSeed: {len(words)} words drawn, {n_words} asked")
        return words[:n_words]


def child_rng(rng: np.random.Generator) -> np.random.Generator:
    """A new, independent PCG64 generator seeded with 256 bits drawn from `rng` (an env's generator, at reset).

    Deterministic given `rng`'s state, like `np.random.default_rng(rng.integers(2**63))`, at a tenth of the
    cost (no `SeedSequence` hashing: PCG64's own seeding mixes the drawn words); runs at every reset.
    """
    return np.random.Generator(np.random.PCG64(_DrawnSeed(rng.bit_generator.random_raw(4))))
