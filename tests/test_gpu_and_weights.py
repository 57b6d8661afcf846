"""Checks that need a CUDA GPU or the real weights; skipped where those are absent (CI has neither)."""

import numpy as np
import pytest
import torch

from svd_core import Sampler
from svd_core.checkpoints import detect_family, list_checkpoints, read_safetensors_header, shapes_of
from svd_core.convert import infer_architecture
from svd_core.loader import check_interfaces, empty_modules, plan_load

CUDA = torch.cuda.is_available()
REAL = [c for c in list_checkpoints() if not c.variant.name.startswith("tiny") and not c.diffusers_folder]

needs_gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
needs_weights = pytest.mark.skipif(not REAL, reason="needs real SVD weights in checkpoints/")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("mode", ["fast", "balanced", "low"])
def test_memory_modes_on_gpu(tiny_checkpoint, input_png, mode):
    sampler = Sampler(tiny_checkpoint, device="cuda", memory_mode=mode)
    assert sampler.dtype == torch.float16 and sampler.memory_mode == mode
    params = sampler.default_params(width=64, height=64, num_frames=4, num_inference_steps=2, decode_chunk_size=4)
    a = sampler.generate(input_png, params)
    b = sampler.generate(input_png, params)
    assert np.array_equal(a.frames, b.frames) and a.device.startswith("cuda")


@pytest.mark.gpu
@needs_gpu
def test_gpu_matches_cpu_closely(tiny_checkpoint, input_png):
    cpu = Sampler(tiny_checkpoint, device="cpu")
    gpu = Sampler(tiny_checkpoint, device="cuda", dtype=torch.float32, memory_mode="fast")
    params = cpu.default_params(width=64, height=64, num_frames=4, num_inference_steps=2, decode_chunk_size=4)
    diff = np.abs(cpu.generate(input_png, params).frames.astype(int) - gpu.generate(input_png, params).frames)
    assert diff.max() <= 8  # same seed stream (CPU generator); only kernel rounding differs


@pytest.mark.weights
@needs_weights
@pytest.mark.parametrize("info", REAL, ids=[c.name for c in REAL])
def test_real_checkpoint_layout(info):
    """A release in checkpoints/ is Stability's architecture, identified as such, and its tensors fill every
    parameter of the modules (shape for shape; plan_load raises otherwise): checked on meta tensors."""
    header = read_safetensors_header(info.path)
    shapes = shapes_of(header)
    family = detect_family(shapes, info.path.name)
    arch = infer_architecture(shapes, header.get("__metadata__"), family)
    assert info.variant.family == family and info.variant.decoder == ("video" if arch.temporal_decoder else "image")
    assert arch.unet_channels == (320, 640, 1280, 1280) and arch.unet_in_channels == 8
    assert (arch.clip_width, arch.clip_embed_dim, arch.vae_latent_channels) == (1280, 1024, 4)
    check_interfaces(shapes, arch, info.name)
    modules = empty_modules(arch)
    plan = plan_load(shapes, arch, modules, info.name)
    filled = {(t.component, t.key) for targets in plan.values() for t in targets}
    assert filled == {(c, k) for c, m in modules.items() for k, _ in m.named_parameters()}


@pytest.mark.weights
@pytest.mark.gpu
@needs_weights
@needs_gpu
def test_real_checkpoint_samples(input_png):
    sampler = Sampler(REAL[0].path, memory_mode="auto")
    params = sampler.default_params(width=512, height=320, num_frames=6, num_inference_steps=6, decode_chunk_size=3)
    result = sampler.generate(input_png, params)
    assert result.frames.shape == (6, 320, 512, 3)
    assert result.frames.std() > 5  # real weights make an image, not a flat field
