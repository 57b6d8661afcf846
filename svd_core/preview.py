"""What the model believes the video is, step by step: cheap previews of the denoised estimate and the denoising
record (a labelled preview per step, per-step statistics).

The pipeline hands `on_preview(step, steps, sigma, denoised, latents)` to its caller after every denoising step
(svd_core.pipeline.run): `denoised` is the model's current estimate of the clean video (the last D(x; sigma) the
sampler's step computed: for heun and dpmpp_2s_ancestral the second call's), `latents` the sampler's noisy
latents after the step, both float32 (F, 4, h, w) in the scaled latent space, on the run's device; `sigma` is
the step's noise level from the schedule. Nothing here runs unless a caller asks for it.

Decoding is a fixed linear map from the 4 latent channels to RGB at latent resolution (8x smaller than the
video), no extra weights: SVD's autoencoder shares Stable Diffusion's latent space. `PREVIEW_DECODER` is the one
place a tiny video autoencoder (e.g. TAESDV) would plug in: any callable (F, 4, h, w) scaled latents -> uint8
(F, h', w', 3) frames.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .video import to_png

# Stable Diffusion's latent -> RGB factors (rows: latent channels; columns: R, G, B), applied to the scaled latents
# (the UNet's space) and read as [-1, 1]: ComfyUI's comfy/latent_formats.py, class SD15, `latent_rgb_factors`, used
# by its "latent2rgb" preview (comfy/latent_preview.py: rgb = latent @ factors, then (rgb + 1) / 2).
LATENT_RGB_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)

PreviewFn = Callable[[int, int, float, torch.Tensor, torch.Tensor], None]


@functools.cache
def _rgb_factors(device: torch.device) -> torch.Tensor:
    return torch.tensor(LATENT_RGB_FACTORS, dtype=torch.float32, device=device)


def latent_rgb(latents: torch.Tensor) -> np.ndarray:
    """Scaled latents (F, 4, h, w) -> uint8 frames (F, h, w, 3) by the fixed linear map; computed on the latents'
    device, only the small uint8 result crosses to the host."""
    rgb = torch.einsum("fchw,cr->fhwr", latents.float(), _rgb_factors(latents.device))
    return ((rgb + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8).cpu().numpy()


PREVIEW_DECODER: Callable[[torch.Tensor], np.ndarray] = latent_rgb
MAX_COLS = 8


def grid_columns(n: int) -> int:
    """Frames across: at most MAX_COLS, rows as even as they can be (14 -> 7 x 2, 25 -> 7 x 4)."""
    return math.ceil(n / math.ceil(n / MAX_COLS))


def frame_grid(frames: np.ndarray, cols: int | None = None) -> np.ndarray:
    """(F, h, w, 3) -> one image (rows * h, cols * w, 3): the frames in reading order, black after the last."""
    f, h, w, _ = frames.shape
    cols = cols or grid_columns(f)
    rows = math.ceil(f / cols)
    out = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, cols)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = frame
    return out


def preview_image(denoised: torch.Tensor) -> np.ndarray:
    """The live preview: every frame of the estimate, decoded by PREVIEW_DECODER, as one grid image."""
    return frame_grid(PREVIEW_DECODER(denoised))


def write_atomically(path, data: bytes) -> None:
    """Replace `path` with `data` through a temporary sibling: a reader sees the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# The live preview's pace: the app's progress bar fetches its file every 0.5 s at the most.
PREVIEW_EVERY_S = 0.5


class BackgroundWriter:
    """Hands preview images to `write(image)` on a thread of its own, so that the sampling loop pays only for the
    map to RGB (on the latents' device) and the small copy to the host, not for PNG encoding and disk. An image
    submitted while another is being written replaces the one waiting: only the latest matters. `close()` writes
    the one waiting and ends the thread. A failed write (OSError) loses that image only.

    `due()` paces the previews: true for the first, then once `every_s` seconds have passed since the last one
    taken. Nobody looks at previews faster than a page fetches them, so a step quicker than that (a small model on
    a CPU) skips the map and the copy; a step slower than that (a full model on a GPU) gets a preview each."""

    def __init__(self, write: Callable[[np.ndarray], None], every_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._write = write
        self._every_s = PREVIEW_EVERY_S if every_s is None else every_s
        self._clock, self._taken_at = clock, None
        self._cond = threading.Condition()
        self._waiting: np.ndarray | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="svd-preview", daemon=True)
        self._thread.start()

    def due(self) -> bool:
        now = self._clock()
        if self._taken_at is not None and now - self._taken_at < self._every_s:
            return False
        self._taken_at = now
        return True

    def submit(self, image: np.ndarray) -> None:
        with self._cond:
            self._waiting = image
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._waiting is None and not self._closed:
                    self._cond.wait()
                if self._waiting is None:
                    return
                image, self._waiting = self._waiting, None
            try:
                self._write(image)
            except OSError:
                pass


