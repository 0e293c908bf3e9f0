"""RecBole 1.2.1 side by side with dualrec: SASRec and GRU4Rec, the same split, hyper-parameters and time budget.

What it does, in one process and one run (each model: RecBole's, then ours, one after the other):

1. loads the ML-1M copy (top-1000 items) and makes our ``strict`` split (leave-one-out: a user's last item is the
   test target, the one before it the validation target);
2. writes every user's full sequence as RecBole atomic files, the position in the sequence as the timestamp, so
   RecBole's ``LS valid_and_test`` split over time order is exactly ours; it then checks that RecBole's test
   targets and histories agree with ours user for user (and stops if not);
3. trains RecBole's model with RecBole's trainer (its ``_train_epoch`` over its data loader, which makes every
   prefix of a training sequence an instance) and ours with our loop (:mod:`dualrec.models.training`,
   ``targets="all"``), each for ``--budget-s`` seconds of training time; our epochs run whole, and one whose
   expected length (the last epoch's) would pass the budget is not started (an epoch slower than the last may end
   a few seconds past it);
4. scores both with OUR evaluator (full ranking over the catalog, the user's history excluded: RecBole's own
   full-sort evaluation of sequential models does not exclude it), on the test cases, at ``--points`` moments of
   RecBole's budget and after each of our epochs, with the clock stopped while scoring;
5. writes ``--out`` (``results/bench/recbole.json``): ``{"runs": [{"library", "model", "budget_s", "s_per_epoch",
   "epochs", "test": {"HR@10", "NDCG@10"}, "s_to_match_recbole"}]}`` (the last on our runs: training seconds
   ours needed to reach RecBole's final test NDCG@10, null if it never did), plus each run's curve of
   (training seconds, test NDCG@10, HR@10), the hyper-parameters, data fingerprint, commit and machine.

A run already in ``--out`` with the same budget is kept, so re-running the same command resumes. Needs its own
environment (RecBole wants numpy < 2): ``bash bench/recbole-env.sh``, then

    OMP_NUM_THREADS=1 .venv-recbole/bin/python bench/bench_recbole.py --data-dir ../shared/data \\
        --ratings ../shared/data/ml-1m-ratings-head/ratings.dat --budget-s 1800
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")   # RecBole 1.2.1's torch.load of its own files

import numpy as np
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender import GRU4Rec as RecBoleGRU4Rec
from recbole.model.sequential_recommender import SASRec as RecBoleSASRec
from recbole.trainer import Trainer
from recbole.utils import init_seed

from dualrec.config import ExperimentConfig
from dualrec.evaluation.evaluator import evaluate
from dualrec.evaluation.protocols import make_split
from dualrec.experiment import load_dataset
from dualrec.models import build_model
from dualrec.models.base import ScoringRecommender
from dualrec.utils import source_commit

DATASET = "ml-strict"
SEED = 42

# model -> (our options, RecBole's options): the same architecture sizes, dropout, learning rate and batch size
MODELS = {
    "sasrec": ({"max_len": 50, "hidden": 50, "num_blocks": 2, "num_heads": 1, "dropout": 0.2, "lr": 1e-3,
                "batch_size": 128, "targets": "all"},
               {"MAX_ITEM_LIST_LENGTH": 50, "hidden_size": 50, "inner_size": 50, "n_layers": 2, "n_heads": 1,
                "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2, "hidden_act": "relu", "layer_norm_eps": 1e-8,
                "learning_rate": 1e-3, "train_batch_size": 128}),
    "gru4rec": ({"max_len": 30, "embedding_dim": 64, "hidden": 100, "layers": 1, "dropout": 0.25, "lr": 1e-3,
                 "batch_size": 256, "targets": "all"},
                {"MAX_ITEM_LIST_LENGTH": 30, "embedding_size": 64, "hidden_size": 100, "num_layers": 1,
                 "dropout_prob": 0.25, "learning_rate": 1e-3, "train_batch_size": 256}),
}
RECBOLE_CLASSES = {"sasrec": RecBoleSASRec, "gru4rec": RecBoleGRU4Rec}


def write_atomic(dataset, folder: Path) -> Path:
    """Every user's full sequence as ``<folder>/ml-strict/ml-strict.inter``, the position as the timestamp."""
    seqs = dataset.sequences()
    path = folder / DATASET / f"{DATASET}.inter"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u, s in zip(seqs.users, seqs.to_list()):
            f.writelines(f"{u}\t{i}\t{p}\n" for p, i in enumerate(s))
    return path


