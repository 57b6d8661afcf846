"""Measure a video: motion (the SVD paper's optical-flow score and the plain flow in pixels per frame), flicker
(flow-compensated frame difference) and likeness (CLIP image-embedding similarity to the input image).

Pure functions of frames (uint8 (F, H, W, 3)) and a frame rate, except likeness, which needs the pipeline's own
CLIP image encoder. Optical flow is OpenCV's Farneback; see docs/metrics.md for what each number means and what
the paper does not publish.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .video import read_video

# OpenCV's own example values (samples/python/opt_flow.py); the paper does not publish its Farneback settings.
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
SCORE_FPS = 2.0  # the paper takes frames at 2 fps ...
SCORE_SHORT_SIDE = 16  # ... and resizes flow maps to a short side of 16 px before averaging magnitudes
FLOW_SHORT_SIDE = 288  # flows are computed on frames at most this short side (half of 576: a quarter of the
# pixels at 576x1024); vectors are scaled back, so every figure is in pixels of the video's own resolution
TIME_BASES = ("conditioning", "file")


# ---------------------------------------------------------------------------------------------- optical flow

def _work_scale(height: int, width: int) -> float:
    return min(1.0, FLOW_SHORT_SIDE / min(height, width))


def _prepare(frame: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(gray uint8, colour float32) at the working resolution."""
    if scale < 1.0:
        h, w = frame.shape[:2]
        frame = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), frame.astype(np.float32)


