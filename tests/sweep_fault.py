"""Test helper, not a test: `python -m svd_core` with one fault injected where the hardware would fail, for the
distributed sweep tests (a subprocess under `accelerate launch` cannot be monkeypatched from pytest).

SVD_TEST_FAULT=oom: the cell motion_bucket_id=255 seed=24 gets torch.OutOfMemoryError from its sampling, as a
GPU raises it; the real sampler handles it (its fallback, then OutOfMemory). SVD_TEST_FAULT=kill: the process
that samples that cell dies of SIGKILL, as one killed by the kernel's OOM killer or a user."""

import os
import signal
import sys

import torch

import svd_core.pipeline
from svd_core.__main__ import main

real_run = svd_core.pipeline.run
FAULT = os.environ["SVD_TEST_FAULT"]


def run(pipe, image, params, **kwargs):
    if params.motion_bucket_id == 255 and params.seed == 24:
        if FAULT == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    return real_run(pipe, image, params, **kwargs)


svd_core.pipeline.run = run
sys.exit(main())
