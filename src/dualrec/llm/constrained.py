"""Catalog-constrained generation (beyond the paper): decoding restricted to catalog titles with a token trie, and
beam search returning k distinct real items. Nothing can be hallucinated, and top-k grows with k.

How: every allowed item (catalog minus the user's history) is tokenised as it would follow "1." in an answer,
``" Title (Year)"``; these token sequences form a trie. A :class:`~transformers.LogitsProcessor` keeps only the trie's
next tokens for each beam. Beam search applies processors after ``log_softmax``, so at a title's end the processor
sets EOS to 0 (free): a finished beam's score is exactly ``sum log p(title tokens | prompt)``, not distorted by the
model's opinion of EOS (about -13 for this model). With ``early_stopping=False`` and ``length_penalty=0`` the search
keeps going until ``num_beams`` distinct titles are finished (``../shared/docs/llm-stack-notes.md``, section 5).

Tokenisation of every catalog title is done once per catalog; a user's trie is built from those cached ids.

Speed: ``generate`` with ``num_beams=k`` encodes each prompt k times, and then keeps k copies of its KV cache,
appending to and re-indexing all of them at every step. :meth:`ConstrainedGenerator.recommend` (``share_prompt=True``,
the default) runs the same beam search itself: each prompt is encoded once, its keys and values are kept once, and
the beams attend to them through :mod:`dualrec.llm.shared_prefix`; per step only the beams' own tokens are copied,
and the vocabulary-wide work is one LM head and one log-normaliser per beam. ``share_prompt=False`` is plain
``generate`` with the trie processor: the reference that the tests hold the search to (same titles, same scores).
Measured on this CPU in bench/bench_llm.py (``constrained``; results/benchmarks.md).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from dualrec.data.catalog import Catalog
from dualrec.llm.scoring import candidate_texts, log_normaliser, model_parts, prompt_pass, target_logits
from dualrec.llm.shared_prefix import SharedPrefix, attending


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


class TrieProcessor:
    """A transformers logits processor (any callable ``(input_ids, scores) -> scores`` serves): row b of the beam
    batch belongs to user b // num_beams; keep only that user's trie children."""

    def __init__(self, tries: list[TitleTrie], prompt_len: int, num_beams: int):
        self.tries, self.prompt_len, self.num_beams = tries, prompt_len, num_beams

    def __call__(self, input_ids, scores):
        mask = torch.full_like(scores, float("-inf"))
        for b, seq in enumerate(input_ids[:, self.prompt_len:].tolist()):
            trie = self.tries[b // self.num_beams]
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


class ConstrainedGenerator:
    """Beam search over catalog titles with a transformers model (the HF backend's).

    Beam search as transformers runs it with ``early_stopping=False`` and ``length_penalty=0``: each step ranks every
    beam's allowed next tokens by total log-likelihood and looks at the best ``2k``; a finished title among the best
    ``k`` joins the finished list (the best ``k`` are kept), the best ``k`` unfinished ones are the next beams; a
    user is done when it has ``k`` finished titles and no running beam scores above the worst of them.
    ``share_prompt=False`` runs transformers' own ``generate`` instead (per-beam prompt copies; the reference)."""

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
        out = []
        eos = self.tok.eos_token_id
        for lo in range(0, len(prompts), self.batch_size):
            batch_p = list(prompts[lo:lo + self.batch_size])
            tries = [TitleTrie(self.token_ids, self.catalog.ids[~np.isin(self.catalog.ids, h)], eos)
                     for h in histories[lo:lo + self.batch_size]]
            found = self._search(batch_p, tries, k) if self.share_prompt else self._generate(batch_p, tries, k)
            for trie, titles in zip(tries, found):
                items, vals, seen = [], [], set()
                for score, tokens in sorted(titles, key=lambda t: -t[0]):
                    item = trie.item_of.get(tuple(tokens))
                    if item is None or item in seen:
                        continue
                    seen.add(item)
                    items.append(item)
                    vals.append(score)
                out.append((np.asarray(items, np.int64), np.asarray(vals, np.float32)))
        return out

    def _search(self, prompts: list[str], tries: list[TitleTrie], k: int) -> list[list[tuple[float, tuple]]]:
        """Beam search with each prompt's keys and values shared by its beams; ``[(score, title tokens)]`` per
        prompt."""
        decoder = model_parts(self.model)[0]
        eos, pad = self.tok.eos_token_id, self.tok.pad_token_id
        enc = self.tok(prompts, return_tensors="pt", padding=True).to(self.model.device)
        B = len(prompts)
        # a beam: (score, title tokens so far, trie node, row of its last hidden state)
        beams = [[(0.0, (), trie.root, b)] for b, trie in enumerate(tries)]
        finished: list[list[tuple[float, tuple]]] = [[] for _ in range(B)]
        done = [False] * B
        with torch.inference_mode():
            prompt = prompt_pass(self.model, enc["input_ids"], enc["attention_mask"])
            shared = SharedPrefix(prompt.cache, enc["attention_mask"], k)
            hidden = prompt.last_hidden_state[:, -1]
            for _ in range(self.max_title_tokens + 1):
                lse = log_normaliser(self.model, hidden)
                # every allowed continuation of every running beam: its log-probability in one gather
                rows, toks = [], []
                for b in range(B):
                    if not done[b]:
                        for _, _, node, row in beams[b]:
                            kids = [t for t in node if t != eos]
                            rows += [row] * len(kids)
                            toks += kids
                lp = (target_logits(self.model, hidden[rows], torch.tensor(toks, device=hidden.device))
                      - lse[rows]).tolist() if rows else []
                parents, tokens, pos = [], [], 0
                for b in range(B):
                    nxt = []
                    if not done[b]:
                        cands = []
                        for score, title, node, row in beams[b]:
                            if eos in node:   # a complete title: EOS is free, the score is the title's log-likelihood
                                cands.append((score, None, title, node, row))
                            for t in node:
                                if t != eos:
                                    cands.append((score + lp[pos], t, title, node[t], row))
                                    pos += 1
                        cands.sort(key=lambda c: -c[0])
                        for rank, (score, t, title, node, row) in enumerate(cands[:2 * k]):
                            if t is None:
                                if rank < k:
                                    finished[b].append((score, title))
                            elif len(nxt) < k:
                                nxt.append((score, title + (t,), node, row))
                        finished[b] = sorted(finished[b], key=lambda f: -f[0])[:k]
                        done[b] = not nxt or (len(finished[b]) == k and nxt[0][0] <= finished[b][-1][0])
                    if done[b]:
                        nxt = []
                    # k rows per prompt; rows without a beam repeat the prompt's first row and are never read
                    parents += [row for *_, row in nxt] + [b * k if shared.steps else b] * (k - len(nxt))
                    tokens += [title[-1] for _, title, _, _ in nxt] + [pad] * (k - len(nxt))
                    beams[b] = [(score, title, node, b * k + j) for j, (score, title, node, _) in enumerate(nxt)]
                if all(done):
                    break
                shared.reorder(torch.tensor(parents, device=hidden.device))
                with attending(self.model):
                    hidden = decoder(input_ids=torch.tensor(tokens, device=hidden.device)[:, None],
                                     position_ids=shared.positions(), use_cache=False,
                                     shared_prefix=shared).last_hidden_state[:, -1]
                shared.advance()
        return finished

    def _generate(self, prompts: list[str], tries: list[TitleTrie], k: int) -> list[list[tuple[float, tuple]]]:
        """transformers' ``generate`` beam search with the trie processor (each prompt encoded per beam)."""
        from transformers import LogitsProcessorList

        eos = self.tok.eos_token_id
        enc = self.tok(prompts, return_tensors="pt", padding=True).to(self.model.device)
        P = enc["input_ids"].shape[1]
        with torch.inference_mode():
            gen = self.model.generate(
                **enc, num_beams=k, num_return_sequences=k, do_sample=False, length_penalty=0.0,
                early_stopping=False, max_new_tokens=self.max_title_tokens + 1, pad_token_id=self.tok.pad_token_id,
                eos_token_id=eos, logits_processor=LogitsProcessorList([TrieProcessor(tries, P, k)]),
                output_scores=True, return_dict_in_generate=True, top_p=None, top_k=None, temperature=None)
        seqs = gen.sequences[:, P:].tolist()
        scores = gen.sequences_scores.float().cpu().numpy()
        out = []
        for u in range(len(prompts)):
            titles = []
            for j in range(u * k, (u + 1) * k):
                s = seqs[j][:seqs[j].index(eos)] if eos in seqs[j] else seqs[j]
                if scores[j] > -1e8:   # a beam that never left the dead (-1e9) start
                    titles.append((float(scores[j]), tuple(s)))
            out.append(titles)
        return out
