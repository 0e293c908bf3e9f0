#!/usr/bin/env bash
# Add the beyond-accuracy metrics to the committed records whose models can be re-scored without refitting:
#   bash scripts/refresh-records.sh [cheap|llm|all]
# cheap: the Stage-1 rows (from their run folders) and the fusion rows whose non-zero weights need no LLM;
# llm: the fusion rows with an LLM weight (cheap when the ranker's letter logits are in the cache dir, else slow).
# Each line is `dualrec evaluate --record RECORD [--run RUN]`; a record whose accuracy does not come out as
# recorded is left untouched (the command says which). Runs are looked up under runs/ (symlink them there).
set -uo pipefail
cd "$(dirname "$0")/.."
PART=${1:-cheap}
PY=${PY:-.venv/bin/python}
D="--data-dir ${DATA_DIR:-../shared/data} --ratings ${RATINGS:-../shared/data/ml-1m-ratings-head/ratings.dat}"
refresh() { OMP_NUM_THREADS=1 $PY -m dualrec.cli evaluate $D --record "$@" || echo "FAILED: $*"; }
if [ "$PART" != llm ]; then
  refresh results/strict/lstm.json --run runs/lstm-strict
  refresh results/strict/lstm@600.json --run runs/lstm-strict
  refresh results/strict/lstm-all.json --run runs/lstm-all-strict
  refresh results/all-targets/strict/lstm.json --run runs/lstm-all-strict
  refresh results/paper/lstm.json --run runs/lstm-paper
  for r in results/strict/dualrec-rank-sbert.json results/all-targets/strict/dualrec-rank-sbert.json \
           results/paper/dualrec-rank-sbert.json results/strict/dualrec-rank-zeroshot@600.json \
           results/strict/dualrec-rank@600.json results/paper/dualrec-rank-zeroshot.json; do
    refresh "$r"
  done
fi
if [ "$PART" != cheap ]; then
  for r in results/strict/dualrec-rank-sbert-lora@600.json results/strict/llm-rank-only@600.json \
           results/paper/dualrec-rank.json results/paper/dualrec-rank-sbert-lora.json results/paper/llm-rank-only.json; do
    refresh "$r"
  done
fi
