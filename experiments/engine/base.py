"""What every engine shares: the recipe a worker rebuilds a policy's parts from, and the engine protocol.

A recipe names functions (module-level, so Ray pickles them by reference) and carries the experiment config,
which holds no secrets: API keys stay in the environment. Workers never receive live models or clients.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from experiments.config import ExperimentConfig
from simenv.data import Dataset
from simenv.llm import LLM
from simenv.protocols import PagePolicy, UserModel
from simenv.records import Persona
from simenv.runner import RunSummary


class SessionWorld(Protocol):
    """The data a run needs: the personas to simulate, the catalog and the train split."""

    personas: dict[int, Persona]
    dataset: Dataset

    @property
    def split(self) -> Any: ...


class WorkerContext(Protocol):
    """What a worker builds once per config (in practice `experiments.build.UserModelFactory`)."""

    config: ExperimentConfig
    world: Any


Setup = Callable[[ExperimentConfig, int | None], WorkerContext]
Parts = Callable[[Any, LLM | None, str], tuple[PagePolicy, UserModel]]


@dataclass(frozen=True)
class PolicyRecipe:
    """How a worker rebuilds one policy's recommender and user model from caches, never by retraining per shard.

    `setup(config, n_personas)` builds the worker's world and user-model factory (once per worker and config);
    `parts(context, llm, policy)` returns the policy's recommender (from the model cache) and a fresh user model;
    `make_llm(config)` builds the LLM (keys from the worker's environment), None when the run needs none;
    `call_log` logs the shard's LLM calls into its `llm_calls` (as `simrec compare` does per policy)."""

    config: ExperimentConfig
    policy: str
    setup: Setup
    parts: Parts
    make_llm: Callable[[ExperimentConfig], LLM] | None = None
    n_personas: int | None = None
    call_log: bool = True

    def key(self) -> str:
        """Identifies the worker context these parts need: same key, same world and factory."""
        return context_key(self.setup, self.config, self.n_personas)


def context_key(setup: Callable[..., Any], config: ExperimentConfig, n_personas: int | None) -> str:
    """What a worker's context depends on: the setup function, the persona count and the config without the
    settings that only say where and how a run executes (run name and directory, engine, [ray], [processes])."""
    where = {"run": {"name", "out_dir"}, "engine": True, "ray": True, "processes": True}
    dumped = config.model_dump(mode="json", exclude=where)
    return f"{setup.__module__}.{setup.__qualname__}|{n_personas}|{json.dumps(dumped, sort_keys=True)}"


class SessionEngine(Protocol):
    """Runs one policy's sessions into `policy_dir` (the runner's layout) and returns the runner's summary."""

    name: str

    def run_policy(
        self,
        world: SessionWorld,
        policy: PagePolicy,
        user_model: UserModel,
        policy_dir: Path,
        recipe: PolicyRecipe | None,
        run: Mapping[str, Any],
    ) -> RunSummary: ...
