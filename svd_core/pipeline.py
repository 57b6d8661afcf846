"""The sampling script: image -> video, as a plain numbered sequence of small helpers over the diffusers
pipeline's modules (pipe.image_encoder / feature_extractor, pipe.vae, pipe.unet), with Stability's sampler,
discretization and guider (svd_core.samplers) in place of the pipeline's fixed Euler scheduler. The same script
runs SVD and SV3D; only step 2 differs.

    1. encode the image for CLIP (cross-attention) and, noised by noise_aug_strength, for the VAE (concat)
    2. the micro-conditioning: SVD (fps - 1, motion_bucket_id, noise_aug_strength) once per video; SV3D_u
       (noise_aug_strength); SV3D_p (noise_aug_strength, polar, azimuth) for each frame
    3. the noise levels and the initial latents
    4. the denoising loop: one sampler step at a time, each model call guided across frames
    5. decode in chunks of decode_chunk_size (the temporal decoder mixes the frames of a chunk)

Random draws come from `generator` in Stability's order: the conditioning noise, the initial latents, then the
sampler's own draws. Works with the pipeline's model-cpu-offload hooks (modules are called through their
forward / encode / decode, which carry the hooks) and frees them afterwards.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from . import camera, samplers, sv3d
from .errors import Cancelled
from .params import SamplingParams


@dataclass
class PipelineOutput:
    frames: np.ndarray  # float32 (F, H, W, 3) in [0, 1]
    latents: torch.Tensor  # float32 (F, 4, h, w) on the CPU, in the scaled latent space (diffusers' 'latent')
    timings: dict[str, float]  # seconds: image_encode, denoise, decode, total
    model_calls: int  # UNet calls (each on 2F rows with CFG, F with the identity guider)
    camera: dict | None = None  # SV3D_p: the per-frame elevations_deg / azimuths_deg the run was conditioned on


class _Clock:
    """Wall-clock marks; synchronises CUDA so that GPU work is counted where it happens."""

    def __init__(self, device: torch.device):
        self.device, self.marks = device, {}

    def mark(self, name: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.marks[name] = time.perf_counter()

    def timings(self) -> dict[str, float]:
        m = self.marks
        return {"image_encode": m["encoded"] - m["start"], "denoise": m["denoised"] - m["encoded"],
                "decode": m["end"] - m["denoised"], "total": m["end"] - m["start"]}


# ------------------------------------------------------------------------------------------------ helpers

def encode_image(pipe, image, device, cfg: bool) -> torch.Tensor:
    """1a. CLIP image embedding (1, 1, D); with CFG [zeros; embedding] (2, 1, D)."""
    return pipe._encode_image(image, device, 1, cfg)


def encode_condition(pipe, image, params: SamplingParams, device, generator, cfg: bool) -> torch.Tensor:
    """1b. The image in [-1, 1], plus noise_aug_strength * noise (the run's first draw), VAE-encoded (mode) and
    repeated over the frames: (1, F, 4, h, w); with CFG [zeros; latents] (2, F, 4, h, w)."""
    pixels = pipe.video_processor.preprocess(image, height=params.height, width=params.width).to(device)
    noise = randn_tensor(pixels.shape, generator=generator, device=device, dtype=pixels.dtype)
    pixels = pixels + params.noise_aug_strength * noise
    upcast = pipe.vae.dtype == torch.float16 and pipe.vae.config.force_upcast
    if upcast:
        pipe.vae.to(dtype=torch.float32)
    latents = pipe._encode_vae_image(pixels, device=device, num_videos_per_prompt=1, do_classifier_free_guidance=cfg)
    if upcast:
        pipe.vae.to(dtype=torch.float16)
    return latents.to(pipe.unet.dtype).unsqueeze(1).repeat(1, params.num_frames, 1, 1, 1)


def frame_camera(pipe, params: SamplingParams) -> dict | None:
    """2a. SV3D_p's camera, one (elevation, azimuth) per frame, unset values filled in as Stability's script
    does (svd_core.camera.resolve); None for models without a camera input."""
    if sv3d.family_of(pipe.unet) != "sv3d_p":
        return None
    elevations, azimuths = camera.resolve(params.num_frames, params.elevations_deg, params.azimuths_deg)
    return {"elevations_deg": list(elevations), "azimuths_deg": list(azimuths)}


def time_ids(pipe, params: SamplingParams, device, cfg: bool, cam: dict | None = None) -> torch.Tensor:
    """2. The micro-conditioning row [fps - 1, motion_bucket_id, noise_aug_strength], once per batch half. SV3D:
    its own ids (svd_core.sv3d.camera_ids), float32 like sgm's embedders, the same for both halves (sgm's
    unconditional vector equals the conditional one)."""
    family = sv3d.family_of(pipe.unet)
    if family == "svd":
        return pipe._get_add_time_ids(params.fps - 1, params.motion_bucket_id, params.noise_aug_strength,
                                      pipe.unet.dtype, 1, 1, cfg).to(device)
    polars = azimuths = None
    if family == "sv3d_p":
        polars, azimuths = camera.model_angles(cam["elevations_deg"], cam["azimuths_deg"])
    ids = sv3d.camera_ids(family, params.noise_aug_strength, polars, azimuths)[None]  # (1, F or 1, n)
    return ids.repeat(2 if cfg else 1, 1, 1).to(device)


def initial_latents(pipe, params: SamplingParams, sigmas: torch.Tensor, device, generator) -> torch.Tensor:
    """3. Standard normal latents (the run's second draw, in the model's dtype like diffusers) scaled to the
    first noise level: float32 (F, 4, h, w)."""
    f = pipe.vae_scale_factor
    shape = (params.num_frames, pipe.unet.config.in_channels // 2, params.height // f, params.width // f)
    x = randn_tensor(shape, generator=generator, device=device, dtype=pipe.unet.dtype).float()
    return x * torch.sqrt(1.0 + sigmas[0] ** 2.0)


def make_denoiser(pipe, embeds, condition, added_time_ids, scale: torch.Tensor | None, calls: list[int],
                  split: bool = False):
    """4a. D(x; sigma): the UNet's v-prediction in sgm's EDM preconditioning (VScalingWithEDMcNoise), guided
    across frames by `scale` (None: the conditional batch alone, half the rows). `split`: the two halves of the
    guidance batch go through the UNet as two calls (half the activation memory, the same result to rounding).
    sigma is a float32 scalar on the CPU: the preconditioning factors multiply as host scalars and the noise
    embedding is filled in on the device, so no call waits for a host-to-device copy."""
    unet = pipe.unet

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        c_skip = 1.0 / (sigma**2 + 1.0)
        c_out = -sigma / (sigma**2 + 1.0) ** 0.5
        c_in = 1.0 / (sigma**2 + 1.0) ** 0.5
        c_noise = torch.full((), float(0.25 * sigma.log()), dtype=torch.float32, device=x.device)
        rows = 1 if scale is None else 2
        inp = (x * c_in).to(unet.dtype)[None].expand(rows, *x.shape)
        inp = torch.cat([inp, condition], dim=2)
        halves = [slice(0, 1), slice(1, 2)] if split and rows == 2 else [slice(0, rows)]
        out = torch.cat([unet(inp[h], c_noise, encoder_hidden_states=embeds[h], added_time_ids=added_time_ids[h],
                              return_dict=False)[0] for h in halves]).float()
        calls[0] += 1
        den = out * c_out + x * c_skip  # (rows, F, 4, h, w)
        return den[0] if scale is None else samplers.apply_guidance(den[0], den[1], scale)

    return denoise


def decode(pipe, latents: torch.Tensor, decode_chunk_size: int, check_stop: Callable[[], None]) -> torch.Tensor:
    """5. Scaled latents (F, 4, h, w) -> frames (F, 3, H, W) in [-1, 1], decode_chunk_size frames at a time
    (as diffusers' decode_latents: the temporal decoder sees one chunk's frames together)."""
    vae = pipe.vae
    z = (latents / vae.config.scaling_factor).to(vae.dtype)
    temporal = "num_frames" in inspect.signature(vae.forward).parameters
    chunks = []
    for i in range(0, z.shape[0], decode_chunk_size):
        if i:
            check_stop()
        chunk = z[i: i + decode_chunk_size]
        kwargs = {"num_frames": chunk.shape[0]} if temporal else {}
        chunks.append(vae.decode(chunk, **kwargs).sample.float())
    return torch.cat(chunks)


# --------------------------------------------------------------------------------------------------- run

def draw_noise(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The sampler's draw from the run's generator, as randn_tensor makes it. On CUDA a CPU generator's draw is
    made in page-locked memory and copied without blocking the host."""
    if like.device.type == "cuda" and generator.device.type == "cpu":
        host = torch.randn(like.shape, generator=generator, dtype=like.dtype, pin_memory=True)
        return host.to(like.device, non_blocking=True)
    return randn_tensor(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def run(pipe, image, params: SamplingParams, *, decode_chunk_size: int, generator: torch.Generator,
        on_step: Callable[[int, int], None] | None = None, should_stop: Callable[[], bool] | None = None,
        on_phase: Callable[[str], None] | None = None, split_guidance: bool = False,
        on_preview: Callable[[int, int, float, torch.Tensor, torch.Tensor], None] | None = None) -> PipelineOutput:
    """One video from a PIL image of exactly params.width x params.height. `on_phase(name)` as "encoding",
    "denoising", "decoding" start; `on_step(i, n)` after each step; `on_preview(i, n, sigma, denoised, latents)`
    after each step's on_step, with the step's noise level and its estimate of the clean video (svd_core.preview);
    `should_stop()` is checked before every step, after the last, and between decode chunks: when it turns true,
    Cancelled is raised. `split_guidance`: the guidance batch's halves as two UNet calls (memory mode low)."""

    def check_stop():
        if should_stop is not None and should_stop():
            raise Cancelled("run cancelled")

    def phase(name):
        if on_phase is not None:
            on_phase(name)

    device = pipe._execution_device
    sampler = samplers.get_sampler(params.sampler)
    scale = samplers.guidance_scale(params)
    cfg = scale is not None
    clock, calls = _Clock(device), [0]
    try:
        with torch.inference_mode():
            clock.mark("start")
            check_stop()
            phase("encoding")
            embeds = encode_image(pipe, image, device, cfg)  # 1.
            condition = encode_condition(pipe, image, params, device, generator, cfg)
            cam = frame_camera(pipe, params)  # 2.
            added_time_ids = time_ids(pipe, params, device, cfg, cam)
            sigmas = samplers.discretize(params)  # 3.
            x = initial_latents(pipe, params, sigmas, device, generator)
            clock.mark("encoded")

            phase("denoising")  # 4.
            denoise = make_denoiser(pipe, embeds, condition, added_time_ids,
                                    None if scale is None else scale.to(device), calls, split_guidance)
            estimate = [None]
            if on_preview is not None:
                denoise = samplers.keep_last(denoise, estimate)
            loop = samplers.Loop(denoise, sigmas, params, lambda like: draw_noise(like, generator))
            n = loop.num_steps
            for i in range(n):
                check_stop()
                x = sampler.step(loop, x, i)
                if on_step is not None:
                    on_step(i + 1, n)
                if on_preview is not None:
                    on_preview(i + 1, n, float(sigmas[i]), estimate[0], x)
            check_stop()
            clock.mark("denoised")

            phase("decoding")  # 5.
            frames = decode(pipe, x, decode_chunk_size, check_stop)
            frames = (frames * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
            clock.mark("end")
    finally:
        pipe.maybe_free_model_hooks()
    return PipelineOutput(frames, x.cpu(), clock.timings(), calls[0], cam)
