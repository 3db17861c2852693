"""Engines that run a command's sessions: `local` (this process), `processes` (sharded over worker processes of
this machine) and `ray` (sharded over a Ray cluster).

All write the same run directory: a sharded engine's shards run the runner's chunks with their global episode
numbers and seeds and are merged in chunk order (see `shards`). Commands pass a `PolicyRecipe` through
`World.run_sessions`; Ray is imported only when the ray engine is used (`pip install 'simrec[ray]'`).
"""

from __future__ import annotations

import os

from experiments.config import ExperimentConfig
from experiments.engine.base import PolicyRecipe, SessionEngine, SessionWorld, WorkerContext
from experiments.engine.local import LocalEngine
from experiments.engine.processes import ProcessEngine
from experiments.engine.ray_engine import RayEngine

AUTO_PROCESSES_SLOTS = 32  # engine "auto": from this many LLM requests in flight one process cannot feed them


def make_engine(config: ExperimentConfig) -> SessionEngine:
    """The engine `config.engine` names (the ray engine connects to its cluster, the processes engine starts its
    processes, when first used); "auto" is local here (`simrec compare` resolves it first, with its requests in
    flight: `engine_name`)."""
    name = engine_name(config)
    if name == "ray":
        return RayEngine(config)
    return ProcessEngine(config) if name == "processes" else LocalEngine()


def engine_name(config: ExperimentConfig, slots: int | None = None, cpus: int | None = None) -> str:
    """The engine a command runs on: `config.engine`, or for "auto" the processes engine when the command keeps
    `slots` >= `AUTO_PROCESSES_SLOTS` LLM requests in flight (None: it pipelines none) and the machine (`cpus`,
    default os.cpu_count) has another core to give, else local. One Python process spends ~2.5 ms of CPU per
    call, so 128 requests behind a 250 ms endpoint need more than one core; the processes engine writes the same
    files (docs/LLM_ENDPOINTS.md)."""
    if config.engine != "auto":
        return config.engine
    if cpus is None:
        cpus = os.cpu_count() or 1
    return "processes" if slots is not None and slots >= AUTO_PROCESSES_SLOTS and cpus >= 2 else "local"


__all__ = [
    "AUTO_PROCESSES_SLOTS",
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
