#!/usr/bin/env bash
# The main job: get ML-1M, train the Stage-1 LSTM under the strict and the paper protocol, evaluate both.
#   DUALREC_DATA_DIR  where datasets live (default: the user cache); ml-1m is downloaded there if missing
#   DUALREC_RATINGS   an ML-1M ratings.dat lying elsewhere (e.g. ../shared/data/ml-1m-ratings-head/ratings.dat)
#   EPOCHS            training epochs (default 10, as in the paper)
# Runs resume from their last epoch checkpoint if interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
args=()
[ -n "${DUALREC_DATA_DIR:-}" ] && args+=(--data-dir "$DUALREC_DATA_DIR")
[ -n "${DUALREC_RATINGS:-}" ] && args+=(--ratings "$DUALREC_RATINGS")
if [ -z "${DUALREC_RATINGS:-}" ]; then dualrec data download ml-1m ${DUALREC_DATA_DIR:+--data-dir "$DUALREC_DATA_DIR"}; fi
for protocol in strict paper; do
  dualrec train lstm -c configs/lstm.yaml --protocol "$protocol" --set "model.epochs=${EPOCHS:-10}" "${args[@]}" \
    --out "runs/lstm-$protocol"
  dualrec evaluate --run "runs/lstm-$protocol" --protocol "$protocol" "${args[@]}"
done
