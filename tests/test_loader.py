"""The loader computes what Stability's sgm code computes (reference fixtures), covers the real layouts key for
key, and refuses everything else with one clear line."""

import gzip
import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from svd_core import load_pipeline
from svd_core.checkpoints import detect_layout, inspect_checkpoint, list_checkpoints
from svd_core.convert import infer_architecture, is_unused, map_key
from svd_core.errors import CheckpointError
from svd_core.loader import empty_modules, plan_load

from .conftest import FIXTURES, REFERENCE_SETS
from .helpers import cli

# How close the loader must come to the references (float32, CPU).
REL_MODULE = 1e-5
REL_LATENTS = 5e-5
ABS_FRAMES = 1e-4


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module", params=REFERENCE_SETS)
def loaded(request, reference_checkpoints):
    name = request.param
    pipe = load_pipeline(reference_checkpoints[name], device="cpu", dtype=torch.float32)
    ref = load_file(str(FIXTURES / name / "reference.safetensors"))
    params = json.loads((FIXTURES / name / "reference.json").read_text())["params"]
    return name, pipe, ref, params


def test_clip_image_encoder_matches_reference(loaded):
    _, pipe, ref, _ = loaded
    with torch.no_grad():
        out = pipe.image_encoder(ref["clip_pixel_values"])
    assert rel(out.last_hidden_state, ref["clip_last_hidden_state"]) < REL_MODULE
    assert rel(out.image_embeds[:, None], ref["clip_image_embeds"]) < REL_MODULE


@pytest.mark.parametrize("which", ["", "large_"])
def test_clip_through_pipeline_preprocessing(loaded, which):
    """The pipeline's own resize (antialiased bicubic, like kornia) + CLIP normalisation, from the png."""
    name, pipe, ref, _ = loaded
    png = FIXTURES / name / f"input_image{'_large' if which else ''}.png"
    if not png.is_file() or f"clip_{which}image_embeds" not in ref:
        pytest.skip(f"fixture {name} has no {png.name}")
    with torch.no_grad():
        emb = pipe._encode_image(Image.open(png).convert("RGB"), "cpu", 1, False)
    assert rel(emb, ref[f"clip_{which}image_embeds"]) < REL_MODULE


def test_vae_encode_matches_reference(loaded):
    _, pipe, ref, _ = loaded
    with torch.no_grad():
        dist = pipe.vae.encode(ref["vae_encode_input"]).latent_dist
    assert rel(torch.cat([dist.mean, dist.logvar], 1), ref["vae_encode_moments"]) < REL_MODULE
    assert rel(dist.mode(), ref["vae_encode_latent"]) < REL_MODULE


def test_unet_matches_reference(loaded):
    _, pipe, ref, p = loaded
    added = torch.tensor([[p["fps_id"], p["motion_bucket_id"], p["unet_call"]["cond_aug"]]], dtype=torch.float32)
    with torch.no_grad():
        out = pipe.unet(ref["unet_network_input"][None], ref["unet_network_timesteps"][0],
                        encoder_hidden_states=ref["unet_c_crossattn"][:1], added_time_ids=added).sample[0]
    assert rel(out, ref["unet_network_output"]) < REL_MODULE


def test_decode_matches_reference(loaded):
    _, pipe, ref, _ = loaded
    latents = ref["decode_latents"]  # scaled space: decode_latents divides by the scaling factor
    with torch.no_grad():
        frames = pipe.decode_latents(latents[None], latents.shape[0], latents.shape[0])
    frames = frames[0].permute(1, 0, 2, 3)  # (b, c, f, h, w) -> (f, c, h, w)
    assert rel(frames, ref["decode_frames"]) < REL_MODULE


