"""Recommenders. Every model lives in its own module and registers its import path here, so importing
``dualrec.models`` stays cheap: a model's heavy dependencies load only when it is used."""

from __future__ import annotations

import importlib

from dualrec.models.base import ModelConfig, Recommendations, Recommender, ScoringRecommender

# name -> "module:Class"; the single list `train`, `evaluate` and `benchmark` choose from.
MODELS: dict[str, str] = {
    "mostpop": "dualrec.models.mostpop:MostPop",
    "lstm": "dualrec.models.lstm:MultimodalLSTM",
    "dualrec": "dualrec.models.dualrec:DualRec",
    "duip": "dualrec.models.duip:DUIP",  # LSTM state as a soft prompt for a causal LM
    "fusion": "dualrec.models.fusion:FusionRanker",  # Stage-1 candidates re-scored by LLM signals, fused
    "mmr": "dualrec.models.mmr:MMRReranker",  # any saved model's list re-ordered for diversity
    # the paper-table baselines (issue 4)
    "sknn": "dualrec.models.sknn:SKNN",
    "fpmc": "dualrec.models.fpmc:FPMC",
    "gru4rec": "dualrec.models.gru4rec:GRU4Rec",
    "narm": "dualrec.models.narm:NARM",
    "stamp": "dualrec.models.stamp:STAMP",
    "sasrec": "dualrec.models.sasrec:SASRec",
    "unisrec": "dualrec.models.unisrec:UniSRec",
    "gcegnn": "dualrec.models.gcegnn:GCEGNN",
    "hide": "dualrec.models.hide:HIDE",
    "mcprn": "dualrec.models.mcprn:MCPRN",
    "attenmixer": "dualrec.models.attenmixer:AttenMixer",
    "slim": "dualrec.models.slim:SLIM",
    "nir": "dualrec.models.nir:NIR",
}


def get_model_class(name: str) -> type[Recommender]:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    module, cls = MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_model(name: str, config: dict | None = None) -> Recommender:
    return get_model_class(name)(config)


__all__ = ["MODELS", "ModelConfig", "Recommendations", "Recommender", "ScoringRecommender", "build_model",
           "get_model_class"]
