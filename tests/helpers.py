"""Helpers shared by test files: the CLI in a subprocess and the small run the tiny model makes quickly."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A run small enough for the tiny model on the CPU: 4 frames of 64 x 64, 2 steps.
SMALL = dict(width=64, height=64, num_frames=4, num_inference_steps=2, decode_chunk_size=4)


def cli(*args, env=None) -> subprocess.CompletedProcess:
    """`python -m svd_core ARGS` in a fresh interpreter from the project root; `env` adds to this environment."""
    return subprocess.run([sys.executable, "-m", "svd_core", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=300)
