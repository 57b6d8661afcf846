#!/usr/bin/env bash
# The wheels bench/gpu.py needs on a GPU machine that has PyTorch (and transformers, accelerate, safetensors,
# huggingface_hub) but no network and none of our other packages: downloaded here into .whl/ (ignored by git),
# carried along, installed there with
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
# The diffusers version is this checkout's (the venv's); PYTHON_VERSION picks the machine's Python (default 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
PYV=${PYTHON_VERSION:-3.12}
DIFFUSERS=$($PY -c "import diffusers; print(diffusers.__version__)")
mkdir -p .whl
$PY -m pip download --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any -d .whl "diffusers==$DIFFUSERS" imageio-ffmpeg ${EXTRA_WHEELS:-}
ls -la .whl
