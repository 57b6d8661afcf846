"""What SVD was trained on: warnings for settings outside it, the fps vocabulary."""

import pytest

from svd_core import SamplingParams, get_variant
from svd_core.conditioning import is_untrained, training_warnings
from svd_core.params import describe_fps, fps_vocabulary


def _xt(**kw):
    return SamplingParams.for_variant("svd_xt", **kw)


def test_defaults_inside_training_warn_nothing():
    assert training_warnings(_xt(), "svd_xt") == []
    assert training_warnings(_xt(width=576, height=1024), "svd_xt") == []
    assert training_warnings(SamplingParams.for_variant("svd"), "svd") == []
    assert training_warnings(SamplingParams.for_variant("svd_xt_1_1"), "svd_xt_1_1") == []


@pytest.mark.parametrize("change, variant, needle", [
    (dict(motion_bucket_id=256), "svd_xt", "motion_bucket_id 256 is above the trained 0-255"),
    (dict(fps=5), "svd_xt", "fps 5 is fps_id 4, outside the trained fps_id 5-30"),
    (dict(fps=32), "svd_xt", "fps 32 is fps_id 31"),
    (dict(noise_aug_strength=0.0), "svd_xt", "noise_aug_strength 0 is outside the training spread 0.018-0.135"),
    (dict(noise_aug_strength=3.0), "svd_xt", "noise_aug_strength 3 is outside"),
    (dict(width=768, height=768), "svd_xt", "768x768 is not a trained size (1024x576 or 576x1024)"),
    (dict(num_frames=14, decode_chunk_size=14), "svd_xt", "14 frames: svd_xt was trained on 25"),
    (dict(fps=8), "svd_xt_1_1", "trained at fps 7 (Stability's fps_id 6) and motion_bucket_id 127 only"),
    (dict(motion_bucket_id=200), "svd_xt_1_1", "motion_bucket_id 127 only"),
])
def test_each_training_warning(change, variant, needle):
    params = SamplingParams.for_variant(variant, **change)
    warnings = training_warnings(params, variant)
    assert len(warnings) == 1 and needle in warnings[0], warnings


def test_boundaries_and_demo_model():
    assert training_warnings(_xt(fps=6, motion_bucket_id=255), "svd_xt") == []  # fps_id 5, bucket 255: trained
    assert training_warnings(_xt(fps=31), "svd_xt") == []  # fps_id 30
    tiny = SamplingParams.for_variant("tiny")
    assert training_warnings(tiny, "tiny") == []  # 128x128, 6 frames: no size or frame warnings for the demo
    assert is_untrained("tiny") and is_untrained(get_variant("tiny_image_decoder")) and not is_untrained("svd_xt")
    # beyond the training range still samples: nothing blocks
    assert SamplingParams(motion_bucket_id=1023, fps=240, noise_aug_strength=10.0).motion_bucket_id == 1023


def test_fps_vocabulary():
    p = _xt(fps=7, output_fps=24)
    assert fps_vocabulary(p) == {"conditioning_fps": 7, "fps_id": 6, "playback_fps": 24}
    assert describe_fps(p) == "conditioning fps 7 (Stability's fps_id 6) · playback fps 24"
