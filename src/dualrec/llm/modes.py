"""What the LLM does in DUALRec's second stage: one small class per mode, all with one interface.

A mode answers a batch of users. For user ``i`` it is given the DUALRec prompt ``prompts[i]``, the history
``histories[i]`` (never recommended back) and Stage 1's ranking ``candidates[i]`` (best first), and returns that
user's items and scores, best first, or ``None`` when the LLM gave no answer for them; per-user ``extras`` say what
the LLM produced and why a user went unanswered. :class:`dualrec.models.dualrec.DualRec` composes one mode with
Stage 1, the prompt, the re-ranking and the fallback.

* :class:`GenerateMode` (the paper): free generation of titles, grounded to catalog items; titles that ground to
  nothing are counted and never ranked.
* :class:`ConstrainedMode`: beam search restricted to catalog titles, ``k`` distinct real items.
* :class:`ScoreMode`: Stage 1's top candidates re-ordered by ``log p(title | prompt)``.
* :class:`RankMode`: the verbalizer ranker (:mod:`dualrec.llm.ranker`): Stage 1's top candidates behind letters,
  ordered by the letters' logits in one pass.

Only ``generate`` works through any backend (it needs text); the others read the model's logits and need a
transformers backend, which :func:`make_mode` requires rather than switching to one behind the caller's back.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from dualrec.data.catalog import Catalog
from dualrec.llm.backends import HFBackend, LLMBackend, SamplingParams
from dualrec.llm.cache import ResponseCache
from dualrec.llm.constrained import ConstrainedGenerator
from dualrec.llm.parse import parse_and_ground
from dualrec.llm.ranker import VerbalizerRanker
from dualrec.llm.scoring import candidate_texts, score_candidate_lists

Answer = tuple[np.ndarray, np.ndarray]
ANSWER_SUFFIX = "1."   # the answer's first list marker: what the logit modes score or generate follows it


@dataclass
class Answers:
    """A batch's answers: ``results[i]`` (items, scores) or None, ``extras[i]``, and the LLM's seconds."""

    results: list[Answer | None]
    extras: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)


class AnswerMode(Protocol):
    name: str

    def answer(self, prompts: Sequence[str], histories: Sequence[np.ndarray], candidates: Sequence[np.ndarray],
               k: int) -> Answers: ...


class GenerateMode:
    """The paper's stage 2: the LLM writes titles; each is grounded to a catalog item or counted as ungrounded."""

    name = "generate"

    def __init__(self, backend: LLMBackend, catalog: Catalog, params: SamplingParams, min_ground_score: float):
        self.backend, self.catalog, self.params, self.min_ground_score = backend, catalog, params, min_ground_score

    def answer(self, prompts, histories, candidates, k) -> Answers:
        start = time.perf_counter()
        completions = self.backend.generate(list(prompts), self.params)
        answers = Answers([None] * len(prompts), [{} for _ in prompts])
        answers.timings["llm"] = time.perf_counter() - start
        start = time.perf_counter()
        for i, comp in enumerate(completions):
            e = answers.extras[i]
            e.update(llm_text=comp.text, cached=comp.cached)
            if not comp.ok:
                e.update(error=comp.error, generated=0, ungrounded=0)
                continue
            parsed = parse_and_ground(comp.text, self.catalog, histories[i], min_score=self.min_ground_score,
                                      truncated=comp.finish_reason == "length")
            e.update(titles=parsed.titles, generated=len(parsed.titles), ungrounded=len(parsed.ungrounded),
                     ungrounded_titles=parsed.ungrounded, in_history=len(parsed.in_history),
                     ambiguous=len(parsed.ambiguous))
            if parsed.items:
                n = len(parsed.items)
                answers.results[i] = (np.asarray(parsed.items, np.int64), np.arange(n, 0, -1, dtype=np.float32))
            else:
                e["error"] = "no new catalog item in the LLM output"
        answers.timings["parse"] = time.perf_counter() - start
        return answers


class LogitMode(ABC):
    """A mode that reads a transformers model's logits; a failure of the batch (e.g. out of memory) leaves every
    user of it unanswered, with the reason in their extras."""

    name: str

    def __init__(self, backend: HFBackend, catalog: Catalog):
        self.backend, self.catalog = backend, catalog

    def answer(self, prompts, histories, candidates, k) -> Answers:
        answers = Answers([None] * len(prompts), [{} for _ in prompts])
        try:
            answers.results = self._answer([p + ANSWER_SUFFIX for p in prompts], list(histories), list(candidates), k)
        except Exception as exc:
            for e in answers.extras:
                e["error"] = f"{type(exc).__name__}: {exc}"
        for e, res in zip(answers.extras, answers.results):
            e.update(generated=len(res[0]) if res is not None else 0, ungrounded=0)
        return answers

    @abstractmethod
    def _answer(self, prompts: list[str], histories: list[np.ndarray], candidates: list[np.ndarray],
                k: int) -> list[Answer | None]:
        """Each user's answer: prompts end with the answer's first list marker."""


