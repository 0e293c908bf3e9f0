"""The verbalizer ranker (LlamaRec's recipe, arXiv 2311.02089): an LLM scores K candidates in one forward pass.

The prompt holds the user's recent titles and the K Stage-1 candidates, each behind an index letter ("A. Title
(Year)", ..., ``dualrec/prompts/rank_*.txt``), and ends with "Answer:". A candidate's score is the next-token logit
of its letter at that last position: nothing is generated, so nothing can be hallucinated, and every candidate gets
a score. Only the K letter rows of the LM head are applied, at the last position only (never the 262k-word head over
every position), so a user costs one decoder pass over the prompt.

Candidate order in the prompt is a seeded random permutation per user, in training and at inference alike: a model
shown the candidates in Stage-1 order learns to echo that order (its position bias), and the fusion
(:mod:`dualrec.models.fusion`) takes Stage 1's opinion from Stage 1 itself. The permutation depends on the seed and the
user's history only, so a run is repeatable.

Training (:class:`RankerTask`, run by :func:`dualrec.llm.finetune.finetune`): the loss is the cross-entropy over the
K letters' logits (a softmax restricted to the verbalizer, the quantity the ranker scores with) of the true next
item, for training prefixes where Stage 1 put that item among its top K; where it did not, the prefix gives no
example and is counted.
"""

from __future__ import annotations

import json
import string
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dualrec.data.catalog import Catalog
from dualrec.data.dataset import Sequences
from dualrec.llm.cache import ResponseCache, cache_key
from dualrec.llm.prompts import template
from dualrec.llm.scoring import model_parts, prompt_pass, soft_cap

LABELS = string.ascii_uppercase


def index_labels(k: int) -> list[str]:
    """``A``, ``B``, ... for ``k`` candidates (at most 26: one letter each, one token each)."""
    if not 1 <= k <= len(LABELS):
        raise ValueError(f"the verbalizer ranker takes 1..{len(LABELS)} candidates, got {k}")
    return list(LABELS[:k])


