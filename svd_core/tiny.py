"""The tiny random-weight SVD used by tests and the demo: every structural feature of the real model (same sgm
key layout, temporal layers, OpenCLIP vision tower, both decoder kinds) at a few MB, fast on a CPU.

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


def make_tiny(path, *, seed: int = 0, decoder: str = "video") -> Path:
    """Write a tiny random-weight checkpoint in Stability's sgm layout (float32, ~28 MB)."""
    if decoder not in ("video", "image"):
        raise ValueError(f"unknown decoder {decoder!r}; valid: video, image")
    layout = json.loads(gzip.decompress(LAYOUT_FILE.read_bytes()))[decoder]
    base = torch.Generator().manual_seed(int(seed))
    seeds = torch.randint(0, 2**62, (len(layout),), generator=base).tolist()
    entries = [(k, shape, s, kind, mean, std) for (k, shape, kind, mean, std), s in zip(layout, seeds)]
    variant = "tiny" if decoder == "video" else "tiny_image_decoder"
    return write_from_recipe(entries, path, {**TINY_METADATA, META_VARIANT: variant})
