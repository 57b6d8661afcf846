#!/usr/bin/env bash
# Install SVD Studio and its test tools.
#   bash scripts/setup.sh                      # into .venv/ (created here): works on Pythons that refuse
#                                              # system-wide installs (Debian/Ubuntu's "externally-managed")
#   PYTHON=python3 bash scripts/setup.sh       # into that interpreter's environment instead (CI, conda, ...)
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh
#                                              # CPU-only Linux: the CPU build of torch, not the several-GB CUDA one
# A torch that is already installed in the target environment is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_PIN="torch==2.13.0"
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
else
  if ! [ -x .venv/bin/python ]; then
    python3 -m venv .venv || { echo "error: could not create .venv: install your Python's venv module" \
      "(Debian/Ubuntu: apt-get install python3-venv) or set PYTHON=/path/to/python"; exit 2; }
  fi
  PY=.venv/bin/python
fi
if ! $PY -c "import torch" 2>/dev/null; then
  $PY -m pip install "$TORCH_PIN" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
$PY -m pip install -r requirements-dev.txt
$PY -m pip install --no-deps -e .
if [ -z "${PYTHON:-}" ]; then
  echo "Installed into .venv/. Run the app: .venv/bin/streamlit run app/main.py · the tests: make test"
fi
