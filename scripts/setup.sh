#!/usr/bin/env bash
# Creates .venv with dualrec and all its extras. torch is installed first and pinned in every pip call, so pip
# takes the small CPU wheel and never a multi-GB CUDA build. llama-cpp-python compiles from source (about 5 min
# on 2 cores, cached by pip afterwards); GGML_NATIVE=OFF keeps the cached wheel portable across CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q -U pip
pip install -q torch==2.13.0
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
pip install -q torch==2.13.0 -e ".[llm,llamacpp,serve,test]"
