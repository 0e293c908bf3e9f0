"""Integrity of a saved model folder: a manifest of every file's SHA-256, written when the folder is saved and checked
when it is loaded, and a refusal of weights that hold non-finite numbers.

A damaged weight file can load without complaint (safetensors checks its header, not its data), and a model whose
scores are NaN ranks nothing: the service would answer 200 with empty lists. Checking the hashes and the numbers at
load turns that into one error that names the file and says how to fix it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open

MANIFEST = "manifest.json"
FIX = "fix: retrain it (`dualrec train ... --out RUN`) or restore the folder from a copy"


class ModelIntegrityError(ValueError):
    """A saved model folder is damaged or incomplete; the message names the file and the fix."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str | Path) -> Path:
    """Record the SHA-256 of every file under ``folder`` (nested model folders included) in ``manifest.json``."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / MANIFEST)
    digests = {p.relative_to(folder).as_posix(): file_sha256(p) for p in files}
    (folder / MANIFEST).write_text(json.dumps({"sha256": digests}, indent=1))
    return folder / MANIFEST


def has_manifest(folder: str | Path) -> bool:
    return (Path(folder) / MANIFEST).exists()


def verify_folder(folder: str | Path) -> None:
    """Raise :class:`ModelIntegrityError` when a file differs from the manifest (where there is one) or a weight
    file at the top of ``folder`` cannot be read or holds a NaN or an infinity."""
    folder = Path(folder)
    if has_manifest(folder):
        _check_digests(folder)
    for weights in sorted(folder.glob("*.safetensors")):
        _check_finite(weights)


def _check_digests(folder: Path) -> None:
    try:
        digests = json.loads((folder / MANIFEST).read_text())["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelIntegrityError(f"{folder / MANIFEST}: not a manifest ({exc}); {FIX}") from None
    for name, expected in digests.items():
        path = folder / name
        if not path.is_file():
            raise ModelIntegrityError(f"{path}: missing (listed in {MANIFEST}); {FIX}")
        if file_sha256(path) != expected:
            raise ModelIntegrityError(f"{path}: SHA-256 differs from {MANIFEST} (the file changed after it was "
                                      f"saved); {FIX}")


def _check_finite(path: Path) -> None:
    try:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                tensor = f.get_tensor(name)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise ModelIntegrityError(f"{path}: tensor {name!r} holds NaN or infinite values (a diverged "
                                              f"fit, or damaged data); {FIX}")
    except ModelIntegrityError:
        raise
    except Exception as exc:  # safetensors raises its own error types for a damaged header or truncated data
        raise ModelIntegrityError(f"{path}: not a readable safetensors file ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); {FIX}") from None
