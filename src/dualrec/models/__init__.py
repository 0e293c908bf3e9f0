"""Recommenders: the interface every model implements (:mod:`dualrec.models.base`) and the registry of models by
name (:mod:`dualrec.models.registry`); each model lives in its own module."""

from __future__ import annotations

from dualrec.models.base import ModelConfig, Recommendations, Recommender, ScoringRecommender
from dualrec.models.registry import MODELS, build_model, get_model_class

__all__ = ["MODELS", "ModelConfig", "Recommendations", "Recommender", "ScoringRecommender", "build_model",
           "get_model_class"]
