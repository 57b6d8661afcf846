#!/usr/bin/env bash
# Install SVD Studio and its test tools into the current Python environment.
# An already installed torch is kept: on a CPU-only machine install the CPU build first (see README) to avoid
# downloading the several-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -c "import torch" 2>/dev/null || $PY -m pip install "torch==2.13.0"
$PY -m pip install -r requirements-dev.txt
$PY -m pip install --no-deps -e .
