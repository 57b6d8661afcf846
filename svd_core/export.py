"""Frames -> files. Pure functions: frames in (uint8 array (F, H, W, 3)), bytes out.

mp4 is H.264, yuv420p, +faststart through imageio-ffmpeg's bundled ffmpeg: it plays in Chromium, Firefox and
Safari. Odd sizes are padded to even (yuv420p needs it), never resized.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _check(frames) -> np.ndarray:
    a = np.asarray(frames)
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8 or len(a) == 0:
        raise ValueError(f"frames must be a non-empty uint8 array (F, H, W, 3), got {a.dtype} {a.shape}")
    return a


def _even(a: np.ndarray) -> np.ndarray:
    pad_h, pad_w = a.shape[1] % 2, a.shape[2] % 2
    return np.pad(a, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge") if pad_h or pad_w else a


def to_mp4(frames, fps: float, crf: int = 18) -> bytes:
    a = _even(_check(frames))
    fd, path = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        writer = imageio_ffmpeg.write_frames(
            path, (a.shape[2], a.shape[1]), fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=None,
            macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-crf", str(crf), "-movflags", "+faststart", "-preset", "medium"])
        writer.send(None)
        for frame in a:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def to_gif(frames, fps: float) -> bytes:
    imgs = [Image.fromarray(f) for f in _check(frames)]
    buf = io.BytesIO()
    imgs[0].save(buf, "GIF", save_all=True, append_images=imgs[1:], duration=round(1000 / fps), loop=0,
                 optimize=False, disposal=2)
    return buf.getvalue()


def to_webp(frames, fps: float, quality: int = 90) -> bytes:
    imgs = [Image.fromarray(f) for f in _check(frames)]
    buf = io.BytesIO()
    imgs[0].save(buf, "WEBP", save_all=True, append_images=imgs[1:], duration=round(1000 / fps), loop=0,
                 quality=quality)
    return buf.getvalue()


def to_png(frame) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(frame)).save(buf, "PNG")
    return buf.getvalue()


def to_frames_zip(frames) -> bytes:
    a = _check(frames)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for i, frame in enumerate(a):
            z.writestr(f"frame_{i:04d}.png", to_png(frame))
    return buf.getvalue()


EXPORTERS = {"mp4": to_mp4, "gif": to_gif, "webp": to_webp, "zip": lambda frames, fps: to_frames_zip(frames)}


def export_frames(frames, fmt: str, fps: float) -> bytes:
    if fmt not in EXPORTERS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(EXPORTERS)}")
    return EXPORTERS[fmt](frames, fps)


# --------------------------------------------------------------------------------------- grids for comparisons

def _label(tile: Image.Image, text: str) -> Image.Image:
    font = ImageFont.load_default(size=max(10, tile.height // 18))
    draw = ImageDraw.Draw(tile)
    box = draw.textbbox((0, 0), text, font=font)
    pad = 3
    draw.rectangle((0, 0, box[2] + 2 * pad, box[3] + 2 * pad), fill=(0, 0, 0))
    draw.text((pad, pad), text, fill=(255, 255, 255), font=font)
    return tile


def _tile_size(videos) -> tuple[int, int]:
    return max(v.shape[2] for v in videos), max(v.shape[1] for v in videos)


def grid_frames(videos, labels, cols: int | None = None, gap: int = 4) -> np.ndarray:
    """Side-by-side video: one labelled tile per video, letterboxed to a common size; shorter videos hold
    their last frame."""
    videos = [_check(v) for v in videos]
    if len(labels) != len(videos):
        raise ValueError(f"{len(videos)} videos but {len(labels)} labels")
    cols = cols or min(len(videos), 3)
    rows = -(-len(videos) // cols)
    tw, th = _tile_size(videos)
    n = max(len(v) for v in videos)
    out = np.zeros((n, rows * th + (rows - 1) * gap, cols * tw + (cols - 1) * gap, 3), np.uint8)
    for idx, (v, label) in enumerate(zip(videos, labels)):
        r, c = divmod(idx, cols)
        y0, x0 = r * (th + gap), c * (tw + gap)
        oy, ox = (th - v.shape[1]) // 2, (tw - v.shape[2]) // 2
        for t in range(n):
            tile = Image.fromarray(v[min(t, len(v) - 1)])
            canvas = Image.new("RGB", (tw, th))
            canvas.paste(tile, (ox, oy))
            out[t, y0:y0 + th, x0:x0 + tw] = np.asarray(_label(canvas, label))
    return out


def contact_sheet(videos, labels, max_frames: int = 8) -> Image.Image:
    """One row per video, up to `max_frames` evenly spaced frames across, the label on the first."""
    videos = [_check(v) for v in videos]
    tw, th = _tile_size(videos)
    k = min(max_frames, max(len(v) for v in videos))
    sheet = Image.new("RGB", (k * tw, len(videos) * th))
    for r, (v, label) in enumerate(zip(videos, labels)):
        picks = np.linspace(0, len(v) - 1, k).round().astype(int)
        for c, i in enumerate(picks):
            tile = Image.fromarray(v[i])
            if c == 0:
                tile = _label(tile.copy(), label)
            sheet.paste(tile, (c * tw, r * th))
    return sheet
