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

``mode`` picks what the LLM does in step 3-4:

* ``generate`` (the paper): free generation of ``n_recommend`` titles;
* ``constrained`` (beyond the paper): beam search restricted to catalog titles, ``k`` distinct real items;
* ``score`` (beyond the paper): the LLM re-orders Stage 1's top ``n_candidates`` by ``log p(title | prompt)``.

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

from dualrec.models.base import ModelConfig, Recommendations, Recommender, load_on_catalog

MODES = ("generate", "constrained", "score")
FALLBACKS = ("none", "stage1")


@dataclass
class DualRecConfig(ModelConfig):
    stage1: str = "lstm"               # a model name (fitted with DUALRec) or a folder saved by `dualrec train`
    stage1_options: dict = field(default_factory=dict)   # options of a stage-1 model fitted here
    mode: str = "generate"             # generate | constrained | score
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
    n_candidates: int = 20             # mode=score: Stage-1 candidates the LLM re-orders
    score_batch: int = 8               # mode=score: users whose prompts and candidates share one pass
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
        self.stage1: Recommender | None = None
        self._backend = None
        self._reranker = None
        self._constrained = None
        self._leak: dict[bytes, np.ndarray] = {}

    # ---- fitting / persistence -------------------------------------------------------------------------------

    def _fit(self, train, valid, checkpoint_dir: Path | None) -> None:
        c: DualRecConfig = self.config
        if Path(c.stage1).is_dir():
            self.stage1 = load_on_catalog(c.stage1, self.catalog, "dualrec: stage-1 model")
        else:
            from dualrec.models import build_model

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
    def backend(self):
        if self._backend is None:
            from dualrec.llm.backends import make_backend
            from dualrec.llm.hf import cache_root

            c: DualRecConfig = self.config
            spec = dict(c.backend)
            if c.mode != "generate" or c.adapter:
                if spec.get("kind", "llama_cpp") not in ("hf",):
                    if c.adapter:
                        raise ValueError("dualrec: a LoRA adapter needs backend.kind=hf (transformers + peft)")
                    spec = {"kind": "hf", **{k: v for k, v in spec.items() if k in ("model_name", "dtype", "device")}}
                if c.adapter:
                    spec["adapter"] = c.adapter
            cache = cache_root() / "llm-responses.sqlite" if c.cache else None
            self._backend = make_backend(spec, cache=cache)
        return self._backend

    @backend.setter
    def backend(self, value) -> None:
        """Inject a ready backend (tests, the service)."""
        self._backend = value

    @property
    def reranker(self):
        if self._reranker is None:
            from dualrec.llm.rerank import SBERTReranker

            self._reranker = SBERTReranker()
        return self._reranker

    def prompt_builder(self):
        from dualrec.llm.prompts import PromptBuilder

        return PromptBuilder(self.catalog, n_recommend=self.config.n_recommend, hint=self.config.hint)

    def leak_targets(self, histories: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> None:
        """Authors'-code re-ranking: give the held-out targets of these histories to the re-ranker (labelled
        'leaky' wherever it is reported). Only used with ``leaky_rerank=True``."""
        self._leak = {np.asarray(h, np.int64).tobytes(): np.asarray(t, np.int64) for h, t in zip(histories, targets)}

    # ---- recommending --------------------------------------------------------------------------------------

    def recommend(self, histories: Sequence[np.ndarray], k: int = 10) -> Recommendations:
        from dualrec.llm.backends import SamplingParams
        from dualrec.llm.parse import parse_and_ground

        c: DualRecConfig = self.config
        histories = [np.asarray(h, dtype=np.int64) for h in histories]
        timings = {"lstm": 0.0, "prompt": 0.0, "llm": 0.0, "parse": 0.0, "rerank": 0.0}

        t = time.perf_counter()
        s1 = self.stage1.recommend(histories, max(k, c.n_candidates if c.mode == "score" else k))
        timings["lstm"] = time.perf_counter() - t
        top1 = [int(r[0]) if len(r) else None for r in s1.items]

        t = time.perf_counter()
        builder = self.prompt_builder()
        ok = [t1 is not None or not c.hint for t1 in top1]
        prompts = [builder.prompt(h, t1) if good else "" for h, t1, good in zip(histories, top1, ok)]
        timings["prompt"] = time.perf_counter() - t

        extras: list[dict[str, Any]] = [{"lstm_title": self.catalog.title(t1) if t1 is not None else None}
                                        for t1 in top1]
        results: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(histories)
        todo = [i for i, good in enumerate(ok) if good]

        t = time.perf_counter()
        if c.mode == "generate":
            params = SamplingParams(max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_p=c.top_p,
                                    seed=c.seed, max_titles=c.n_recommend if c.stop_after_titles else None)
            completions = self.backend.generate([prompts[i] for i in todo], params)
            timings["llm"] = time.perf_counter() - t
            t = time.perf_counter()
            for i, comp in zip(todo, completions):
                e = extras[i]
                e.update(llm_text=comp.text, cached=comp.cached)
                if not comp.ok:
                    e.update(error=comp.error, generated=0, ungrounded=0)
                    continue
                parsed = parse_and_ground(comp.text, self.catalog, histories[i], min_score=c.min_ground_score,
                                          truncated=comp.finish_reason == "length")
                e.update(titles=parsed.titles, generated=len(parsed.titles), ungrounded=len(parsed.ungrounded),
                         ungrounded_titles=parsed.ungrounded, in_history=len(parsed.in_history),
                         ambiguous=len(parsed.ambiguous))
                if parsed.items:
                    n = len(parsed.items)
                    results[i] = (np.asarray(parsed.items, np.int64), np.arange(n, 0, -1, dtype=np.float32))
                else:
                    e["error"] = "no new catalog item in the LLM output"
            timings["parse"] = time.perf_counter() - t
        else:
            suffix = "1."  # the answer's first list marker: what follows is a title
            lm_prompts = [prompts[i] + suffix for i in todo]
            try:
                if c.mode == "constrained":
                    for i, res in zip(todo, self._constrained_gen().recommend(lm_prompts, [histories[j] for j in todo],
                                                                              k)):
                        results[i] = res
                else:
                    from dualrec.llm.scoring import candidate_texts, score_candidate_lists

                    model, tok = self.backend.load()
                    for lo in range(0, len(todo), c.score_batch):
                        users = todo[lo:lo + c.score_batch]
                        cands = [s1.items[i][:c.n_candidates] for i in users]
                        scores = score_candidate_lists(model, tok, lm_prompts[lo:lo + c.score_batch],
                                                       [candidate_texts(self.catalog, x) for x in cands])
                        for i, x, s in zip(users, cands, scores):
                            order = np.argsort(-s, kind="stable")
                            results[i] = (x[order], s[order])
            except Exception as exc:  # e.g. out of memory: the whole batch falls back, and says why
                for i in todo:
                    extras[i]["error"] = f"{type(exc).__name__}: {exc}"
            for i in todo:
                extras[i].update(generated=len(results[i][0]) if results[i] is not None else 0, ungrounded=0)
            timings["llm"] = time.perf_counter() - t

        t = time.perf_counter()
        items_out, scores_out = [], []
        for i, h in enumerate(histories):
            res = results[i]
            answered = res is not None and len(res[0]) > 0
            extras[i]["answered"] = answered
            extras[i]["fallback"] = not answered and c.fallback == "stage1"
            if not answered:
                items_out.append(s1.items[i][:k] if extras[i]["fallback"] else np.zeros(0, np.int64))
                scores_out.append(s1.scores[i][:k] if extras[i]["fallback"] else np.zeros(0, np.float32))
                continue
            items, scores = res
            if c.rerank and c.mode == "generate":
                ref = [top1[i]] if c.hint and top1[i] is not None else [int(h[-1])] if len(h) else []
                if c.leaky_rerank:
                    ref = ref + [int(x) for x in self._leak.get(h.tobytes(), ()) if int(x) in self.catalog]
                if ref:
                    items, scores = self.reranker.rerank(self.catalog, items, ref)
            if c.fill_with_stage1 and len(items) < k:
                rest = s1.items[i][~np.isin(s1.items[i], items)][:k - len(items)]
                low = (scores.min() if len(scores) else 0.0) - 1.0 - np.arange(len(rest), dtype=np.float32)
                items, scores = np.concatenate([items, rest]), np.concatenate([scores, low.astype(np.float32)])
            items_out.append(items[:k])
            scores_out.append(np.asarray(scores[:k], np.float32))
        timings["rerank"] = time.perf_counter() - t
        return Recommendations(items_out, scores_out, extras, timings)

    def _constrained_gen(self):
        if self._constrained is None:
            from dualrec.llm.constrained import ConstrainedGenerator

            model, tok = self.backend.load()
            self._constrained = ConstrainedGenerator(model, tok, self.catalog)
        return self._constrained

    def llm_identity(self) -> dict:
        """Which LLM answers, in which precision (resolved: "auto" differs per machine)."""
        return self.backend.identity()

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
