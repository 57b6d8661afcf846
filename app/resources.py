"""Process-wide resources: the model server (one model and one queue for every session), the checkpoints
listing and the demo model."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.server import ModelServer
from svd_core import ModelSpec, Sampler, checkpoint_dir, clean_stale_temp, find_models, make_tiny

DEMO_NAME = "tiny_demo.safetensors"


def _make_sampler(choice: ModelSpec) -> Sampler:
    return Sampler.from_spec(choice)


@st.cache_resource(show_spinner=False)
def get_server() -> ModelServer:
    """The one ModelServer of this process, shared by all sessions. Made once at start: temporary run folders
    a killed server left behind are removed then."""
    clean_stale_temp()
    return ModelServer(_make_sampler)


@st.cache_data(ttl=3, show_spinner=False)
def _checkpoints(folder: str):
    return find_models(folder)


def checkpoints():
    """The usable models: checkpoints/ (headers only) and SVD pipelines in the Hugging Face cache, re-read at
    most every 3 s however often the pages ask."""
    return _checkpoints(str(checkpoint_dir()))[0]


def checkpoint_problems():
    """(path, one-line reason) for every checkpoint-like file that cannot be used."""
    return _checkpoints(str(checkpoint_dir()))[1]


def clear_checkpoints() -> None:
    """Forget the cached listing (a new file arrived)."""
    _checkpoints.clear()


def make_demo_model() -> Path:
    path = make_tiny(checkpoint_dir() / DEMO_NAME, seed=0)
    clear_checkpoints()
    return path

