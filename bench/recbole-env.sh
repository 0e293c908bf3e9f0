#!/usr/bin/env bash
# Builds .venv-recbole: RecBole 1.2.1 (bench/recbole-requirements.txt) plus dualrec itself, so
# bench/bench_recbole.py can write our split, train RecBole's models and score them with our evaluator in one
# process. dualrec goes in with --no-deps: its numpy >= 2 pin and RecBole's numpy < 2 cannot both hold, and the
# parts the benchmark uses run on numpy 1.26 (their imports are in the requirements file). Re-running it only
# installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -d .venv-recbole ] || "$PY" -m venv .venv-recbole
. .venv-recbole/bin/activate
pip install -q -U pip
pip install -q torch==2.13.0
pip install -q -r bench/recbole-requirements.txt
pip install -q --no-deps -e .
python -c "import recbole, numpy, torch; print('recbole', recbole.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__)"
