"""What each checkpoint was trained on (its conditioning), warnings when a run leaves it, and the one fps vocabulary.

A warning never blocks: every value inside params.RANGES samples. Sources for each bound are in docs/metrics.md.
"""

from __future__ import annotations

import math

from .checkpoints import Variant, get_variant
from .params import SamplingParams

# The bucket, fps_id and size bounds are the ones Stability's own sampling script warns about
# (generative-models scripts/sampling/simple_video_sample.py: bucket > 255, fps_id < 5 or > 30, size not 576x1024).
MAX_TRAINED_BUCKET = 255
FPS_ID_TRAINED = (5, 30)
# Noise augmentation of the conditioning frame in training, as we read the SVD paper (arXiv 2311.15127, app. D):
# log(sigma) ~ N(-3.0, 0.5^2). The spread reported is its central 95 % (mean +- 2 std in log space).
NOISE_AUG_LOG_MEAN, NOISE_AUG_LOG_STD = -3.0, 0.5
NOISE_AUG_TRAINED = (round(math.exp(NOISE_AUG_LOG_MEAN - 2 * NOISE_AUG_LOG_STD), 3),
                     round(math.exp(NOISE_AUG_LOG_MEAN + 2 * NOISE_AUG_LOG_STD), 3))  # (0.018, 0.135)
TRAINED_SIZES = ((1024, 576), (576, 1024))  # SVD / SVD-XT finetuning resolution, either orientation
SV3D_SIZE = (576, 576)
SV3D_COND_AUG = 1e-5  # hard-coded in both of Stability's SV3D scripts


def _variant(variant: Variant | str) -> Variant:
    return get_variant(variant) if isinstance(variant, str) else variant


def is_untrained(variant: Variant | str) -> bool:
    """True for the tiny demo models: random weights, so their videos are noise and their metrics meaningless."""
    return _variant(variant).name.startswith("tiny")


def fps_vocabulary(params: SamplingParams) -> dict[str, int]:
    """The three numbers called "fps": conditioning fps (diffusers' and ComfyUI's `fps`), fps_id (= fps - 1, what
    the model sees; Stability's scripts' `fps_id`) and the playback rate of the file we write."""
    return {"conditioning_fps": params.fps, "fps_id": params.fps - 1, "playback_fps": params.video_fps}


def describe_fps(params: SamplingParams) -> str:
    """'conditioning fps 7 (Stability's fps_id 6) · playback fps 7'"""
    v = fps_vocabulary(params)
    return (f"conditioning fps {v['conditioning_fps']} (Stability's fps_id {v['fps_id']}) · playback fps "
            f"{v['playback_fps']}")


def training_warnings(params: SamplingParams, variant: Variant | str) -> list[str]:
    """One line per setting outside what `variant` was trained on. Never raises for a valid SamplingParams."""
    v = _variant(variant)
    out = []
    fps_id = params.fps - 1
    if v.is_sv3d:
        return _sv3d_warnings(params, v)
    if v.fixed_conditioning:
        want_fps, want_bucket = v.defaults["fps"], v.defaults["motion_bucket_id"]
        if (params.fps, params.motion_bucket_id) != (want_fps, want_bucket):
            out.append(f"{v.name} was trained at fps {want_fps} (Stability's fps_id {want_fps - 1}) and "
                       f"motion_bucket_id {want_bucket} only; fps {params.fps} / motion_bucket_id "
                       f"{params.motion_bucket_id} are outside its training")
    else:
        if params.motion_bucket_id > MAX_TRAINED_BUCKET:
            out.append(f"motion_bucket_id {params.motion_bucket_id} is above the trained 0-{MAX_TRAINED_BUCKET}")
        lo, hi = FPS_ID_TRAINED
        if not lo <= fps_id <= hi:
            out.append(f"fps {params.fps} is fps_id {fps_id}, outside the trained fps_id {lo}-{hi} "
                       f"(fps {lo + 1}-{hi + 1})")
    lo, hi = NOISE_AUG_TRAINED
    if not lo <= params.noise_aug_strength <= hi:
        out.append(f"noise_aug_strength {params.noise_aug_strength:g} is outside the training spread {lo:g}-{hi:g} "
                   f"(central 95 % of log-normal(-3.0, 0.5), SVD paper app. D)")
    if not is_untrained(v):
        if (params.width, params.height) not in TRAINED_SIZES:
            out.append(f"{params.width}x{params.height} is not a trained size ("
                       + " or ".join(f"{w}x{h}" for w, h in TRAINED_SIZES) + ")")
        if params.num_frames != v.num_frames:
            out.append(f"{params.num_frames} frames: {v.name} was trained on {v.num_frames}")
    return out


def _sv3d_warnings(params: SamplingParams, v: Variant) -> list[str]:
    out = []
    if params.noise_aug_strength != SV3D_COND_AUG:
        out.append(f"noise_aug_strength {params.noise_aug_strength:g}: Stability's SV3D scripts always use "
                   f"{SV3D_COND_AUG:g}")
    if not is_untrained(v):
        if (params.width, params.height) != SV3D_SIZE:
            out.append(f"{params.width}x{params.height} is not SV3D's trained size ({SV3D_SIZE[0]}x{SV3D_SIZE[1]})")
        if params.num_frames != v.num_frames:
            out.append(f"{params.num_frames} frames: {v.name} was trained on {v.num_frames}")
    return out
