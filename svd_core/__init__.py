"""svd_core: Stability's Stable Video Diffusion checkpoints in diffusers, sampled with micro-conditioning.

No Streamlit here; the app and the CLI use only this public API. The parts that import diffusers (loader,
sampler) load on first use, so `python -m svd_core list` and the header-only functions start fast.
"""

import importlib

from .checkpoints import (
    CheckpointInfo,
    Variant,
    file_sha256,
    find_models,
    get_variant,
    inspect_checkpoint,
    list_checkpoints,
    list_variants,
    scan_checkpoints,
    scan_hf_cache,
)
from .errors import Cancelled, CheckpointError, DownloadError, ImageError, OutOfMemory, SVDError
from .export import contact_sheet, export_frames, grid_frames, to_frames_zip, to_gif, to_mp4, to_webp
from .hub import discard_partial, download, downloadable, partial_downloads
from .images import ImageSpec, PreparedImage, prepare_image
from .params import RANGES, RESIZE_MODES, SamplingParams
from .runs import RunInfo, delete_run, list_runs, load_run, save_run
from .sweep import SweepResult, grid_cells, parse_vary, run_sweep
from .tiny import make_tiny

_LAZY = {"load_pipeline": "loader", "MEMORY_MODES": "sampler", "Sampler": "sampler", "SampleResult": "sampler"}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'svd_core' has no attribute {name!r}")


__all__ = [
    "Cancelled", "CheckpointError", "CheckpointInfo", "DownloadError", "ImageError", "ImageSpec", "MEMORY_MODES",
    "OutOfMemory", "PreparedImage", "RANGES", "RESIZE_MODES", "RunInfo", "SVDError", "SampleResult", "Sampler",
    "SamplingParams", "SweepResult", "Variant", "contact_sheet", "delete_run", "discard_partial", "download",
    "downloadable", "export_frames", "file_sha256", "find_models", "get_variant", "grid_cells", "grid_frames",
    "inspect_checkpoint", "list_checkpoints", "list_runs", "list_variants", "load_pipeline", "load_run", "make_tiny",
    "parse_vary", "partial_downloads", "prepare_image", "run_sweep", "save_run", "scan_checkpoints", "scan_hf_cache",
    "to_frames_zip", "to_gif", "to_mp4", "to_webp",
]
