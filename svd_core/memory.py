"""Pre-flight memory estimate: the peak of allocated accelerator memory of one run, per memory mode, from the
model's configs and parameter counts (no weights read, nothing run), and `auto`'s choice of mode and decode
chunk from it.

What each mode holds on the device (diffusers' model CPU offload hooks, chain image_encoder -> unet -> vae):

* fast: every module, always.
* balanced: while denoising the UNet and the VAE (it encoded the image and no hook offloads it before the
  decode); while decoding the VAE alone (its hook offloads the UNet).
* low: as balanced, with the UNet's feed-forward chunked, the guidance batch's halves run as two UNet calls and
  decode chunks of at most 2 frames.

Activations, in elements per image (rows x frames images go through the UNet at once; C channels, P pixels of
the level's feature map), counting the tensors alive at once in inference (no autograd):

* UNet skips: the down path keeps every layer's output for the up path: conv_in, each res/attention layer and
  each downsampler (C P each), released as the up path concatenates them.
* a spatio-temporal res-block, C_in -> C: its input (kept for the residual), GroupNorm and SiLU outputs, the
  conv output, and the temporal branch's reshaped copy and blend: 3 C_in P + 3 C P.
* a transformer layer (spatial, then temporal): the hidden states, the residual and the block's input for the
  blend (3 C P), plus the larger of attention (q, k, v, output: 4 C P; SDPA's fused kernels keep no score
  matrix) and the GEGLU feed-forward (projection to 8 C, GELU of its gate half, the product: 16 C P). With
  feed-forward chunking the 16 C P covers one image (spatial) or one frame position (temporal: rows images)
  instead of all of them.
* the up path's concatenation: (C_prev + C_skip) P next to the res-block it feeds.
* VAE decoder, per decoded frame: at each level the res-block working set (3 C_in P + 3 C P) and the nearest
  upsampling (C P kept + 4 C P out); VAE encoder (one image, float32 when the VAE upcasts): 3 C_in P + 3 C P.

The estimate is of PyTorch's allocated memory; the CUDA context and the caching allocator's slack come on top
(`HEADROOM` in the choice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MODES = ("fast", "balanced", "low")
MEMORY_MODES = ("auto", *MODES)  # what a user may ask for: auto picks one of MODES
LOW_DECODE_CHUNK = 2
GB = 1e9
HEADROOM = 1.10  # allocator slack over the estimate
CONTEXT_BYTES = 0.6 * GB  # CUDA context and cuBLAS/cuDNN workspaces, outside PyTorch's allocator


@dataclass(frozen=True)
class Estimate:
    mode: str
    decode_chunk: int
    weights: dict[str, int]  # bytes on the device while denoising / decoding
    denoise: int  # bytes: weights + activations at the denoising peak
    decode: int
    encode: int

    @property
    def peak(self) -> int:
        return max(self.denoise, self.decode, self.encode)

    @property
    def stage(self) -> str:
        return max(("denoise", self.denoise), ("decode", self.decode), ("encode", self.encode), key=lambda s: s[1])[0]


def _params_bytes(module, dtype_bytes: int) -> int:
    return sum(p.numel() for p in module.parameters()) * dtype_bytes


def _level_pixels(h: int, w: int, level: int) -> int:
    return math.ceil(h / 2**level) * math.ceil(w / 2**level)


def unet_activations(cfg, rows: int, frames: int, h: int, w: int, chunked: bool) -> int:
    """Peak activation elements of one UNet call on rows x frames latents of h x w (formulas in the module
    docstring)."""
    n = rows * frames
    channels = list(cfg.block_out_channels)
    layers = cfg.layers_per_block
    attention = ["CrossAttn" in t for t in cfg.down_block_types]
    levels = len(channels)

    def transformer(c, p):
        ff = 16 * c * p * (1 if chunked else n)
        ff_temporal = 16 * c * p * (rows if chunked else n)
        return 3 * c * p * n + max(4 * c * p * n, ff, ff_temporal)

    def resblock(c_in, c, p):
        return (3 * c_in + 3 * c) * p * n

    skips = [channels[0] * _level_pixels(h, w, 0) * n]  # conv_in
    peak = sum(skips)
    c_prev = channels[0]
    for lv, c in enumerate(channels):  # down path
        p = _level_pixels(h, w, lv)
        for _ in range(layers):
            work = resblock(c_prev, c, p)
            if attention[lv]:
                work = max(work, transformer(c, p))
            peak = max(peak, sum(skips) + work)
            skips.append(c * p * n)
            c_prev = c
        if lv < levels - 1:
            skips.append(c * _level_pixels(h, w, lv + 1) * n)
    p = _level_pixels(h, w, levels - 1)  # mid block
    peak = max(peak, sum(skips) + max(resblock(c_prev, c_prev, p), transformer(c_prev, p) if any(attention) else 0))
    skip_channels = [channels[0]]
    for lv, c in enumerate(channels):
        skip_channels += [c] * layers + ([c] if lv < levels - 1 else [])
    for lv in reversed(range(levels)):  # up path: layers + 1 res-blocks per level, each eating one skip
        c, p = channels[lv], _level_pixels(h, w, lv)
        for _ in range(layers + 1):
            skip = skips.pop()
            c_skip = skip_channels.pop()
            cat = (c_prev + c_skip) * p * n
            work = cat + resblock(c_prev + c_skip, c, p)
            if attention[lv]:
                work = max(work, transformer(c, p))
            peak = max(peak, sum(skips) + skip + work)
            c_prev = c
    return peak


def decoder_activations(cfg, frames: int, height: int, width: int) -> int:
    """Peak activation elements of decoding `frames` frames at once (the decoder's up path dominates)."""
    channels = list(reversed(cfg.block_out_channels))
    levels = len(channels)
    peak, c_prev = 0, channels[0]
    for i, c in enumerate(channels):
        p = _level_pixels(height, width, levels - 1 - i)
        peak = max(peak, (3 * c_prev + 3 * c) * p)
        if i < levels - 1:
            peak = max(peak, 5 * c * p)  # nearest upsampling to the next level: input + 4x output
        c_prev = c
    return peak * frames


def encoder_activations(cfg, height: int, width: int) -> int:
    """Peak activation elements of VAE-encoding one image (the first, full-resolution level dominates)."""
    c = cfg.block_out_channels[0]
    return (3 * c + 3 * c) * height * width


def estimate(modules: dict, *, width: int, height: int, num_frames: int, decode_chunk_size: int,
             dtype_bytes: int = 2, guidance: bool = True) -> dict[str, Estimate]:
    """Peak allocated bytes of one run in each mode. `modules`: unet, vae, image_encoder (real or on the meta
    device: only their configs and parameter counts are read)."""
    unet, vae, clip = modules["unet"], modules["vae"], modules["image_encoder"]
    w_unet, w_vae, w_clip = (_params_bytes(m, dtype_bytes) for m in (unet, vae, clip))
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    h, w = height // scale, width // scale
    chunk = min(decode_chunk_size, num_frames)
    rows = 2 if guidance else 1
    upcast = dtype_bytes == 2 and getattr(vae.config, "force_upcast", False)
    encode_act = encoder_activations(vae.config, height, width) * (4 if upcast else dtype_bytes)
    out = {}
    for mode in MODES:
        low = mode == "low"
        c = min(chunk, LOW_DECODE_CHUNK) if low else chunk
        act = unet_activations(unet.config, 1 if low else rows, num_frames, h, w, chunked=low) * dtype_bytes
        dec = decoder_activations(vae.config, c, height, width) * dtype_bytes
        if mode == "fast":
            weights = {"denoise": w_unet + w_vae + w_clip, "decode": w_unet + w_vae + w_clip}
            enc_weights = w_unet + w_vae + w_clip
        else:
            weights = {"denoise": w_unet + w_vae, "decode": w_vae}
            enc_weights = w_clip + w_vae
        vae_upcast = w_vae if upcast else 0  # the float32 copy of the VAE while it encodes
        out[mode] = Estimate(mode, c, weights, weights["denoise"] + act, weights["decode"] + dec,
                             enc_weights + vae_upcast + encode_act)
    return out


def checkpoint_modules(info) -> dict:
    """unet, vae, image_encoder of a checkpoint on the meta device (configs and parameter counts only)."""
    if info.diffusers_folder:
        from accelerate import init_empty_weights
        from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        with init_empty_weights():
            modules = {
                "unet": UNetSpatioTemporalConditionModel.from_config(
                    UNetSpatioTemporalConditionModel.load_config(info.path / "unet")),
                "vae": AutoencoderKLTemporalDecoder.from_config(
                    AutoencoderKLTemporalDecoder.load_config(info.path / "vae")),
                "image_encoder": CLIPVisionModelWithProjection(
                    CLIPVisionConfig.from_pretrained(info.path / "image_encoder")),
            }
    else:
        from .checkpoints import read_safetensors_header, shapes_of
        from .convert import infer_architecture
        from .loader import empty_modules

        header = read_safetensors_header(info.path)
        modules = empty_modules(infer_architecture(shapes_of(header), header.get("__metadata__")))
    return modules


@dataclass(frozen=True)
class Plan:
    mode: str
    decode_chunk: int
    estimate: Estimate
    fits: bool
    note: str | None = None


def choose(estimates_for_chunk, decode_chunk: int, budget: int) -> Plan:
    """auto: fast, then balanced, at the asked decode chunk, if its estimate fits `budget` bytes (free device
    memory plus what this process already holds); else balanced with the largest smaller chunk (down to low's
    chunk) that fits; else low; else low at chunk 1. When nothing fits, low at chunk 1 runs and the note says
    by how much it is over (the sampler notes a lowered chunk, whatever lowered it).
    `estimates_for_chunk(chunk)` -> estimate()'s dict."""
    usable = budget / HEADROOM - CONTEXT_BYTES
    asked = estimates_for_chunk(decode_chunk)
    chunk = min(decode_chunk, asked["fast"].decode_chunk)
    tries = [("fast", chunk), ("balanced", chunk)]
    tries += [("balanced", c) for c in range(chunk - 1, LOW_DECODE_CHUNK - 1, -1)]
    tries += [("low", min(chunk, LOW_DECODE_CHUNK))] + ([("low", 1)] if chunk > 1 else [])
    for mode, c in tries:
        e = estimates_for_chunk(c)[mode]
        if e.peak <= usable:
            return Plan(mode, e.decode_chunk, e, True)
    mode, c = tries[-1]
    e = estimates_for_chunk(c)[mode]
    return Plan(mode, c, e, False, f"auto memory: even '{mode}' mode with decode chunks of {c} is estimated at "
                                   f"{e.peak / GB:.1f} GB, over the {budget / GB:.1f} GB free: it may run out of "
                                   "memory; lower the resolution or num_frames")


def format_table(estimates: dict[str, Estimate]) -> str:
    lines = [f"{'mode':9s} {'peak GB':>8s}  {'at':7s} {'denoise':>8s} {'decode':>8s} {'encode':>8s}  decode chunk"]
    for mode, e in estimates.items():
        lines.append(f"{mode:9s} {e.peak / GB:8.2f}  {e.stage:7s} {e.denoise / GB:8.2f} {e.decode / GB:8.2f} "
                     f"{e.encode / GB:8.2f}  {e.decode_chunk}")
    return "\n".join(lines)


def run_estimates(modules: dict, params, dtype_bytes: int):
    """chunk -> estimate() for the run `params` (a SamplingParams) on `modules`."""
    guidance = params.guider != "identity"

    def for_chunk(chunk: int) -> dict[str, Estimate]:
        return estimate(modules, width=params.width, height=params.height, num_frames=params.num_frames,
                        decode_chunk_size=chunk, dtype_bytes=dtype_bytes, guidance=guidance)
    return for_chunk


def device_budget(device) -> int | None:
    """Bytes a run can use on a CUDA device: what is free plus what this process's allocator already holds
    (the model's weights among it, which the estimate counts); None off CUDA."""
    import torch

    if torch.device(device).type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    held = torch.cuda.memory_reserved(device) if torch.cuda.is_initialized() else 0
    return int(free + held)
