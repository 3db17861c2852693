"""Engines that run a command's sessions: `local` (this process) and `ray` (sharded over a Ray cluster).

Both write the same run directory: the Ray engine's shards run the runner's chunks with their global episode
numbers and seeds and are merged in chunk order (see `shards`). Commands pass a `PolicyRecipe` through
`World.run_sessions`; Ray is imported only when the ray engine is used (`pip install 'simrec[ray]'`).
"""

from __future__ import annotations

from experiments.config import ExperimentConfig
from experiments.engine.base import PolicyRecipe, SessionEngine, SessionWorld, WorkerContext
from experiments.engine.local import LocalEngine
from experiments.engine.ray_engine import RayEngine


def make_engine(config: ExperimentConfig) -> SessionEngine:
    """The engine `config.engine` names (the ray engine connects to its cluster when first used)."""
    return RayEngine(config) if config.engine == "ray" else LocalEngine()


__all__ = ["LocalEngine", "PolicyRecipe", "RayEngine", "SessionEngine", "SessionWorld", "WorkerContext", "make_engine"]
