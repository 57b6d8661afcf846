"""svd_core: Stability's Stable Video Diffusion checkpoints in diffusers, sampled with micro-conditioning.

No Streamlit here. The names below are the public API, grouped by what a user does: find and load a model, make
a run, make many runs, read and write what runs produced, list the registries, catch the errors. Three modules
are public vocabulary beside them:

* `svd_core.params`: the knob tables (RANGES, CHOICES, ANGLES, KNOBS_OF, LABELS, label, help_text, ...);
* `svd_core.camera`: SV3D camera paths;
* `svd_core.errors`: every error type.

`load_pipeline`, `available_devices` and `Sampler` import diffusers and `measure_file` OpenCV, seconds of start-up that
`python -m svd_core list` and the header-only functions do not need: they load on first use.
"""

import importlib

from .calibrate import calibration_cells, run_calibration
from .camera import list_camera_paths
from .checkpoints import checkpoint_dir, default_checkpoint, find_models, get_variant, list_variants
from .errors import Cancelled, SVDError
from .hub import download
from .images import background_removal_available, decode_image
from .memory import MEMORY_MODES
from .params import SamplingParams
from .preview import preview_image
from .record import ModelSpec, RunRecord, RunRequest, summary_line, timings_line
from .runs import clean_stale_temp, delete_run, load_run, read_video_record, save_run, scan_runs
from .samplers import guidance_scales, list_discretizations, list_guiders, list_samplers
from .sweep import grid_cells, response_table, run_sweep
from .tiny import make_tiny
from .video import export_frames, read_video

_LAZY = {"load_pipeline": "loader", "available_devices": "loader", "Sampler": "session", "measure_file": "metrics"}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'svd_core' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    # models
    "find_models", "checkpoint_dir", "list_variants", "get_variant", "download", "make_tiny", "load_pipeline",
    "available_devices",
    # a run
    "SamplingParams", "ModelSpec", "RunRequest", "RunRecord", "Sampler", "MEMORY_MODES", "summary_line",
    "timings_line",
    # many runs
    "grid_cells", "run_sweep", "run_calibration",
    # outputs
    "save_run", "load_run", "scan_runs", "delete_run", "decode_image", "read_video", "read_video_record",
    "export_frames", "measure_file",
    # registries
    "list_samplers", "list_discretizations", "list_guiders", "list_camera_paths",
    # errors
    "SVDError", "Cancelled",
    # what the app needs beyond a run: the default model, background removal, the guider's curve, a comparison's
    # table, a calibration's cells, leftovers of killed writers, the live preview
    "default_checkpoint", "background_removal_available", "guidance_scales", "response_table", "calibration_cells",
    "clean_stale_temp", "preview_image",
]
