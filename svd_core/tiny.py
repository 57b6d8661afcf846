"""The tiny random-weight SVD (and SV3D) used by tests and the demo: every structural feature of the real model
(same sgm key layout, temporal layers, OpenCLIP vision tower, both decoder kinds, SV3D's camera embedding) at a few
MB, fast on a CPU.

Its key layout and init recipe are those of the reference fixtures (configs/tiny_layout.json.gz); with a weights
manifest (per-key seeds) `write_from_recipe` regenerates a fixture checkpoint bit for bit.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from .checkpoints import META_VARIANT
from .convert import META_CLIP_HEAD_WIDTH, META_UNET_HEAD_CHANNELS

LAYOUT_FILE = Path(__file__).resolve().parent / "configs" / "tiny_layout.json.gz"
TINY_METADATA = {META_UNET_HEAD_CHANNELS: "16", META_CLIP_HEAD_WIDTH: "32"}


def recipe_tensor(shape, seed: int, kind: str, mean: float, std: float) -> torch.Tensor:
    r = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float32)
    if kind == "normal":
        return mean + std * r
    if kind == "mix":
        return torch.sign(r) * (0.5 + torch.abs(std * r))
    raise ValueError(f"unknown init kind {kind!r}; valid: normal, mix")


def write_from_recipe(entries, path, metadata: dict | None = None) -> Path:
    """entries: iterable of (key, shape, seed, kind, mean, std), in file order. Writes atomically."""
    tensors = {k: recipe_tensor(shape, seed, kind, mean, std) for k, shape, seed, kind, mean, std in entries}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", **(metadata or {})})
    os.replace(tmp, path)
    return path


TINY_FAMILIES = ("svd", "sv3d_u", "sv3d_p")


def make_tiny(path, *, seed: int = 0, decoder: str | None = None, family: str = "svd") -> Path:
    """Write a tiny random-weight checkpoint in Stability's sgm layout (float32, ~25-28 MB): SVD with the video
    (default) or image decoder, or SV3D (`family` sv3d_u / sv3d_p: the image decoder only, as released)."""
    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown variant {family!r}; valid: {', '.join(TINY_FAMILIES)}")
    if decoder not in (None, "video", "image"):
        raise ValueError(f"unknown decoder {decoder!r}; valid: video, image")
    if family != "svd" and decoder == "video":
        raise ValueError(f"{family} has no video decoder (SV3D decodes frame by frame): leave out --decoder")
    decoder = decoder or ("video" if family == "svd" else "image")
    key = decoder if family == "svd" else family
    layout = json.loads(gzip.decompress(LAYOUT_FILE.read_bytes()))[key]
    base = torch.Generator().manual_seed(int(seed))
    seeds = torch.randint(0, 2**62, (len(layout),), generator=base).tolist()
    entries = [(k, shape, s, kind, mean, std) for (k, shape, kind, mean, std), s in zip(layout, seeds)]
    variant = {"video": "tiny", "image": "tiny_image_decoder"}[decoder] if family == "svd" else f"tiny_{family}"
    return write_from_recipe(entries, path, {**TINY_METADATA, META_VARIANT: variant})
