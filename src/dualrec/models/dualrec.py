"""DUALRec (Li & Grasman 2025) as one more Recommender: Stage 1 ranks, an LLM recommends, Sentence-BERT re-ranks.

Per batch of histories:

1. **lstm**: the Stage-1 model (any Recommender; by default the multimodal LSTM, fitted here or loaded from a
   saved folder) ranks the catalog; its top-1 (never a history item) is the hint.
2. **prompt**: the 5 most recent movies with year and genres + the hint + the paper's instruction
   (:mod:`dualrec.llm.prompts`, templates in ``dualrec/prompts/``).
3. **llm**: one backend call for the whole batch (:mod:`dualrec.llm.backends`; cached on disk).
4. **parse**: titles extracted and grounded through the Catalog (:mod:`dualrec.llm.parse`); titles that ground to
   nothing are counted (``extras["ungrounded"]``, the hallucination rate) and never ranked.
5. **rerank**: grounded items sorted by SBERT cosine to the hint's title (:mod:`dualrec.llm.rerank`).

``mode`` picks what the LLM does in steps 3-4, one class of :mod:`dualrec.llm.modes` each:

* ``generate`` (the paper): free generation of ``n_recommend`` titles;
* ``constrained`` (beyond the paper): beam search restricted to catalog titles, ``k`` distinct real items;
* ``score`` (beyond the paper): the LLM re-orders Stage 1's top ``n_candidates`` by ``log p(title | prompt)``;
* ``rank`` (beyond the paper): the verbalizer ranker orders Stage 1's top ``n_candidates`` by its letters' logits
  (the fusion model, :mod:`dualrec.models.fusion`, weighs the same scores against Stage 1's).

The logit modes (all but ``generate``) need a transformers backend (``backend.kind: hf``); another kind is refused
when the model is built, never swapped.

Unanswered users: when the LLM fails for a user (server down, timeout, 429 after retries, empty or garbage output
that grounds to no new item), ``extras["answered"]`` is False and the batch goes on. With ``fallback="none"`` (the
default, what an "LLM" row measures) that user's list is empty: a miss. ``fallback="stage1"`` gives them the Stage-1
ranking instead (``extras["fallback"] = True``), which the service wants and a results row must name in its label.

Design choices where the paper is silent: the final list is the LLM's grounded items only (so HR@k stops growing
after ``n_recommend``, the paper's open question 1); ``fill_with_stage1=True`` appends the Stage-1 ranking after
them. For the LLM-alone baseline (``hint=False``) the re-ranking reference is the user's most recent movie.
``leaky_rerank`` reproduces the authors' code (the reference list also holds the held-out targets); it needs the
targets, which the evaluator never gives a model, so it is switched on by :meth:`DualRec.leak_targets` and only the
results script does that, once, in a row labelled as leaky.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dualrec.llm.backends import LLMBackend, SamplingParams, make_backend
from dualrec.llm.cache import ResponseCache
from dualrec.llm.hf import cache_root
from dualrec.llm.modes import LOGIT_MODES, MODES, AnswerMode, make_mode
from dualrec.llm.prompts import PromptBuilder
from dualrec.llm.rerank import SBERTReranker
from dualrec.models.base import ModelConfig, Recommendations, Recommender, load_on_catalog
from dualrec.models.registry import build_model

FALLBACKS = ("none", "stage1")


@dataclass
class DualRecConfig(ModelConfig):
    stage1: str = "lstm"               # a model name (fitted with DUALRec) or a folder saved by `dualrec train`
    stage1_options: dict = field(default_factory=dict)   # options of a stage-1 model fitted here
    mode: str = "generate"             # generate | constrained | score | rank (llm.modes)
    hint: bool = True                  # put Stage 1's top-1 in the prompt; False = LLM alone (zero-shot)
    backend: dict = field(default_factory=lambda: {"kind": "llama_cpp"})  # see llm.backends.make_backend
    adapter: str | None = None         # peft LoRA adapter folder (`dualrec finetune`); needs an hf backend
    n_recommend: int = 3               # titles asked for ("recommend 3 more"), as the paper
    max_new_tokens: int = 64
    stop_after_titles: bool = True     # stop generating at the n_recommend-th complete title line (the answer)
    temperature: float = 0.0           # the paper used 0.7 / top_p 0.9 via OpenRouter; greedy is reproducible
    top_p: float = 1.0
    rerank: bool = True                # SBERT re-ranking (Stage 3)
    leaky_rerank: bool = False         # the authors' code: targets in the reference list (see leak_targets)
    fill_with_stage1: bool = False     # append Stage 1's ranking after the LLM's items
    fallback: str = "none"             # none: an unanswered user gets an empty list; stage1: Stage 1's ranking
    n_candidates: int = 20             # mode=score|rank: Stage-1 candidates the LLM re-orders
    score_batch: int = 8               # mode=score|rank: users whose prompts and candidates share one pass
    n_recent: int = 5                  # mode=rank: recent titles in the ranker's prompt
    min_ground_score: float = 80.0     # Catalog.ground threshold (0..100)
    cache: bool = True                 # on-disk response cache (under the dualrec cache dir)
    progress: bool = True


class DualRec(Recommender):
    name = "dualrec"
    config_class = DualRecConfig

    def __init__(self, config: DualRecConfig | dict | None = None):
        super().__init__(config)
        c: DualRecConfig = self.config
        if c.mode not in MODES:
            raise ValueError(f"dualrec: mode must be one of {MODES}, got {c.mode!r}")
        if c.fallback not in FALLBACKS:
            raise ValueError(f"dualrec: fallback must be one of {FALLBACKS}, got {c.fallback!r}")
        kind = c.backend.get("kind", "llama_cpp")
        if (c.mode in LOGIT_MODES or c.adapter) and kind != "hf":
            need = f"mode={c.mode}" if c.mode in LOGIT_MODES else "a LoRA adapter"
            raise ValueError(f"dualrec: {need} needs backend.kind=hf (transformers), got {kind!r}: set "
                             "model.backend.kind=hf")
        self.stage1: Recommender | None = None
        self._backend: LLMBackend | None = None
        self._reranker: SBERTReranker | None = None
        self._mode: AnswerMode | None = None
        self._leak: dict[bytes, np.ndarray] = {}

    # ---- fitting / persistence -------------------------------------------------------------------------------

    def _fit(self, train, valid, checkpoint_dir: Path | None) -> None:
        c: DualRecConfig = self.config
        if Path(c.stage1).is_dir():
            self.stage1 = load_on_catalog(c.stage1, self.catalog, "dualrec: stage-1 model")
        else:
            self.stage1 = build_model(c.stage1, {"seed": c.seed, **c.stage1_options})
            self.stage1.fit(train, self.catalog, valid, checkpoint_dir / "stage1" if checkpoint_dir else None)

    def _save(self, path: Path) -> None:
        self.stage1.save(path / "stage1")
        if self.config.adapter:
            dst = path / "adapter"
            if Path(self.config.adapter).resolve() != dst.resolve():
                shutil.copytree(self.config.adapter, dst, dirs_exist_ok=True)
            meta = json.loads((path / "config.json").read_text())
            meta["adapter_source"] = str(self.config.adapter)
            (path / "config.json").write_text(json.dumps(meta, indent=2))

    def _load(self, path: Path) -> None:
        self.stage1 = Recommender.load(path / "stage1")
        if (path / "adapter").is_dir():
            self.config.adapter = str(path / "adapter")

    # ---- parts, built on first use -------------------------------------------------------------------------

    @property
    def backend(self) -> LLMBackend:
        if self._backend is None:
            c: DualRecConfig = self.config
            spec = {**c.backend, "adapter": c.adapter} if c.adapter else dict(c.backend)
            self._backend = make_backend(spec, cache=cache_root() / "llm-responses.sqlite" if c.cache else None)
        return self._backend

    @backend.setter
    def backend(self, value: LLMBackend) -> None:
        """Inject a ready backend (tests, the service)."""
        self._backend, self._mode = value, None

    @property
    def mode(self) -> AnswerMode:
        """What the LLM does (``config.mode``), on :attr:`backend`."""
        if self._mode is None:
            c: DualRecConfig = self.config
            params = SamplingParams(max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_p=c.top_p,
                                    seed=c.seed, max_titles=c.n_recommend if c.stop_after_titles else None)
            cache = ResponseCache(cache_root() / "ranker-logits.sqlite") if c.cache and c.mode == "rank" else None
            self._mode = make_mode(c.mode, self.backend, self.catalog, params=params,
                                   min_ground_score=c.min_ground_score, n_candidates=c.n_candidates,
                                   score_batch=c.score_batch, n_recent=c.n_recent, seed=c.seed, cache=cache)
        return self._mode

    @property
    def reranker(self) -> SBERTReranker:
        if self._reranker is None:
            self._reranker = SBERTReranker()
        return self._reranker

    def prompt_builder(self) -> PromptBuilder:
        return PromptBuilder(self.catalog, n_recommend=self.config.n_recommend, hint=self.config.hint)

    def leak_targets(self, histories: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> None:
        """Authors'-code re-ranking: give the held-out targets of these histories to the re-ranker (labelled
        'leaky' wherever it is reported). Only used with ``leaky_rerank=True``."""
        self._leak = {np.asarray(h, np.int64).tobytes(): np.asarray(t, np.int64) for h, t in zip(histories, targets)}

    # ---- recommending --------------------------------------------------------------------------------------

    def recommend(self, histories: Sequence[np.ndarray], k: int = 10) -> Recommendations:
        c: DualRecConfig = self.config
        histories = [np.asarray(h, dtype=np.int64) for h in histories]
        timings = {"lstm": 0.0, "prompt": 0.0, "llm": 0.0, "parse": 0.0, "rerank": 0.0}

        t = time.perf_counter()
        s1 = self.stage1.recommend(histories, max(k, c.n_candidates if c.mode in ("score", "rank") else k))
        timings["lstm"] = time.perf_counter() - t
        top1 = [int(r[0]) if len(r) else None for r in s1.items]

        t = time.perf_counter()
        builder = self.prompt_builder()
        todo = [i for i, t1 in enumerate(top1) if t1 is not None or not c.hint]   # a hint needs a Stage-1 pick
        prompts = [builder.prompt(histories[i], top1[i]) for i in todo]
        timings["prompt"] = time.perf_counter() - t

        t = time.perf_counter()
        answers = self.mode.answer(prompts, [histories[i] for i in todo], [s1.items[i] for i in todo], k)
        timings["llm"] = time.perf_counter() - t
        timings.update(answers.timings)
        results: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(histories)
        extras: list[dict[str, Any]] = [{"lstm_title": self.catalog.title(t1) if t1 is not None else None}
                                        for t1 in top1]
        for i, res, e in zip(todo, answers.results, answers.extras):
            results[i] = res
            extras[i].update(e)

        t = time.perf_counter()
        items_out, scores_out = [], []
        for i, h in enumerate(histories):
            items, scores = self._final_list(i, h, results[i], extras[i], s1, top1[i], k)
            items_out.append(items)
            scores_out.append(scores)
        timings["rerank"] = time.perf_counter() - t
        return Recommendations(items_out, scores_out, extras, timings)

    def _final_list(self, i: int, history: np.ndarray, answer, extra: dict, s1: Recommendations, top1: int | None,
                    k: int) -> tuple[np.ndarray, np.ndarray]:
        """User ``i``'s list: the LLM's answer re-ranked (and filled) as configured, or the fallback."""
        c: DualRecConfig = self.config
        answered = answer is not None and len(answer[0]) > 0
        extra["answered"] = answered
        extra["fallback"] = not answered and c.fallback == "stage1"
        if not answered:
            if extra["fallback"]:
                return s1.items[i][:k], s1.scores[i][:k]
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        items, scores = answer
        if c.rerank and c.mode == "generate":
            ref = [top1] if c.hint and top1 is not None else [int(history[-1])] if len(history) else []
            if c.leaky_rerank:
                ref = ref + [int(x) for x in self._leak.get(history.tobytes(), ()) if int(x) in self.catalog]
            if ref:
                items, scores = self.reranker.rerank(self.catalog, items, ref)
        if c.fill_with_stage1 and len(items) < k:
            rest = s1.items[i][~np.isin(s1.items[i], items)][:k - len(items)]
            low = (scores.min() if len(scores) else 0.0) - 1.0 - np.arange(len(rest), dtype=np.float32)
            items, scores = np.concatenate([items, rest]), np.concatenate([scores, low.astype(np.float32)])
        return items[:k], np.asarray(scores[:k], np.float32)

    def llm_identity(self) -> dict:
        """Which LLM answers, in which precision (resolved: "auto" differs per machine)."""
        return self.backend.identity()

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
