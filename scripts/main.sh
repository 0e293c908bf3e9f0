#!/usr/bin/env bash
# The main job: the whole DUALRec pipeline end to end in minutes on a laptop CPU (dualrec quickstart): a small
# Stage-1 LSTM, the LLM stage on the embedded model for a fixed sample of test users, MostPop, one evaluator; a
# table, one user's recommendations with titles, and runs/main/report.html.
#   DUALREC_DATA_DIR  where datasets live (default: the user cache); ml-1m is downloaded there if missing
#   DUALREC_RATINGS   an ML-1M ratings.dat lying elsewhere (e.g. ../shared/data/ml-1m-ratings-head/ratings.dat)
#   OUT               the run folder (default runs/main); PYTHON the interpreter (default .venv/bin/python)
# Any other `dualrec quickstart` option goes after the script's name, e.g. bash scripts/main.sh --epochs 2.
# The paper's full reproduction (hours) is scripts/reproduce-paper.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
args=()
[ -n "${DUALREC_DATA_DIR:-}" ] && args+=(--data-dir "$DUALREC_DATA_DIR")
[ -n "${DUALREC_RATINGS:-}" ] && args+=(--ratings "$DUALREC_RATINGS")
if [ -z "${DUALREC_RATINGS:-}" ]; then "$PY" -m dualrec.cli data download ml-1m ${DUALREC_DATA_DIR:+--data-dir "$DUALREC_DATA_DIR"}; fi
exec "$PY" -m dualrec.cli quickstart "${args[@]}" --out "${OUT:-runs/main}" "$@"