@pytest.mark.parametrize("run", ["sample_noaug", "sample_aug"])
def test_full_sampling_loop_matches_reference(loaded, run):
    name, pipe, ref, p = loaded
    aug = p["sample_runs"][run]["noise_aug_strength"]
    kwargs = dict(height=p["image_height"], width=p["image_width"], num_frames=p["num_frames"],
                  num_inference_steps=p["num_steps"], min_guidance_scale=p["min_guidance_scale"],
                  max_guidance_scale=p["max_guidance_scale"], fps=p["diffusers_fps"],
                  motion_bucket_id=p["motion_bucket_id"], noise_aug_strength=aug,
                  decode_chunk_size=p["decode_chunk_size"])
    image = Image.open(FIXTURES / name / "input_image.png").convert("RGB")
    steps = []

    def record(pipe_, i, t, kw):
        steps.append(kw["latents"].clone())
        return kw

    out = pipe(image, generator=torch.Generator().manual_seed(p["sample_seed"]), output_type="latent",
               callback_on_step_end=record, callback_on_step_end_tensor_inputs=["latents"], **kwargs)
    # diffusers computes sigmas in float64, sgm in float32
    assert torch.allclose(pipe.scheduler.sigmas.float(), ref[f"{run}.sigmas"], rtol=1e-5, atol=1e-6)
    assert rel(out.frames[0], ref[f"{run}.latents"]) < REL_LATENTS
    assert rel(steps[0], ref[f"{run}.step_latents"][1]) < REL_LATENTS
    frames = pipe(image, generator=torch.Generator().manual_seed(p["sample_seed"]), output_type="pt",
                  **kwargs).frames[0]
    assert (frames - ref[f"{run}.frames_01"]).abs().max().item() < ABS_FRAMES


def test_load_pipeline_builds_the_diffusers_pipeline_in_one_call(reference_checkpoints):
    pipe = load_pipeline(str(reference_checkpoints["A"]), device="cpu", dtype=torch.float32)
    assert type(pipe).__name__ == "StableVideoDiffusionPipeline"
    assert {"unet", "vae", "image_encoder", "scheduler", "feature_extractor"} <= set(pipe.components)
    assert pipe.unet.dtype == torch.float32 and pipe.device.type == "cpu"
    assert not any(p.is_meta for p in pipe.unet.parameters())


# ------------------------------------------------------------------------------------------ full-size layout

def real_shapes(kind):
    data = json.loads(gzip.decompress((FIXTURES / "real" / f"{kind}_decoder_layout.json.gz").read_bytes()))
    return {t["key"]: t["shape"] for t in data["tensors"]}


@pytest.mark.parametrize("kind", ["video", "image"])
def test_real_layout_key_coverage(kind):
    """Every key of the released files is loaded with the right shape or is on the explicit unused list, and
    every diffusers parameter is filled: checked on meta tensors, nothing allocated."""
    shapes = real_shapes(kind)
    assert detect_layout(shapes) == kind
    arch = infer_architecture(shapes)
    assert arch.unet_channels == (320, 640, 1280, 1280) and arch.unet_heads == (5, 10, 20, 20)
    assert arch.unet_attention == (True, True, True, False) and arch.unet_adm_channels == 768
    assert (arch.clip_width, arch.clip_layers, arch.clip_heads, arch.clip_embed_dim) == (1280, 32, 16, 1024)
    assert arch.vae_channels == (128, 256, 512, 512) and arch.temporal_decoder == (kind == "video")
    modules = empty_modules(arch)
    assert all(p.is_meta for m in modules.values() for p in m.parameters())
    plan = plan_load(shapes, arch, modules)  # raises on any gap or shape mismatch
    unused = [k for k in shapes if k not in plan]
    assert unused and all(is_unused(k) for k in unused)
    assert not any(is_unused(k) for k in plan)
    assert sum(1 for k in unused if "token_embedding" in k) == 1
    assert all(map_key(k, arch) for k in plan)


# ----------------------------------------------------------------------------------------- identification

