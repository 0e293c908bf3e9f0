"""The one training loop (models/training.py) and the two target modes, on tiny synthetic data: exact values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiny import tiny_catalog, tiny_sequences

from dualrec.data.windows import IGNORE, make_chunks
from dualrec.evaluation.evaluator import evaluate
from dualrec.evaluation.protocols import make_split
from dualrec.models import Recommender, build_model
from dualrec.models.training import GlobalBatches, epoch_line, lightning_precision
from dualrec.utils import cpu_has_native_bf16

TESTS = Path(__file__).resolve().parent
SMALL = {"lstm": dict(id_dim=8, title_dim=4, genre_dim=4, title_vocab=40, hidden1=8, hidden2=6, head_hidden=5,
                      max_len=6, min_len=1),
         "gru4rec": dict(embedding_dim=6, hidden=7, max_len=6),
         "fpmc": dict(factors=6, max_len=6),
         "sasrec": dict(hidden=8, max_len=6),
         "unisrec": dict(hidden=8, num_heads=2, n_experts=2, max_len=6)}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    catalog = tiny_catalog()
    return catalog, make_split(tiny_sequences(catalog, n_users=40), "strict")


def built(name, catalog, **options):
    torch.manual_seed(0)
    m = build_model(name, dict(SMALL[name], progress=False, **options))
    m.catalog = catalog
    if name == "unisrec":   # fixed random text vectors instead of Sentence-BERT's
        m._text = np.random.default_rng(0).normal(size=(len(catalog), 16)).astype(np.float32)
    m.net = m.build_network()
    return m


def test_chunks_make_every_position_a_target_once():
    x, y = make_chunks([np.arange(1, 8), np.array([10, 11]), np.array([5])], max_len=3, min_len=1, pad=0)
    assert x.tolist() == [[1, 2, 3], [4, 5, 6], [0, 0, 10]]
    assert y.tolist() == [[2, 3, 4], [5, 6, 7], [IGNORE, IGNORE, 11]]
    x, y = make_chunks([np.arange(1, 8)], max_len=3, min_len=3, pad=0)   # 3 items before every target
    assert x.tolist() == [[1, 2, 3], [4, 5, 6]] and y.tolist() == [[IGNORE, IGNORE, 4], [5, 6, 7]]


@pytest.mark.parametrize("name", ["lstm", "gru4rec", "fpmc"])
def test_all_targets_loss_is_the_mean_of_the_prefix_losses(name, tiny):
    """A recurrent (or running-mean) network's output at position j is its last output on the first j + 1 items, so the `all` loss is
    the mean of the `last` losses of every prefix; padded targets count for nothing."""
    catalog, split = tiny
    m = built(name, catalog)
    m.net.eval()
    x, y = map(torch.as_tensor, make_chunks(m.encode(split.train.to_list()[:6]), 6, 1, pad=m.pad))
    with torch.no_grad():
        _, loss_all = m.training_step(x, y)
        per_prefix = [F.cross_entropy(m.net(x[r:r + 1, :j + 1]), y[r, j:j + 1])
                      for r in range(len(x)) for j in range(x.shape[1]) if y[r, j] != IGNORE]
        assert (y == IGNORE).any()
        assert loss_all.item() == pytest.approx(torch.stack(per_prefix).mean().item(), abs=1e-5)
        assert torch.allclose(m.net.positions(x)[:, -1], m.net(x), atol=1e-6)


@pytest.mark.parametrize("name", ["sasrec", "unisrec"])
def test_attention_positions_are_causal_and_end_in_the_last_position(name, tiny):
    catalog, _ = tiny
    m = built(name, catalog)
    m.net.eval()
    x = torch.tensor([[20, 20, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])     # 20 = the pad row
    future = x.clone()
    future[:, 4:] = torch.tensor([7, 8])
    with torch.no_grad():
        out, changed = m.net.positions(x), m.net.positions(future)
        assert torch.equal(out[:, :4], changed[:, :4]) and not torch.allclose(out[:, 4:], changed[:, 4:])
        assert torch.allclose(out[:, -1], m.net(x), atol=1e-5)
        # padded targets count for nothing: the loss over the real targets only
        y = torch.tensor([[IGNORE, IGNORE, 4, 5, 6, 7], [2, 3, 4, 5, 6, 7]])
        real = y != IGNORE
        assert m.training_step(x, y)[1].item() == pytest.approx(F.cross_entropy(out[real], y[real]).item(), rel=1e-6)


@pytest.mark.parametrize("name", ["narm", "stamp", "gcegnn", "hide", "mcprn", "attenmixer"])
def test_session_level_models_refuse_all_targets(name, tiny):
    catalog, split = tiny
    with pytest.raises(ValueError, match="targets='all' needs an output at every position"):
        build_model(name, {"targets": "all", "progress": False}).fit(split.train, catalog)


def test_validation_ndcg_is_the_evaluators_under_strict(tiny):
    catalog, split = tiny
    m = build_model("gru4rec", dict(SMALL["gru4rec"], epochs=1, progress=False)).fit(split.train, catalog,
                                                                                     valid=split.valid)
    ndcg = evaluate(m, split.valid, catalog, ks=(10,), progress=False).metrics["NDCG@10"]
    assert m.history[-1]["val_ndcg10"] == pytest.approx(ndcg, abs=1e-9)


def test_early_stopping_keeps_the_best_epoch(tiny, tmp_path):
    """With lr 0 nothing improves after epoch 1: patience 2 stops after epoch 3, and the same call again (a resume)
    trains nothing more."""
    catalog, split = tiny
    for _ in range(2):
        m = build_model("gru4rec", dict(SMALL["gru4rec"], lr=0.0, epochs=10, patience=2, progress=False))
        m.fit(split.train, catalog, valid=split.valid, checkpoint_dir=tmp_path)
        assert [h["epoch"] for h in m.history] == [1, 2, 3]
    m = build_model("gru4rec", dict(SMALL["gru4rec"], lr=0.05, epochs=4, patience=1, progress=False))
    m.fit(split.train, catalog, valid=split.valid)
    ndcg = evaluate(m, split.valid, catalog, ks=(10,), progress=False).metrics["NDCG@10"]
    assert ndcg == pytest.approx(max(h["val_ndcg10"] for h in m.history), abs=1e-9)


def test_same_command_resumes_from_the_last_checkpoint(tiny, tmp_path, capsys):
    catalog, split = tiny
    opts = dict(SMALL["lstm"], epochs=2, grad_clip=1.0, progress=False)
    first = build_model("lstm", opts).fit(split.train, catalog, valid=split.valid, checkpoint_dir=tmp_path)
    assert (tmp_path / "last.ckpt").exists()
    more = build_model("lstm", dict(opts, epochs=3, progress=True))
    more.fit(split.train, catalog, valid=split.valid, checkpoint_dir=tmp_path)
    assert "resuming" in capsys.readouterr().out
    assert [h["epoch"] for h in more.history] == [1, 2, 3] and more.history[:2] == first.history


def test_global_batches_split_one_permutation_between_ranks():
    one = [b for b in GlobalBatches(10, 4, seed=1)]
    two = [GlobalBatches(10, 4, seed=1, rank=r, world=2) for r in (0, 1)]
    assert [sorted(a + b) for a, b in zip(*two)] == [sorted(b) for b in one]
    assert sorted(i for b in one for i in b) == list(range(10))
    s = GlobalBatches(10, 4, seed=1)
    s.sampler.set_epoch(1)   # Lightning's call at each epoch start
    assert list(s) != one


def test_epoch_rows_walk_through_one_permutation_after_another():
    """``epoch_rows=4`` on 10 rows: epochs 0-1 and the first half of epoch 2 are the seed's permutation, the rest
    of epoch 2 and then epochs 3-4 the next seed's; every epoch is 4 rows in batches of at most 3."""
    s = GlobalBatches(10, 3, seed=1, epoch_rows=4)
    epochs = []
    for e in range(5):
        s.set_epoch(e)
        epochs.append([i for b in s for i in b])
        assert [len(b) for b in s] == [3, 1]
    perm = [torch.randperm(10, generator=torch.Generator().manual_seed(seed)).tolist() for seed in (1, 2)]
    assert sum(epochs, []) == perm[0] + perm[1]
    assert len(s) == 2


