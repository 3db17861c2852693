"""The Gymnasium environment: one episode is one simulated user's session, one step one page (or one slot)."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from simenv import kernel
from simenv.candidates import candidate_set
from simenv.data.dataset import Dataset
from simenv.eventlog import RunLog, event_rows, interview_row, page_row
from simenv.kernel import (  # re-exported: the env's public names
    ActionMode,
    InvalidActionError,
    InvalidActionRule,
    check_feedback,
    child_rng,
    feedback_counts,
)
from simenv.protocols import CandidateFeaturizer, Recommender, UserModel, UserSession
from simenv.records import Interview, Page, PageFeedback, Persona
from simenv.rewards import item_rewards, page_reward, terminal_reward
from simenv.spaces import ItemFeatures, SessionState, observation_space, persona_features, prior_column

__all__ = [
    "ActionMode",
    "InvalidActionError",
    "InvalidActionRule",
    "RecEnv",
    "check_feedback",
    "child_rng",
    "feedback_counts",
]


class RecEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """A recommender facing one simulated user per episode.

    ## Description
    At reset a persona is drawn (or named in `options={"user_id": u}`) and a candidate set of
    `n_candidates` items is fixed: the candidate recommender's top items (train popularity without one),
    excluding the persona's training history, followed by a seeded exploration sample. Each page the policy
    shows `page_size` candidates; the user model reacts (watch, rating, feeling per item; stay or leave).
    Text (feelings, reasons) goes to the event log and `info["feedback"]`, never into the observation.

    ## Action Space
    - `action_mode="slate"` (default): `MultiDiscrete([n_candidates] * page_size)`, candidate indices for
      the page's positions in order. One step = one page.
    - `action_mode="sequential"` (for DQN): `Discrete(n_candidates)`, one candidate per step. The page is
      shown when `page_size` slots are filled; intermediate slot steps return reward 0 and an observation
      whose `candidates[:, -1]` column flags the slots chosen so far. One episode = up to
      `max_pages * page_size` steps.
    - `action_mode="weights"` (needs a `candidate_featurizer`): `Box(-1, 1, (F,))`, one weight per featurizer
      column; the page is the `page_size` available candidates with the highest `base_score + w . x`, ties by
      the base's rank (`simenv.kernel.rank_by_weights`; Virtual-Taobao's action). One step = one page; a weight
      policy scores every candidate with the same weights, so it generalises across candidate sets.
    Invalid choices: an index outside `0..n_candidates-1` or a wrongly shaped action always raises
    `InvalidActionError`. A candidate already shown on an earlier page, or chosen twice for one page, raises
    `InvalidActionError` when `invalid_action="strict"`; with `"repair"` (default) it is replaced by the
    lowest-index (best-ranked) candidate that is still available and not chosen by another slot, valid slots
    stay as chosen, and `info["n_repaired"]` counts the replacements (`simenv.kernel.repair_slates`).
    `info["action_mask"]` (bool, `n_candidates`) marks the candidates still available.

    ## Observation Space
    A flat `Dict` of `Box`es in [0, 1]: `persona`, `candidates`, `history`, `session`; with a
    `candidate_featurizer` also `candidate_features` ((C, F + 3) in [-5, 5]: its columns, then shown, watched,
    liked); see `simenv.spaces`.

    ## Info
    Small and deterministic (the checkers compare it between seeded runs): `user_id`, `page` (pages shown),
    `slot` (slots filled on the current page), `action_mask`, `n_repaired`; at reset `candidate_ids`; after a
    shown page `page_items`, `n_watched`, `n_liked`, `left`, `feedback` (the `PageFeedback` record with its
    free text, LLM call ids removed); on the last step `interview_score`.

    ## Rewards
    `simenv.rewards`: per page, `watch`·watched + `like`·liked + `rating`·rating − `exit_penalty`·left, plus
    `satisfaction`·interview score on the last step. Default `RewardConfig()`: the number of watched items.

    ## Starting State
    A persona drawn uniformly from `users` (all personas by default) with `self.np_random`; a fresh user
    session (its own generator, seeded with 256 bits drawn from `self.np_random`, so the env's draws do not
    depend on how many the user makes); nothing shown; empty history.

    ## Episode End
    `terminated`: the user left. `truncated`: `max_pages` pages were shown. The registered ids set
    `max_episode_steps` to the same limit (`max_pages`, or `max_pages * page_size` steps in sequential mode);
    when changing `max_pages` or `page_size` through `gym.make`, pass the matching `max_episode_steps` too, or
    the TimeLimit wrapper cuts the episode before the env's own end (and its interview).
    At the end the user answers the satisfaction interview
    (`info["interview_score"]`) unless `interview=False`.

    ## Arguments
    The page settings (`page_size` ... `users`) are keyword arguments, checked with their defaults by
    `simenv.kernel.apply_settings` (the vector env takes the same ones).
    - `dataset`: the `Dataset` (catalog, genres).
    - `personas`: `{user_id: Persona}` (traits and history from the training split).
    - `user_model`: a `simenv.protocols.UserModel` (fast MNL user, LLM persona user, or a test double).
    - `train`: training interactions (popularity and mean ratings for candidate features; never test data).
    - `candidate_recommender`: a fitted `Recommender` giving the base candidates; None = train popularity.
    - `candidate_featurizer`: a `simenv.protocols.CandidateFeaturizer` (train-only per-candidate features, e.g.
      `recommenders.candidate_features.TrainCandidateFeatures`); None = no `candidate_features` key.
    - `page_size` (4), `max_pages` (5): items per page and page limit.
    - `n_candidates` (default `simenv.kernel.default_n_candidates`: `max(40, 2 * page_size * max_pages)`);
      must be >= `page_size * max_pages` so a page can always be filled.
    - `explore_fraction` (0.25): share of the candidate set drawn at random from the rest of the catalog.
    - `history_len` (8): rows of the observation's history.
    - `reward`: `RewardConfig`, a preset name from `simenv.rewards.REWARD_PRESETS`, or a dict of weights.
    - `action_mode`: `"slate"`, `"sequential"` or `"weights"` (see Action Space).
    - `invalid_action`: `"repair"` or `"strict"` (see Action Space).
    - `interview` (True): ask the satisfaction interview at the end of each episode.
    - `users`: optional subset of persona ids to draw from.
    - `persistent_memory` (False): let a user model with memory (the LLM user) carry memories from one
      episode to the next; False starts every episode fresh (`start_session(..., reset_memory=True)` when the
      model supports it) so that `reset(seed=...)` reproduces an episode exactly.
    - `log`: a run directory (or `RunLog`) to write events/pages/interviews to, flushed at each episode end;
      None (default) writes nothing. `policy_name` labels the rows.
    - `render_mode`: None or `"ansi"` (a one-line text summary of the last page).

    ## Version History
    - v1: `candidate_features` (with a featurizer) and the `weights` action mode.
    - v0: first version.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        dataset: Dataset,
        personas: Mapping[int, Persona],
        user_model: UserModel,
        train: pd.DataFrame,
        candidate_recommender: Recommender | None = None,
        candidate_featurizer: CandidateFeaturizer | None = None,
        *,
        persistent_memory: bool = False,
        log: str | Path | RunLog | None = None,
        policy_name: str = "env",
        render_mode: str | None = None,
        **settings: Any,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}: expected None or one of {self.metadata['render_modes']}")
        kernel.apply_settings(self, personas, **settings)  # page settings and their defaults, checked
        self.dataset = dataset
        self.train = train
        self.user_model = user_model
        self.candidate_recommender = candidate_recommender
        self.candidate_featurizer = candidate_featurizer
        n_features = len(candidate_featurizer.names) if candidate_featurizer is not None else 0
        self._prior = prior_column(candidate_featurizer)
        self.persistent_memory = persistent_memory
        params = inspect.signature(user_model.start_session).parameters
        self._fresh_memory_kw = {} if persistent_memory or "reset_memory" not in params else {"reset_memory": True}
        self.render_mode = render_mode
        self.policy_name = policy_name
        self._log = RunLog(log) if isinstance(log, str | Path) else log
        self._features = ItemFeatures.from_train(dataset, train)
        self._catalog = dataset.catalog
        self._persona_vectors: dict[int, np.ndarray] = {}
        self._candidate_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.observation_space = observation_space(
            self._features.n_genres, self.n_candidates, self.history_len, n_features
        )
        self.action_space = kernel.action_space(self.action_mode, self.page_size, self.n_candidates, n_features)
        self._slate_shape = (self.page_size,)
        self._episode = -1
        self._state: SessionState | None = None
        self._session: UserSession | None = None
        self._done = True
        self._rows: dict[str, list[dict[str, Any]]] = {"events": [], "pages": [], "interviews": []}
        self._last_text = ""

    # -- gymnasium API -----------------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self._flush()
        options = options or {}
        if "user_id" in options:
            user_id = int(options["user_id"])
            if user_id not in self.personas:
                raise ValueError(f"options['user_id']={user_id} has no persona")
        else:
            user_id = self.users[int(self.np_random.random() * len(self.users))]  # floor(u * n): see sample_indices
        persona = self.personas[user_id]
        self._episode += 1
        candidates = candidate_set(
            persona,
            self.n_candidates,
            self.n_explore,
            self.np_random,
            self._features,
            self.candidate_recommender,
            self._candidate_cache,
        )
        if user_id not in self._persona_vectors:
            self._persona_vectors[user_id] = persona_features(persona, self._features.genre_vocabulary)
        self._state = SessionState(
            persona,
            self._persona_vectors[user_id],
            candidates,
            self._features,
            self.page_size,
            self.max_pages,
            self.history_len,
            None if self.candidate_featurizer is None else self.candidate_featurizer.features(persona, candidates),
        )
        user_rng = child_rng(self.np_random)
        self._session = self.user_model.start_session(persona, self._episode, user_rng, **self._fresh_memory_kw)
        self._done = False
        self._last_text = ""
        info = self._info(0)
        info["candidate_ids"] = candidates.copy()
        return self._state.observation(), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._state is None or self._session is None:
            raise RuntimeError("step() called before reset()")
        if self._done:
            raise RuntimeError("step() called after the episode ended; call reset()")
        state = self._state
        if self.action_mode == "slate":
            indices = kernel.check_actions(action, self._slate_shape, self.n_candidates).tolist()
            chosen, n_repaired = self._repair(indices, state)
        elif self.action_mode == "weights":
            weights = kernel.check_weights(action, self.action_space.shape)
            assert state.feature_table is not None
            page = kernel.rank_by_weights(
                weights[None], state.feature_table[None], ~state.shown[None], self.page_size, self._prior
            )
            chosen, n_repaired = page[0].tolist(), 0
        else:
            index = int(kernel.check_actions(action, (), self.n_candidates))
            picked, n_repaired = self._repair(state.pending + [index], state)
            state.set_pending(picked)
            if len(picked) < self.page_size:
                return state.observation(), 0.0, False, False, self._info(n_repaired)
            chosen = picked
        return self._show(chosen, n_repaired)

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self._last_text
        return None

    def close(self) -> None:
        self._flush()
        super().close()

    # -- helpers -----------------------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        """The current session's state (candidate ids, shown mask, history); for policy adapters."""
        if self._state is None:
            raise RuntimeError("no session: call reset() first")
        return self._state

    @property
    def episode(self) -> int:
        """Episodes started by this env instance, minus one (the `episode` column of its log)."""
        return self._episode

    @property
    def features(self) -> ItemFeatures:
        return self._features

    def _repair(self, page: list[int], state: SessionState) -> tuple[list[int], int]:
        """The invalid-action rule (`simenv.kernel.repair_slates`) on this session's page (slots filled so far in
        sequential mode, which are valid, then the new one)."""
        if kernel.page_is_clean(page, state.shown_set):
            return page, 0  # the common case: nothing to repair
        chosen, n_repaired = kernel.repair_slates(
            np.array([page], dtype=np.int64), state.shown[None], state.candidate_ids[None], self.invalid_action
        )
        return chosen[0].tolist(), int(n_repaired[0])

    def _show(self, chosen: list[int], n_repaired: int) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        state = self._state
        session = self._session
        assert state is not None and session is not None
        ids = state.candidate_list
        item_ids = tuple([ids[k] for k in chosen])
        page = Page(self._episode, state.page_index, item_ids)
        catalog = self._catalog
        feedback = session.react(page, [catalog[i] for i in item_ids])
        n_watched, n_liked = feedback_counts(page, feedback)
        reward = page_reward(feedback, self.reward_config)
        state.record_page(chosen, feedback)
        terminated, truncated = kernel.episode_end(feedback.left, state.page_index, self.max_pages)
        interview: Interview | None = None
        if (terminated or truncated) and self.interview:
            interview = session.interview()
            reward += terminal_reward(interview, self.reward_config)
        self._done = terminated or truncated
        if self._log is not None:
            self._log_page(page, feedback, n_repaired, interview)
        if self.render_mode == "ansi":
            watched = [i for i, r in zip(item_ids, feedback.reactions, strict=True) if r.watched]
            user = state.persona.user_id
            self._last_text = f"user {user} page {page.page_index}: shown {item_ids}, watched {watched}"
        info = self._info(n_repaired)
        info["page_items"] = np.array(item_ids, dtype=np.int64)
        info["n_watched"] = n_watched
        info["n_liked"] = n_liked
        info["left"] = terminated
        # Records without call ids: ids are bookkeeping and need not repeat between seeded runs.
        info["feedback"] = dataclasses.replace(feedback, llm_call_ids=()) if feedback.llm_call_ids else feedback
        if interview is not None:
            info["interview_score"] = interview.score
        if self._done:
            self._flush()
        return state.observation(), float(reward), terminated, truncated, info

    def _info(self, n_repaired: int) -> dict[str, Any]:
        state = self._state
        assert state is not None
        return {
            "user_id": state.persona.user_id,
            "page": state.page_index,
            "slot": len(state.pending),
            "action_mask": state.action_mask(),
            "n_repaired": n_repaired,
        }

    def _log_page(self, page: Page, feedback: PageFeedback, n_repaired: int, interview: Interview | None) -> None:
        assert self._log is not None and self._state is not None
        run, user = self._log.run_id, self._state.persona.user_id
        rewards = item_rewards(feedback, self.reward_config)
        self._rows["events"].extend(event_rows(run, self.policy_name, self._episode, user, page, feedback, rewards))
        reward = page_reward(feedback, self.reward_config)
        self._rows["pages"].append(
            page_row(run, self.policy_name, self._episode, user, page, feedback, reward, n_repaired)
        )
        if interview is not None:
            self._rows["interviews"].append(
                interview_row(run, self.policy_name, self._episode, self._state.page_index, interview)
            )

    def _flush(self) -> None:
        if self._log is None:
            return
        for table, rows in self._rows.items():
            if rows:
                self._log.append(table, rows)
                self._rows[table] = []