def test_inspect_and_list(tmp_path, tiny_checkpoint, reference_checkpoints):
    info = inspect_checkpoint(tiny_checkpoint)  # its metadata names the variant
    assert info.variant.name == "tiny" and info.dtype == "float32" and info.size_bytes > 1e6
    assert inspect_checkpoint(reference_checkpoints["A"]).variant.name == "tiny"  # no metadata: small UNet
    for name in ("svd", "svd_xt", "svd_xt_1_1"):  # a released file's name decides its variant
        (tmp_path / f"{name}.safetensors").symlink_to(reference_checkpoints["A"])
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "broken.safetensors").write_bytes(b"garbage")
    listed = {c.name: c for c in list_checkpoints(tmp_path)}
    assert set(listed) == {"svd.safetensors", "svd_xt.safetensors", "svd_xt_1_1.safetensors"}
    assert listed["svd_xt.safetensors"].variant.num_frames == 25
    assert listed["svd.safetensors"].variant.num_frames == 14
    assert listed["svd_xt_1_1.safetensors"].variant.fixed_conditioning


def test_image_decoder_layout_detected(reference_checkpoints):
    info = inspect_checkpoint(reference_checkpoints["A_image_decoder"])
    assert info.variant.decoder == "image"
    pipe = load_pipeline(reference_checkpoints["A_image_decoder"], device="cpu", dtype=torch.float32)
    assert type(pipe.vae).__name__ == "AutoencoderKL"


def test_float16_file_loads(tmp_path, reference_checkpoints):
    src = reference_checkpoints["A"]
    with safe_open(str(src), "pt") as f:
        half = {k: f.get_tensor(k).half() for k in f.keys()}
    path = tmp_path / "svd_xt.safetensors"
    save_file(half, str(path))
    assert inspect_checkpoint(path).dtype == "float16"
    pipe = load_pipeline(path, device="cpu", dtype=torch.float32)
    ref = load_file(str(FIXTURES / "A" / "reference.safetensors"))
    with torch.no_grad():
        emb = pipe.image_encoder(ref["clip_pixel_values"]).image_embeds[:, None]
    assert rel(emb, ref["clip_image_embeds"]) < 1e-2  # fp16 weights: rounding of the weights only


def test_unet_config_records_the_variants_frames(tmp_path, reference_checkpoints):
    (tmp_path / "svd.safetensors").symlink_to(reference_checkpoints["A"])  # a release name: the 14-frame variant
    assert load_pipeline(tmp_path / "svd.safetensors", device="cpu").unet.config.num_frames == 14


def test_diffusers_folder_round_trip(tmp_path, reference_checkpoints):
    pipe = load_pipeline(reference_checkpoints["A"], device="cpu", dtype=torch.float32)
    pipe.save_pretrained(tmp_path / "svd-diffusers")
    again = load_pipeline(tmp_path / "svd-diffusers", device="cpu", dtype=torch.float32)
    assert inspect_checkpoint(tmp_path / "svd-diffusers").diffusers_folder
    sd1, sd2 = pipe.unet.state_dict(), again.unet.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert all(m.eps == 1e-5 for n, m in again.unet.named_modules()
               if isinstance(m, torch.nn.GroupNorm) and "res_block" in n)


# ------------------------------------------------------------------------------------------------ bad input

def _sd_like(path, keys):
    save_file({k: torch.zeros(2) for k in keys}, str(path))
    return path