def recbole_data(model: str, folder: Path, threads: int):
    """RecBole's config, dataset and loaders for ``model`` on the atomic files under ``folder``."""
    options = {
        "data_path": str(folder), "checkpoint_dir": str(folder / "saved"), "seed": SEED, "reproducibility": True,
        "use_gpu": False, "device": "cpu", "show_progress": False, "worker": 0,
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "train_neg_sample_args": None, "loss_type": "CE", **MODELS[model][1]}
    config = Config(model=RECBOLE_CLASSES[model].__name__, dataset=DATASET, config_dict=options)
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(threads)
    data = create_dataset(config)
    train, _, test = data_preparation(config, data)
    return config, data, train, test


def check_targets(data, test_loader, split) -> int:
    """Stop unless RecBole's test cases are ours: the same users, each with the same target and history tail."""
    feat = test_loader.dataset.inter_feat
    users = data.id2token("user_id", feat["user_id"].numpy()).astype(np.int64)
    targets = data.id2token("item_id", feat["item_id"].numpy()).astype(np.int64)
    lengths = feat["item_length"].numpy()
    lists = feat["item_id_list"].numpy()
    ours = {int(u): (int(t[0]), h) for u, h, t in zip(split.test.users, split.test.histories, split.test.targets)}
    if sorted(ours) != sorted(users.tolist()):
        raise SystemExit(f"RecBole's test users differ from ours: {len(set(ours) ^ set(users.tolist()))} differ")
    for u, t, n, row in zip(users, targets, lengths, lists):
        target, history = ours[int(u)]
        tail = data.id2token("item_id", row[:n]).astype(np.int64)
        if t != target or not np.array_equal(tail, history[-len(tail):]):
            raise SystemExit(f"user {u}: RecBole's test target {t} / history tail differ from ours ({target})")
    return len(users)


class RecBoleScorer(ScoringRecommender):
    """A trained RecBole sequential model behind our interface, so our evaluator ranks it: catalog rows in,
    RecBole's ``full_sort_predict`` scores of the catalog's items out (RecBole's padding column dropped)."""

    def __init__(self, net, data, catalog, max_len: int):
        super().__init__()
        self.name = f"recbole-{type(net).__name__.lower()}"
        self.net, self.catalog, self.max_len = net, catalog, max_len
        self.columns = torch.as_tensor(data.token2id("item_id", [str(i) for i in catalog.ids]))

    def _fit(self, train, valid, checkpoint_dir) -> None:
        raise NotImplementedError("trained by RecBole's trainer in bench/bench_recbole.py")

    @torch.no_grad()
    def score(self, histories):
        seq = np.zeros((len(histories), self.max_len), np.int64)   # RecBole: left-aligned, 0-padded on the right
        lengths = np.zeros(len(histories), np.int64)
        for i, h in enumerate(histories):
            h = self.columns.numpy()[h[-self.max_len:]]
            seq[i, :len(h)], lengths[i] = h, max(len(h), 1)
        self.net.eval()
        scores = self.net.full_sort_predict(Interaction({"item_id_list": torch.as_tensor(seq),
                                                         "item_length": torch.as_tensor(lengths)}))
        return scores.reshape(len(histories), -1)[:, self.columns]


