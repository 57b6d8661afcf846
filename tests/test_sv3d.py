"""SV3D (sv3d_u, sv3d_p): Stability's files load, and Sampler.generate computes what sgm computes for every run of
the vendored fixtures (tests/fixtures/sv3d/*, computed with Stability's code); camera paths in both conventions;
the camera as a knob in params, the CLI and the record."""

import gzip
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from svd_core import SamplingParams, load_pipeline, make_tiny
from svd_core import pipeline as svd_pipeline
from svd_core.camera import camera_path, dynamic_loop, model_angles, resolve
from svd_core.checkpoints import detect_family, detect_layout
from svd_core.convert import infer_architecture, is_unused
from svd_core.loader import empty_modules, plan_load
from svd_core.session import Sampler, to_uint8
from svd_core.sv3d import SV3DUNet, camera_ids

from .conftest import FIXTURES, regenerate
from .helpers import cli

SV3D = FIXTURES / "sv3d"
SETS = tuple(sorted(p.name for p in SV3D.iterdir() if (p / "reference.json").is_file()))
REL_MODULE = 1e-5  # the SVD fixtures' bounds
REL_LATENTS = 5e-5
ABS_FRAMES = 1e-4


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _runs():
    for name in SETS:
        runs = json.loads((SV3D / name / "reference.json").read_text())["params"]["sample_runs"]
        for run in runs:
            yield name, run


@pytest.fixture(scope="module")
def sv3d_checkpoints(tmp_path_factory):
    """Each set's sgm checkpoint rebuilt bit for bit and named as Stability releases it (sv3d_u.safetensors)."""
    dest = tmp_path_factory.mktemp("sv3d")
    out = {}
    for name in SETS:
        path = regenerate(f"sv3d/{name}", dest)
        out[name] = path.rename(dest / f"{name}.safetensors")
    return out


@pytest.fixture(scope="module")
def samplers(sv3d_checkpoints):
    return {name: Sampler(path, device="cpu", dtype=torch.float32) for name, path in sv3d_checkpoints.items()}


def _fixture(name):
    meta = json.loads((SV3D / name / "reference.json").read_text())
    return meta["params"], load_file(str(SV3D / name / "reference.safetensors"))


def _params(sampler, p, run):
    angles = p["sample_runs"][run].get("angles") or {}
    return sampler.default_params(
        num_frames=p["num_frames"], num_inference_steps=p["num_steps"], width=p["image_width"],
        height=p["image_height"], seed=p["sample_seed"], noise_aug_strength=p["sample_cond_aug"],
        min_guidance_scale=p["min_guidance_scale"], max_guidance_scale=p["max_guidance_scale"],
        elevations_deg=angles.get("elevations_deg"), azimuths_deg=angles.get("azimuths_deg"))


# ------------------------------------------------------------------------------------------- full runs

@pytest.mark.parametrize("name, run", list(_runs()))
def test_run_matches_stability(samplers, name, run, monkeypatch):
    """Sampler.generate, float32 CPU: latents within 5e-5 relative, frames within 1e-4 of sgm's raw decode
    after clamp((x + 1) / 2) (Stability's script then pastes the input over the last frame; we do not)."""
    p, ref = _fixture(name)
    sampler = samplers[name]
    assert sampler.info.variant.name == name and isinstance(sampler.pipe.unet, SV3DUNet)  # its release name
    params = _params(sampler, p, run)
    assert (params.guider, params.sampler, params.discretization) == ("triangle", "euler", "edm")  # the defaults
    outputs = []
    real_run = svd_pipeline.run
    monkeypatch.setattr(svd_pipeline, "run", lambda *a, **k: outputs.append(real_run(*a, **k)) or outputs[-1])
    result = sampler.generate(SV3D / name / "input_image.png", params)
    out = outputs[0]
    want = ((ref[f"{run}.frames"] + 1) / 2).clamp(0, 1)
    latents_rel = rel(out.latents, ref[f"{run}.latents"])
    frames_abs = (torch.from_numpy(out.frames).permute(0, 3, 1, 2) - want).abs().max().item()
    print(f"{name}/{run}: latents rel {latents_rel:.2e}, frames abs {frames_abs:.2e}")
    assert latents_rel < REL_LATENTS
    assert frames_abs < ABS_FRAMES
    assert np.array_equal(result.frames, to_uint8(out.frames))
    # the model's own last frame, not the input pasted over it
    pasted = ref[f"{run}.frames_01"][-1]
    assert (torch.from_numpy(out.frames[-1]).permute(2, 0, 1) - pasted).abs().max() > 10 * ABS_FRAMES
    if name == "sv3d_p":
        cam = result.effective["camera"]
        polars, azimuths = model_angles(cam["elevations_deg"], cam["azimuths_deg"])
        assert np.array_equal(np.float32(polars), ref[f"{run}.polars_rad"].numpy())
        assert np.array_equal(np.float32(azimuths), ref[f"{run}.azimuths_rad"].numpy())
    assert result.effective["fps_id"] is None  # SV3D has no fps input


