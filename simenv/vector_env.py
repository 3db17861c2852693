"""A native vectorised fast-user environment: N independent `simenv/FastRec-v0` episodes stepped together in numpy.

The single env (`simenv.env.RecEnv` with `agents.fast_user.FastUserModel`) builds Python records on every step
(`Page`, `PageFeedback`, `info`), which caps it near 10-14k steps/s. This env keeps every session's state in
arrays of shape (num_envs, ...) and reacts to all pages at once with the same multinomial-logit user: same
persona arrays (read from `FastUserModel.plan`), same candidate pool (`simenv.candidates.candidate_pool`), same
invalid-action rule, rewards and episode end. Statistics match the single env; random streams do not.

`experiments.envs.make_fast_vector_env` is the `vector_entry_point` of `simenv/FastRec-v0` and
`simenv/FastRecSeq-v0`, so `gym.make_vec(id, num_envs=N)` (or `vectorization_mode="vector_entry_point"`) builds
it; `"sync"` and `"async"` still wrap N single envs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from simenv.candidates import candidate_pool, candidate_set
from simenv.data.dataset import Dataset
from simenv.env import ActionMode, InvalidActionError, InvalidActionRule
from simenv.protocols import Recommender
from simenv.records import Persona
from simenv.rewards import RewardConfig, reward_config
from simenv.spaces import N_HISTORY_VARIANTS, ItemFeatures, observation_space, persona_features

_TINY = 1e-12  # the fast user's clamp of its uniforms (agents.fast_user)


class FastUserArrays:
    """The fast MNL user's per-persona constants stacked into (n_personas, ...) arrays, filled on first use.

    Every number is read from `FastUserModel.plan(persona)` and the model's config, so the batched react below
    computes what `agents.fast_user.FastUserSession.react` computes, for many pages at once.
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
        """(watched (R, k) bool, stars (R, k) int64 with 0 = not watched, left (R,) bool) for R pages of k items.

        Per page, as the single session: Gumbel-perturbed item utilities minus the position penalty beat the
        perturbed null utility (which grows by `fatigue` per page) -> watched; watched items get the rating
        prediction plus logistic noise cut into stars; the user leaves with probability
        sigmoid(leave_offset + leave_fatigue * page + satisfaction * liked / k). 2k + 2 uniforms per page.
        """
        r, k = items.shape
        u = rng.random((r, 2 * k + 2))
        gumbel = -np.log(-np.log(np.maximum(u[:, : k + 1], _TINY)))
        p = persona[:, None]
        null = self.null_utility[persona] + self.fatigue * page_index + gumbel[:, k]
        watched = self.utility[p, items] - self.position + gumbel[:, :k] > null[:, None]
        q = np.clip(u[:, k + 1 : 2 * k + 1], _TINY, 1.0 - _TINY)
        value = self.prediction[p, items] + self.noise[p] * np.log(q / (1.0 - q))
        stars = 1 + (value[:, :, None] > self.cuts[p]).sum(axis=2)
        stars *= watched
        n_liked = (stars >= 4).sum(axis=1)
        x = self.leave_offset[persona] + self.leave_fatigue * page_index + self.satisfaction * (n_liked / k)
        left = u[:, 2 * k + 1] < 1.0 / (1.0 + np.exp(-x))
        return watched, stars, left


def interview_scores(n_shown: np.ndarray, n_watched: np.ndarray, n_liked: np.ndarray) -> np.ndarray:
    """`agents.signals.stats_interview_score` over arrays: 1 + 9 * (0.6 * liked share + 0.4 * watched share),
    rounded half to even (as Python's `round`) and clipped to 1..10; 1 when nothing was shown."""
    shown = np.maximum(n_shown, 1)
    sat = 0.6 * n_liked / shown + 0.4 * n_watched / shown
    return np.where(n_shown > 0, np.clip(np.rint(1 + 9 * sat), 1, 10), 1).astype(np.int64)


