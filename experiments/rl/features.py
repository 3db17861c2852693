"""The candidate featurizer of a training run and of every evaluation or export of its policy (one definition, so
the observation a policy is scored with is the one it was trained on)."""

from __future__ import annotations

from experiments.build import World
from experiments.config import ExperimentConfig
from recommenders.candidate_features import featurizer_for
from simenv.protocols import CandidateFeaturizer, Recommender


def candidate_featurizer(config: ExperimentConfig, world: World, base: Recommender | None) -> CandidateFeaturizer:
    """The train-only candidate featurizer (`recommenders.candidate_features`) over `world`'s train split and the
    base recommender."""
    ds = world.dataset
    return featurizer_for(world.split.train, ds.n_users, ds.n_items, ds.genre_matrix, base, config.run.seed)
