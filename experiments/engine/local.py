"""The local engine: every session in this process (what `--engine local`, the default, runs)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.engine.base import PolicyRecipe, SessionWorld
from simenv.protocols import PagePolicy, UserModel
from simenv.runner import RunSummary, run_sessions


class LocalEngine:
    """`simenv.runner.run_sessions` over the world's personas; a recipe is not needed and is ignored."""

    name = "local"

    def run_policy(
        self,
        world: SessionWorld,
        policy: PagePolicy,
        user_model: UserModel,
        policy_dir: Path,
        recipe: PolicyRecipe | None,
        run: Mapping[str, Any],
    ) -> RunSummary:
        return run_sessions(policy, user_model, world.personas, world.dataset, world.split.train, policy_dir, **run)