class FastRecVectorEnv(VectorEnv):
    """`num_envs` independent fast-user sessions (the `simenv/FastRec-v0` model) stepped together in numpy.

    ## Description
    Each sub-env is one `RecEnv` episode with the fast MNL user: at reset a persona is drawn uniformly from
    `users`, its candidate set is the popularity base (or the `candidate_recommender`'s top items) followed by a
    uniform exploration sample from the rest of the catalog minus the persona's train history; each page the
    user watches, rates and maybe leaves (see `FastUserArrays.react`). Only numbers are kept: no `Page`,
    `PageFeedback`, feelings, reasons, interview text or event log — those exist only in the single env.

    ## Action Space
    `single_action_space` is the single env's: `MultiDiscrete([n_candidates] * page_size)` (slate mode) or
    `Discrete(n_candidates)` (sequential mode); `action_space` batches it (shape `(num_envs, page_size)` or
    `(num_envs,)`). A wrong shape, a non-integer dtype or an index outside `0..n_candidates-1` raises
    `InvalidActionError` naming the env and slot. Already-shown or duplicate candidates follow the single
    env's rule: `"repair"` (default) replaces them, slot by slot, with the lowest-index candidate still
    available; `"strict"` raises `InvalidActionError`. Actions of sub-envs being autoreset are ignored.

    ## Observation Space
    `single_observation_space` equals `simenv/FastRec-v0`'s flat Dict (`simenv.spaces`); observations are
    batched along a leading axis of size `num_envs` and are fresh arrays each step.

    ## Info
    A dict of arrays with a leading `num_envs` axis, each key `k` paired with a bool mask `_k` (Gymnasium's
    vector convention) saying which sub-envs it applies to:
    - always: `user_id`, `page` (pages shown), `slot` (slots filled on the current page), `action_mask`
      (num_envs, n_candidates) bool, `n_repaired`;
    - sub-envs that were reset (at `reset`, or autoreset this step): `candidate_ids` (num_envs, n_candidates);
    - sub-envs that showed a page this step: `page_items` (item ids), `watched` (bool), `rating` (stars, 0 when
      not watched), each (num_envs, page_size); `n_watched`, `n_liked`, `left`, `page_reward`;
    - sub-envs whose episode ended on its own (left or page limit) with `interview=True`: `interview_score`
      and `terminal_reward` (the satisfaction term included in `reward`).

    ## Rewards
    The single env's `RewardConfig` (`simenv.rewards`): per page, watch * watched + like * liked + rating *
    stars - exit_penalty * left, plus satisfaction * interview score on an episode's last step.

    ## Starting State
    `reset(seed=s)` seeds one generator for the whole batch (an int, or a sequence of ints used as the
    entropy of a `SeedSequence`); every draw (personas, exploration samples, user reactions) comes from it, so
    a seed reproduces the whole batch's trajectories. `options={"reset_mask": mask}` resets only the masked
    sub-envs (the others keep their sessions and return their current observations).

    ## Episode End
    `terminated`: the user left. `truncated`: `max_pages` pages shown, or `max_episode_steps` steps taken (the
    TimeLimit the registered ids apply to the single env; that cut skips the interview, as there).
    Autoreset is Gymnasium 1.x next-step (`metadata["autoreset_mode"] = AutoresetMode.NEXT_STEP`): the step
    after an episode ends resets that sub-env, ignores its action and returns its first observation with
    reward 0 and `terminated = truncated = False`.

    ## Arguments
    `num_envs`, then the single env's: `dataset`, `personas`, `user_model` (a `FastUserModel`), `train`,
    `candidate_recommender`, `page_size`, `max_pages`, `n_candidates`, `explore_fraction`, `history_len`,
    `reward`, `action_mode`, `invalid_action`, `interview`, `users`; and `max_episode_steps` (None = the
    env's own limit). The single env's `log`, `policy_name`, `render_mode` and `persistent_memory` are not
    supported (no records, no text). Memory: per persona drawn, two float64 rows over the catalog.

    ## Version History
    - v0: first version.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int,
        dataset: Dataset,
        personas: Mapping[int, Persona],
        user_model: Any,
        train: pd.DataFrame,
        candidate_recommender: Recommender | None = None,
        page_size: int = 4,
        max_pages: int = 5,
        n_candidates: int | None = None,
        explore_fraction: float = 0.25,
        history_len: int = 8,
        reward: RewardConfig | str | Mapping[str, float] | None = None,
        action_mode: ActionMode = "slate",
        invalid_action: InvalidActionRule = "repair",
        interview: bool = True,
        users: Sequence[int] | None = None,
        max_episode_steps: int | None = None,
    ) -> None:
        if int(num_envs) < 1:
            raise ValueError(f"num_envs={num_envs} must be >= 1")
        if page_size < 1 or max_pages < 1:
            raise ValueError(f"page_size={page_size} and max_pages={max_pages} must be >= 1")
        if n_candidates is None:
            n_candidates = max(40, 2 * page_size * max_pages)
        if n_candidates < page_size * max_pages:
            raise ValueError(f"n_candidates={n_candidates} must be >= page_size * max_pages = {page_size * max_pages}")
        if not 0.0 <= explore_fraction <= 1.0:
            raise ValueError(f"explore_fraction={explore_fraction} must be in [0, 1]")
        if action_mode not in ("slate", "sequential"):
            raise ValueError(f"action_mode={action_mode!r}: expected 'slate' or 'sequential'")
        if invalid_action not in ("repair", "strict"):
            raise ValueError(f"invalid_action={invalid_action!r}: expected 'repair' or 'strict'")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps={max_episode_steps} must be >= 1")
        if not personas:
            raise ValueError("personas: empty; the env needs at least one simulated user")
        self.num_envs = n = int(num_envs)
        self.dataset = dataset
        self.page_size = k = page_size
        self.max_pages = max_pages
        self.n_candidates = c = n_candidates
        self.n_explore = int(round(explore_fraction * n_candidates))
        self.history_len = history_len
        self.reward_config = reward_config(reward)
        self.action_mode = action_mode
        self.invalid_action = invalid_action
        self.interview = interview
        self.candidate_recommender = candidate_recommender
        self.max_episode_steps = max_episode_steps
        self.personas = dict(personas)
        ids = tuple(sorted(self.personas)) if users is None else tuple(int(u) for u in users)
        unknown = [u for u in ids if u not in self.personas]
        if unknown:
            raise ValueError(f"users: ids {unknown[:5]} have no persona")
        self.users = ids
        self._user_ids = np.asarray(ids, dtype=np.int64)
        self._persona_list = [self.personas[u] for u in ids]  # persona index -> Persona
        self._features = features = ItemFeatures.from_train(dataset, train)
        g = features.n_genres
        self._user = FastUserArrays(user_model, self._persona_list, features.n_items, k)
        self.user_model = user_model

        self.single_observation_space = observation_space(g, c, history_len)
        if action_mode == "slate":
            self.single_action_space = gym.spaces.MultiDiscrete(np.full(k, c, dtype=np.int64))
        else:
            self.single_action_space = gym.spaces.Discrete(c)
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)

        # Per persona (filled on first draw): observation vector, candidate base and exploration pool.
        n_p = len(ids)
        self._persona_vec = np.zeros((n_p, self.single_observation_space["persona"].shape[0]), dtype=np.float32)
        self._base = np.zeros((n_p, c - self.n_explore), dtype=np.int64)
        self._pool_ready = np.zeros(n_p, dtype=bool)
        # Exploration pools, row p = persona p's pool (ascending ids) padded; np.zeros leaves untouched rows virtual.
        self._rest = np.zeros((n_p, features.n_items), dtype=np.int32)
        self._rest_len = np.zeros(n_p, dtype=np.int64)

        # Session state, one row per sub-env.
        self._persona = np.zeros(n, dtype=np.int64)
        self._cand = np.zeros((n, c), dtype=np.int64)
        self._shown = np.zeros((n, c), dtype=bool)
        self._pending = np.zeros((n, k), dtype=np.int64)
        self._n_pending = np.zeros(n, dtype=np.int64)
        self._page = np.zeros(n, dtype=np.int64)
        self._elapsed = np.zeros(n, dtype=np.int64)
        self._n_shown = np.zeros(n, dtype=np.int64)
        self._n_watched = np.zeros(n, dtype=np.int64)
        self._n_liked = np.zeros(n, dtype=np.int64)
        self._n_rated = np.zeros(n, dtype=np.int64)
        self._rating_sum = np.zeros(n, dtype=np.float64)
        self._cand_obs = np.zeros((n, c, g + 4), dtype=np.float32)
        self._zero_row = len(features.history_rows) - 1
        self._recent = np.full((n, history_len), self._zero_row, dtype=np.int64)
        self._session = np.zeros((n, 6), dtype=np.float32)
        self._needs_reset = np.ones(n, dtype=bool)
        self._started = False
        self._rows_all = np.arange(n)
        self._all_true = np.ones(n, dtype=bool)

    # -- gymnasium API -----------------------------------------------------------------------------------

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if seed is not None and not isinstance(seed, int | np.integer):
            entropy = [int(s) for s in seed]
            self._np_random = np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))
            self._np_random_seed = -1
        else:
            super().reset(seed=None if seed is None else int(seed))
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if options:
            raise ValueError(f"reset options {sorted(options)}: only 'reset_mask' is supported")
        if mask is None:
            rows = self._rows_all
        else:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(
                    f"options['reset_mask']: expected a bool array of shape ({self.num_envs},), "
                    f"got dtype {mask.dtype} shape {mask.shape}"
                )
            if not self._started and not mask.all():
                raise RuntimeError("reset(options={'reset_mask': ...}) before a full reset()")
            rows = np.flatnonzero(mask)
        self._reset_rows(rows)
        self._started = True
        info = self._base_info(np.zeros(self.num_envs, dtype=np.int64))
        self._add_reset_info(info, rows)
        return self._observation(), self._complete(info)

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("step() called before reset()")
        a = self._check_actions(actions)
        n = self.num_envs
        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        n_repaired = np.zeros(n, dtype=np.int64)
        resetting = self._needs_reset
        reset_rows = np.flatnonzero(resetting) if resetting.any() else None
        rows = self._rows_all if reset_rows is None else np.flatnonzero(~resetting)
        # Actions are checked (and strict mode raises) before any state changes, autoresets included.
        if self.action_mode == "slate":
            chosen, n_repaired[rows] = self._resolve_slate(rows, a[rows])
            page_rows = rows
        else:
            page_rows, chosen, n_repaired[rows] = self._add_slot(rows, a[rows])
        if reset_rows is not None:
            self._reset_rows(reset_rows)
        info: dict[str, Any] = {}
        if len(rows):
            self._elapsed[rows] += 1
            if len(page_rows):
                self._show(page_rows, chosen, rewards, terminated, truncated, info)
            if self.max_episode_steps is not None:
                cut = rows[(self._elapsed[rows] >= self.max_episode_steps) & ~terminated[rows] & ~truncated[rows]]
                truncated[cut] = True
            self._needs_reset[rows] = terminated[rows] | truncated[rows]
        out = self._base_info(n_repaired)
        out.update(info)
        if reset_rows is not None:
            self._add_reset_info(out, reset_rows)
        return self._observation(), rewards, terminated, truncated, self._complete(out)

    def close_extras(self, **kwargs: Any) -> None:
        """Nothing to release (no subprocesses, no files)."""

    # -- helpers -----------------------------------------------------------------------------------------

    @property
    def features(self) -> ItemFeatures:
        return self._features

    def _check_actions(self, actions: Any) -> np.ndarray:
        a = actions if type(actions) is np.ndarray else np.asarray(actions)
        shape = self.action_space.shape
        if a.shape != shape or a.dtype.kind not in "iu":
            raise InvalidActionError(
                f"actions: expected integer candidate indices of shape {shape}, got shape {a.shape} dtype {a.dtype}"
            )
        bad = (a < 0) | (a >= self.n_candidates)
        if bad.any():
            where = np.argwhere(bad)[0]
            slot = f" slot {int(where[1])}" if a.ndim == 2 else ""
            raise InvalidActionError(
                f"actions: env {int(where[0])}{slot}: candidate index {int(a[tuple(where)])} "
                f"outside 0..{self.n_candidates - 1}"
            )
        return a.astype(np.int64, copy=False)

    def _resolve_slate(self, rows: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply the invalid-action rule to whole pages; returns (chosen, repairs per row)."""
        shown = self._shown[rows[:, None], chosen]
        ordered = np.sort(chosen, axis=1)
        conflict = shown.any(axis=1) | (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        n_repaired = np.zeros(len(rows), dtype=np.int64)
        if not conflict.any():
            return chosen, n_repaired
        bad_rows = np.flatnonzero(conflict)
        sub = chosen[bad_rows].copy()
        taken = self._shown[rows[bad_rows]].copy()  # shown, or already on this page
        ar = np.arange(len(bad_rows))
        for slot in range(self.page_size):
            col = sub[:, slot]
            bad = taken[ar, col]
            if bad.any():
                if self.invalid_action == "strict":
                    i = int(np.flatnonzero(bad)[0])
                    env = int(rows[bad_rows[i]])
                    self._strict_error(env, slot, int(col[i]))
                col[bad] = np.argmax(~taken[bad], axis=1)  # lowest-index candidate still available
                n_repaired[bad_rows[bad]] += 1
            taken[ar, col] = True
        chosen = chosen.copy()
        chosen[bad_rows] = sub
        return chosen, n_repaired

    def _add_slot(self, rows: np.ndarray, slot_choice: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sequential mode: add one candidate to each row's page; returns (rows whose page is full, their pages,
        repairs per row)."""
        pending_col = self._cand_obs.shape[2] - 1
        taken = self._shown[rows, slot_choice] | (self._cand_obs[rows, slot_choice, pending_col] > 0)
        n_repaired = taken.astype(np.int64)
        if taken.any():
            bad = np.flatnonzero(taken)
            if self.invalid_action == "strict":
                env = int(rows[bad[0]])
                self._strict_error(env, int(self._n_pending[env]), int(slot_choice[bad[0]]))
            unavailable = self._shown[rows[bad]] | (self._cand_obs[rows[bad], :, pending_col] > 0)
            slot_choice = slot_choice.copy()
            slot_choice[bad] = np.argmax(~unavailable, axis=1)
        slot = self._n_pending[rows]
        self._pending[rows, slot] = slot_choice
        self._cand_obs[rows, slot_choice, pending_col] = 1.0
        self._n_pending[rows] = slot + 1
        full = rows[slot + 1 == self.page_size]
        return full, self._pending[full].copy(), n_repaired

    def _strict_error(self, env: int, slot: int, index: int) -> None:
        why = "was shown on an earlier page" if self._shown[env, index] else "is already on this page"
        raise InvalidActionError(
            f"env {env} slot {slot}: candidate {index} (item {int(self._cand[env, index])}) {why}; "
            f"see info['action_mask'] or use invalid_action='repair'"
        )

    def _show(
        self,
        rows: np.ndarray,
        chosen: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        info: dict[str, Any],
    ) -> None:
        """Show one page in each of `rows`: user reactions, rewards, state and observation updates, episode end."""
        k = self.page_size
        persona = self._persona[rows]
        page_index = self._page[rows]
        items = self._cand[rows[:, None], chosen]
        watched, stars, left = self._user.react(persona, items, page_index, self.np_random)
        liked = stars >= 4
        n_watched = watched.sum(axis=1)
        n_liked = liked.sum(axis=1)
        cfg = self.reward_config
        item_value = np.where(watched, cfg.watch + cfg.rating * stars + cfg.like * liked, 0.0)
        page_reward = item_value.sum(axis=1) - cfg.exit_penalty * left

        # State: shown flags, history (the page's last item on top), running counts, session features.
        g = self._features.n_genres
        self._shown[rows[:, None], chosen] = True
        self._cand_obs[rows[:, None], chosen, g + 2] = 1.0
        if self.action_mode == "sequential":
            self._cand_obs[rows[:, None], chosen, g + 3] = 0.0
            self._n_pending[rows] = 0
        if self.history_len:
            new = N_HISTORY_VARIANTS * items + np.where(watched, 1 + stars, 0)
            recent = np.concatenate((new[:, ::-1], self._recent[rows]), axis=1)
            self._recent[rows] = recent[:, : self.history_len]
        self._n_shown[rows] += k
        self._n_watched[rows] += n_watched
        self._n_liked[rows] += n_liked
        self._n_rated[rows] += n_watched
        self._rating_sum[rows] += stars.sum(axis=1)
        page = page_index + 1
        self._page[rows] = page
        n_shown, n_rated = self._n_shown[rows], self._n_rated[rows]
        s = self._session
        s[rows, 2] = self._n_watched[rows] / n_shown
        s[rows, 3] = self._n_liked[rows] / n_shown
        s[rows, 4] = np.where(n_rated > 0, self._rating_sum[rows] / np.maximum(n_rated, 1) / 5.0, 0.0)
        s[rows, 5] = n_watched / k

        term = left
        trunc = ~left & (page >= self.max_pages)
        rewards[rows] = page_reward
        terminated[rows] = term
        truncated[rows] = trunc
        n = self.num_envs
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        items_out = np.full((n, k), -1, dtype=np.int64)
        items_out[rows] = items
        watched_out = np.zeros((n, k), dtype=bool)
        watched_out[rows] = watched
        stars_out = np.zeros((n, k), dtype=np.int64)
        stars_out[rows] = stars
        for key, value in (
            ("page_items", items_out),
            ("watched", watched_out),
            ("rating", stars_out),
            ("n_watched", _scatter(n, rows, n_watched, np.int64)),
            ("n_liked", _scatter(n, rows, n_liked, np.int64)),
            ("left", _scatter(n, rows, left, bool)),
            ("page_reward", _scatter(n, rows, page_reward, np.float64)),
        ):
            info[key], info[f"_{key}"] = value, mask
        ended = term | trunc
        if self.interview and ended.any():
            end_rows = rows[ended]
            scores = interview_scores(self._n_shown[end_rows], self._n_watched[end_rows], self._n_liked[end_rows])
            terminal = cfg.satisfaction * scores if cfg.satisfaction != 0.0 else np.zeros(len(end_rows))
            rewards[end_rows] += terminal
            end_mask = np.zeros(n, dtype=bool)
            end_mask[end_rows] = True
            info["interview_score"] = _scatter(n, end_rows, scores, np.int64)
            info["terminal_reward"] = _scatter(n, end_rows, terminal, np.float64)
            info["_interview_score"] = info["_terminal_reward"] = end_mask

    def _reset_rows(self, rows: np.ndarray) -> None:
        """Start a new session in each of `rows`: persona, candidate set, fresh state."""
        rng = self.np_random
        r = len(rows)
        if r == 0:
            return
        persona = (rng.random(r) * len(self.users)).astype(np.int64)  # floor(u * n), as the single env
        self._prepare(persona)
        self._user.ensure(persona)
        self._persona[rows] = persona
        self._cand[rows] = self._draw_candidates(persona, rng)
        self._shown[rows] = False
        self._pending[rows] = 0
        self._n_pending[rows] = 0
        self._page[rows] = 0
        self._elapsed[rows] = 0
        self._n_shown[rows] = 0
        self._n_watched[rows] = 0
        self._n_liked[rows] = 0
        self._n_rated[rows] = 0
        self._rating_sum[rows] = 0.0
        self._cand_obs[rows] = self._features.candidate_rows[self._cand[rows]]
        self._recent[rows] = self._zero_row
        self._session[rows] = 0.0
        self._needs_reset[rows] = False

    def _prepare(self, persona: np.ndarray) -> None:
        """Observation vector and candidate pool of personas drawn for the first time."""
        new = np.unique(persona[~self._pool_ready[persona]]).tolist()
        if not new:
            return
        vocab = self._features.genre_vocabulary
        for p in new:
            person = self._persona_list[p]
            self._persona_vec[p] = persona_features(person, vocab)
            if self.candidate_recommender is None:
                base, rest = candidate_pool(person, self.n_candidates, self.n_explore, self._features)
                self._base[p] = base
                self._rest[p, : len(rest)] = rest
                self._rest_len[p] = len(rest)
            self._pool_ready[p] = True

    def _draw_candidates(self, persona: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(R, n_candidates) item ids: base, then a uniform sample of `n_explore` distinct pool items in draw order.

        Every sampled row is a uniform ordered draw without replacement, as `sample_indices` gives: rows
        drawn with replacement are redrawn whole while they hold a repeat (rare for n_explore**2 << pool size).
        """
        if self.candidate_recommender is not None:
            return np.stack(
                [
                    candidate_set(
                        self._persona_list[p],
                        self.n_candidates,
                        self.n_explore,
                        rng,
                        self._features,
                        self.candidate_recommender,
                    )
                    for p in persona.tolist()
                ]
            )
        base = self._base[persona]
        m = self.n_explore
        if m == 0:
            return base.copy()
        size = self._rest_len[persona]
        idx = np.empty((len(persona), m), dtype=np.int64)
        todo = np.arange(len(persona))
        while len(todo):
            draw = (rng.random((len(todo), m)) * size[todo, None]).astype(np.int64)
            ordered = np.sort(draw, axis=1)
            ok = ~(ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
            idx[todo[ok]] = draw[ok]
            todo = todo[~ok]
        explore = self._rest[persona[:, None], idx]
        return np.concatenate((base, explore), axis=1)

    def _observation(self) -> dict[str, np.ndarray]:
        s = self._session
        page = self._page
        s[:, 0] = np.where(page >= self.max_pages, 1.0, page / self.max_pages)
        s[:, 1] = self._n_pending / self.page_size
        return {
            "persona": self._persona_vec[self._persona],
            "candidates": self._cand_obs.reshape(self.num_envs, -1).copy(),
            "history": self._features.history_rows.take(self._recent, axis=0).reshape(self.num_envs, -1),
            "session": s.copy(),
        }

    def _action_mask(self) -> np.ndarray:
        mask = ~self._shown
        if self.action_mode == "sequential":
            mask &= self._cand_obs[:, :, -1] == 0
        return mask

    def _base_info(self, n_repaired: np.ndarray) -> dict[str, Any]:
        t = self._all_true
        return {
            "user_id": self._user_ids[self._persona],
            "_user_id": t,
            "page": self._page.copy(),
            "_page": t,
            "slot": self._n_pending.copy(),
            "_slot": t,
            "action_mask": self._action_mask(),
            "_action_mask": t,
            "n_repaired": n_repaired,
            "_n_repaired": t,
        }

    def _add_reset_info(self, info: dict[str, Any], rows: np.ndarray) -> None:
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[rows] = True
        ids = np.zeros_like(self._cand)
        ids[rows] = self._cand[rows]
        info["candidate_ids"], info["_candidate_ids"] = ids, mask

    def _complete(self, info: dict[str, Any]) -> dict[str, Any]:
        """Add the keys that apply to no sub-env this time (zeros, all-False mask): every info has the same keys."""
        n, k, c = self.num_envs, self.page_size, self.n_candidates
        none = np.zeros(n, dtype=bool)
        for key, shape, dtype, fill in (
            ("candidate_ids", (n, c), np.int64, 0),
            ("page_items", (n, k), np.int64, -1),
            ("watched", (n, k), bool, False),
            ("rating", (n, k), np.int64, 0),
            ("n_watched", (n,), np.int64, 0),
            ("n_liked", (n,), np.int64, 0),
            ("left", (n,), bool, False),
            ("page_reward", (n,), np.float64, 0.0),
            ("interview_score", (n,), np.int64, 0),
            ("terminal_reward", (n,), np.float64, 0.0),
        ):
            if key not in info:
                info[key], info[f"_{key}"] = np.full(shape, fill, dtype=dtype), none
        return info


def _scatter(n: int, rows: np.ndarray, values: np.ndarray, dtype: Any) -> np.ndarray:
    out = np.zeros(n, dtype=dtype)
    out[rows] = values
    return out
