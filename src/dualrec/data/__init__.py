"""Data: MovieLens and generic readers, the item catalog, per-user sequences."""

from dualrec.data.catalog import Catalog, normalise_title
from dualrec.data.dataset import Dataset, Sequences
from dualrec.data.movielens import load, read_interactions, read_ml100k, read_ml1m
from dualrec.data.report import DataError, LoadReport

__all__ = ["Catalog", "Dataset", "Sequences", "DataError", "LoadReport", "load", "normalise_title",
           "read_interactions", "read_ml100k", "read_ml1m"]
