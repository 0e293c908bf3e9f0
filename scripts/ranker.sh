#!/usr/bin/env bash
# The ranker rows of docs/results.md (section "ranker") for one protocol, on the CPU budget they were measured with:
#   bash scripts/ranker.sh strict|paper [sbert|llm|all]
# sbert: Stage 1 and Stage 1 + SBERT on every test user (weights chosen on every validation user);
# llm: the verbalizer ranker, LoRA-tuned on RANK_USERS training users, and zero-shot, on the first VALID validation
# users (weights) and TEST test users. Resumable: the finetune resumes from its checkpoint, the LLM's letter logits
# are cached per prompt, and a finished row is not re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
P=${1:?protocol: strict or paper}
PART=${2:-all}
D="--data-dir ${DATA_DIR:-../shared/data} --ratings ${RATINGS:-../shared/data/ml-1m-ratings-head/ratings.dat}"
S1=${STAGE1:-runs/lstm-$P}
VALID=${VALID:-300} TEST=${TEST:-600}
PY=${PY:-.venv/bin/python}
T="$PY -m dualrec.cli table run --protocol $P --stage1 $S1/model --out results $D"
if [ "$PART" != llm ]; then
  [ -f "results/$P/dualrec-rank-sbert.json" ] || $T --rows lstm,dualrec-rank-sbert
fi
if [ "$PART" != sbert ]; then
  $PY -m dualrec.cli finetune --task rank --stage1 "$S1" $D --max-users "${RANK_USERS:-2000}" --epochs 1 \
      --batch-size 4 --grad-accum 2 --lr 5e-4 --lora 'layers_to_transform=[12,13,14,15,16,17]' --lora save_every=5 \
      --out "models/ranker-$P"
  $T --rows dualrec-rank,dualrec-rank-sbert-lora,llm-rank-only --adapter "models/ranker-$P" \
      --set model.max_valid_users=$VALID --max-users dualrec-rank=$TEST --max-users dualrec-rank-sbert-lora=$TEST \
      --max-users llm-rank-only=$TEST
  $T --rows dualrec-rank-zeroshot --set model.max_valid_users=$VALID --max-users dualrec-rank-zeroshot=$TEST
fi
$PY -m dualrec.cli table render --section ranker --protocol "$P"
