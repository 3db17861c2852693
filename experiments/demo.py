"""`simrec demo` (what `make demo` runs): the recommender comparison, then the simulator's validity check.

1. `compare` with experiments/configs/demo.toml: personas on the embedded model against five recommenders.
2. `validate` on the same dataset, split and seed (every eligible persona, the mock LLM: validity scores the
   decisions, which the fitted profile makes without the LLM), ending with the headline: rank agreement with
   the real held-out data on Pop + CF and over all policies, and significant-pair agreement.
"""

from __future__ import annotations

from pathlib import Path

from experiments.compare import run_compare
from experiments.config import ExperimentConfig
from experiments.validate import run_validate


def validity_config(config: ExperimentConfig) -> ExperimentConfig:
    """The demo's validation run: same data, users profile and seed; mock LLM, hashing embedder, own run dir."""
    return config.model_copy(
        update={
            "run": config.run.model_copy(update={"name": f"{config.run.name}-validity"}),
            "llm": config.llm.model_copy(update={"backend": "mock"}),
            "users": config.users.model_copy(update={"embedder": "hashing"}),
        }
    )


def run_demo(config: ExperimentConfig) -> tuple[Path, Path]:
    """Compare, then validate; returns both run directories."""
    compare_dir = run_compare(config)
    validity_dir = run_validate(validity_config(config))
    return compare_dir, validity_dir
