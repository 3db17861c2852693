"""A native vectorised environment: N independent no-text sessions (`simrec/FastRec-v1`) stepped together in numpy.

The single env (`simenv.env.RecEnv`) builds Python records on every step (`Page`, `PageFeedback`, `info`). This
env keeps every session's state in arrays of shape (num_envs, ...) (`simenv.kernel_state.SessionArrays`) and asks
the user model to decide all pages at once (`simenv.protocols.BatchDecider.decide_batch`: the same rule the
single env's user applies to a batch of one), with the same candidate pools (`simenv.candidates`), invalid-action
rule, rewards and episode end (`simenv.kernel`). Statistics match the single env; random streams do not.

`gym.make_vec(id, num_envs=N)` of a no-text id builds it (`simrec.envs.make_vector_env`); `"sync"` and `"async"`
still wrap N single envs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from simenv import kernel
from simenv.candidates import CandidatePools
from simenv.data.dataset import Dataset
from simenv.kernel import interview_scores
from simenv.kernel_state import SessionArrays
from simenv.protocols import BatchDecider, CandidateFeaturizer, Recommender
from simenv.records import Persona
from simenv.spaces import ItemFeatures, observation_space, persona_features, prior_column
from simenv.synthetic_population import SyntheticPopulation
from simenv.vector_info import InfoArrays, members

__all__ = ["FastRecVectorEnv", "interview_scores"]


class FastRecVectorEnv(VectorEnv):
    """`num_envs` independent no-text sessions (the `simrec/FastRec-v1` model) stepped together in numpy.

    ## Description
    Each sub-env is one `RecEnv` episode with a no-text user (a `BatchDecider`): at reset a persona is drawn
    uniformly from `users` (or from the `population`'s members, or given by `options={"users": ids}`), its
    candidate set is the popularity base (or the `candidate_recommender`'s top items) followed by a uniform
    exploration sample from the rest of the catalog minus the persona's train history; each page the user
    watches, rates and maybe leaves (the user model's `decide_batch`). Only numbers are kept: no `Page`,
    `PageFeedback`, feelings, reasons, interview text or event log — those exist only in the single env.

    ## Action Space
    `single_action_space` is the single env's: `MultiDiscrete([n_candidates] * page_size)` (slate mode),
    `Discrete(n_candidates)` (sequential mode) or `Box(-1, 1, (F,))` feature weights (weights mode, with a
    `candidate_featurizer`: each page is the top `page_size` available candidates by `base_score + w . x`);
    `action_space` batches it (shape `(num_envs, page_size)`, `(num_envs,)` or `(num_envs, F)`).
    A wrong shape, a non-integer dtype or an index outside `0..n_candidates-1` (weights: a non-finite weight) raises
    `InvalidActionError` naming the env and slot. Already-shown or duplicate candidates follow the single
    env's rule (`simenv.kernel.repair_slates`): `"repair"` (default) replaces each of them with the
    lowest-index candidate still available, leaving valid slots alone; `"strict"` raises `InvalidActionError`.
    Actions of sub-envs being autoreset are ignored.

    ## Observation Space
    `single_observation_space` equals `simrec/FastRec-v1`'s flat Dict (`simenv.spaces`); observations are
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
    sub-envs (the others keep their sessions and return their current observations). `options={"users": ids}`
    gives the user id of each sub-env being reset (all, or the masked ones, in order) instead of drawing them:
    how a population is run member by member, a chunk of `num_envs` members at a time.

    ## Episode End
    `terminated`: the user left. `truncated`: `max_pages` pages shown, or `max_episode_steps` steps taken (the
    TimeLimit the registered ids apply to the single env; that cut skips the interview, as there).
    Autoreset is Gymnasium 1.x next-step (`metadata["autoreset_mode"] = AutoresetMode.NEXT_STEP`): the step
    after an episode ends resets that sub-env, ignores its action and returns its first observation with
    reward 0 and `terminated = truncated = False`. With `autoreset_mode="Disabled"` a finished sub-env stays
    finished until `reset` (e.g. with a `reset_mask`): its steps ignore the action, show no page and return its
    last observation with reward 0 and `terminated = truncated = False` (Gymnasium's own vector envs assert
    instead); a population run uses this so each member has exactly one session.

    ## Arguments
    `num_envs`, then the single env's: `dataset`, `personas`, `user_model` (a `simenv.protocols.BatchDecider`,
    e.g. `agents.silent_user.SilentUserModel`), `train`,
    `candidate_recommender`, `candidate_featurizer`, `page_size`, `max_pages`, `n_candidates`, `explore_fraction`,
    `history_len`,
    `reward`, `action_mode`, `invalid_action`, `interview`, `users`; and `max_episode_steps` (None = the
    env's own limit), `autoreset_mode` (`"NextStep"` or `"Disabled"`), `population`
    (`simenv.synthetic_population.SyntheticPopulation`: the sessions' users are its members, ids in
    `info["user_id"]`, each deciding as the real persona it copies; every source must be in `users`). The single
    env's `log`, `policy_name`, `render_mode` and `persistent_memory` are not supported (no records, no text).
    Memory: per real persona drawn, two float64 rows over the catalog and one int32 row (its exploration pool);
    per session about 25 kB at peak (state, observation, a step's temporaries), so a big population runs in
    chunks of `num_envs` sessions.

    ## Version History
    - v0: first version.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int,
        dataset: Dataset,
        personas: Mapping[int, Persona],
        user_model: BatchDecider,
        train: pd.DataFrame,
        candidate_recommender: Recommender | None = None,
        candidate_featurizer: CandidateFeaturizer | None = None,
        *,
        max_episode_steps: int | None = None,
        population: SyntheticPopulation | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        **settings: Any,
    ) -> None:
        if int(num_envs) < 1 or (max_episode_steps is not None and max_episode_steps < 1):
            raise ValueError(f"num_envs={num_envs} and max_episode_steps={max_episode_steps} must be >= 1")
        mode = AutoresetMode(autoreset_mode)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED):
            raise ValueError(f"autoreset_mode={mode.value!r}: expected 'NextStep' or 'Disabled'")
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self._autoreset = mode == AutoresetMode.NEXT_STEP
        kernel.apply_settings(self, personas, **settings)  # the single env's page settings and defaults
        self.num_envs = n = int(num_envs)
        self.dataset = dataset
        self.candidate_recommender = candidate_recommender
        self.candidate_featurizer = candidate_featurizer
        n_features = 0 if candidate_featurizer is None else len(candidate_featurizer.names)
        self._prior = prior_column(candidate_featurizer)
        self.max_episode_steps = max_episode_steps
        self.user_model = user_model
        self._persona_list = [self.personas[u] for u in self.users]  # persona index -> Persona
        # Members (the users sessions are drawn from): `users` itself, or a population's members, each mapped to
        # the index of the persona it decides as.
        self._member_ids, self._member_persona = members(np.asarray(self.users, dtype=np.int64), population)
        self._member_order = np.argsort(self._member_ids, kind="stable")
        self._member = np.zeros(n, dtype=np.int64)  # each session's member index
        self._features = features = ItemFeatures.from_train(dataset, train)
        if not callable(getattr(user_model, "decide_batch", None)):
            raise TypeError(
                f"user_model {type(user_model).__name__}: the vectorised env needs a user model with decide_batch "
                "(a no-text user kind such as 'fitted'; LLM persona users run in the single env)"
            )
        self.pools = CandidatePools(
            self._persona_list, self.n_candidates, self.n_explore, features, candidate_recommender
        )
        sequential = self.action_mode == "sequential"
        self.sessions = SessionArrays(
            n, self.n_candidates, self.page_size, self.history_len, features, sequential, n_features
        )
        self.single_observation_space = observation_space(
            features.n_genres, self.n_candidates, self.history_len, n_features
        )
        self.single_action_space = kernel.action_space(self.action_mode, self.page_size, self.n_candidates, n_features)
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)
        n_persona_features = self.single_observation_space["persona"].shape[0]
        self._persona_vec = np.zeros((len(self.users), n_persona_features), dtype=np.float32)  # filled on first draw
        self._needs_reset = np.ones(n, dtype=bool)
        self._started = False
        self._info = InfoArrays(n, self.page_size, self.n_candidates)
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
        users = options.pop("users", None)
        if options:
            raise ValueError(f"reset options {sorted(options)}: only 'reset_mask' and 'users' are supported")
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
        self._reset_rows(rows, None if users is None else self._members_of(users, len(rows)))
        self._started = True
        info = self._base_info(np.zeros(self.num_envs, dtype=np.int64))
        self._add_reset_info(info, rows)
        return self._observation(), self._info.complete(info)

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("step() called before reset()")
        weights = self.action_mode == "weights"
        if weights:
            a = kernel.check_weights(actions, self.action_space.shape)
        else:
            a = kernel.check_actions(actions, self.action_space.shape, self.n_candidates, batched=True)
        n = self.num_envs
        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        n_repaired = np.zeros(n, dtype=np.int64)
        resetting = self._needs_reset
        finished = np.flatnonzero(resetting) if resetting.any() else None
        reset_rows = finished if self._autoreset else None
        rows = self._rows_all if finished is None else np.flatnonzero(~resetting)
        # Actions are checked (and strict mode raises) before any state changes, autoresets included.
        s = self.sessions
        sequential = self.action_mode == "sequential"
        pending = s.pending_mask(rows) if sequential else None
        chosen = a[rows][:, None] if sequential else a[rows]
        first_slot = s.n_pending[rows] if sequential else 0
        shown = s.shown if reset_rows is None else s.shown[rows]
        if weights:
            assert s.feature_obs is not None
            chosen = kernel.rank_by_weights(a[rows], s.feature_obs[rows], ~shown, self.page_size, self._prior)
        else:
            chosen, n_repaired[rows] = kernel.repair_slates(
                chosen, shown, s.candidates, self.invalid_action, pending, first_slot, rows
            )
        page_rows = rows
        if sequential:
            page_rows, chosen = s.add_slot(rows, chosen[:, 0])
        if reset_rows is not None:
            self._reset_rows(reset_rows)
        info: dict[str, Any] = {}
        if len(rows):
            s.elapsed[rows] += 1
            if len(page_rows):
                self._show(page_rows, chosen, rewards, terminated, truncated, info)
            if self.max_episode_steps is not None:
                cut = rows[(s.elapsed[rows] >= self.max_episode_steps) & ~terminated[rows] & ~truncated[rows]]
                truncated[cut] = True
            self._needs_reset[rows] = terminated[rows] | truncated[rows]
        out = self._base_info(n_repaired)
        out.update(info)
        if reset_rows is not None:
            self._add_reset_info(out, reset_rows)
        return self._observation(), rewards, terminated, truncated, self._info.complete(out)

    def close_extras(self, **kwargs: Any) -> None:
        """Nothing to release (no subprocesses, no files)."""

    # -- helpers -----------------------------------------------------------------------------------------

    @property
    def features(self) -> ItemFeatures:
        return self._features

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
        s = self.sessions
        persona = s.persona[rows]
        items = s.candidates[rows[:, None], chosen]
        personas = [self._persona_list[p] for p in persona.tolist()]
        sizes = np.full(len(rows), items.shape[1], dtype=np.int64)
        rngs = [self.np_random] * len(rows)  # one generator for the batch, drawn row after row
        watched, stars, left = self.user_model.decide_batch(personas, items, sizes, s.page[rows].copy(), rngs)
        stars = np.where(watched, stars, 0)
        cfg = self.reward_config
        page_reward = kernel.page_rewards(watched, stars, left, cfg)
        s.record_pages(rows, chosen, watched, stars)
        term, trunc = kernel.episode_end(left, s.page[rows], self.max_pages)
        rewards[rows] = page_reward
        terminated[rows] = term
        truncated[rows] = trunc
        shown_page = {
            "page_items": items,
            "watched": watched,
            "rating": stars,
            "n_watched": watched.sum(axis=1),
            "n_liked": (stars >= 4).sum(axis=1),
            "left": left,
            "page_reward": page_reward,
        }
        self._info.scatter(info, rows, shown_page)
        ended = term | trunc
        if self.interview and ended.any():
            end_rows = rows[ended]
            scores = interview_scores(s.n_shown[end_rows], s.n_watched[end_rows], s.n_liked[end_rows])
            terminal = kernel.terminal_rewards(scores, cfg)
            rewards[end_rows] += terminal
            self._info.scatter(info, end_rows, {"interview_score": scores, "terminal_reward": terminal})

    def prepare(self, persona: np.ndarray) -> None:
        """Fill the per-persona caches (observation vector, candidate pool, user arrays) of persona indices
        `persona` (positions in `users`) now rather than on first draw, e.g. before timing."""
        vocab = self._features.genre_vocabulary
        for p in self.pools.prepare(persona):
            self._persona_vec[p] = persona_features(self._persona_list[p], vocab)

    def _reset_rows(self, rows: np.ndarray, member: np.ndarray | None = None) -> None:
        """Start a new session in each of `rows`: member (drawn unless given), candidate set, fresh state."""
        rng = self.np_random
        if len(rows) == 0:
            return
        if member is None:
            member = (rng.random(len(rows)) * len(self._member_ids)).astype(np.int64)  # floor(u * n), as RecEnv
        persona = self._member_persona[member]
        self.prepare(persona)
        self._member[rows] = member
        candidates = self.pools.draw(persona, rng)
        featurizer = self.candidate_featurizer
        table = None
        if featurizer is not None:
            plist = self._persona_list
            table = np.stack(
                [featurizer.features(plist[p], c) for p, c in zip(persona.tolist(), candidates, strict=True)]
            )
        self.sessions.reset(rows, persona, candidates, table)
        self._needs_reset[rows] = False

    def _members_of(self, users: Any, n_rows: int) -> np.ndarray:
        """Member indices of the user ids in `options["users"]` (one per sub-env being reset)."""
        ids = np.asarray(users)
        if ids.shape != (n_rows,) or ids.dtype.kind not in "iu":
            raise ValueError(f"options['users']: expected {n_rows} integer user ids, got dtype {ids.dtype} {ids.shape}")
        sorted_ids = self._member_ids[self._member_order]
        pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        unknown = ids[sorted_ids[pos] != ids]
        if len(unknown):
            raise ValueError(f"options['users']: ids {unknown[:5].tolist()} are not users of this env")
        return self._member_order[pos]

    def _observation(self) -> dict[str, np.ndarray]:
        return self.sessions.observation(self._persona_vec, self.max_pages)

    def _base_info(self, n_repaired: np.ndarray) -> dict[str, Any]:
        t, s = self._all_true, self.sessions
        return {
            "user_id": self._member_ids[self._member],
            "_user_id": t,
            "page": s.page.copy(),
            "_page": t,
            "slot": s.n_pending.copy(),
            "_slot": t,
            "action_mask": s.action_mask(),
            "_action_mask": t,
            "n_repaired": n_repaired,
            "_n_repaired": t,
        }

    def _add_reset_info(self, info: dict[str, Any], rows: np.ndarray) -> None:
        self._info.scatter(info, rows, {"candidate_ids": self.sessions.candidates[rows]})