def test_precision_names():
    assert lightning_precision("32", "cpu") == "32-true" and lightning_precision("bf16", "cpu") == "bf16-mixed"
    assert lightning_precision("auto", "cpu") == ("bf16-mixed" if cpu_has_native_bf16() else "32-true")
    with pytest.raises(ValueError, match="precision"):
        lightning_precision("fp8", "cpu")


def test_two_process_ddp_has_the_loss_curve_of_one_process(tmp_path):
    """`devices=2, strategy=ddp` on CPU (gloo): the same global batches give the same per-epoch loss as one process
    (measured difference 2e-7; float sums in another order) and the same final scores."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS.parent / "src"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    runs = {}
    for devices in (1, 2):
        out = tmp_path / f"ddp{devices}.json"
        subprocess.run([sys.executable, str(TESTS / "ddp_fit.py"), str(devices), str(out)], env=env, check=True,
                       cwd=tmp_path, timeout=300)
        runs[devices] = json.loads(out.read_text())
    for one, two in zip(runs[1]["history"], runs[2]["history"]):
        assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-5)
        assert two["val_ndcg10"] == pytest.approx(one["val_ndcg10"], abs=1e-6)
    assert np.allclose(runs[1]["scores"], runs[2]["scores"], atol=1e-4)


@pytest.mark.parametrize("name", ["lstm", "gru4rec", "sasrec", "unisrec"])
def test_a_model_saved_before_the_lightning_loop_loads_and_scores_the_same(name):
    """tests/data/saved-before-lightning: tiny models saved by the former hand-written loop (same state-dict keys)."""
    folder = TESTS / "data" / "saved-before-lightning"
    m = Recommender.load(folder / name)
    expected = json.loads((folder / "scores.json").read_text())[name]
    hist = [np.asarray(h) for h in json.loads((folder / "histories.json").read_text())]
    assert np.allclose(m.score(m.encode(hist)).numpy(), expected, atol=1e-4)


def test_bf16_autocast_trains_to_the_fp32_loss(tiny):
    """``precision="bf16"`` runs the network under bf16 autocast (emulated on a CPU without native bf16): the same
    seeded fit ends within 1 % of fp32's training loss."""
    catalog, split = tiny
    losses = {}
    for precision in ("32", "bf16"):
        m = build_model("sasrec", dict(SMALL["sasrec"], epochs=2, precision=precision, progress=False, seed=1))
        losses[precision] = m.fit(split.train, catalog).history[-1]["train_loss"]
    assert losses["bf16"] == pytest.approx(losses["32"], rel=0.01) and losses["bf16"] != losses["32"]