def _flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow from gray frame a to gray frame b, (H, W, 2) in working-resolution pixels."""
    return cv2.calcOpticalFlowFarneback(a, b, None, **FARNEBACK)


def _warp_back(frame: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame t+1 sampled at x + flow(x): what frame t looks like if the flow explains the change. Returns the
    warped frame and the mask of pixels whose source lies inside the frame."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + flow[..., 0], gy + flow[..., 1]
    warped = cv2.remap(frame, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return warped, inside


def score_indices(n_frames: int, fps: float) -> list[int]:
    """Frames taken at 2 fps: the frame nearest each multiple of 0.5 s, within the clip."""
    step = fps / SCORE_FPS
    idx = []
    for j in range(n_frames * 2 + 2):
        i = int(math.floor(j * step + 0.5))
        if i > n_frames - 1:
            break
        if not idx or i != idx[-1]:
            idx.append(i)
    return idx


def _score_flow_magnitude(flow: np.ndarray, scale: float) -> float:
    """The paper's reduction: resize the flow map to a short side of 16 px, average the magnitudes."""
    h, w = flow.shape[:2]
    k = SCORE_SHORT_SIDE / min(h, w)
    small = cv2.resize(flow, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    return float(np.hypot(small[..., 0], small[..., 1]).mean()) / scale


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def measure_frames(frames, fps: float, time_base: str = "file", likeness: list[float] | None = None) -> dict:
    """Motion and flicker of `frames` (uint8 (F, H, W, 3)) whose time base is `fps` frames per second.

    `time_base` says where `fps` comes from: "conditioning" (our outputs: the rate the model was told) or "file"
    (a file's own frame rate). `likeness`: per-frame values from `Likeness`, added when given."""
    a = np.asarray(frames)
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8 or len(a) < 2:
        raise ValueError(f"frames must be a uint8 array (F, H, W, 3) with at least 2 frames, got {a.dtype} {a.shape}")
    if time_base not in TIME_BASES:
        raise ValueError(f"unknown time base {time_base!r}; valid: {', '.join(TIME_BASES)}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    n, h, w, _ = a.shape
    scale = _work_scale(h, w)
    prepared = [_prepare(f, scale) for f in a]

    per_frame, flicker = [], []
    for t in range(n - 1):
        flow = _flow(prepared[t][0], prepared[t + 1][0])
        per_frame.append(float(np.hypot(flow[..., 0], flow[..., 1]).mean()) / scale)
        warped, inside = _warp_back(prepared[t + 1][1], flow)
        diff = np.abs(warped - prepared[t][1]).mean(axis=-1)
        flicker.append(float(diff[inside].mean()) if inside.any() else float(diff.mean()))

    idx = score_indices(n, fps)
    pairs = list(zip(idx, idx[1:]))
    score = None
    if pairs:
        score = float(np.mean([_score_flow_magnitude(_flow(prepared[i][0], prepared[j][0]), scale)
                               for i, j in pairs]))
    out = {
        "frames": int(n), "fps": float(fps), "width": int(w), "height": int(h),
        "time_base": {"kind": time_base, "fps": float(fps), "score_frames": idx,
                      "flow_size": [prepared[0][0].shape[1], prepared[0][0].shape[0]]},
        "motion": {"score": _r(score), "flow_px_per_frame": _r(np.mean(per_frame)),
                   "per_frame": [_r(x) for x in per_frame]},
        "flicker": {"mean": _r(np.mean(flicker)), "per_frame": [_r(x) for x in flicker]},
    }
    if score is None:
        out["motion"]["score_note"] = (f"too short for the 2 fps score: {n} frames at {fps:g} fps last "
                                       f"{(n - 1) / fps:.2f} s between first and last frame; it needs 0.5 s")
    if likeness is not None:
        out["likeness"] = {"mean": _r(np.mean(likeness)), "per_frame": [_r(x) for x in likeness]}
    return out


def scalar_metrics(metrics: dict) -> dict[str, float | None]:
    """The one-number metrics of a `measure_frames` dict, flattened: {"motion.score": ..., ...}."""
    out = {}
    for group, key in (("motion", "score"), ("motion", "flow_px_per_frame"), ("flicker", "mean"),
                       ("likeness", "mean")):
        if group in metrics:
            out[f"{group}.{key}"] = metrics[group].get(key)
    return out


def metrics_line(metrics: dict) -> str:
    """One line for the CLI: 'motion score 3.2 (2 fps, conditioning time base) · flow 1.1 px/frame · ...'."""
    if "error" in metrics:
        return f"metrics: not measured ({metrics['error']})"
    m, tb = metrics["motion"], metrics["time_base"]
    score = "n/a (clip under 0.5 s)" if m["score"] is None else f"{m['score']:.3g}"
    parts = [f"motion score {score} (paper units, {tb['kind']} time base {tb['fps']:g} fps)",
             f"flow {m['flow_px_per_frame']:.3g} px/frame", f"flicker {metrics['flicker']['mean']:.3g}"]
    if "likeness" in metrics:
        parts.append(f"likeness {metrics['likeness']['mean']:.3f}")
    return "metrics: " + " · ".join(parts)


# -------------------------------------------------------------------------------------------------- likeness

class Likeness:
    """Per-frame cosine similarity of CLIP image embeddings to the input image's, with the pipeline's own image
    encoder and preprocessing (diffusers' `_encode_image`: antialiased resize to 224, CLIP normalisation)."""

    def __init__(self, pipe):
        self.pipe = pipe

    def embed(self, frames: np.ndarray):
        import torch
        from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
            _resize_with_antialiasing,
        )

        device = self.pipe._execution_device
        # the uint8 frames go to the device once; the antialiased resize to 224 runs there, a chunk at a time
        x = torch.from_numpy(np.array(frames, dtype=np.uint8)).to(device)
        out = []
        with torch.inference_mode():
            for chunk in x.split(8):  # bounded memory on the real model's ViT-H
                chunk = chunk.permute(0, 3, 1, 2).float() / 255.0
                c = (_resize_with_antialiasing(chunk * 2.0 - 1.0, (224, 224)) + 1.0) / 2.0
                e = self.pipe._encode_image(c, device, 1, False)[:, 0]
                out.append(torch.nn.functional.normalize(e.float(), dim=-1).cpu())
        return torch.cat(out)

    def __call__(self, frames, image) -> list[float]:
        """`image`: the conditioning image as sampled (PIL or uint8 (H, W, 3))."""
        ref = self.embed(np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)[None])
        return (self.embed(np.asarray(frames)) @ ref[0]).tolist()


def measure_file(source, likeness: Likeness | None = None, image=None) -> dict:
    """Metrics of a video file on its own frame rate (likeness when an encoder and the input image are given)."""
    frames, fps = read_video(source)
    values = likeness(frames, image) if likeness is not None and image is not None else None
    return measure_frames(frames, fps, "file", values)
