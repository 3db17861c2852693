"""Stable-Baselines3 `VecEnv` over a Gymnasium `VectorEnv` (the native `FastRecVectorEnv`), so SB3 trains on it.

SB3 expects same-step autoreset: when a sub-env finishes, `step` returns its next episode's first observation,
keeps the final one in `infos[i]["terminal_observation"]`, and marks a time-limit cut with
`infos[i]["TimeLimit.truncated"]`; infos are a list of dicts and rewards float32 (as `DummyVecEnv`). Gymnasium
1.x vector envs autoreset on the *next* step instead, so the adapter resets finished sub-envs itself, in the
same step, through `reset(options={"reset_mask": done})`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

log = logging.getLogger(__name__)

_SUPPORTED_AUTORESET = (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED)


class SB3VectorEnv(VecEnv):
    """SB3's `VecEnv` API over one Gymnasium `VectorEnv` whose `reset` accepts `options={"reset_mask": mask}`.

    ## Step
    `step_wait` returns `(obs, rewards float32 (n,), dones bool (n,), infos list of n dicts)`. Each info dict
    holds the sub-env's entries of the vector info (keys whose `_key` mask is set; Gymnasium's vector convention)
    and `"TimeLimit.truncated"` (`truncated and not terminated`, as `DummyVecEnv`). For a finished sub-env the
    returned observation is the first of its next episode, `"terminal_observation"` holds the final one (a copy),
    and that new episode's reset info goes to `self.reset_infos[i]`, as `DummyVecEnv` does. `info_keys` limits
    which vector info keys are copied (None = all; `()` = only the SB3 keys, the cheapest).

    ## Seeding
    The wrapped env has one generator for the whole batch, so `seed(s)` stores one seed, used by the next
    `reset()` as `venv.reset(seed=s)`; it returns `[s] * num_envs`. `seed(None)` leaves the next reset unseeded.
    `set_options(o)` passes `o` to the next `reset()`; per-env options must all be equal (one batch reset).

    ## Attributes and methods
    The sub-envs are rows of one batch, not objects, so `get_attr`, `env_method` and `set_attr` act on the
    vector env itself: `get_attr(name)` returns its attribute once per requested index, `env_method(name, ...)`
    calls the method once and returns its result once per requested index, and `set_attr` sets the attribute
    on the vector env (only for all envs: a strict subset of indices raises `ValueError`). `env_is_wrapped`
    checks the vector env's single-env list (`venv.envs`, e.g. a `SyncVectorEnv`) when it has one, else False.
    """

    def __init__(self, venv: gym.vector.VectorEnv, info_keys: Sequence[str] | None = None) -> None:
        mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode not in _SUPPORTED_AUTORESET:
            raise ValueError(
                f"venv {type(venv).__name__}: autoreset_mode={mode!r} is not supported; the adapter resets "
                f"finished envs itself, so it needs NEXT_STEP or DISABLED"
            )
        self.venv = venv
        self.info_keys = None if info_keys is None else tuple(info_keys)
        self._seed: int | None = None
        self._actions: np.ndarray | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    # -- SB3 VecEnv API ----------------------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        options = self._pending_options()
        obs, info = self.venv.reset(seed=self._seed, **({"options": options} if options else {}))
        self._seed = None
        self._reset_options()
        self._reset_seeds()
        self.reset_infos = self._split_info(info, np.ones(self.num_envs, dtype=bool))
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() without a pending step_async(actions)")
        actions, self._actions = self._actions, None
        obs, rewards, terminated, truncated, info = self.venv.step(actions)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        dones = terminated | truncated
        infos = self._split_info(info, None)
        time_limit = truncated & ~terminated
        for i, info_i in enumerate(infos):
            info_i["TimeLimit.truncated"] = bool(time_limit[i])
        if dones.any():
            done_rows = np.flatnonzero(dones)
            for i in done_rows.tolist():
                infos[i]["terminal_observation"] = _row(obs, i)
            obs, reset_info = self.venv.reset(options={"reset_mask": dones})
            reset_infos = self._split_info(reset_info, dones)
            for i in done_rows.tolist():
                self.reset_infos[i] = reset_infos[i]
        return obs, np.asarray(rewards, dtype=np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seed the next `reset()` of the whole batch (one generator; see the class docstring)."""
        self._seed = None if seed is None else int(seed)
        return [self._seed] * self.num_envs

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The vector env's attribute, once per requested index (the sub-envs share it)."""
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set the attribute on the vector env; all indices only (sub-envs have no attributes of their own)."""
        self._require_all(indices, f"set_attr({attr_name!r})")
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call the vector env's method once; its result is repeated per requested index."""
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        from stable_baselines3.common.env_util import is_wrapped

        envs = getattr(self.venv, "envs", None)
        if envs is None:
            return [False for _ in self._get_indices(indices)]
        return [is_wrapped(envs[i], wrapper_class) for i in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]

    # -- helpers -----------------------------------------------------------------------------------------

    def _require_all(self, indices: VecEnvIndices, what: str) -> None:
        chosen = sorted(set(self._get_indices(indices)))
        if chosen != list(range(self.num_envs)):
            raise ValueError(f"{what}: indices {chosen} - the sub-envs share one vector env; use all indices")

    def _pending_options(self) -> dict[str, Any]:
        first = self._options[0]
        if any(o != first for o in self._options[1:]):
            raise ValueError("set_options: per-env options differ, but the vector env resets the batch with one dict")
        return dict(first)

    def _split_info(self, info: dict[str, Any], rows: np.ndarray | None) -> list[dict[str, Any]]:
        """Gymnasium's dict of batched arrays -> one dict per env (entries whose `_key` mask is set).

        `rows` (bool, optional) limits the split to those envs; the others get empty dicts."""
        out: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        keys = info.keys() if self.info_keys is None else [k for k in self.info_keys if k in info]
        for key in keys:
            if key.startswith("_"):
                continue
            mask = info.get(f"_{key}")
            value = info[key]
            if mask is None:
                mask = np.ones(self.num_envs, dtype=bool)
            if rows is not None:
                mask = mask & rows
            if isinstance(value, dict):  # nested vector info
                for i in np.flatnonzero(mask).tolist():
                    out[i][key] = _row(value, i)
            else:
                for i in np.flatnonzero(mask).tolist():
                    out[i][key] = value[i]
        return out


def _row(obs: Any, i: int) -> Any:
    """Sub-env `i`'s part of a batched observation (dict, tuple or array), copied."""
    if isinstance(obs, dict):
        return {k: _row(v, i) for k, v in obs.items()}
    if isinstance(obs, tuple):
        return tuple(_row(v, i) for v in obs)
    return np.array(obs[i], copy=True)


def make_sb3_vec_env(
    env_id: str,
    n_envs: int,
    seed: int | None = None,
    monitor: bool = True,
    info_keys: Sequence[str] | None = None,
    **kwargs: Any,
) -> VecEnv:
    """`gym.make_vec(env_id, n_envs, vectorization_mode="vector_entry_point", **kwargs)` as an SB3 `VecEnv`,
    seeded for its first reset, wrapped in `VecMonitor` (episode returns/lengths in `infos[i]["episode"]`)."""
    venv = gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="vector_entry_point", **kwargs)
    env: VecEnv = SB3VectorEnv(venv, info_keys=info_keys)
    env.seed(seed)
    return VecMonitor(env) if monitor else env