def test_epoch_line_is_one_readable_sentence():
    row = {"epoch": 2, "train_loss": 5.7604, "train_top1": 0.02, "train_top5": 0.0811, "seconds": 63.2,
           "rows_per_s": 210.0, "targets_per_s": 5628.4, "val_loss": 5.5961, "val_top1": 0.03, "val_top5": 0.127,
           "val_ndcg10": 0.14951}
    assert epoch_line("lstm", row, 3) == ("lstm epoch 2/3: loss 5.760 (validation 5.596), top-5 0.081 (validation "
                                          "0.127), validation NDCG@10 0.1495, 63 s, 5,628 targets/s")
    no_valid = {k: v for k, v in row.items() if not k.startswith("val_")}
    assert epoch_line("gru4rec", no_valid, 3) == "gru4rec epoch 2/3: loss 5.760, top-5 0.081, 63 s, 5,628 targets/s"


@pytest.mark.parametrize("name", ["lstm", "gru4rec", "fpmc", "sasrec", "unisrec"])
def test_positions_where_scores_exactly_the_marked_positions(name, tiny):
    """Training on every position scores only the real targets: the same logits as scoring every position and
    picking the real ones, and the same loss."""
    catalog, split = tiny
    m = built(name, catalog)
    m.net.eval()
    x, y = map(torch.as_tensor, make_chunks(m.encode(split.train.to_list()[:6]), 6, 1, pad=m.pad))
    real = y != IGNORE
    assert (~real).any()
    with torch.no_grad():
        assert torch.allclose(m.net.positions(x, real), m.net.positions(x)[real], atol=1e-6)
        logits, loss = m.training_step(x, y)
        assert logits.shape == (int(real.sum()), len(catalog))
        assert loss.item() == pytest.approx(F.cross_entropy(m.net.positions(x)[real], y[real]).item(), rel=1e-6)
