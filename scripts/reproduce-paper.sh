#!/usr/bin/env bash
# The paper's Stage 1, reproduced: ML-1M, the DUALRec LSTM as the paper states it (10 epochs, one target per
# 30-movie window), trained and evaluated under the strict and the paper protocol. Hours on a CPU; the main job
# (scripts/main.sh) shows the whole pipeline in minutes.
#   DUALREC_DATA_DIR  where datasets live (default: the user cache); ml-1m is downloaded there if missing
#   DUALREC_RATINGS   an ML-1M ratings.dat lying elsewhere (e.g. ../shared/data/ml-1m-ratings-head/ratings.dat)
#   EPOCHS            training epochs (default 10, as in the paper); PYTHON the interpreter (default .venv/bin/python)
# Runs resume from their last epoch checkpoint if interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
EPOCHS=${EPOCHS:-10}
echo "reproduce the paper: the Stage-1 LSTM, $EPOCHS epochs, strict then paper protocol. Expected time on 2 CPU" \
     "cores at 10 epochs: strict about 1.7-2.8 hours of training, paper about 47 minutes (2,834 s measured), so" \
     "2.5-3.5 hours in all (fewer epochs: proportionally less). Results: runs/lstm-strict, runs/lstm-paper."
args=()
[ -n "${DUALREC_DATA_DIR:-}" ] && args+=(--data-dir "$DUALREC_DATA_DIR")
[ -n "${DUALREC_RATINGS:-}" ] && args+=(--ratings "$DUALREC_RATINGS")
if [ -z "${DUALREC_RATINGS:-}" ]; then "$PY" -m dualrec.cli data download ml-1m ${DUALREC_DATA_DIR:+--data-dir "$DUALREC_DATA_DIR"}; fi
for protocol in strict paper; do
  "$PY" -m dualrec.cli train lstm -c configs/lstm.yaml --protocol "$protocol" --set "model.epochs=$EPOCHS" \
    "${args[@]}" --out "runs/lstm-$protocol"
  "$PY" -m dualrec.cli evaluate --run "runs/lstm-$protocol" --protocol "$protocol" "${args[@]}"
done