class PngFile:
    """An on_preview that keeps `path` (a PNG) showing the latest estimate (the CLI's --preview FILE), written
    in the background, quickly compressed (it is rewritten as the run goes); `close()` after the run."""

    def __init__(self, path):
        self.path = Path(path)
        self._writer = BackgroundWriter(lambda image: write_atomically(self.path, to_png(image, compress_level=1)))

    def __call__(self, step, steps, sigma, denoised, latents) -> None:
        if self._writer.due():
            self._writer.submit(preview_image(denoised))

    def close(self) -> None:
        self._writer.close()


def chain(*callbacks: PreviewFn | None) -> PreviewFn | None:
    """One on_preview calling each given one in turn; None when none is given (previews then cost nothing)."""
    given = [c for c in callbacks if c is not None]
    if not given:
        return None
    if len(given) == 1:
        return given[0]

    def on_preview(*args):
        for c in given:
            c(*args)
    return on_preview


# ------------------------------------------------------------------------------------------------ the record

LABEL_SIZE = 12
MIN_WIDTH = 320  # the record's frames are scaled up (whole pixels) to at least this width, for the label


def label(image: np.ndarray, text: str) -> np.ndarray:
    """`image` under a black band holding `text` (Pillow's ImageDraw, its default font)."""
    font = ImageFont.load_default(size=LABEL_SIZE)
    band = round(LABEL_SIZE * 1.6)
    out = Image.new("RGB", (image.shape[1], image.shape[0] + band))
    out.paste(Image.fromarray(image), (0, band))
    ImageDraw.Draw(out).text((4, (band - LABEL_SIZE) // 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(out)


class Trajectory:
    """Collects the denoising record of one video: an on_preview that keeps every step's preview grid and its
    statistics (per frame: the mean and standard deviation of the sampler's latents after the step, and the RMS
    change of the estimate since the previous step, None on the first). A step 1 starts afresh (a retried run)."""

    def __init__(self):
        self.previews: list[np.ndarray] = []  # uint8 grids, one per step
        self.rows: list[dict] = []
        self._last: torch.Tensor | None = None

    def __call__(self, step, steps, sigma, denoised, latents) -> None:
        if step == 1:
            self.previews, self.rows, self._last = [], [], None
        d, lat = denoised.float(), latents.float()
        per_frame = [lat.mean(dim=(1, 2, 3)), lat.std(dim=(1, 2, 3))]
        if self._last is not None:
            per_frame.append((d - self._last).pow(2).mean(dim=(1, 2, 3)).sqrt())
        mean, std, *change = torch.stack(per_frame).tolist()  # the statistics cross to the host in one copy
        self._last = d.clone()
        self.previews.append(preview_image(d))
        self.rows.append({"step": step, "steps": steps, "sigma": float(sigma), "latent_mean": mean,
                          "latent_std": std, "estimate_change": change[0] if change else None})

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self):  # sent between sweep processes: the records, not the last estimate on a device
        return {**self.__dict__, "_last": None}

    def frames(self) -> np.ndarray:
        """One frame per step (steps down the video's time), each the step's grid of frames, labelled with the
        step and its sigma: uint8 (steps, H, W, 3)."""
        k = max(1, math.ceil(MIN_WIDTH / self.previews[0].shape[1]))
        return np.stack([label(p.repeat(k, 0).repeat(k, 1), f"step {r['step']}/{r['steps']}  sigma {r['sigma']:.4g}")
                         for p, r in zip(self.previews, self.rows)])

    def stats(self) -> dict:
        return {"decoder": "latent_rgb", "frames": len(self.rows[0]["latent_mean"]), "steps": self.rows}


def stats_csv(stats: dict) -> bytes:
    """The statistics one row per (step, frame)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", "sigma", "frame", "latent_mean", "latent_std", "estimate_change"])
    for r in stats["steps"]:
        change = r["estimate_change"] or [None] * len(r["latent_mean"])
        for f, (m, s, c) in enumerate(zip(r["latent_mean"], r["latent_std"], change)):
            w.writerow([r["step"], f"{r['sigma']:.6g}", f, f"{m:.6g}", f"{s:.6g}", "" if c is None else f"{c:.6g}"])
    return buf.getvalue().encode()
