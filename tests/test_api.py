"""The public API is a contract: these names, importable from `svd_core`, and the three vocabulary modules."""

import importlib
import subprocess
import sys

import pytest

import svd_core

PUBLIC = {
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
    # what the app needs beyond a run
    "default_checkpoint", "background_removal_available", "guidance_scales", "response_table", "calibration_cells",
    "clean_stale_temp", "preview_image",
}


def test_all_is_the_public_api():
    assert len(svd_core.__all__) == len(set(svd_core.__all__))
    assert set(svd_core.__all__) == PUBLIC


def test_every_public_name_imports():
    namespace = {}
    exec("from svd_core import *", namespace)
    assert PUBLIC <= set(namespace)
    for name in PUBLIC:
        assert getattr(svd_core, name) is namespace[name]
        assert name in dir(svd_core)


def test_vocabulary_modules():
    params = importlib.import_module("svd_core.params")
    for name in ("RANGES", "CHOICES", "ANGLES", "KNOBS_OF", "LABELS", "label", "help_text", "SamplingParams"):
        assert hasattr(params, name), name
    assert params.SamplingParams is svd_core.SamplingParams
    camera = importlib.import_module("svd_core.camera")
    assert camera.list_camera_paths is svd_core.list_camera_paths
    errors = importlib.import_module("svd_core.errors")
    assert issubclass(errors.Cancelled, errors.SVDError) and errors.SVDError is svd_core.SVDError
    for doc_name in ("svd_core.params", "svd_core.camera", "svd_core.errors"):
        assert doc_name in svd_core.__doc__


def test_an_internal_name_is_not_public():
    with pytest.raises(AttributeError, match="grid_layout"):
        svd_core.grid_layout  # noqa: B018


def test_import_does_not_load_diffusers_or_opencv():
    code = ("import sys, svd_core; "
            "print(sorted(m for m in ('diffusers', 'transformers', 'cv2', 'av') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
