"""SamplingParams: validation that names the field and its range, variant defaults, old records, the knobs
each sampler, discretization and guider reads."""

import dataclasses

import pytest

from svd_core import SamplingParams


def test_params_validation_names_field_and_range():
    with pytest.raises(ValueError, match=r"motion_bucket_id must be between 0 and 1023, got 1024"):
        SamplingParams(motion_bucket_id=1024)
    with pytest.raises(ValueError, match=r"decode_chunk_size must be between 1 and 64, got 0"):
        SamplingParams(decode_chunk_size=0)
    # a chunk larger than the clip decodes every frame at once, as diffusers and Stability's scripts do
    assert SamplingParams(num_frames=6, decode_chunk_size=20).decode_chunk == 6
    with pytest.raises(ValueError, match="num_frames must be an integer"):
        SamplingParams(num_frames=2.5)
    with pytest.raises(ValueError, match="resize_mode must be one of crop, pad, stretch"):
        SamplingParams(resize_mode="zoom")
    with pytest.raises(ValueError, match="unknown parameter"):
        SamplingParams.from_dict({"guidance": 3})
    p = SamplingParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.seed = 1
    assert p.replace(seed=5).seed == 5 and p.video_fps == p.fps


def test_variant_defaults():
    svd = SamplingParams.for_variant("svd")
    xt = SamplingParams.for_variant("svd_xt")
    xt11 = SamplingParams.for_variant("svd_xt_1_1")
    assert (svd.num_frames, svd.num_inference_steps, svd.max_guidance_scale) == (14, 25, 2.5)
    assert (xt.num_frames, xt.num_inference_steps, xt.min_guidance_scale, xt.max_guidance_scale) == (25, 30, 1.5, 3.0)
    assert (xt11.fps, xt11.motion_bucket_id) == (7, 127)  # sgm fps_id 6
    assert xt.decode_chunk_size == 14 and (xt.width, xt.height) == (1024, 576)
    assert SamplingParams.for_variant("svd_xt", num_frames=8).decode_chunk_size == 14  # kept as set
    assert SamplingParams.for_variant("svd_image_decoder").num_frames == 14
    assert SamplingParams.for_variant("svd_xt", motion_bucket_id=30).motion_bucket_id == 30
    with pytest.raises(ValueError, match="valid variants: svd, "):
        SamplingParams.for_variant("svd_xxl")


def test_old_records_keep_their_meaning():
    old = {k: v for k, v in SamplingParams().to_dict().items() if k in (
        "num_frames", "num_inference_steps", "min_guidance_scale", "max_guidance_scale", "fps", "motion_bucket_id",
        "noise_aug_strength", "decode_chunk_size", "seed", "width", "height", "output_fps", "resize_mode")}
    p = SamplingParams.from_dict(old)
    assert (p.sampler, p.discretization, p.guider, p.num_videos) == ("euler", "edm", "linear", 1)
    assert (p.sigma_min, p.sigma_max, p.rho) == (0.002, 700.0, 7.0)  # Stability's SVD schedule
    assert p.inapplicable() == []


@pytest.mark.parametrize("changes, ignored", [
    (dict(sampler="dpmpp_2m", eta=0.5, s_churn=1.0), ["s_churn", "eta"]),
    (dict(sampler="euler", s_noise=0.5), ["s_noise"]),  # no churn: s_noise has nothing to scale
    (dict(sampler="euler", s_noise=0.5, s_churn=1.0), []),
    (dict(sampler="euler_ancestral", s_noise=0.5, lms_order=2), ["lms_order"]),
    (dict(discretization="legacy_ddpm", rho=5.0, sigma_max=100.0), ["sigma_max", "rho"]),
    (dict(guider="vanilla", min_guidance_scale=2.0, max_guidance_scale=3.0), ["min_guidance_scale"]),
    (dict(guider="identity", max_guidance_scale=3.0), ["max_guidance_scale"]),
])
def test_inapplicable_knobs_are_named(changes, ignored):
    assert SamplingParams(**changes).inapplicable() == ignored


@pytest.mark.parametrize("changes, match", [
    (dict(sampler="ddim"), "sampler must be one of euler, heun, euler_ancestral, dpmpp_2s_ancestral, dpmpp_2m, lms"),
    (dict(discretization="karras"), "discretization must be one of edm, legacy_ddpm"),
    (dict(guider="none"), "guider must be one of linear, triangle, vanilla, identity"),
    (dict(sigma_min=10.0, sigma_max=5.0), "sigma_min .* must be below sigma_max"),
    (dict(s_tmin=10.0, s_tmax=1.0), "s_tmin .* must not exceed s_tmax"),
    (dict(lms_order=5), "lms_order must be between 1 and 4"),
    (dict(num_videos=0), "num_videos must be between 1 and 16"),
    (dict(eta=-1.0), "eta must be between"),
    (dict(seed=2**53 - 1, num_videos=2), "seed \\+ num_videos - 1 must be at most"),
])
def test_validation_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**changes)
