"""The model registry: each model's import path by name, so that ``dualrec.models`` stays cheap to import (a
model's heavy dependencies load only when it is used) and the base class can load any saved model by name."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dualrec.models.base import Recommender

# name -> "module:Class"; the single list `train`, `evaluate` and `benchmark` choose from.
MODELS: dict[str, str] = {
    "mostpop": "dualrec.models.mostpop:MostPop",
    "lstm": "dualrec.models.lstm:MultimodalLSTM",
    "dualrec": "dualrec.models.dualrec:DualRec",
    "duip": "dualrec.models.duip:DUIP",  # LSTM state as a soft prompt for a causal LM
    "fusion": "dualrec.models.fusion:FusionRanker",  # Stage-1 candidates re-scored by LLM signals, fused
    "mmr": "dualrec.models.mmr:MMRReranker",  # any saved model's list re-ordered for diversity
    # the paper-table baselines
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