def test_refuses_pickles_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for suffix in (".ckpt", ".pt", ".bin"):
        path = tmp_path / f"model{suffix}"
        torch.save({"x": Evil()}, path)
        with pytest.raises(CheckpointError, match="pickle"):
            load_pipeline(path, device="cpu")
    disguised = tmp_path / "disguised.safetensors"
    torch.save({"state_dict": {}}, disguised)
    with pytest.raises(CheckpointError, match="pickle"):
        load_pipeline(disguised, device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize("content, match", [
    (b"", "not a safetensors file"),
    (b"hello world, not a checkpoint at all", "not a safetensors file"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......", "not a safetensors file"),
])
def test_refuses_garbage(tmp_path, content, match):
    path = tmp_path / "svd_xt.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_pipeline(path, device="cpu")


def test_refuses_truncated(tmp_path, reference_checkpoints):
    data = reference_checkpoints["A"].read_bytes()
    path = tmp_path / "svd_xt.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_pipeline(path, device="cpu")


@pytest.mark.parametrize("keys, match", [
    (["model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.transformer.text_model.x"],
     "Stable Diffusion 1"),
    (["model.diffusion_model.input_blocks.0.0.weight", "conditioner.embedders.0.transformer.text_model.x",
      "conditioner.embedders.1.model.x"], "Stable Diffusion XL"),
    (["down_blocks.0.resnets.0.conv1.weight"], "diffusers-format"),
    (["some.other.model"], "not a Stable Video Diffusion checkpoint"),
])
def test_refuses_other_models(tmp_path, keys, match):
    with pytest.raises(CheckpointError, match=match) as e:
        load_pipeline(_sd_like(tmp_path / "model.safetensors", keys), device="cpu")
    assert str(e.value).startswith("model.safetensors ")  # every checkpoint error names the file


def test_refuses_missing_keys(tmp_path, reference_checkpoints):
    with safe_open(str(reference_checkpoints["A"]), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()
                   if k != "model.diffusion_model.output_blocks.4.1.proj_out.weight"}
    path = tmp_path / "svd_xt.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match="^svd_xt.safetensors lacks 1 tensor"):
        load_pipeline(path, device="cpu")


def test_refuses_wrong_shapes(tmp_path, reference_checkpoints):
    with safe_open(str(reference_checkpoints["A"]), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    key = "model.diffusion_model.middle_block.1.proj_in.weight"
    tensors[key] = torch.zeros(tensors[key].shape[0], tensors[key].shape[1] + 1)
    path = tmp_path / "svd_xt.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match="shape"):
        load_pipeline(path, device="cpu")


def test_refuses_folder_without_model_index(tmp_path):
    with pytest.raises(CheckpointError, match="model_index.json"):
        load_pipeline(tmp_path, device="cpu")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pipeline(tmp_path / "nope.safetensors", device="cpu")


def test_cli_make_tiny_and_one_line_errors(tmp_path):
    out = tmp_path / "t.safetensors"
    r = cli("make-tiny", out, "--decoder", "image")
    assert r.returncode == 0 and out.is_file(), r.stderr
    assert inspect_checkpoint(out).variant.name == "tiny_image_decoder"
    bad = tmp_path / "model.ckpt"
    bad.write_bytes(b"\x80\x04junk")
    r = cli("sample", FIXTURES / "A" / "input_image.png", "--checkpoint", bad)
    assert r.returncode == 2
    lines = [x for x in r.stderr.splitlines() if x.startswith("error")]
    assert len(lines) == 1 and "pickle" in lines[0] and "Traceback" not in r.stderr


@pytest.mark.slow
def test_load_prints_no_torchvision_warning(tiny_checkpoint):
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_VERBOSITY"}
    r = subprocess.run([sys.executable, "-c", "import sys, svd_core; svd_core.load_pipeline(sys.argv[1], device='cpu')",
                        str(tiny_checkpoint)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "torchvision" not in r.stderr and "CLIPImageProcessor" not in r.stderr, r.stderr


def test_unused_keys_are_never_read(monkeypatch, reference_checkpoints):
    import svd_core.loader as loader

    read = []

    class Recording:
        def __init__(self, *a, **k):
            self._f = safe_open(*a, **k)

        def __enter__(self):
            self._f.__enter__()
            return self

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)

        def get_tensor(self, key):
            read.append(key)
            return self._f.get_tensor(key)

    monkeypatch.setattr(loader, "safe_open", Recording)
    load_pipeline(reference_checkpoints["A"], device="cpu", dtype=torch.float16)
    with safe_open(str(reference_checkpoints["A"]), "pt") as f:
        keys = list(f.keys())
    unused = {k for k in keys if is_unused(k)}
    assert unused and not unused & set(read)
    assert len(read) == len(set(read)) == len(keys) - len(unused)  # every other key exactly once