# ----------------------------------------------------------------------------------------- components

@pytest.mark.parametrize("name", SETS)
def test_components_match_stability(sv3d_checkpoints, name):
    p, ref = _fixture(name)
    pipe = load_pipeline(sv3d_checkpoints[name], device="cpu", dtype=torch.float32)
    assert type(pipe.vae).__name__ == "AutoencoderKL" and pipe.vae.post_quant_conv is None
    ids = camera_ids(name, ref["unet_cond_aug"][0].item(),
                     ref.get("unet_polars_rad", None), ref.get("unet_azimuths_rad", None))
    frames = ref["unet_x"].shape[0]
    with torch.no_grad():
        clip = pipe.image_encoder(ref["clip_pixel_values"])
        assert rel(clip.image_embeds[:, None], ref["clip_image_embeds"]) < REL_MODULE
        dist = pipe.vae.encode(ref["vae_encode_input"]).latent_dist  # conditioner.embedders.1's encoder
        assert rel(torch.cat([dist.mean, dist.logvar], 1), ref["vae_encode_moments"]) < REL_MODULE
        assert rel(dist.mode(), ref["vae_encode_latent"]) < REL_MODULE
        vector = pipe.unet.conditioning_vector(ids[None], 1, frames)
        assert rel(vector, ref["unet_c_vector"]) < REL_MODULE
        out = pipe.unet(ref["unet_network_input"][None], ref["unet_network_timesteps"][0],
                        encoder_hidden_states=ref["unet_c_crossattn"][:1], added_time_ids=ids[None]).sample[0]
        assert rel(out, ref["unet_network_output"]) < REL_MODULE
        decoded = pipe.vae.decode(ref["decode_latents"] / pipe.vae.config.scaling_factor).sample
        assert rel(decoded, ref["decode_frames"]) < REL_MODULE
        if name == "sv3d_p":  # every frame its own camera: frame 0's angles on every frame is far off
            one = pipe.unet(ref["unet_network_input"][None], ref["unet_network_timesteps"][0],
                            encoder_hidden_states=ref["unet_c_crossattn"][:1],
                            added_time_ids=ids[None, :1]).sample[0]
            assert rel(one, ref["unet_network_output"]) > 1e-2


@pytest.mark.parametrize("name", SETS)
def test_real_layout_key_coverage(name):
    """Every key of the full-size release is loaded with the right shape or is on the unused list, and every
    diffusers parameter is filled (meta tensors: nothing allocated)."""
    data = json.loads(gzip.decompress((FIXTURES / "real" / f"{name}_layout.json.gz").read_bytes()))
    shapes = {t["key"]: t["shape"] for t in data["tensors"]}
    assert detect_layout(shapes) == "image" and detect_family(shapes) == name
    arch = infer_architecture(shapes, family=name)
    assert arch.added_embed_dims == {"sv3d_u": (256,), "sv3d_p": (256, 512, 512)}[name]
    assert not arch.temporal_decoder and not arch.vae_post_quant_conv
    modules = empty_modules(arch)
    plan = plan_load(shapes, arch, modules)
    unused = [k for k in shapes if k not in plan]
    assert all(is_unused(k) for k in unused)
    assert sum(1 for k in unused if k.startswith("conditioner.embedders.1.encoder.decoder.")) > 100
    assert isinstance(modules["unet"], SV3DUNet)


# -------------------------------------------------------------------------------------------- camera

def test_camera_paths_are_stabilitys():
    """Both conventions and the dynamic loop give the angles of the fixture runs (float32, what the model sees)."""
    p, ref = _fixture("sv3d_p")
    paths = {"sample_orbit": ("orbit", 0), "sample_orbit_demo": ("orbit_demo", 0), "sample_dynamic": ("dynamic", 5)}
    for run, (path, seed) in paths.items():
        polars, azimuths = model_angles(*camera_path(path, p["num_frames"], 10.0, seed))
        assert np.array_equal(np.float32(polars), ref[f"{run}.polars_rad"].numpy()), run
        assert np.array_equal(np.float32(azimuths), ref[f"{run}.azimuths_rad"].numpy()), run
    elev, az = camera_path("orbit", 21, 5.0)
    assert az[-1] == 0 and len(set(elev)) == 1 and elev[0] == 5.0 and np.allclose(np.diff(az[:-1]), 360 / 21)
    assert camera_path("orbit_demo", 21)[1][-1] == pytest.approx(360)
    assert resolve(4) == ((10.0,) * 4, camera_path("orbit", 4)[1])  # Stability's script's defaults
    with pytest.raises(ValueError, match="divides 84"):
        dynamic_loop(5)
    with pytest.raises(ValueError, match="unknown camera path 'spiral'; valid: orbit, orbit_demo, dynamic"):
        camera_path("spiral", 4)


