"""Datasets: loaders for MovieLens (packages, official files, RecBole atomic files), synthetic data, splits."""

from simenv.data.dataset import DataError, Dataset, Split
from simenv.data.loaders import load_dataset
from simenv.data.splits import agent4rec_split, temporal_split
from simenv.data.synthetic import make_synthetic

__all__ = ["Dataset", "DataError", "Split", "agent4rec_split", "load_dataset", "make_synthetic", "temporal_split"]
