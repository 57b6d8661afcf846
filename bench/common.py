"""Shared bench helpers: full-size random checkpoints in the real sgm layout, anonymous-memory polling, PSNR."""

from __future__ import annotations

import gzip
import json
import math
import os
import struct
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
LAYOUTS = ROOT / "tests" / "fixtures" / "real"
OUT = ROOT / "bench" / "out"


def psnr(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """PSNR in dB (two decimals) of two uint8 videos: inf when identical, None when one is missing or the shapes
    differ."""
    if a is None or b is None or a.shape != b.shape:
        return None
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else round(10 * math.log10(255.0**2 / mse), 2)


def real_layout(kind: str = "video") -> list[tuple[str, list[int]]]:
    data = json.loads(gzip.decompress((LAYOUTS / f"{kind}_decoder_layout.json.gz").read_bytes()))
    return [(t["key"], t["shape"]) for t in data["tensors"]]


def plausible_tensor(key: str, shape, gen: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """Values that keep a random full-size network finite in fp16: unit norms, zero biases, 1/sqrt(fan_in)."""
    if key.endswith("mix_factor"):
        return torch.zeros(shape, dtype=dtype)
    if len(shape) == 1:
        return (torch.ones if key.endswith("weight") else torch.zeros)(shape, dtype=dtype)
    if key.endswith(("class_embedding", "positional_embedding", "logit_scale")):
        return torch.randn(shape, generator=gen, dtype=dtype) * 0.02
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    return torch.randn(shape, generator=gen, dtype=dtype) * (1.0 / math.sqrt(max(fan_in, 1)))


def write_random_checkpoint(path: Path, layout, seed: int = 0, dtype=torch.float32, metadata=None) -> Path:
    """Stream a safetensors file tensor by tensor (never the whole model in memory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    code = {torch.float32: "F32", torch.float16: "F16"}[dtype]
    size = torch.tensor([], dtype=dtype).element_size()
    header, offset = {}, 0
    for key, shape in layout:
        n = math.prod(shape) * size
        header[key] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt", **(metadata or {})}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    gen = torch.Generator().manual_seed(seed)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for key, shape in layout:
            f.write(plausible_tensor(key, shape, gen, dtype).contiguous().numpy().tobytes())
    os.replace(tmp, path)
    return path


def drop_page_cache(path: Path) -> None:
    """Ask the kernel to forget the file's cached pages, so the next read comes from disk (best effort)."""
    for p in [path] if Path(path).is_file() else Path(path).rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def rss_anon() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakAnon:
    """Polls RssAnon of this process every `interval` s; `.peak` in bytes."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self._stop = interval, rss_anon(), threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_anon())
            time.sleep(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_anon())


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"
