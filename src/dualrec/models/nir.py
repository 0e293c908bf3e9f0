"""NIR, zero-shot next-item recommendation with a large language model (Wang & Lim, 2023, arXiv 2304.03153).

NIR has two parts, both kept here:

1. **Candidates by user filtering** (paper section 2.1): the items most frequent among the users most similar to
   this one (cosine over watched sets) form a candidate set of ``n_candidates`` (the paper: 19 candidates from
   12 similar users). That is the SKNN scorer (models/sknn.py) with ``k = n_similar_users``: we reuse it.
2. **Three-step prompting** (paper section 2.2, prompts in its Figure 2): step 1 asks the LLM to summarise the
   user's preferences from the watched movies; step 2, given that answer, to select the most representative watched
   movies; step 3, given both answers, to recommend 10 movies from the candidate set, in the format
   ``[no. a watched movie - a candidate movie]``. Each step's answer is appended to the next step's prompt.

The LLM comes from the stage-2 backends (``dualrec.llm.backends.make_backend``: the packaged Gemma 3 270M through
llama.cpp by default, or any OpenAI-compatible server such as the paper's GPT-3); responses are cached on disk.
Step 3's lines are parsed (the text after the last ``" - "``, else the line, through the shared
``extract_titles``, which skips prose) and grounded to the catalog with the shared ``ground_titles``; titles
naming nothing are counted as ``ungrounded`` (the evaluator's hallucination rate), titles of the user's own
history are dropped. Design choices where the paper is silent: when fewer than ``k``
titles ground, the list is filled from the candidate set in its user-filtering order (``fill_from_candidates``;
the user is then counted as a ``fallback``), so HR@k measures the same list length as every other row; the
history shown is the last ``history_in_prompt`` movies (the paper's prompts list a user's watched movies; ML-1M
histories are hundreds long).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from dualrec.data.dataset import Sequences
from dualrec.llm.backends import SamplingParams, make_backend
from dualrec.llm.hf import cache_root
from dualrec.llm.parse import extract_titles, ground_titles
from dualrec.models.base import ModelConfig, Recommendations, Recommender
from dualrec.models.sknn import SKNN

STEP1 = ("Candidate Set (candidate movies): {candidates}.\n"
         "The movies I have watched (watched movies): {watched}.\n"
         "Step 1: What features are most important to me when selecting movies (Summarize my preferences "
         "briefly)?\nAnswer:")
STEP2 = ("{previous} {answer}\n"
         "Step 2: Selecting the most featured movies from the watched movies according to my preferences "
         "(Format: [no. a watched movie.]).\nAnswer:")
STEP3 = ("{previous} {answer}\n"
         "Step 3: Can you recommend 10 movies from the Candidate Set similar to the selected movies I've watched "
         "(Format: [no. a watched movie - a candidate movie])?\nAnswer:\n")


@dataclass
class NIRConfig(ModelConfig):
    backend: dict = field(default_factory=lambda: {"kind": "llama_cpp"})
    n_candidates: int = 19
    n_similar_users: int = 12
    history_in_prompt: int = 20
    step_tokens: tuple = (64, 128, 256)   # new tokens allowed for steps 1, 2, 3
    fill_from_candidates: bool = True
    min_score: float = 80.0               # grounding threshold (rapidfuzz ratio), as stage 2
    cache: str | None = None              # response cache folder; None: $DUALREC_CACHE or the user cache


class NIR(Recommender):
    name = "nir"
    config_class = NIRConfig

    def _fit(self, train: Sequences, valid, checkpoint_dir: Path | None) -> None:
        self.candidates = SKNN({"k": self.config.n_similar_users, "seed": self.config.seed})
        self.candidates.fit(train, self.catalog)

    @property
    def backend(self):
        if getattr(self, "_backend", None) is None:
            self._backend = make_backend(self.config.backend, self.config.cache or cache_root() / "responses-nir")
        return self._backend

    def _titles(self, items: np.ndarray) -> str:
        return ", ".join(self.catalog.items["raw_title"].to_numpy()[self.catalog.rows(items)])

    def recommend(self, histories: Sequence[np.ndarray], k: int = 10) -> Recommendations:
        c: NIRConfig = self.config
        histories = [np.asarray(h, np.int64)[self.catalog.has(np.asarray(h, np.int64))] for h in histories]
        t0 = time.perf_counter()
        cands = self.candidates.recommend(histories, c.n_candidates).items
        timings = {"candidates": time.perf_counter() - t0}
        prompts = [STEP1.format(candidates=self._titles(cd), watched=self._titles(h[-c.history_in_prompt:]))
                   for h, cd in zip(histories, cands)]
        answers = None
        for step, (template, tokens) in enumerate(zip((None, STEP2, STEP3), c.step_tokens), 1):
            if template is not None:
                prompts = [template.format(previous=p, answer=a) for p, a in zip(prompts, answers)]
            t0 = time.perf_counter()
            done = self.backend.generate(prompts, SamplingParams(max_new_tokens=tokens, stop=("\n\n\n", "Step ")))
            timings[f"llm_step{step}"] = time.perf_counter() - t0
            answers = [(d.text or "").strip() for d in done]
        t0 = time.perf_counter()
        items, scores, extras = [], [], []
        for h, cd, text, d in zip(histories, cands, answers, done):
            # "[1. a watched movie - a candidate movie]": keep the candidate; the shared parser drops prose lines
            titles = extract_titles("\n".join(line.strip(" []").rsplit(" - ", 1)[-1] if " - " in line
                                              else line.strip(" []") for line in text.splitlines()))
            parsed = ground_titles(titles, self.catalog, h, c.min_score)
            ranked = parsed.items[:k]
            filled = 0
            if c.fill_from_candidates and len(ranked) < k:
                extra = [int(i) for i in cd if int(i) not in set(ranked)][: k - len(ranked)]
                filled = len(extra)
                ranked = ranked + extra
            items.append(np.asarray(ranked, np.int64))
            scores.append(1.0 / (1.0 + np.arange(len(ranked), dtype=np.float32)))
            extras.append({"generated": len(titles), "ungrounded": len(parsed.ungrounded), "fallback": filled > 0,
                           "filled_from_candidates": filled, "llm_error": d.error, "text": text})
        timings["ground"] = time.perf_counter() - t0
        return Recommendations(items, scores, extras, timings)

    def _save(self, path: Path) -> None:
        self.candidates.save(path / "candidates")

    def _load(self, path: Path) -> None:
        self.candidates = SKNN.load(path / "candidates")
