"""Process-wide resources: the cached sampler (shared by every session) and the demo model."""

from __future__ import annotations

import gc
from pathlib import Path

import streamlit as st
import torch

from svd_core import Sampler, list_checkpoints, make_tiny
from svd_core.checkpoints import checkpoint_dir

DEMO_NAME = "tiny_demo.safetensors"


def _release(sampler: Sampler) -> None:
    """Called when the cache drops a sampler (another checkpoint was chosen): give its memory back once the
    last run holding it ends."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@st.cache_resource(max_entries=1, show_spinner="Loading the model… (a 9.56 GB checkpoint takes a minute)",
                   on_release=_release)
def get_sampler(path: str, mtime: float, device: str, dtype: str, memory_mode: str) -> Sampler:
    """One Sampler per (checkpoint, device, dtype, memory mode), shared by all sessions. Its RunQueue makes
    concurrent sessions take turns; max_entries=1 frees the previous checkpoint when another is chosen."""
    return Sampler(path, device=device or None, dtype=dtype or None, memory_mode=memory_mode)


@st.cache_data(ttl=3, show_spinner=False)
def _checkpoints(folder: str):
    return list_checkpoints(folder)


def checkpoints():
    """What is in checkpoints/ (headers only), re-read at most every 3 s however often the pages ask."""
    return _checkpoints(str(checkpoint_dir()))


def make_demo_model() -> Path:
    path = make_tiny(checkpoint_dir() / DEMO_NAME, seed=0)
    _checkpoints.clear()
    return path


def device_choices() -> list[str]:
    out = []
    if torch.cuda.is_available():
        out.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out + ["cpu"]
