"""Catalog-constrained generation (beyond the paper): decoding restricted to catalog titles with a token trie, and
beam search returning k distinct real items. Nothing can be hallucinated, and top-k grows with k.

How: every allowed item (catalog minus the user's history) is tokenised as it would follow "1." in an answer,
``" Title (Year)"``; these token sequences form a trie. A :class:`~transformers.LogitsProcessor` keeps only the trie's
next tokens for each beam. Beam search applies processors after ``log_softmax``, so at a title's end the processor
sets EOS to 0 (free): a finished beam's score is exactly ``sum log p(title tokens | prompt)``, not distorted by the
model's opinion of EOS (about -13 for this model). With ``early_stopping=False`` and ``length_penalty=0`` the search
keeps going until ``num_beams`` distinct titles are finished (see /work/shared/docs/llm-stack-notes.md, section 5).

Tokenisation of every catalog title is done once per catalog; a user's trie is built from those cached ids.

Speed: ``generate`` with ``num_beams=k`` repeats each prompt k times *before* its first forward pass, so a
200-token prompt would be encoded k times. Instead the prompts (all but their last token) are encoded once, the KV
cache is repeated for the beams (``batch_repeat_interleave``), and ``generate`` starts from that cache: the same
beams and scores, 2.5x faster on this CPU (bench/bench_llm.py, ``constrained``; docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dualrec.data.catalog import Catalog
from dualrec.llm.scoring import candidate_texts, prompt_cache


class TitleTrie:
    """Token trie over the catalog; ``allowed`` items only (a user's history is excluded per user)."""

    def __init__(self, token_ids: dict[int, list[int]], allowed: Sequence[int], eos: int):
        self.eos = eos
        self.root: dict = {}
        self.item_of: dict[tuple, int] = {}
        for item in allowed:
            ids = token_ids[int(item)]
            node = self.root
            for t in ids:
                node = node.setdefault(t, {})
            node[eos] = {}
            self.item_of[tuple(ids)] = int(item)

    def next_tokens(self, prefix: Sequence[int]) -> dict | None:
        node = self.root
        for t in prefix:
            node = node.get(t)
            if node is None:
                return None
        return node


def make_processor(tries: list[TitleTrie], prompt_len: int, num_beams: int):
    import torch
    from transformers import LogitsProcessor

    class TrieProcessor(LogitsProcessor):
        """Row b of the beam batch belongs to user b // num_beams; keep only that user's trie children."""

        def __call__(self, input_ids, scores):
            mask = torch.full_like(scores, float("-inf"))
            for b, seq in enumerate(input_ids[:, prompt_len:].tolist()):
                trie = tries[b // num_beams]
                if trie.eos in seq:  # a finished title (EOS, then padding): only EOS may follow
                    mask[b, trie.eos] = 0
                    continue
                node = trie.next_tokens(seq)
                if not node:  # off the trie (cannot happen through this processor): end the beam
                    mask[b, trie.eos] = 0
                    continue
                mask[b, list(node)] = 0
                if trie.eos in node:
                    scores[b, trie.eos] = 0.0
            return scores + mask

    return TrieProcessor()


class ConstrainedGenerator:
    """Beam search over catalog titles with a transformers model (the HF backend's).

    ``share_prompt=False`` lets ``generate`` encode each prompt once per beam: for a model whose cache cannot be
    repeated along the batch, and as the benchmark's reference."""

    def __init__(self, model, tokenizer, catalog: Catalog, batch_size: int = 8, share_prompt: bool = True):
        self.model, self.tok, self.catalog, self.batch_size = model, tokenizer, catalog, batch_size
        self.share_prompt = share_prompt
        texts = candidate_texts(catalog, catalog.ids)
        ids = tokenizer(texts, add_special_tokens=False).input_ids
        self.token_ids = {int(i): t for i, t in zip(catalog.ids, ids)}
        self.max_title_tokens = max(len(t) for t in ids)

    def recommend(self, prompts: Sequence[str], histories: Sequence[np.ndarray], k: int
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each prompt (ending with "1."), the ``k`` best catalog items not in that history, with their
        log-likelihoods, best first."""
        import torch
        from transformers import LogitsProcessorList

        out = []
        eos = self.tok.eos_token_id
        for lo in range(0, len(prompts), self.batch_size):
            batch_p = list(prompts[lo:lo + self.batch_size])
            batch_h = histories[lo:lo + self.batch_size]
            tries = [TitleTrie(self.token_ids, self.catalog.ids[~np.isin(self.catalog.ids, h)], eos) for h in batch_h]
            enc = self.tok(batch_p, return_tensors="pt", padding=True).to(self.model.device)
            ids, mask = enc["input_ids"], enc["attention_mask"]
            P = ids.shape[1]
            with torch.inference_mode():
                shared = {}
                if self.share_prompt:
                    shared["cache"] = prompt_cache(self.model, ids[:, :-1], mask[:, :-1])
                    shared["cache"].batch_repeat_interleave(k)
                gen = self.model.generate(
                    input_ids=ids, attention_mask=mask, **shared, num_beams=k, num_return_sequences=k,
                    do_sample=False, length_penalty=0.0, early_stopping=False,
                    max_new_tokens=self.max_title_tokens + 1, pad_token_id=self.tok.pad_token_id, eos_token_id=eos,
                    logits_processor=LogitsProcessorList([make_processor(tries, P, k)]), output_scores=True,
                    return_dict_in_generate=True, top_p=None, top_k=None, temperature=None)
            seqs = gen.sequences[:, P:].tolist()
            scores = gen.sequences_scores.float().cpu().numpy()
            for u, trie in enumerate(tries):
                items, vals, seen = [], [], set()
                for j in range(u * k, (u + 1) * k):
                    s = seqs[j]
                    s = s[:s.index(eos)] if eos in s else s
                    item = trie.item_of.get(tuple(s))
                    if item is None or item in seen or scores[j] <= -1e8:
                        continue
                    seen.add(item)
                    items.append(item)
                    vals.append(scores[j])
                order = np.argsort(-np.asarray(vals, np.float32), kind="stable")
                out.append((np.asarray(items, np.int64)[order], np.asarray(vals, np.float32)[order]))
        return out