def test_metrics(model, split, catalog) -> dict:
    m = evaluate(model, split.test, catalog, (10,), 512, progress=False).metrics
    return {"HR@10": m["HR@10"], "NDCG@10": m["NDCG@10"]}


class TimedBatches:
    """RecBole's training loader, handed out in slices that end when ``limit`` seconds of training are spent;
    the next slice goes on where the last stopped (an epoch may span several slices)."""

    def __init__(self, loader):
        self.loader, self.batches, self.epochs, self.done = loader, None, 0, 0
        self.spent = self.limit = 0.0

    def __iter__(self):
        start = time.perf_counter()
        while self.spent + (time.perf_counter() - start) < self.limit:
            if self.batches is None:
                self.batches, self.done = iter(self.loader), 0
            try:
                batch = next(self.batches)
            except StopIteration:
                self.batches, self.epochs = None, self.epochs + 1
                continue
            self.done += 1
            yield batch
        self.spent += time.perf_counter() - start

    @property
    def epochs_done(self) -> float:
        return self.epochs + (self.done / len(self.loader) if self.batches is not None else 0.0)


def run_recbole(model: str, folder: Path, split, catalog, budget: float, points: int, threads: int) -> dict:
    config, data, train, test = recbole_data(model, folder, threads)
    n_users = check_targets(data, test, split)
    print(f"recbole {model}: {len(train.dataset):,} training instances, {len(train)} batches per epoch; "
          f"test cases agree with ours for all {n_users} users", flush=True)
    net = RECBOLE_CLASSES[model](config, train.dataset).to(config["device"])
    trainer = Trainer(config, net)
    scorer = RecBoleScorer(net, data, catalog, config["MAX_ITEM_LIST_LENGTH"])
    batches = TimedBatches(train)
    curve = []
    for p in range(1, points + 1):
        batches.limit = budget * p / points
        trainer._train_epoch(batches, batches.epochs)
        curve.append({"train_s": batches.spent, "epochs": batches.epochs_done, **test_metrics(scorer, split, catalog)})
        print(f"recbole {model}: {batches.spent:.0f} s, {batches.epochs_done:.2f} epochs, test NDCG@10 "
              f"{curve[-1]['NDCG@10']:.4f}", flush=True)
    return {"library": "recbole", "model": model, "budget_s": budget, "s_per_epoch": batches.spent /
            max(batches.epochs_done, 1e-9), "epochs": batches.epochs_done, "test": final(curve),
            "instances_per_epoch": len(train.dataset), "options": MODELS[model][1], "curve": curve}


def run_ours(model: str, folder: Path, split, catalog, budget: float, recbole_ndcg: float | None) -> dict:
    """Our model trained one epoch per call (each call resumes the last one's checkpoint), scored after each."""
    options = dict(MODELS[model][0], seed=SEED, progress=False)
    checkpoints = folder / f"dualrec-{model}"
    shutil.rmtree(checkpoints, ignore_errors=True)   # a run not in the record starts again from scratch
    curve, spent, epoch_s = [], 0.0, 0.0
    while spent + epoch_s < budget:
        net = build_model(model, dict(options, epochs=len(curve) + 1))
        net.fit(split.train, catalog, valid=split.valid, checkpoint_dir=checkpoints)
        epoch_s = net.history[-1]["seconds"]
        spent = sum(h["seconds"] for h in net.history)
        curve.append({"train_s": spent, "epochs": len(curve) + 1, **test_metrics(net, split, catalog)})
        print(f"dualrec {model}: {spent:.0f} s, epoch {len(curve)}, test NDCG@10 {curve[-1]['NDCG@10']:.4f}",
              flush=True)
    match = next((c["train_s"] for c in curve if recbole_ndcg is not None and c["NDCG@10"] >= recbole_ndcg), None)
    return {"library": "dualrec", "model": model, "budget_s": budget, "s_per_epoch": spent / len(curve),
            "epochs": len(curve), "test": final(curve), "s_to_match_recbole": match,
            "rows_per_epoch": int(net.history[-1]["rows_per_s"] * epoch_s), "options": MODELS[model][0],
            "curve": curve}


