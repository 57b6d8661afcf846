"""What each checkpoint was trained on (its conditioning), warnings when a run leaves it, and the one fps vocabulary.

A warning never blocks: every value inside params.RANGES samples. Sources for each bound are in docs/metrics.md.
"""

from __future__ import annotations

import math

from .checkpoints import Variant, get_variant
from .params import SamplingParams, describe_fps, fps_vocabulary  # noqa: F401 (their names here too)

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
    """Variant.untrained of a variant or its name."""
    return _variant(variant).untrained


def training_warnings(params: SamplingParams, variant: Variant | str) -> list[str]:
    """One line per setting outside what `variant` was trained on (the run record's notes). Never raises for a
    valid SamplingParams."""
    return [text for _, text in knob_warnings(params, variant)]


def knob_warnings(params: SamplingParams, variant: Variant | str) -> list[tuple[str, str]]:
    """training_warnings as (knob, line) pairs: the SamplingParams field each line is about (a size: "width", a
    checkpoint trained at one conditioning: "motion_bucket_id"), for a page that shows it under that knob."""
    v = _variant(variant)
    out = []
    fps_id = params.fps - 1
    if v.is_sv3d:
        return _sv3d_warnings(params, v)
    if v.fixed_conditioning:
        want_fps, want_bucket = v.defaults["fps"], v.defaults["motion_bucket_id"]
        if (params.fps, params.motion_bucket_id) != (want_fps, want_bucket):
            out.append(("motion_bucket_id", f"{v.name} was trained at fps {want_fps} (Stability's fps_id "
                        f"{want_fps - 1}) and motion_bucket_id {want_bucket} only; fps {params.fps} / "
                        f"motion_bucket_id {params.motion_bucket_id} are outside its training"))
    else:
        if params.motion_bucket_id > MAX_TRAINED_BUCKET:
            out.append(("motion_bucket_id", f"motion_bucket_id {params.motion_bucket_id} is above the trained "
                                            f"0-{MAX_TRAINED_BUCKET}"))
        lo, hi = FPS_ID_TRAINED
        if not lo <= fps_id <= hi:
            out.append(("fps", f"fps {params.fps} is fps_id {fps_id}, outside the trained fps_id {lo}-{hi} "
                               f"(fps {lo + 1}-{hi + 1})"))
    lo, hi = NOISE_AUG_TRAINED
    if not lo <= params.noise_aug_strength <= hi:
        out.append(("noise_aug_strength", f"noise_aug_strength {params.noise_aug_strength:g} is outside the "
                    f"training spread {lo:g}-{hi:g} (central 95 % of log-normal(-3.0, 0.5), SVD paper app. D)"))
    if not v.untrained:
        if (params.width, params.height) not in TRAINED_SIZES:
            out.append(("width", f"{params.width}x{params.height} is not a trained size ("
                        + " or ".join(f"{w}x{h}" for w, h in TRAINED_SIZES) + ")"))
        if params.num_frames != v.num_frames:
            out.append(("num_frames", f"{params.num_frames} frames: {v.name} was trained on {v.num_frames}"))
    return out


def _sv3d_warnings(params: SamplingParams, v: Variant) -> list[tuple[str, str]]:
    out = []
    if params.noise_aug_strength != SV3D_COND_AUG:
        out.append(("noise_aug_strength", f"noise_aug_strength {params.noise_aug_strength:g}: Stability's SV3D "
                                          f"scripts always use {SV3D_COND_AUG:g}"))
    if not v.untrained:
        if (params.width, params.height) != SV3D_SIZE:
            out.append(("width", f"{params.width}x{params.height} is not SV3D's trained size "
                                 f"({SV3D_SIZE[0]}x{SV3D_SIZE[1]})"))
        if params.num_frames != v.num_frames:
            out.append(("num_frames", f"{params.num_frames} frames: {v.name} was trained on {v.num_frames}"))
    return out
