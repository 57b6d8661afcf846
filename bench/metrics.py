"""What measuring a run costs: the metrics on the tiny model against its sampling time, the optical
flow part on frames of the real model's size (25 x 576x1024), and optionally the CLIP likeness part with a
random-weight ViT-H of the real image encoder's shape.

    python bench/metrics.py [--repeat 3] [--vit-h]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def moving_texture(n: int, h: int, w: int, k: int = 3) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.normal(size=(h, w + k * n, 3)), (0, 0), 4.0)
    big = np.clip((big - big.mean()) / big.std() * 50 + 128, 0, 255).astype(np.uint8)
    return np.stack([big[:, k * (n - t): k * (n - t) + w] for t in range(n)])


def tiny(repeat: int) -> None:
    import torch

    from svd_core import Sampler, make_tiny

    with tempfile.TemporaryDirectory() as d:
        ckpt = make_tiny(Path(d) / "tiny.safetensors", seed=1)
        sampler = Sampler(ckpt, device="cpu", dtype=torch.float32)
        image = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "A" / "input_image.png"
        params = sampler.default_params()
        sampler.generate(image, params)  # warm-up
        runs = [sampler.generate(image, params).timings for _ in range(repeat)]
    total = statistics.median(t["total"] for t in runs)
    measure = statistics.median(t["measure"] for t in runs)
    print(f"tiny model, demo defaults ({params.width}x{params.height}, {params.num_frames} frames, "
          f"{params.num_inference_steps} steps), CPU: sampling {total:.3f} s, measuring {measure:.3f} s "
          f"({100 * measure / total:.1f} % of sampling)")


def full_size_flow(repeat: int) -> float:
    from svd_core.metrics import measure_frames

    frames = moving_texture(25, 576, 1024)
    measure_frames(frames[:3], 7.0)  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        m = measure_frames(frames, 7.0, "conditioning")
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    print(f"flow metrics (motion score + flow px/frame + flicker), 25 frames 576x1024: {t:.2f} s median of "
          f"{repeat} (flow at {m['time_base']['flow_size'][0]}x{m['time_base']['flow_size'][1]}; "
          f"measured {m['motion']['flow_px_per_frame']:.2f} px/frame of 3)")
    return t


def vit_h(n_frames: int = 2) -> float:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                           image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu")
    model = CLIPVisionModelWithProjection(cfg).eval()
    x = torch.randn(n_frames, 3, 224, 224)
    with torch.inference_mode():
        model(pixel_values=x[:1])
        t0 = time.perf_counter()
        model(pixel_values=x)
        t = (time.perf_counter() - t0) / n_frames
    print(f"CLIP likeness with a ViT-H image encoder (random weights, float32, CPU): {t:.2f} s per frame -> "
          f"{26 * t:.0f} s for 25 frames + the input image on this CPU")
    return t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--vit-h", action="store_true", help="also time a random ViT-H image encoder (2.5 GB, slow)")
    args = p.parse_args()
    tiny(args.repeat)
    flow = full_size_flow(args.repeat)
    for sampling in (40.0, 51.0):
        print(f"  = {100 * flow / sampling:.1f} % of a {sampling:.0f} s SVD-XT sampling run (diffusers fp16 on an "
              "A100, docs/benchmarks.md anchor)")
    if args.vit_h:
        vit_h()


if __name__ == "__main__":
    main()
