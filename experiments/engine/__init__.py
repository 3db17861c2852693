"""Engines that run a command's sessions: `local` (this process), `processes` (sharded over worker processes of
this machine) and `ray` (sharded over a Ray cluster).

All write the same run directory: a sharded engine's shards run the runner's chunks with their global episode
numbers and seeds and are merged in chunk order (see `shards`). Commands pass a `PolicyRecipe` through
`World.run_sessions`; Ray is imported only when the ray engine is used (`pip install 'simrec[ray]'`).
"""

from __future__ import annotations

from experiments.config import ExperimentConfig
from experiments.engine.base import PolicyRecipe, SessionEngine, SessionWorld, WorkerContext
from experiments.engine.local import LocalEngine
from experiments.engine.processes import ProcessEngine
from experiments.engine.ray_engine import RayEngine


def make_engine(config: ExperimentConfig) -> SessionEngine:
    """The engine `config.engine` names (the ray engine connects to its cluster, the processes engine starts its
    processes, when first used); "auto" is local here (`simrec compare` resolves it first: `compare_engine`)."""
    name = engine_name(config)
    if name == "ray":
        return RayEngine(config)
    return ProcessEngine(config) if name == "processes" else LocalEngine()


def engine_name(config: ExperimentConfig) -> str:
    """The engine a command runs on: `config.engine`, with "auto" meaning local (compare resolves it itself)."""
    return "local" if config.engine == "auto" else config.engine


__all__ = [
    "LocalEngine",
    "PolicyRecipe",
    "ProcessEngine",
    "RayEngine",
    "SessionEngine",
    "SessionWorld",
    "WorkerContext",
    "engine_name",
    "make_engine",
]