def label_token_ids(tokenizer, k: int) -> list[int]:
    """The token of " A", " B", ... as it follows "Answer:"; each label must be exactly one token."""
    out = []
    for label in index_labels(k):
        ids = tokenizer(" " + label, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(f"label {label!r} is {len(ids)} tokens in this tokenizer; the ranker needs one")
        out.append(ids[0])
    return out


def candidate_order(history: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The seeded permutation of ``k`` candidates shown to the LLM for this history (prompt slot -> candidate)."""
    key = zlib.crc32(np.asarray(history, np.int64).tobytes()) ^ (seed & 0xFFFFFFFF)
    return np.random.default_rng(key).permutation(k)


@dataclass(frozen=True)
class RankPrompt:
    """Renders ranker prompts for one catalog: the ``n_recent`` latest titles and the candidates in slot order."""

    catalog: Catalog
    n_recent: int = 5

    def render(self, history: Sequence[int], slots: Sequence[int]) -> str:
        recent = [int(i) for i in list(history)[-self.n_recent:] if int(i) in self.catalog]
        lines = "\n".join(template("rank_history_line").format(title=self.catalog.title(i)) for i in recent)
        cands = "\n".join(template("rank_candidate_line").format(label=label, title=self.catalog.title(int(i)))
                          for label, i in zip(index_labels(len(slots)), slots))
        return template("rank_frame").format(history=lines, candidates=cands)


def label_logits(model, hidden, token_ids):
    """fp32 logits ``[B, K]`` of the label tokens from last-position hidden states ``[B, H]`` (with the model's final
    soft-capping): K rows of the LM head, not its whole vocabulary."""
    _, head, cap = model_parts(model)
    rows = torch.as_tensor(token_ids, device=hidden.device)
    z = hidden.float() @ head.weight[rows].float().T
    if head.bias is not None:
        z = z + head.bias[rows].float()
    return soft_cap(z, cap)


def last_hidden(model, input_ids, attention_mask):
    """The decoder's hidden state at the last position of left-padded prompts ``[B, H]`` (no KV cache kept)."""
    return prompt_pass(model, input_ids, attention_mask, use_cache=False).last_hidden_state[:, -1]


class VerbalizerRanker:
    """Scores Stage-1 candidates with a causal LM: ``scores(histories, candidates) -> [N, K]`` in candidate order.

    ``model`` and ``tokenizer`` come from :func:`dualrec.llm.hf.load_causal_lm` (left padding); ``batch_size``
    prompts share one pass. With a ``cache`` (and the ``identity`` of the model: name, adapter digest, dtype), the
    label logits of a prompt already scored are read back instead of recomputed, so evaluation rows that share a
    model and prompts (with and without another signal) pay for the LLM once.
    """

    def __init__(self, model, tokenizer, catalog: Catalog, n_recent: int = 5, batch_size: int = 8, seed: int = 42,
                 cache: ResponseCache | None = None, identity: dict | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.prompt = RankPrompt(catalog, n_recent)
        self.batch_size, self.seed = batch_size, seed
        self.cache, self.identity = cache, identity or {}

    def prompts(self, histories: Sequence[np.ndarray], candidates: np.ndarray) -> tuple[list[str], np.ndarray]:
        """The prompts and each user's slot order (``orders[u, s]`` = index into ``candidates[u]`` at slot s)."""
        k = candidates.shape[1]
        orders = np.stack([candidate_order(h, k, self.seed) for h in histories]) if len(histories) else \
            np.zeros((0, k), np.int64)
        return [self.prompt.render(h, c[o]) for h, c, o in zip(histories, candidates, orders)], orders

    def scores(self, histories: Sequence[np.ndarray], candidates: np.ndarray) -> np.ndarray:
        candidates = np.asarray(candidates, np.int64)
        n, k = candidates.shape
        out = np.zeros((n, k), np.float32)
        if n == 0:
            return out
        labels = label_token_ids(self.tokenizer, k)
        prompts, orders = self.prompts(histories, candidates)
        keys = [cache_key("verbalizer", self.identity, p) for p in prompts]
        known = self.cache.get_many(keys) if self.cache is not None else {}
        slots = np.zeros((n, k), np.float32)
        todo = [u for u, key in enumerate(keys) if key not in known]
        for u, key in enumerate(keys):
            if key in known:
                slots[u] = json.loads(known[key][0])
        device = next(self.model.parameters()).device if todo else None
        with torch.inference_mode():
            for lo in range(0, len(todo), self.batch_size):
                users = todo[lo:lo + self.batch_size]
                enc = self.tokenizer([prompts[u] for u in users], return_tensors="pt", padding=True).to(device)
                z = label_logits(self.model, last_hidden(self.model, enc["input_ids"], enc["attention_mask"]), labels)
                slots[users] = z.cpu().numpy()
                if self.cache is not None:
                    self.cache.put_many([(keys[u], json.dumps(slots[u].tolist()), None) for u in users])
        np.put_along_axis(out, orders, slots, axis=1)      # slot s scores candidate orders[u, s]
        return out


# ---- training data -------------------------------------------------------------------------------------------


@dataclass
class RankExample:
    """One training prompt: its text and the slot of the true next item."""

    prompt: str
    label: int
    user: int


def ranker_examples(stage1, train: Sequences, catalog: Catalog, k: int = 20, positions: int = 2,
                    n_recent: int = 5, max_users: int | None = None, seed: int = 42
                    ) -> tuple[list[RankExample], dict]:
    """Training prompts from the last ``positions`` prefixes of each training user's sequence.

    A prefix gives an example when Stage 1's top ``k`` for it (history excluded) holds the next item; the candidates
    are shown in the seeded random order of :func:`candidate_order`. Returns ``(examples, counts)``, counting every
    prefix tried and every one dropped."""
    seqs = [s[catalog.has(s)] for s in train.to_list()]
    users = [i for i, s in enumerate(seqs) if len(s) >= 2]
    if max_users is not None and len(users) > max_users:
        users = sorted(np.random.default_rng(seed).choice(users, max_users, replace=False).tolist())
    cases = [(i, t) for i in users for t in range(max(1, len(seqs[i]) - positions), len(seqs[i]))]
    histories = [seqs[i][:t] for i, t in cases]
    targets = np.array([seqs[i][t] for i, t in cases], np.int64)
    recs = stage1.recommend(histories, k)
    prompt = RankPrompt(catalog, n_recent)
    examples, short = [], 0
    for (i, _), h, y, cand in zip(cases, histories, targets, recs.items):
        if len(cand) < k:
            short += 1
            continue
        where = np.flatnonzero(cand == y)
        if not len(where):
            continue
        order = candidate_order(h, k, seed)
        slot = int(np.flatnonzero(order == where[0])[0])
        examples.append(RankExample(prompt.render(h, cand[order]), slot, int(train.users[i])))
    counts = {"train_users": len(seqs), "users_used": len(users), "prefixes": len(cases),
              "target_in_stage1_top_k": len(examples), "target_not_in_top_k": len(cases) - len(examples) - short,
              "fewer_than_k_candidates": short}
    return examples, counts


class RankerTask:
    """The LoRA objective of the ranker, for :func:`dualrec.llm.finetune.finetune`: cross-entropy over the label
    logits at the prompt's last position. One unit per example (the loss is a mean over examples)."""

    def __init__(self, examples: Sequence[RankExample], k: int = 20):
        if not examples:
            raise ValueError("ranker training: no examples (did Stage 1 ever rank the next item in its top k?)")
        self.examples, self.k = list(examples), k
        self.ids: list[list[int]] = []
        self.labels: list[int] = []

    def tokenize(self, tokenizer, max_length: int) -> None:
        self.labels = label_token_ids(tokenizer, self.k)
        self.ids = [ids[-max_length:] for ids in tokenizer([e.prompt for e in self.examples]).input_ids]

    def __len__(self) -> int:
        return len(self.examples)

    def units(self, j: int) -> int:
        return 1

    def tokens(self, j: int) -> int:
        return len(self.ids[j])

    def loss(self, model, batch: Sequence[int], pad_id: int, device):
        """Summed cross-entropy of the batch's examples (differentiable)."""
        width = max(len(self.ids[j]) for j in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, j in enumerate(batch):       # left padding: the last position is every prompt's "Answer:"
            x = self.ids[j]
            ids[r, width - len(x):] = torch.tensor(x)
            mask[r, width - len(x):] = 1
        ids, mask = ids.to(device), mask.to(device)
        z = label_logits(model, last_hidden(model, ids, mask), self.labels)
        y = torch.tensor([self.examples[j].label for j in batch], device=device)
        return F.cross_entropy(z, y, reduction="sum")
