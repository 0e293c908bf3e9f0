#!/bin/bash
# DUIP's records (results/chrono/duip*.json, results/strict/duip*.json) and docs/results.md section duip, in order.
# Each `train` resumes when re-run. Needs runs/lstm-all-strict (the every-position strict LSTM, section lstm).
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PY:-.venv/bin/python}
D="--data-dir ../shared/data --ratings ../shared/data/ml-1m-ratings-head/ratings.dat"
train() { $PY -m dualrec.cli train duip -c configs/duip.yaml $D "$@"; }
table() { $PY -m dualrec.cli table duip $D "$@"; }
$PY -m dualrec.cli train lstm -c configs/lstm.yaml --protocol chrono $D --set model.targets=all --set model.min_len=1 \
  --set model.batch_size=32 --set model.epochs=5 --set model.patience=2 --out runs/lstm-all-chrono
train --protocol chrono --set model.train_encoder=true --out runs/duip-chrono-encoder-tuned
train --protocol chrono --out runs/duip-chrono
[ -e runs/duip-chrono-8k ] || cp -r runs/duip-chrono runs/duip-chrono-8k   # the first 8 epochs
train --protocol chrono --set model.epochs=16 --out runs/duip-chrono
table --protocol chrono --stage1 runs/lstm-all-chrono --duip duip=runs/duip-chrono \
  --duip duip-ablation-encoder-tuned=runs/duip-chrono-encoder-tuned --max-users duip-ablation-encoder-tuned=3000
train --protocol strict --set model.lstm_run=runs/lstm-all-strict/model --set model.epochs=4 --out runs/duip-strict
table --protocol strict --stage1 runs/lstm-all-strict --duip duip=runs/duip-strict
train --protocol chrono --set model.branch_loss_weight=1.0 --out runs/duip-chrono-branch
train --protocol chrono --set model.epochs=2 --set model.lm_mode=lora --out runs/duip-chrono-lora
train --protocol chrono --set model.epochs=2 --set model.soft_tokens=0 --out runs/duip-chrono-nosoft
train --protocol chrono --set model.epochs=2 --set model.init=cold --set model.lstm_run=null \
  --set model.train_encoder=true --out runs/duip-chrono-cold
table --protocol chrono --stage1 runs/lstm-all-chrono --duip duip-ablation-branch-loss=runs/duip-chrono-branch \
  --duip duip-ablation-8k=runs/duip-chrono-8k --duip duip-ablation-lora=runs/duip-chrono-lora \
  --duip duip-ablation-nosoft=runs/duip-chrono-nosoft --duip duip-ablation-cold=runs/duip-chrono-cold \
  --max-users duip-ablation-branch-loss=3000 --max-users duip-ablation-8k=3000 --max-users duip-ablation-lora=3000 \
  --max-users duip-ablation-nosoft=3000 --max-users duip-ablation-cold=3000
train --protocol chrono --set model.branch_loss_weight=1.0 --set model.lr=0.003 --set model.epochs=16 \
  --out runs/duip-chrono-branch-lr3e-3
table --protocol chrono --stage1 runs/lstm-all-chrono --duip duip-ablation-branch-loss-lr3e-3=runs/duip-chrono-branch-lr3e-3 \
  --max-users duip-ablation-branch-loss-lr3e-3=3000
$PY -m dualrec.cli table render --section duip --section duip-verdict
