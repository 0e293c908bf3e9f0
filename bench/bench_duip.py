"""DUIP speed: training steps/s (windows/s) and inference users/s, per LM mode, on the real embedded LM.

Prints figures (never asserts). The network is built exactly as ``fit`` builds it, on the shared ML-1M copy
(top 1,000 items, strict protocol's training sequences), and timed after one warm-up step/batch.

    python bench/bench_duip.py                                  # CPU, embedded Gemma 3 270M, all three modes
    python bench/bench_duip.py --device cuda --batch 64 --users 2048   # on a GPU
    python bench/bench_duip.py --modes lora --set prompt_items=5 --set soft_tokens=8
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import yaml

SHARED = Path(os.environ.get("DUALREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", nargs="+", default=["frozen", "lora", "full"])
    ap.add_argument("--config", default="configs/duip.yaml", help="model options are read from here")
    ap.add_argument("--set", action="append", default=[], help="model option override, e.g. prompt_items=5")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16, help="training windows per step")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up)")
    ap.add_argument("--users", type=int, default=64, help="histories scored for inference")
    args = ap.parse_args()

    import torch

    from dualrec.data import read_ml1m
    from dualrec.evaluation.protocols import make_split
    from dualrec.models.duip import DUIP
    from dualrec.utils import seed_everything

    ds = read_ml1m(SHARED / "ml-1m", ratings=SHARED / "ml-1m-ratings-head" / "ratings.dat").top_items(1000)
    split = make_split(ds.sequences(), "strict")
    options = {k: v for k, v in yaml.safe_load(Path(args.config).read_text())["model"].items() if k != "name"}
    options.update({k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)})
    options.update(device=args.device, progress=False, batch_size=args.batch, eval_batch_size=args.batch * 2,
                   lstm_run=None)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"device: {device_name}; torch {torch.__version__}; options: {options}")
    print("| LM mode | trainable params | train step (s) | train windows/s | inference users/s | prompt tokens |")
    print("|---|---|---|---|---|---|")
    for mode in args.modes:
        m = DUIP({**options, "lm_mode": mode})
        seed_everything(m.config.seed)
        m.catalog, m.device = ds.catalog, args.device
        x, y = m.training_windows(split.train)
        m.net = m.build_network().to(args.device)
        opt = m.build_optimizer()
        m.net.train()
        times = []
        for step in range(args.steps + 1):
            idx = np.arange(step * args.batch, (step + 1) * args.batch) % len(y)
            xb, yb = torch.as_tensor(x[idx]).to(args.device), torch.as_tensor(y[idx]).to(args.device)
            start = time.perf_counter()
            _, loss = m.training_step(xb, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            if step:  # the first step is warm-up
                times.append(time.perf_counter() - start)
        step_s = float(np.mean(times))
        m.net.eval()
        histories = split.test.histories[: args.users]
        m.recommend(histories[: m.batch_size], 10)  # warm-up
        start = time.perf_counter()
        m.recommend(histories, 10)
        users_s = len(histories) / (time.perf_counter() - start)
        n_train = sum(p.numel() for p in m.net.parameters() if p.requires_grad)
        with torch.no_grad():
            tokens = m.net.prompt(torch.as_tensor(x[:args.batch]).to(args.device))[1].sum(1).float().mean().item()
        print(f"| {mode} | {n_train:,} | {step_s:.2f} | {args.batch / step_s:.2f} | {users_s:.2f} | {tokens:.0f} |",
              flush=True)
        del m, opt


if __name__ == "__main__":
    main()
