"""The data side of an experiment (`World`): dataset, split, the sampled personas and every split user's persona,
and the engine that runs sessions over them. Its own module so that every module of the composition root can name
it without importing the root (`experiments.build` builds it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.engine import LocalEngine, PolicyRecipe, SessionEngine
from simenv.data import Dataset, Split
from simenv.protocols import PagePolicy, UserModel
from simenv.records import Persona
from simenv.runner import RunSummary


@dataclass(frozen=True)
class World:
    """The data side of an experiment: dataset, split, the sampled personas, and every split user's persona
    (`population`, what the response model is fitted on). All from the train split only."""

    dataset: Dataset
    split: Split
    personas: dict[int, Persona]
    population: dict[int, Persona] = field(default_factory=dict)
    engine: SessionEngine = field(default_factory=LocalEngine, compare=False, repr=False)

    def run_sessions(
        self,
        policy: PagePolicy,
        user_model: UserModel,
        policy_dir: Path,
        recipe: PolicyRecipe | None = None,
        **kwargs: Any,
    ) -> RunSummary:
        """`simenv.runner.run_sessions` over this world's personas, catalog and train split (keywords pass on), on
        the world's engine; the ray engine rebuilds `policy` and `user_model` on its workers from `recipe`."""
        return self.engine.run_policy(self, policy, user_model, Path(policy_dir), recipe, kwargs)
