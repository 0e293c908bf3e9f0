"""Stage-1 LSTM throughput: data pipeline, training and inference. Prints figures; asserts nothing.

    python bench/bench_lstm.py --data-dir ../shared/data --ratings ../shared/data/ml-1m-ratings-head/ratings.dat

Measures, on whatever device is present (CPU here; CUDA when available):
  * loading + filtering ML-1M and building every training window (the data pipeline);
  * training throughput (windows/s) over a fixed number of batches, and the implied seconds per full epoch;
  * inference throughput (users/s) in batches of 256, and p50/p95 latency of a single-user recommendation.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--ratings", default=None)
    ap.add_argument("--batches", type=int, default=60, help="training batches to time")
    ap.add_argument("--users", type=int, default=1024, help="users for the batched inference figure")
    ap.add_argument("--single", type=int, default=200, help="single-user requests for the latency figure")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from dualrec.data.movielens import load
    from dualrec.evaluation.protocols import make_split
    from dualrec.models import build_model

    t0 = time.perf_counter()
    ds = load("ml-1m", args.data_dir, ratings=args.ratings).top_items(1000)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    split = make_split(ds.sequences(), "strict")
    t_split = time.perf_counter() - t0
    model = build_model("lstm", {"device": args.device, "progress": False})
    model.catalog = ds.catalog
    t0 = time.perf_counter()
    x, y = model.training_windows(split.train)
    t_windows = time.perf_counter() - t0
    print(f"data: load+filter {t_load:.2f}s, split {t_split:.2f}s, {len(y):,} windows built in {t_windows:.2f}s")

    from dualrec.utils import pick_device

    device = pick_device(args.device)
    model.device = device
    net = model.build_network().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    bs = model.config.batch_size
    rng = np.random.default_rng(0)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)

    def step():
        idx = torch.as_tensor(rng.integers(0, len(y), bs))
        loss = F.cross_entropy(net(xt[idx].to(device)), yt[idx].to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()

    net.train()
    for _ in range(5):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.batches):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    wps = args.batches * bs / dt
    print(f"train [{device}, batch {bs}, {torch.get_num_threads()} threads]: {wps:,.0f} windows/s, "
          f"{len(y) / wps:,.0f} s per epoch of {len(y):,} windows")

    net.eval()
    model.net = net
    hist = split.test.histories[: args.users]
    model.recommend(hist[:8], k=10)
    t0 = time.perf_counter()
    for lo in range(0, len(hist), 256):
        model.recommend(hist[lo:lo + 256], k=10)
    dt = time.perf_counter() - t0
    print(f"inference batched (256/batch, k=10): {len(hist) / dt:,.0f} users/s")
    lat = []
    for h in split.test.histories[: args.single]:
        t0 = time.perf_counter()
        model.recommend([h], k=10)
        lat.append((time.perf_counter() - t0) * 1000)
    q = statistics.quantiles(lat, n=100)
    print(f"inference single user (k=10): p50 {q[49]:.2f} ms, p95 {q[94]:.2f} ms over {len(lat)} requests")


if __name__ == "__main__":
    main()
