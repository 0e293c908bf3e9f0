#!/usr/bin/env bash
# The ranker rows of docs/results.md (section "ranker") under `strict`, on the CPU budget they were measured with:
# the SBERT row on every user, the LLM rows on the first VALID validation users (weights) and TEST test users.
# Resumable: the finetune resumes from its checkpoint, the LLM's letter logits are cached per prompt.
set -euo pipefail
cd "$(dirname "$0")/.."
D="--data-dir ${DATA_DIR:-../shared/data} --ratings ${RATINGS:-../shared/data/ml-1m-ratings-head/ratings.dat}"
S1=${STAGE1:-runs/lstm-strict}
VALID=${VALID:-300} TEST=${TEST:-600}
PY=${PY:-.venv/bin/python}
T="$PY -m dualrec.llm.table --protocol strict --stage1 $S1/model --out results $D"
[ -f results/strict/dualrec-rank-sbert.json ] || $T --rows lstm,dualrec-rank-sbert
$PY -m dualrec.cli finetune --task rank --stage1 "$S1" $D --max-users "${RANK_USERS:-2000}" --epochs 1 \
    --batch-size 4 --grad-accum 2 --lr 5e-4 --lora 'layers_to_transform=[12,13,14,15,16,17]' --lora save_every=5 \
    --out models/ranker-strict
$T --rows dualrec-rank,dualrec-rank-sbert-lora,llm-rank-only --adapter models/ranker-strict \
    --set model.max_valid_users=$VALID --max-users dualrec-rank=$TEST --max-users dualrec-rank-sbert-lora=$TEST \
    --max-users llm-rank-only=$TEST
$T --rows dualrec-rank-zeroshot --set model.max_valid_users=$VALID --max-users dualrec-rank-zeroshot=$TEST
