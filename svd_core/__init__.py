"""svd_core: Stability's Stable Video Diffusion checkpoints in diffusers, sampled with micro-conditioning.

No Streamlit here; the app and the CLI use only this public API. The parts that import diffusers (loader,
sampler) load on first use, so `python -m svd_core list` and the header-only functions start fast.
"""

import importlib

from .calibrate import Calibration, Fit, calibration_cells, fit_response, run_calibration
from .camera import camera_path, get_camera_path, list_camera_paths
from .checkpoints import (
    CheckpointInfo,
    Variant,
    checkpoint_dir,
    default_checkpoint,
    file_sha256,
    find_models,
    get_variant,
    inspect_checkpoint,
    list_checkpoints,
    list_variants,
    scan_checkpoints,
    scan_hf_cache,
)
from .conditioning import describe_fps, fps_vocabulary, is_untrained, training_warnings
from .errors import (
    Cancelled,
    CheckpointError,
    DownloadError,
    ImageError,
    NotFinite,
    OutOfMemory,
    ProcessLost,
    SVDError,
    SweepFailed,
)
from .grid import contact_sheet, grid_frames, grid_layout
from .hub import discard_partial, download, downloadable, partial_downloads
from .images import ImageSpec, PreparedImage, background_removal_available, decode_image, prepare_image
from .params import ANGLES, CHOICES, KNOBS_OF, RANGES, RESIZE_MODES, SamplingParams
from .record import ModelSpec, RunRecord, RunRequest, summary_line
from .runs import RunInfo, clean_stale_temp, delete_run, list_runs, load_run, save_run, scan_runs
from .sweep import (
    Cell,
    CellFailure,
    SweepResult,
    grid_cells,
    metric_rows,
    parse_seeds,
    parse_values,
    parse_vary,
    response_png,
    response_table,
    run_sweep,
)
from .tiny import make_tiny
from .video import VideoError, export_frames, read_video, to_frames_zip, to_gif, to_mp4, to_webp

_LAZY = {"load_pipeline": "loader", "MEMORY_MODES": "session", "Sampler": "session", "SampleResult": "session",
         "guidance_scales": "samplers", "list_samplers": "samplers", "list_discretizations": "samplers",
         "list_guiders": "samplers", "applicable_knobs": "samplers",
         # OpenCV loads on first use
         "Likeness": "metrics", "measure_file": "metrics", "measure_frames": "metrics", "scalar_metrics": "metrics",
         "metrics_line": "metrics",
         "read_video_record": "provenance", "SV3DUNet": "sv3d", "preview_image": "preview"}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'svd_core' has no attribute {name!r}")


__all__ = [
    "CHOICES", "Cancelled", "CheckpointError", "CheckpointInfo", "ImageError", "ImageSpec", "KNOBS_OF",
    "MEMORY_MODES", "NotFinite", "OutOfMemory", "PreparedImage", "RANGES", "RESIZE_MODES", "RunInfo", "SVDError",
    "SampleResult",
    "Sampler", "SamplingParams", "SweepResult", "Variant", "applicable_knobs", "contact_sheet", "delete_run",
    "export_frames", "file_sha256", "get_variant", "grid_cells", "grid_frames", "guidance_scales",
    "inspect_checkpoint", "list_checkpoints", "list_discretizations", "list_guiders", "list_runs", "list_samplers",
    "list_variants", "load_pipeline", "load_run", "make_tiny", "parse_vary", "prepare_image", "run_sweep", "save_run",
    # weights (issue 12)
    "DownloadError", "discard_partial", "download", "downloadable", "find_models", "partial_downloads",
    "scan_checkpoints", "scan_hf_cache",
    "to_frames_zip", "to_gif", "to_mp4", "to_webp",
    # the instrument (issue 10)
    "Cell", "Likeness", "VideoError", "clean_stale_temp", "describe_fps", "fps_vocabulary", "grid_layout",
    "is_untrained", "measure_file", "measure_frames", "metric_rows", "parse_seeds", "parse_values", "read_video",
    "read_video_record", "response_png", "response_table", "scalar_metrics", "summary_line", "training_warnings",
    "metrics_line", "ModelSpec", "RunRecord", "RunRequest",
    # SV3D (issue 14)
    "ANGLES", "SV3DUNet", "camera_path", "get_camera_path", "list_camera_paths",
    # sweeps over several processes (issue 13)
    "CellFailure", "ProcessLost", "SweepFailed",
    # ask for a motion
    "Calibration", "Fit", "fit_response", "run_calibration",
    # what the app needs beyond a run: the default model, background removal, the guider's curve, a comparison's
    # table, a calibration's cells, leftovers of killed writers, the live preview
    "default_checkpoint", "background_removal_available", "guidance_scales", "response_table", "calibration_cells",
    "clean_stale_temp", "preview_image", "checkpoint_dir", "scan_runs", "decode_image",
]
