"""Benchmark of DUALRec's LLM stages on this machine (figures printed, never asserted).

    python bench/bench_llm.py --prompts 8 --tokens 64 [--threads 1] [--dtypes auto,float32] [--json out.json]

Measures, on real Stage-2 prompts built from ML-1M paper-protocol test users:
  1. generation with the embedded Gemma 3 270M: llama.cpp one prompt at a time and in multi-sequence batches
     (the C API; llama-cpp-python has no batch API) versus transformers (the GGUF dequantised to each of
     ``--dtypes``; ``auto`` is what the configs get on this CPU) one at a time and in batches: tokens/s and prompts/s;
  2. load times: llama.cpp GGUF, transformers from the converted safetensors folder;
  3. the LM head's log-normaliser for 20/80/160 rows: the bare product, the whole-vocabulary logsumexp, by slices;
  4. the beyond-the-paper modes: candidate scoring of 20 candidates (shared prompt KV cache; one user per pass and
     several users per pass) and constrained beam search (k=10; transformers' generate, and the search over shared
     prompt keys): seconds per user;
  5. SBERT: embedding the 1,000-title catalog once, and a re-rank per user (row lookup + dot product);
  6. the whole pipeline through ``evaluate`` (cache off): seconds per user per stage.
The 1-minute load average is printed next to every figure: the machine is shared, and contention moves them a lot.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DUALREC_SHARED_DATA", REPO.parent / "shared" / "data"))


def load() -> float:
    return round(os.getloadavg()[0], 1)


def _seconds(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def llama_cpp_multi_sequence(llm, prompts: list[str], max_tokens: int, slots: int, threads: int) -> list[str]:
    """Greedy decoding of all ``prompts`` through llama.cpp's multi-sequence batches (continuous batching: up to
    ``slots`` sequences share every ``llama_decode``; a finished slot takes the next prompt). llama-cpp-python has
    no API for this, so it drives the C API directly; measured here to answer "batched versus one at a time"."""
    import llama_cpp
    from llama_cpp import _internals

    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = slots * 384, 2048, 512, slots
    cp.n_threads = cp.n_threads_batch = threads
    cp.kv_unified = True
    ctx = _internals.LlamaContext(model=llm._model, params=cp, verbose=False)
    mem = llama_cpp.llama_get_memory(ctx.ctx)
    batch = llama_cpp.llama_batch_init(2048, 0, 1)
    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    tokens = [llm.tokenize(p.encode(), add_bos=True, special=False) for p in prompts]
    out: list[list[int]] = [[] for _ in prompts]
    queue, free, running = list(range(len(prompts))), list(range(slots)), {}   # running: slot -> [prompt, pos, row]

    def add(tok: int, pos: int, seq: int, logits: bool) -> int:
        j = batch.n_tokens
        batch.token[j], batch.pos[j], batch.n_seq_id[j], batch.logits[j] = tok, pos, 1, logits
        batch.seq_id[j][0] = seq
        batch.n_tokens += 1
        return j

    while queue or running:
        batch.n_tokens = 0
        for s, st in running.items():                                 # one new token per running sequence
            st[2] = add(out[st[0]][-1], st[1], s, True)
            st[1] += 1
        room = 2048 - batch.n_tokens
        while free and queue and len(tokens[queue[0]]) <= room:       # new prompts fill the free slots
            s, i = free.pop(), queue.pop(0)
            llama_cpp.llama_memory_seq_rm(mem, s, -1, -1)
            for k, t in enumerate(tokens[i]):
                row = add(t, k, s, k == len(tokens[i]) - 1)
            running[s], room = [i, len(tokens[i]), row], room - len(tokens[i])
        if llama_cpp.llama_decode(ctx.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        for s, (i, _, row) in list(running.items()):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx.ctx, row), shape=(n_vocab,))
            t = int(logits.argmax())
            if not llama_cpp.llama_vocab_is_eog(vocab, t):
                out[i].append(t)
            if llama_cpp.llama_vocab_is_eog(vocab, t) or len(out[i]) >= max_tokens:
                del running[s]
                free.append(s)
    llama_cpp.llama_batch_free(batch)
    ctx.close()
    return [llm.detokenize(o).decode("utf-8", "replace") for o in out]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: free cores)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dtypes", default="auto", help="comma-separated transformers dtypes to compare, e.g. "
                    "bfloat16,float32 (auto: bf16 where the CPU has native bf16, else float32)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: llamacpp,hf,head,modes,sbert,pipeline")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    import torch

    from dualrec.data import read_ml1m
    from dualrec.evaluation.protocols import make_split
    from dualrec.llm.backends import HFBackend, LlamaCppBackend, SamplingParams, free_cpus
    from dualrec.llm.prompts import PromptBuilder
    from dualrec.models import build_model

    threads = args.threads or free_cpus()
    torch.set_num_threads(threads)
    ds = read_ml1m(SHARED / "ml-1m", ratings=SHARED / "ml-1m-ratings-head" / "ratings.dat").top_items(1000)
    cat = ds.catalog
    split = make_split(ds.sequences(), "paper")
    stage1 = build_model("mostpop").fit(split.train, cat)
    cases = split.test.head(args.prompts)
    top1 = [int(r[0]) for r in stage1.recommend(cases.histories, 1).items]
    prompts = [PromptBuilder(cat).prompt(h, t) for h, t in zip(cases.histories, top1)]
    params = SamplingParams(max_new_tokens=args.tokens, stop=())  # no stop: every prompt generates `tokens`
    figures: dict = {"threads": threads, "prompts": len(prompts), "new_tokens_per_prompt": args.tokens}
    print(f"{len(prompts)} prompts, {args.tokens} new tokens each, {threads} thread(s), load {load()}")

    # 1-2. generation
    if "llamacpp" not in skip:
        t = time.perf_counter()
        lc = LlamaCppBackend(n_threads=threads)
        lc.llm
        figures["llama_cpp_load_s"] = time.perf_counter() - t
        lc.generate(prompts[:1], SamplingParams(max_new_tokens=2, stop=()))  # warm-up
        t = time.perf_counter()
        out = lc.generate(prompts, params)
        s = time.perf_counter() - t
        toks = sum(c.new_tokens for c in out)
        figures["llama_cpp"] = {"s": s, "tokens_per_s": toks / s, "prompts_per_s": len(prompts) / s, "load": load()}
        print(f"llama.cpp      : {toks / s:6.1f} tok/s, {len(prompts) / s:.3f} prompts/s (load {load()})")
        for slots in (4, len(prompts)):
            t = time.perf_counter()
            texts = llama_cpp_multi_sequence(lc.llm, prompts, args.tokens, slots, threads)
            s = time.perf_counter() - t
            same = sum(a == b.text for a, b in zip(texts, out))
            figures[f"llama_cpp_multi_sequence_{slots}"] = {"s": s, "prompts_per_s": len(prompts) / s,
                                                            "identical_to_one_at_a_time": same, "load": load()}
            print(f"llama.cpp x{slots:<3} : {len(prompts) / s:.3f} prompts/s in {slots} parallel sequences; "
                  f"{same}/{len(prompts)} texts identical to one at a time (load {load()})")
        lc.close()

    figures["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    for dtype in args.dtypes.split(","):
        t = time.perf_counter()
        hf = HFBackend(dtype=dtype, n_threads=threads)
        name = hf.identity()["dtype"]   # what "auto" resolves to on this machine and device
        if not {"hf", "head", "modes", "pipeline"} <= skip:
            hf.load()
            figures[f"transformers_{name}_load_s"] = time.perf_counter() - t
        if "hf" not in skip:
            hf.generate(prompts[:1], SamplingParams(max_new_tokens=2, stop=()))
            for bs in (1, args.batch):
                hf.batch_size = bs
                some = prompts[:8] if bs == 1 else prompts   # one at a time is slow: 8 prompts measure it
                t = time.perf_counter()
                out = hf.generate(some, params)
                s = time.perf_counter() - t
                toks = sum(c.new_tokens for c in out)
                figures[f"transformers_{name}_batch{bs}"] = {"s": s, "tokens_per_s": toks / s, "prompts": len(some),
                                                             "prompts_per_s": len(some) / s, "load": load()}
                print(f"transformers {name} b{bs:<2}: {toks / s:6.1f} tok/s, {len(some) / s:.3f} prompts/s "
                      f"(load {load()})")

    # 3. the LM head's log-normaliser (every mode that scores tokens): the bare product, the whole-vocabulary
    # logsumexp, and the sliced one the code uses (scoring.log_normaliser), on real hidden states
    if "head" not in skip:
        import torch.nn.functional as F

        from dualrec.llm.scoring import _parts, log_normaliser

        model, tok = hf.load()
        decoder, head, _ = _parts(model)
        with torch.inference_mode():
            states = decoder(**tok(prompts[:2], return_tensors="pt", padding=True)).last_hidden_state.flatten(0, 1)
            for rows in (20, 80, 160):
                h = states[:rows].contiguous()
                ways = {"product": lambda: F.linear(h, head.weight),
                        "whole_logsumexp": lambda: torch.logsumexp(F.linear(h, head.weight).float(), -1),
                        "sliced_logsumexp": lambda: log_normaliser(model, h)}
                best = {name: min(_seconds(f) for _ in range(3)) for name, f in ways.items()}
                figures[f"head_{rows}_rows_ms"] = {k: 1000 * v for k, v in best.items()}
                print(f"LM head {rows:3d} rows: " + ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in best.items())
                      + f" (load {load()})")

    # 4. beyond-the-paper modes
    if "modes" not in skip:
        from dualrec.llm.constrained import ConstrainedGenerator
        from dualrec.llm.scoring import candidate_texts, score_candidate_lists

        model, tok = hf.load()
        cands = [candidate_texts(cat, c) for c in stage1.recommend(cases.histories, 20).items]
        m = min(8, len(prompts))
        for users in (1, m):   # one user per pass vs m users' prompts and candidates in one pass
            t = time.perf_counter()
            for lo in range(0, m, users):
                score_candidate_lists(model, tok, [p + "1." for p in prompts[lo:lo + users]], cands[lo:lo + users])
            figures[f"score20_{users}_users_per_pass_s_per_user"] = (time.perf_counter() - t) / m
        for share in (False, True):   # transformers generate (per-beam prompt copies) vs the shared-prefix search
            gen = ConstrainedGenerator(model, tok, cat, batch_size=m, share_prompt=share)
            t = time.perf_counter()
            gen.recommend([p + "1." for p in prompts[:m]], cases.histories[:m], 10)
            figures[f"constrained10{'_shared_prompt' if share else ''}_s_per_user"] = (time.perf_counter() - t) / m
        print(f"score top-20   : {figures['score20_1_users_per_pass_s_per_user']:.2f} s/user one user per pass, "
              f"{figures[f'score20_{m}_users_per_pass_s_per_user']:.2f} with {m} per pass; "
              f"constrained k=10, {m} users per batch: "
              f"{figures['constrained10_s_per_user']:.2f} s/user with generate, shared-prefix search "
              f"{figures['constrained10_shared_prompt_s_per_user']:.2f} (load {load()})")

    # 5. SBERT
    if "sbert" not in skip:
        import tempfile

        from dualrec.llm.rerank import SBERTReranker

        with tempfile.TemporaryDirectory() as d:
            rr = SBERTReranker(cache_dir=d)
            t = time.perf_counter()
            rr.model
            figures["sbert_load_s"] = time.perf_counter() - t
            t = time.perf_counter()
            rr.catalog_embeddings(cat)
            figures["sbert_catalog_embed_s"] = time.perf_counter() - t
            t = time.perf_counter()
            for h, t1 in zip(cases.histories, top1):
                rr.rerank(cat, stage1.recommend([h], 3).items[0], [t1])
            figures["sbert_rerank_s_per_user"] = (time.perf_counter() - t) / len(prompts)
        print(f"SBERT          : catalog of {len(cat)} embedded in {figures['sbert_catalog_embed_s']:.1f} s once; "
              f"re-rank {1000 * figures['sbert_rerank_s_per_user']:.2f} ms/user (incl. a Stage-1 call)")

    # 6. the whole pipeline
    if "pipeline" not in skip:
        from dualrec.evaluation.evaluator import evaluate

        dr = build_model("dualrec", {"stage1": "mostpop", "cache": False, "max_new_tokens": args.tokens,
                                     "backend": {"kind": "llama_cpp", "n_threads": threads}})
        dr.fit(split.train, cat)
        dr.recommend(cases.histories[:1], 10)  # load llama.cpp and SBERT outside the timing
        res = evaluate(dr, cases, cat, ks=(1, 5, 10), progress=False)
        figures["pipeline"] = {**res.timings, "load": load()}
        print("pipeline       : " + ", ".join(f"{k}={v:.4f}" for k, v in res.timings.items()) + f" (load {load()})")
        dr.close()

    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