def markdown(record: dict) -> str:
    """The record's runs as the Markdown table results/benchmarks.md shows (``--render-only``)."""
    lines = ["| library | model | budget s | epochs | s/epoch | test HR@10 | test NDCG@10 | s to RecBole's final |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in record["runs"]:
        match = r.get("s_to_match_recbole")
        lines.append(f"| {r['library']} | {r['model']} | {r['budget_s']:.0f} | {r['epochs']:.2f} | "
                     f"{r['s_per_epoch']:.0f} | {r['test']['HR@10']:.4f} | {r['test']['NDCG@10']:.4f} | "
                     + ("-" if r["library"] == "recbole" else "never" if match is None else f"{match:.0f}") + " |")
    return "\n".join(lines) + "\n"


def final(curve: list[dict]) -> dict:
    return {"HR@10": curve[-1]["HR@10"], "NDCG@10": curve[-1]["NDCG@10"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--ratings", default="../shared/data/ml-1m-ratings-head/ratings.dat")
    ap.add_argument("--budget-s", type=float, default=1800.0, help="training seconds per run")
    ap.add_argument("--points", type=int, default=10, help="test scorings of a RecBole run within its budget")
    ap.add_argument("--models", default="sasrec,gru4rec")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-recbole"), help="atomic files and checkpoints")
    ap.add_argument("--out", type=Path, default=Path("results/bench/recbole.json"))
    ap.add_argument("--render-only", action="store_true", help="print --out's table and run nothing")
    args = ap.parse_args()
    if args.render_only:
        print(markdown(json.loads(args.out.read_text())), end="")
        return
    torch.set_num_threads(args.threads)
    folder, args.out = args.work.resolve(), args.out.resolve()
    cfg = ExperimentConfig.from_dict({"data": {"name": "ml-1m", "data_dir": args.data_dir, "ratings": args.ratings}})
    dataset = load_dataset(cfg)
    split = make_split(dataset.sequences(), "strict")
    write_atomic(dataset, folder)
    os.chdir(folder)   # RecBole's trainer makes its log folders in the working directory
    record = json.loads(args.out.read_text()) if args.out.exists() else {}
    record.update({
        "note": "test NDCG@10/HR@10 by dualrec's evaluator (full ranking, history excluded) on the strict split; "
                "budget_s and s_per_epoch are training seconds (the clock stops while scoring)",
        "data": {"name": dataset.name, "fingerprint": dataset.fingerprint(), "catalog_items": len(dataset.catalog),
                 "test_users": len(split.test)},
        "commit": source_commit(), "command": " ".join(sys.argv),
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "numpy": np.__version__, "recbole": __import__("recbole").__version__,
                        "machine": platform.machine(), "cpu": torch.backends.cpu.get_cpu_capability(),
                        "threads": torch.get_num_threads(), "load_average_at_start": os.getloadavg()[0]}})
    runs = [r for r in record.get("runs", []) if r["budget_s"] == args.budget_s]
    for model in args.models.split(","):
        for library in ("recbole", "dualrec"):
            if any(r["library"] == library and r["model"] == model for r in runs):
                print(f"{library} {model}: kept from {args.out}")
                continue
            if library == "recbole":
                run = run_recbole(model, folder, split, dataset.catalog, args.budget_s, args.points, args.threads)
            else:
                theirs = next(r for r in runs if r["library"] == "recbole" and r["model"] == model)
                run = run_ours(model, folder, split, dataset.catalog, args.budget_s, theirs["test"]["NDCG@10"])
            runs.append(run)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({**record, "runs": runs}, indent=1))
    print(markdown({"runs": runs}), end="")

if __name__ == "__main__":
    main()
