"""Sampling benchmark: a full-size random-weight SVD-XT (real layout, loaded through svd_core) against stock
diffusers with the same modules, in each memory mode (torch.compile and the
attention settings: bench/gpu.py).

    python bench/sample.py                 # full size: 25 frames, 576x1024, 25 steps, decode chunks 8 and 25 (GPU)
    python bench/sample.py --small         # the same code on the tiny model on the CPU, about a minute (CI smoke)

A second table covers Stability's sampling panel: linear vs identity guidance (identity runs the UNet on half the
rows: time per step) and every other sampler (model calls per run: Heun and DPM++ 2S call the UNet about twice
per step), on the fast-mode Sampler.

Speed and memory do not depend on the weights' values, so a random model costs what the real one does. FLOPs
come from torch.utils.flop_counter on meta tensors (nothing allocated), once per shape; achieved TFLOP/s is that
count over the measured time. Every configuration uses the same seed and is compared to the baseline by PSNR.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import OUT, psnr, real_layout, write_random_checkpoint  # noqa: E402

# Dense fp16/bf16 tensor-core peaks (TFLOP/s), for the % of peak column. Override with --peak-tflops.
PEAKS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
         "A10G": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0, "T4": 65.0}


def device_peak(name: str) -> float | None:
    for key in sorted(PEAKS, key=len, reverse=True):
        if key in name:
            return PEAKS[key]
    return None


def count_flops(arch, frames: int, height: int, width: int, guidance: bool) -> dict[str, float]:
    """FLOPs of one denoising step (UNet on the CFG batch) and of decoding all frames, on meta tensors."""
    from torch.utils.flop_counter import FlopCounterMode

    from svd_core.loader import empty_modules

    m = empty_modules(arch)
    f = arch.vae_scale_factor
    h, w, b = height // f, width // f, 2 if guidance else 1
    meta = dict(device="meta", dtype=torch.float16)
    unet, vae = m["unet"].half(), m["vae"].half()
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            unet(torch.empty(b, frames, arch.unet_in_channels, h, w, **meta), torch.empty(b, **meta),
                 encoder_hidden_states=torch.empty(b, 1, arch.unet_context_dim, **meta),
                 added_time_ids=torch.empty(b, 3, **meta))
        step = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            z = torch.empty(frames, arch.vae_latent_channels, h, w, **meta)
            vae.decode(z, num_frames=frames) if arch.temporal_decoder else vae.decode(z)
        decode = fc.get_total_flops()
    return {"step": float(step), "decode": float(decode)}


class StageClock:
    """Wall time of one stock diffusers pipeline call by stage (the Sampler times its own script): image
    encode (start -> first UNet call), denoise (-> the last step's end, marked by `step_end()` from the step
    callback), decode (-> return). Synchronises CUDA at each mark, so GPU work is counted where it happens."""

    def __init__(self, pipe, device: torch.device):
        self.pipe, self.device, self.marks = pipe, device, {}

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _first_unet_call(self, module, args) -> None:  # a pre-hook must return None: a value replaces the inputs
        self.marks.setdefault("denoise_start", self._now())

    def step_end(self) -> None:
        self.marks["denoise_end"] = self._now()

    def __enter__(self):
        self._hook = self.pipe.unet.register_forward_pre_hook(self._first_unet_call)
        self.marks["start"] = self._now()
        return self

    def __exit__(self, *exc):
        self._hook.remove()
        self.marks["end"] = self._now()

    def timings(self) -> dict[str, float]:
        m = self.marks
        d0, d1 = m.get("denoise_start", m["start"]), m.get("denoise_end", m["end"])
        return {"image_encode": d0 - m["start"], "denoise": d1 - d0, "decode": m["end"] - d1,
                "total": m["end"] - m["start"]}


def run_baseline(pipe, image, p, device):
    """Stock diffusers pipeline call, timed by StageClock with the stages the Sampler reports."""
    from svd_core.session import to_uint8

    clock = StageClock(pipe, device)

    def cb(pipe_, i, t, kw):
        clock.step_end()
        return kw
    with clock, torch.inference_mode():
        out = pipe(image, height=p.height, width=p.width, num_frames=p.num_frames,
                   num_inference_steps=p.num_inference_steps, min_guidance_scale=p.min_guidance_scale,
                   max_guidance_scale=p.max_guidance_scale, fps=p.fps, motion_bucket_id=p.motion_bucket_id,
                   noise_aug_strength=p.noise_aug_strength, decode_chunk_size=p.decode_chunk_size,
                   generator=torch.Generator("cpu").manual_seed(p.seed), output_type="np", callback_on_step_end=cb)
    return to_uint8(out.frames[0]), clock.timings()


def _sig(x: float, digits: int = 3) -> float:
    """Round to significant digits (a tiny model on a slow CPU is not 0 TFLOP/s)."""
    return float(f"{x:.{digits}g}")


def _gen(sampler, img, params):
    """Sampler.generate, timed from outside too: `total` is the wall time of the whole call (image
    preparation, queue, pipeline, frame conversion), so it shows the overhead over a bare pipeline call."""
    t0 = time.perf_counter()
    r = sampler.generate(img, params)
    if sampler.device.type == "cuda":
        torch.cuda.synchronize()
    return r.frames, {**r.timings, "total": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny model on the CPU (CI smoke test)")
    ap.add_argument("--modes", default="fast,balanced,low", help="memory modes to run (CUDA only)")
    ap.add_argument("--chunks", default="8,25", help="decode_chunk_size values")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--frames", type=int, help="full size: override the 25 frames")
    ap.add_argument("--size", help="full size: override 1024x576, as WIDTHxHEIGHT")
    ap.add_argument("--repeat", type=int, help="runs per configuration, the median kept (default 1, --small 5)")
    ap.add_argument("--peak-tflops", type=float)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    from svd_core import Sampler, SamplingParams, make_tiny
    from svd_core.checkpoints import file_sha256, read_safetensors_header, shapes_of
    from svd_core.convert import infer_architecture
    from svd_core.loader import load_pipeline
    from svd_core.params import SAMPLERS

    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    if args.small:
        ckpt = make_tiny(args.out / "tiny.safetensors")
        frames, height, width, steps = 6, 128, 128, args.steps or 4
        chunks = [3, 6]
    else:
        ckpt = args.out / "svd_xt.safetensors"
        if not ckpt.is_file():
            print("writing a full-size random svd_xt.safetensors (9.56 GB)…", flush=True)
            write_random_checkpoint(ckpt, real_layout("video"))
        frames, steps = args.frames or 25, args.steps or 25
        width, height = (int(v) for v in (args.size or "1024x576").lower().split("x"))
        chunks = [int(c) for c in args.chunks.split(",")]
    header = read_safetensors_header(ckpt)
    arch = infer_architecture(shapes_of(header), header.get("__metadata__"))
    base = SamplingParams.for_variant("svd_xt", num_frames=frames, width=width, height=height,
                                      num_inference_steps=steps, decode_chunk_size=chunks[0], seed=42)
    flops = count_flops(arch, frames, height, width, guidance=base.max_guidance_scale > 1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    peak_tflops = args.peak_tflops or (device_peak(name) if device.type == "cuda" else None)
    image = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "A" / "input_image_large.png"

    repeat = args.repeat or (5 if args.small else 1)
    rows = []

    def median_run(fn):
        """Run `fn` `repeat` times; keep the run of median total time. fn() -> (frames, timings, peak_mem)."""
        runs = []
        for _ in range(repeat):
            peak_mem_reset()
            f, t = fn()
            runs.append((t["total"], f, t, peak_mem()))
        runs.sort(key=lambda r: r[0])
        return runs[len(runs) // 2][1:]

    def record(label, mode, chunk, t, frames_, mem, ref):
        denoise_flops = flops["step"] * steps
        decode_flops = flops["decode"]  # the same work whatever the chunking
        row = {
            "config": label, "mode": mode, "decode_chunk": chunk, **{k: round(v, 3) for k, v in t.items()},
            "steps_per_s": round(steps / t["denoise"], 3),
            "denoise_tflops": _sig(denoise_flops / t["denoise"] / 1e12),
            "decode_tflops": _sig(decode_flops / t["decode"] / 1e12),
            "peak_mem_gb": round(mem / 1e9, 2) if mem else None,
            "psnr_vs_baseline": psnr(frames_, ref),
        }
        if peak_tflops:
            row["denoise_pct_peak"] = round(100 * row["denoise_tflops"] / peak_tflops, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)

    def peak_mem_reset():
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_mem():
        return torch.cuda.max_memory_allocated() if device.type == "cuda" else None

    # 1. baseline: stock diffusers pipeline over the same modules, all on the device
    pipe = load_pipeline(ckpt, device=device)
    from PIL import Image

    img = Image.open(image).convert("RGB").resize((width, height))
    run_baseline(pipe, img, base.replace(num_inference_steps=2), device)  # warm-up
    refs = {}
    for chunk in chunks:
        p = base.replace(decode_chunk_size=chunk)
        f, t, mem = median_run(lambda p=p, pipe=pipe: run_baseline(pipe, img, p, device))
        refs[chunk] = f
        record("diffusers (stock call)", "fast", chunk, t, f, mem, None)
    del pipe
    peak_mem_reset()

    # 2. our sampler in each memory mode
    modes = args.modes.split(",") if device.type == "cuda" else ["fast"]
    for mode in modes:
        sampler = Sampler(ckpt, device=device, memory_mode=mode)
        file_sha256(ckpt)  # wait for the background hash (cached afterwards): it would compete with the timings
        sampler.generate(img, base.replace(num_inference_steps=2))  # warm-up
        for chunk in chunks:
            f, t, mem = median_run(lambda c=chunk, s=sampler: _gen(s, img, base.replace(decode_chunk_size=c)))
            record("svd_core Sampler", sampler.memory_mode, chunk, t, f, mem, refs[chunk])
        del sampler
        peak_mem_reset()

    # 3. Stability's sampling panel (fast mode, first decode chunk): the identity guider's half batch, and the
    #    model calls of each sampler
    panel = []
    sampler = Sampler(ckpt, device=device, memory_mode="fast")
    sampler.generate(img, base.replace(num_inference_steps=2))  # warm-up
    unet_rows = []
    hook = sampler.pipe.unet.register_forward_pre_hook(lambda m, a: unet_rows.append(a[0].shape[0] * a[0].shape[1]))
    variants = [("guider", "linear"), ("guider", "identity")] + [("sampler", s) for s in SAMPLERS if s != "euler"]
    for knob, value in variants:
        p = base.replace(decode_chunk_size=chunks[0], **{knob: value})
        runs = []
        for _ in range(repeat):
            unet_rows.clear()
            r = sampler.generate(img, p)
            runs.append((r.timings["total"], r, unet_rows[0]))
        runs.sort(key=lambda x: x[0])
        _, r, rows_per_call = runs[len(runs) // 2]
        row = {"config": f"{knob}={value}", "sampler": p.sampler, "guider": p.guider, "steps": steps,
               "model_calls": r.model_calls, "unet_rows_per_call": rows_per_call,
               "denoise": round(r.timings["denoise"], 3), "s_per_step": round(r.timings["denoise"] / steps, 4),
               "s_per_model_call": round(r.timings["denoise"] / r.model_calls, 4)}
        panel.append(row)
        print(json.dumps(row), flush=True)
    hook.remove()
    del sampler
    peak_mem_reset()

    meta = {"repeat": repeat, "device": name, "torch": torch.__version__,
            "dtype": "float16" if device.type == "cuda" else "float32",
            "frames": frames, "size": f"{width}x{height}", "steps": steps, "flops_per_step_tflop":
            round(flops["step"] / 1e12, 2), "flops_decode_tflop": round(flops["decode"] / 1e12, 2),
            "peak_tflops": peak_tflops, "command": "python bench/sample.py " + " ".join(argv or sys.argv[1:])}
    (args.out / ("sample_small.json" if args.small else "sample.json")).write_text(
        json.dumps({"meta": meta, "rows": rows, "panel": panel}, indent=2))
    print()
    print(f"{name} · {meta['dtype']} · {frames} frames {width}x{height} · {steps} steps · "
          f"{meta['flops_per_step_tflop']} TFLOP/step (CFG batch) · decode {meta['flops_decode_tflop']} TFLOP")
    cols = ["config", "mode", "decode_chunk", "image_encode", "denoise", "decode", "total", "steps_per_s",
            "denoise_tflops", "decode_tflops", "peak_mem_gb", "psnr_vs_baseline"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c)) for c in cols) + " |")
    print()
    cols = ["config", "steps", "model_calls", "unet_rows_per_call", "denoise", "s_per_step", "s_per_model_call"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in panel:
        print("| " + " | ".join(str(r.get(c)) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
