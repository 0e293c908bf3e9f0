"""Benchmark of the verbalizer ranker (figures printed, never asserted).

    python bench/bench_ranker.py [--users 48] [--batches 1,8,16] [--threads 2] [--dtype auto] [--train-steps 4]

On real `strict` ML-1M users (MostPop's top 20 as the candidates: the cost does not depend on which Stage 1 chose
them), with the embedded Gemma 3 270M: prompt length in tokens, inference seconds per user for each batch size (one
decoder pass, the label rows of the LM head at the last position only), and LoRA training seconds per example
(forward and backward, r=8 on q/k/v/o). The 1-minute load average is printed with every figure: the machine is
shared, and contention moves them.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DUALREC_SHARED_DATA", REPO.parent / "shared" / "data"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=48)
    ap.add_argument("--batches", default="1,8,16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--train-steps", type=int, default=4)
    ap.add_argument("--train-batch", type=int, default=4)
    args = ap.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model

    from dualrec.data.movielens import load
    from dualrec.evaluation.protocols import make_split
    from dualrec.llm.hf import load_causal_lm
    from dualrec.llm.ranker import RankerTask, VerbalizerRanker, ranker_examples
    from dualrec.models import build_model

    torch.set_num_threads(args.threads)
    ds = load("ml-1m", SHARED, ratings=SHARED / "ml-1m-ratings-head" / "ratings.dat").top_items(1000)
    split = make_split(ds.sequences(), "strict")
    pop = build_model("mostpop").fit(split.train, ds.catalog)
    cases = split.test.head(args.users)
    cands = np.stack(pop.recommend(cases.histories, 20).items)
    model, tok = load_causal_lm("embedded", dtype=args.dtype, device="cpu")
    ranker = VerbalizerRanker(model, tok, ds.catalog)
    prompts, _ = ranker.prompts(cases.histories, cands)
    lengths = [len(x) for x in tok(prompts).input_ids]
    print(f"dtype {model.dtype}, threads {args.threads}; prompt tokens: mean {np.mean(lengths):.0f}, "
          f"max {max(lengths)}")
    ranker.scores(cases.histories[:2], cands[:2])  # warm-up
    for b in (int(x) for x in args.batches.split(",")):
        ranker.batch_size = b
        t = time.perf_counter()
        ranker.scores(cases.histories, cands)
        s = (time.perf_counter() - t) / len(cases)
        print(f"inference batch {b:>2}: {s:.3f} s/user, {1 / s:.1f} users/s (load {os.getloadavg()[0]:.1f})")

    examples, counts = ranker_examples(pop, split.train, ds.catalog, max_users=200)
    print(f"training examples from 200 users with MostPop's candidates: {counts}")
    model.train()
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1,
                                                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    task = RankerTask(examples)
    task.tokenize(tok, 512)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for step in range(args.train_steps):
        batch = list(range(step * args.train_batch, (step + 1) * args.train_batch))
        t = time.perf_counter()
        loss = task.loss(peft_model, batch, tok.pad_token_id, "cpu") / len(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append((time.perf_counter() - t) / len(batch))
        print(f"train step {step}: loss {loss.item():.3f}, {times[-1]:.3f} s/example (load {os.getloadavg()[0]:.1f})")
    print(f"training: {np.median(times):.3f} s/example median over {len(times)} steps of {args.train_batch}")


if __name__ == "__main__":
    main()
