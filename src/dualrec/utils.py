"""Small shared helpers: seeding, device choice, timing."""

from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (if imported or importable) torch, so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency, kept defensive for slim installs
        return
    torch.manual_seed(seed)


def pick_device(requested: str | None = None) -> str:
    """``requested`` if given, else CUDA when present, else CPU."""
    if requested and requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
