"""DUALRec as a ranker over Stage-1 candidates: Stage 1 proposes K items, language-model signals score them, and a
weighted sum of per-user z-scores orders them; the weights are chosen on the validation users, then frozen.

Beyond the paper (which generates titles and grounds them): every candidate is a real catalog item, every user gets
K scored candidates (coverage 1 by construction), and the fusion cannot hide a loss, because the weight grid holds
pure Stage 1 (weight 1 on ``stage1``, 0 elsewhere): if no language-model signal helps on validation, the model
ranks exactly as Stage 1 and its record says so.

Signals (``signals``), each ``[N, K]`` over the candidates in Stage-1 order:

* ``llm``: the verbalizer ranker's label logits (:mod:`dualrec.llm.ranker`; zero-shot, or LoRA-tuned with
  ``dualrec finetune --task rank``);
* ``sbert``: the mean Sentence-BERT cosine of a candidate to the user's five latest titles (the paper's Stage-3
  signal, :meth:`dualrec.llm.rerank.SBERTReranker.history_similarity`).

Fused score = sum over ``stage1`` and the signals of ``w * z(signal)``, ``z`` standardising each user's K values
(mean 0, standard deviation 1; a constant row is all 0). Weights lie on a simplex grid of step ``grid_step``; the
point with the best validation ``select_metric`` wins, ties going to the larger Stage-1 weight. Ranks past K (for
k > K) are Stage 1's own, after the fused K.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from tqdm.auto import tqdm

from dualrec.evaluation.metrics import first_hit_ranks, ranking_metrics
from dualrec.evaluation.protocols import EvalCases
from dualrec.llm.backends import HFBackend
from dualrec.llm.cache import ResponseCache
from dualrec.llm.hf import cache_root
from dualrec.llm.modes import RankMode
from dualrec.llm.rerank import SBERTReranker
from dualrec.models.base import ModelConfig, Recommendations, Recommender, load_on_catalog

SIGNALS = ("llm", "sbert")
LOADING = {"llm": "the language model (the first use converts the embedded GGUF: about a minute)",
           "sbert": "SBERT and the catalog's title embeddings"}


@dataclass
class FusionConfig(ModelConfig):
    stage1: str = ""                  # folder of a saved Stage-1 model (`dualrec train`)
    n_candidates: int = 20            # K: Stage-1 candidates the signals score
    signals: list[str] = field(default_factory=lambda: ["llm"])
    weights: dict | None = None       # fixed weights {"stage1": a, "llm": b, ...}; None: chosen on validation
    grid_step: float = 0.1
    select_metric: str = "NDCG@10"
    max_valid_users: int | None = None   # validation users the weights are chosen on (None: all)
    backend: dict = field(default_factory=lambda: {"model_name": "embedded", "dtype": "auto", "device": "auto"})
    adapter: str | None = None        # peft adapter of the verbalizer ranker (`dualrec finetune --task rank`)
    n_recent: int = 5                # titles of the history in the ranker's prompt
    batch_size: int = 8               # prompts per LLM pass
    cache: bool = True                # on-disk cache of the ranker's label logits per prompt
    progress: bool = True


class CandidateSignal(Protocol):
    """A score for each of each user's candidates: ``[len(histories), K]``, higher is better. ``load`` readies
    whatever the signal needs (a model, embeddings) before the first batch, so timings start clean."""

    def scores(self, histories: Sequence[np.ndarray], candidates: np.ndarray) -> np.ndarray: ...

    def load(self) -> None: ...


class LLMRankSignal:
    """The verbalizer ranker (DUALRec's ``rank`` mode) on a transformers model, loaded on first use."""

    def __init__(self, catalog, config: FusionConfig):
        spec = {k: v for k, v in config.backend.items() if k in ("model_name", "dtype", "device", "n_threads")}
        self.backend = HFBackend(adapter=config.adapter, **spec)     # nothing is loaded until first use
        cache = ResponseCache(cache_root() / "ranker-logits.sqlite") if config.cache else None
        self.mode = RankMode(self.backend, catalog, config.n_candidates, config.n_recent, config.batch_size,
                             config.seed, cache)

    def identity(self) -> dict:
        """Which model scores (name, adapter digest, resolved dtype): known without loading it."""
        return self.backend.identity()

    def load(self) -> None:
        """Load the model now (the first use may convert the embedded GGUF), not inside the first batch."""
        self.mode.ranker

    def scores(self, histories, candidates):
        return self.mode.scores(histories, candidates)


class SBERTSignal:
    def __init__(self, catalog):
        self.catalog, self.reranker = catalog, SBERTReranker()

    def scores(self, histories, candidates):
        return self.reranker.history_similarity(self.catalog, histories, candidates)

    def load(self) -> None:
        """Embed the catalog now (cached on disk after the first time), not inside the first batch."""
        self.reranker.catalog_embeddings(self.catalog)


def zscore(x: np.ndarray) -> np.ndarray:
    """Per-row standardisation (a constant row becomes 0)."""
    x = np.asarray(x, np.float64)
    sd = x.std(axis=1, keepdims=True)
    return np.where(sd > 0, (x - x.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0), 0.0)


def simplex_grid(names: Sequence[str], step: float) -> list[dict[str, float]]:
    """Every weight vector over ``names`` with entries in multiples of ``step`` summing to 1."""
    n = round(1.0 / step)
    if abs(n * step - 1.0) > 1e-9:
        raise ValueError(f"grid_step must divide 1, got {step}")
    points = [p for p in itertools.product(range(n + 1), repeat=len(names)) if sum(p) == n]
    return [{name: round(v * step, 10) for name, v in zip(names, p)} for p in points]


def fuse(signals: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """``sum_s w_s * z(signal_s)`` over the signals with a weight."""
    first = next(iter(signals.values()))
    out = np.zeros(first.shape, np.float64)
    for name, w in weights.items():
        if w:
            out += w * zscore(signals[name])
    return out


def order_by(candidates: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """Candidates sorted by fused score, best first; ties keep Stage-1 order."""
    return np.take_along_axis(candidates, np.argsort(-fused, axis=1, kind="stable"), axis=1)


class FusionRanker(Recommender):
    name = "fusion"
    config_class = FusionConfig

    def __init__(self, config: FusionConfig | dict | None = None):
        super().__init__(config)
        c: FusionConfig = self.config
        unknown = set(c.signals) - set(SIGNALS)
        if unknown:
            raise ValueError(f"fusion: unknown signal(s) {sorted(unknown)}; known: {list(SIGNALS)}")
        if c.weights is not None and set(c.weights) - {"stage1", *c.signals}:
            raise ValueError(f"fusion: weights {sorted(c.weights)} name a signal not in {['stage1', *c.signals]}")
        self.stage1: Recommender | None = None
        self.selection: dict = {}
        self._signals: dict[str, CandidateSignal] = {}

    # ---- parts -------------------------------------------------------------------------------------------------

    def signal(self, name: str) -> CandidateSignal:
        if name not in self._signals:
            self._signals[name] = LLMRankSignal(self.catalog, self.config) if name == "llm" else \
                SBERTSignal(self.catalog)
        return self._signals[name]

    def set_signal(self, name: str, signal: CandidateSignal) -> None:
        """Inject a ready signal (tests, a caller that already holds the model)."""
        self._signals[name] = signal

    def load_signals(self) -> None:
        """Load every signal's model before users are scored, so per-user progress and timings start clean."""
        for name in self.config.signals:
            if self.config.progress:
                tqdm.write(f"fusion: loading {LOADING[name]}")
            self.signal(name).load()

    def llm_identity(self) -> dict | None:
        """Which LLM scored the candidates, in which precision (None when no LLM signal is used)."""
        return self.signal("llm").identity() if "llm" in self.config.signals else None

    def candidate_signals(self, histories: Sequence[np.ndarray], k: int = 0
                          ) -> tuple[Recommendations, np.ndarray, dict[str, np.ndarray], dict[str, float]]:
        """Stage 1's ranking (at least K deep), its top-K candidates ``[N, K]`` and every signal over them."""
        c: FusionConfig = self.config
        timings = {}
        t = time.perf_counter()
        s1 = self.stage1.recommend(histories, max(k, c.n_candidates))
        short = [u for u, r in enumerate(s1.items) if len(r) < c.n_candidates]
        if short:
            raise ValueError(f"fusion: Stage 1 ranked fewer than {c.n_candidates} items for {len(short)} user(s) "
                             f"(first: index {short[0]}); lower n_candidates")
        cands = np.stack([r[:c.n_candidates] for r in s1.items]) if len(histories) else \
            np.zeros((0, c.n_candidates), np.int64)
        signals = {"stage1": np.stack([s[:c.n_candidates] for s in s1.scores]) if len(histories) else
                   np.zeros(cands.shape, np.float32)}
        timings["lstm"] = time.perf_counter() - t
        for name in c.signals:
            t = time.perf_counter()
            signals[name] = self.signal(name).scores(histories, cands)
            timings[name] = time.perf_counter() - t
        return s1, cands, signals, timings

    # ---- fitting: Stage 1 is loaded, the weights are chosen on validation -------------------------------------

    def _fit(self, train, valid: EvalCases | None, checkpoint_dir: Path | None) -> None:
        c: FusionConfig = self.config
        if not c.stage1 or not Path(c.stage1).is_dir():
            raise FileNotFoundError(f"fusion: stage1 must be a saved model folder, got {c.stage1!r}")
        self.stage1 = load_on_catalog(c.stage1, self.catalog, "fusion: stage-1 model")
        if c.weights is not None:
            self.selection = {"weights": dict(c.weights), "chosen_on": "fixed by the config"}
            return
        if valid is None or not len(valid):
            raise ValueError("fusion: weights=None needs validation cases to choose them on")
        cases = valid.head(c.max_valid_users) if c.max_valid_users else valid
        self.load_signals()
        self.selection = self.select_weights(cases)
        c.weights = self.selection["weights"]

    def select_weights(self, cases: EvalCases) -> dict:
        """Score every grid point on ``cases``; the best ``select_metric`` wins (ties: larger Stage-1 weight)."""
        c: FusionConfig = self.config
        parts = []
        step = max(c.batch_size * 4, 1)
        with tqdm(total=len(cases), desc="fusion: score validation users", unit="user", disable=not c.progress,
                  leave=False) as bar:
            for lo in range(0, len(cases), step):
                parts.append(self.candidate_signals(cases.histories[lo:lo + step])[1:3])
                bar.update(len(cases.histories[lo:lo + step]))
        cands = np.concatenate([p[0] for p in parts])
        signals = {name: np.concatenate([p[1][name] for p in parts]) for name in parts[0][1]}
        ks = sorted({1, 5, 10, c.n_candidates, int(c.select_metric.partition("@")[2])})
        grid = []
        for w in simplex_grid(["stage1", *c.signals], c.grid_step):
            ranks = first_hit_ranks(list(order_by(cands, fuse(signals, w))), cases.targets, c.n_candidates)
            grid.append({"weights": w, "metrics": ranking_metrics(ranks, ks)})
        best = max(grid, key=lambda g: (round(g["metrics"][c.select_metric], 12), g["weights"]["stage1"]))
        return {"weights": best["weights"], "chosen_on": f"{len(cases)} validation users, best {c.select_metric}",
                "valid_users": len(cases), "grid": grid}

    # ---- recommending ----------------------------------------------------------------------------------------

    def recommend(self, histories: Sequence[np.ndarray], k: int = 10) -> Recommendations:
        c: FusionConfig = self.config
        histories = [np.asarray(h, np.int64) for h in histories]
        s1, cands, signals, timings = self.candidate_signals(histories, k)
        t = time.perf_counter()
        fused = fuse(signals, c.weights)
        order = np.argsort(-fused, axis=1, kind="stable")
        items, scores = [], []
        for u in range(len(histories)):
            top = cands[u][order[u]]
            rest = s1.items[u][c.n_candidates:]
            items.append(np.concatenate([top, rest])[:k])
            tail = fused[u].min() - 1.0 - np.arange(len(rest))
            scores.append(np.concatenate([fused[u][order[u]], tail]).astype(np.float32)[:k])
        timings["fuse"] = time.perf_counter() - t
        return Recommendations(items, scores, [{"answered": True, "fallback": False} for _ in histories], timings)

    # ---- persistence -------------------------------------------------------------------------------------------

    def _save(self, path: Path) -> None:
        self.stage1.save(path / "stage1")
        (path / "selection.json").write_text(json.dumps(self.selection, indent=1))
        if self.config.adapter and Path(self.config.adapter).resolve() != (path / "adapter").resolve():
            shutil.copytree(self.config.adapter, path / "adapter", dirs_exist_ok=True)

    def _load(self, path: Path) -> None:
        self.stage1 = Recommender.load(path / "stage1")
        if (path / "selection.json").exists():
            self.selection = json.loads((path / "selection.json").read_text())
        if (path / "adapter").is_dir():
            self.config.adapter = str(path / "adapter")