def test_camera_params_validate_and_record(samplers, input_png):
    with pytest.raises(ValueError, match="azimuths_deg: one value per frame"):
        SamplingParams(num_frames=4, azimuths_deg=[0, 90])
    with pytest.raises(ValueError, match="elevations_deg must be between -90 and 90"):
        SamplingParams(num_frames=4, elevations_deg=91)
    p = SamplingParams(num_frames=4, elevations_deg=[0, 10, 20, 30], azimuths_deg=(90, 180, 270, 0))
    assert SamplingParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p  # through run.json
    sampler = samplers["sv3d_p"]
    params = sampler.default_params(num_frames=4, num_inference_steps=1, width=64, height=64, fps=12,
                                    elevations_deg=[0, 10, 20, 30], azimuths_deg=[90, 180, 270, 0])
    res = sampler.generate(input_png, params)
    assert res.effective["camera"] == {"elevations_deg": [0, 10, 20, 30], "azimuths_deg": [90, 180, 270, 0]}
    assert res.effective["ignored_knobs"] == ["fps"]  # SV3D has no fps input
    other = sampler.generate(input_png, params.replace(elevations_deg=40))
    assert not np.array_equal(other.frames, res.frames)  # the camera is a knob
    u = samplers["sv3d_u"]
    res_u = u.generate(input_png, u.default_params(num_frames=4, num_inference_steps=1, width=64, height=64,
                                                  elevations_deg=30))
    assert "elevations_deg" in res_u.effective["ignored_knobs"] and "camera" not in res_u.effective


def test_sv3d_pads_on_white(samplers):
    sampler = samplers["sv3d_u"]
    img = Image.new("RGB", (64, 32), (255, 0, 0))
    prepared = sampler.prepare(img, sampler.default_params(width=64, height=64))
    assert sampler.default_params().resize_mode == "pad"
    assert prepared.image.getpixel((32, 0)) == (255, 255, 255) and prepared.image.getpixel((32, 32)) == (255, 0, 0)


def test_background_removal_is_optional(tmp_path, input_png):
    from svd_core.errors import ImageError
    from svd_core.images import background_removal_available, prepare_image

    if background_removal_available():
        pytest.skip("rembg and its weights are installed here")
    with pytest.raises(ImageError, match="optional `rembg` package"):
        prepare_image(input_png, 64, 64, remove_bg=True)


# ----------------------------------------------------------------------------------------- tiny + CLI

@pytest.mark.slow
def test_sweep_varies_the_elevation(tmp_path, input_png):
    make_tiny(tmp_path / "p.safetensors", family="sv3d_p")
    r = cli("sweep", input_png, "-c", tmp_path / "p.safetensors", "--vary", "elevations_deg=0,30",
            "--num-frames", "4", "--num-inference-steps", "1", "--width", "64", "--height", "64",
            "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    runs = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*/run.json")]
    cells = [r for r in runs if "effective" in r]  # the sweep's own record has no effective block
    assert sorted(r["effective"]["camera"]["elevations_deg"] for r in cells) == [[0.0] * 4, [30.0] * 4]
    assert sorted(r["coords"]["elevations_deg"] for r in cells) == [0.0, 30.0]


def test_sv3d_defaults_and_training_warnings():
    from svd_core.conditioning import training_warnings

    p = SamplingParams.for_variant("sv3d_p")
    assert (p.num_frames, p.width, p.height, p.num_inference_steps, p.guider, p.min_guidance_scale,
            p.max_guidance_scale, p.noise_aug_strength, p.decode_chunk_size) == (21, 576, 576, 50, "triangle", 1.0,
                                                                                  2.5, 1e-5, 14)
    assert training_warnings(p, "sv3d_p") == []  # Stability's own settings warn about nothing
    warned = training_warnings(p.replace(width=512, noise_aug_strength=0.02, fps=30), "sv3d_p")
    assert len(warned) == 2 and "always use 1e-05" in warned[0] and "576x576" in warned[1]  # fps: no input
