"""The candidate featurizer of a training run and of every evaluation or export of its policy (one definition, so
the observation a policy is scored with is the one it was trained on)."""

from __future__ import annotations

from experiments.build import World, train_recommender
from experiments.config import ExperimentConfig
from recommenders.candidate_features import TrainCandidateFeatures, featurizer_for
from simenv.protocols import Recommender


def candidate_featurizer(config: ExperimentConfig, world: World, base: Recommender | None) -> TrainCandidateFeatures:
    """The train-only candidate featurizer (`recommenders.candidate_features`) over `world`'s train split, the
    base recommender and the `[rl] rank_sources` recommenders (trained once, then cached)."""
    ds = world.dataset
    others = {name: train_recommender(config, world, name)[0] for name in config.rl.rank_sources}
    return featurizer_for(world.split.train, ds.n_users, ds.n_items, ds.genre_matrix, base, config.run.seed, others)