class ConstrainedMode(LogitMode):
    """Beam search over the catalog's titles only: every answer is ``k`` distinct real items."""

    name = "constrained"

    def __init__(self, backend: HFBackend, catalog: Catalog):
        super().__init__(backend, catalog)
        self._generator: ConstrainedGenerator | None = None

    def _answer(self, prompts, histories, candidates, k):
        if self._generator is None:
            model, tok = self.backend.load()
            self._generator = ConstrainedGenerator(model, tok, self.catalog)
        return list(self._generator.recommend(prompts, histories, k))


def sort_candidates(candidates: np.ndarray, scores: np.ndarray) -> Answer:
    order = np.argsort(-scores, kind="stable")
    return candidates[order], np.asarray(scores, np.float32)[order]


class ScoreMode(LogitMode):
    """Stage 1's top ``n_candidates`` re-ordered by the LLM's log-likelihood of each title after the prompt;
    ``batch`` users' prompts and candidates share one pass."""

    name = "score"

    def __init__(self, backend: HFBackend, catalog: Catalog, n_candidates: int, batch: int):
        super().__init__(backend, catalog)
        self.n_candidates, self.batch = n_candidates, batch

    def _answer(self, prompts, histories, candidates, k):
        model, tok = self.backend.load()
        out = []
        for lo in range(0, len(prompts), self.batch):
            cands = [c[:self.n_candidates] for c in candidates[lo:lo + self.batch]]
            scores = score_candidate_lists(model, tok, prompts[lo:lo + self.batch],
                                           [candidate_texts(self.catalog, c) for c in cands])
            out += [sort_candidates(c, s) for c, s in zip(cands, scores)]
        return out


class RankMode(LogitMode):
    """Stage 1's top ``n_candidates`` ordered by the verbalizer ranker (its own prompt: the user's recent titles and
    the candidates behind letters). :meth:`scores` gives the raw per-candidate scores a fusion weighs."""

    name = "rank"

    def __init__(self, backend: HFBackend, catalog: Catalog, n_candidates: int = 20, n_recent: int = 5,
                 batch_size: int = 8, seed: int = 42, cache: ResponseCache | None = None):
        super().__init__(backend, catalog)
        self.n_candidates, self.n_recent, self.batch_size, self.seed, self.cache = \
            n_candidates, n_recent, batch_size, seed, cache
        self._ranker: VerbalizerRanker | None = None

    @property
    def ranker(self) -> VerbalizerRanker:
        if self._ranker is None:
            model, tok = self.backend.load()
            self._ranker = VerbalizerRanker(model, tok, self.catalog, self.n_recent, self.batch_size, self.seed,
                                            self.cache, self.backend.identity())
        return self._ranker

    def scores(self, histories: Sequence[np.ndarray], candidates: np.ndarray) -> np.ndarray:
        return self.ranker.scores(histories, candidates)

    def _answer(self, prompts, histories, candidates, k):
        out: list[Answer | None] = [None] * len(histories)
        full = [i for i, c in enumerate(candidates) if len(c) >= self.n_candidates]   # the verbalizer needs all K
        if full:
            cands = np.stack([candidates[i][:self.n_candidates] for i in full])
            for i, c, s in zip(full, cands, self.scores([histories[i] for i in full], cands)):
                out[i] = sort_candidates(c, s)
        return out


LOGIT_MODES = ("constrained", "score", "rank")
MODES = ("generate",) + LOGIT_MODES


def make_mode(name: str, backend: LLMBackend, catalog: Catalog, *, params: SamplingParams | None = None,
              min_ground_score: float = 80.0, n_candidates: int = 20, score_batch: int = 8, n_recent: int = 5,
              seed: int = 42, cache: ResponseCache | None = None) -> AnswerMode:
    """The mode ``name`` on ``backend``; a logit mode on a backend that only returns text is refused."""
    if name not in MODES:
        raise ValueError(f"unknown LLM mode {name!r}; choose one of {MODES}")
    if name == "generate":
        return GenerateMode(backend, catalog, params or SamplingParams(), min_ground_score)
    if not isinstance(backend, HFBackend):
        raise ValueError(f"mode {name!r} reads the model's logits and needs backend kind 'hf' (transformers), got "
                         f"{backend.kind!r}: set model.backend.kind=hf")
    if name == "constrained":
        return ConstrainedMode(backend, catalog)
    if name == "score":
        return ScoreMode(backend, catalog, n_candidates, score_batch)
    return RankMode(backend, catalog, n_candidates, n_recent, score_batch, seed, cache)
