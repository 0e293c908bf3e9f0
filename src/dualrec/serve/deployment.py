"""The models an app answers with: loaded, checked by a canary recommendation, and swapped whole on reload.

A :class:`Deployment` holds the recommenders (``lstm``, the ranker and fallback, and optionally ``dualrec``), one
:class:`~dualrec.serve.batching.MicroBatcher` each and the ranker's catalog. A request takes the current deployment
once, for its whole life (:meth:`DeploymentSlot.use`); ``POST /admin/reload`` builds a new one off the event loop,
runs its canary and then swaps the slot's reference in one step. Requests already in flight finish on the old
deployment, which closes its models when the last of them is answered.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dualrec.experiment import load_run
from dualrec.integrity import has_manifest
from dualrec.models.base import Recommender
from dualrec.serve.batching import MicroBatcher
from dualrec.serve.metrics import Metrics
from dualrec.serve.settings import ServeSettings

log = logging.getLogger("dualrec.serve")
CANARY_K = 10
CANARY_TIMEOUT_S = 30.0


class ModelLoadError(ValueError):
    """A run folder that cannot be served; one line naming the folder or file and the fix."""


class CanaryFailed(ModelLoadError):
    """The canary recommendation gave no usable ranking."""


def load_recommender(path: str | Path) -> Recommender:
    """A run folder of ``dualrec train`` (``experiment.yaml`` + ``model/``) or a saved model folder; any failure is
    one :class:`ModelLoadError` line."""
    path = Path(path)
    try:
        found = path.is_dir()
    except OSError as exc:  # e.g. a name too long for the file system
        raise ModelLoadError(f"{str(path)[:200]}: not a usable path ({exc.strerror})") from None
    if not found:
        raise ModelLoadError(f"{path}: no such run folder; train one first (`dualrec train ... --out {path}`)")
    try:
        model = load_run(path)[1] if (path / "experiment.yaml").exists() else Recommender.load(path)
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if str(path) not in message:
            message = f"{path}: cannot load the model ({type(exc).__name__}: {message}); fix: retrain it " \
                      f"(`dualrec train ... --out {path}`) or restore the folder from a copy"
        raise ModelLoadError(message) from None
    folder = path / "model" if (path / "model").is_dir() else path
    if not has_manifest(folder):
        log.warning("%s has no manifest.json: its weights are checked for NaN but not against checksums "
                    "(save it again with this version to add them)", folder)
    return model


def canary_history(catalog) -> np.ndarray:
    """A fixed, real history: the catalog's first five items."""
    return np.asarray(catalog.ids[:5], dtype=np.int64)


def check_ranking(items: np.ndarray, scores: np.ndarray, catalog) -> str:
    """A one-line verdict on a canary ranking; raises :class:`CanaryFailed` when it is empty or not finite."""
    want = max(1, min(CANARY_K, len(catalog) - len(canary_history(catalog))))
    if len(items) < want:
        raise CanaryFailed(f"the canary recommendation returned {len(items)} of {want} items (damaged or "
                           "non-finite weights?)")
    if not all(math.isfinite(float(s)) for s in scores):
        raise CanaryFailed("the canary recommendation returned non-finite scores")
    return f"ok: {len(items)} items for a {len(canary_history(catalog))}-item history"


@dataclass
class Deployment:
    """Models, their batchers and the ranker's catalog, as one unit that a reload replaces."""

    recommenders: dict[str, Recommender]
    settings: ServeSettings
    metrics: Metrics
    owned: set[str] = field(default_factory=set)   # names of the models this deployment loaded and closes
    in_flight: int = 0
    retired: bool = False
    verdict: str = ""                               # the canary's verdict when it was built

    def __post_init__(self):
        self.catalog = self.recommenders["lstm"].catalog
        self.item_info = functools.lru_cache(maxsize=None)(self.catalog.describe)  # pandas once per item
        s = self.settings
        self.batchers = {name: MicroBatcher(m, name, s.llm_max_batch if name == "dualrec" else s.max_batch,
                                            s.batch_wait_ms / 1000.0, self.metrics)
                         for name, m in self.recommenders.items()}

    def canary_now(self) -> str:
        """The canary called directly (before the deployment serves, so nothing else uses the model)."""
        history = canary_history(self.catalog)
        recs = self.recommenders["lstm"].recommend([history], CANARY_K)
        return check_ranking(recs.items[0], recs.scores[0], self.catalog)

    async def canary(self) -> str:
        """The canary through the ranker's batcher, as a request would go (``/healthz``)."""
        ranked = await asyncio.wait_for(self.batchers["lstm"].submit(canary_history(self.catalog), CANARY_K),
                                        CANARY_TIMEOUT_S)
        return check_ranking(ranked.items, ranked.scores, self.catalog)

    async def close(self) -> None:
        for batcher in self.batchers.values():
            await batcher.close()
        self.close_models()

    def close_models(self) -> None:
        for name in self.owned:
            self.recommenders[name].close()   # e.g. DUALRec frees its LLM


def build_deployment(settings: ServeSettings, metrics: Metrics, given: dict[str, Recommender] | None = None,
                     paths: dict[str, str | None] | None = None) -> Deployment:
    """Load the models (``given`` ones are used as they are and never closed), run the canary, and return the
    deployment. ``paths`` overrides the settings' run folders (a reload's body)."""
    paths = {"lstm": settings.model, "dualrec": settings.dualrec, **{k: v for k, v in (paths or {}).items() if v}}
    recommenders, owned = dict(given or {}), set()
    for name in ("dualrec", "lstm"):
        if name not in recommenders and paths.get(name):
            recommenders[name], owned = load_recommender(paths[name]), owned | {name}
    if "lstm" not in recommenders:
        stage1 = getattr(recommenders.get("dualrec"), "stage1", None)
        if stage1 is None:
            raise ModelLoadError("the service needs --model (a ranker run folder) or --dualrec (whose Stage 1 is "
                                 "used)")
        recommenders["lstm"] = stage1   # DUALRec's own Stage 1 ranks and falls back; DUALRec closes it
    ordered = {name: recommenders[name] for name in ("lstm", "dualrec") if name in recommenders}
    deployment = Deployment(ordered, settings, metrics, owned)
    try:
        deployment.verdict = deployment.canary_now()
    except Exception as exc:
        deployment.close_models()
        if isinstance(exc, CanaryFailed):
            raise
        raise CanaryFailed(f"the canary recommendation raised {type(exc).__name__}: {exc}") from None
    log.info("models %s loaded; canary %s", sorted(ordered), deployment.verdict)
    return deployment


class DeploymentSlot:
    """The current deployment; requests hold theirs until answered, a swap retires the old one."""

    def __init__(self, deployment: Deployment):
        self.current = deployment

    @asynccontextmanager
    async def use(self):
        deployment = self.current
        deployment.in_flight += 1
        try:
            yield deployment
        finally:
            deployment.in_flight -= 1
            if deployment.retired and deployment.in_flight == 0:
                await deployment.close()

    async def swap(self, new: Deployment) -> None:
        old, self.current = self.current, new
        old.owned -= {name for name, m in old.recommenders.items() if m in new.recommenders.values()}
        old.retired = True
        if old.in_flight == 0:
            await old.close()

    async def close(self) -> None:
        await self.current.close()
