"""The GPU benchmark, sized for a short lease: full-size SVD-XT (fp16 random weights in the real layout, built on
the device: no checkpoint file), 25 frames 576x1024.

    bash scripts/fetch_gpu_wheels.sh        # here, with network: the wheels a bare PyTorch machine lacks -> .whl/
    python bench/gpu.py                     # there (install .whl first; see docs/benchmarks.md)
    python bench/gpu.py --cpu               # the same script on the tiny model on the CPU (CI)

Rows, each appended to OUT/gpu.jsonl as it finishes (every stage synchronised; one untimed warm-up at 2 steps
before each timed configuration):

1. stock: diffusers' StableVideoDiffusionPipeline call over the same modules;
2. R: ours, eager (svd_core.pipeline, fast mode): the reference of every PSNR;
3. cudnn: ours with cuDNN attention first;
4. fused: ours with fused QKV projections;
5. compiled: ours with the UNet and VAE decoder compiled in place (on the fused modules);
6. balanced and low at --offload-steps steps, set up as the Sampler sets them up (svd_core.session's
   apply_memory_mode: pinned offload, low's chunked feed-forward, split guidance and decode chunk), compared
   with R at the same steps;
7. profile: one UNet call and one decode chunk under the profiler, the kernels' time shares.

PSNR of every row's frames against R and against stock (stock keeps fp16 latents between steps, so it differs
from R by more than rounding). On CUDA each row has its allocated, reserved and device-level peaks next to the
pre-flight estimate of its mode (svd_core.memory.estimate, allocated bytes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import psnr  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DevicePeak:
    """The device's own used-memory peak (every allocation on the card, the CUDA context included), polled."""

    def __init__(self, device, every: float = 0.005):
        self.device, self.every, self.peak = device, every, 0

    def __enter__(self):
        self._stop = threading.Event()
        if self.device.type == "cuda":
            self._t = threading.Thread(target=self._poll, daemon=True)
            self._t.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            free, total = torch.cuda.mem_get_info(self.device)
            self.peak = max(self.peak, total - free)
            time.sleep(self.every)

    def __exit__(self, *exc):
        self._stop.set()
        if self.device.type == "cuda":
            self._t.join()


def random_pipeline(device, dtype):
    """Full-size SVD-XT modules from the real layout's configs, random weights filled in on the device."""
    from bench.common import real_layout
    from svd_core.convert import infer_architecture
    from svd_core.loader import (
        StableVideoDiffusionPipeline,
        build_feature_extractor,
        build_scheduler,
        empty_modules,
        match_sgm_groupnorm_eps,
    )

    modules = empty_modules(infer_architecture(dict(real_layout("video")), None))
    gen = torch.Generator(device).manual_seed(0)
    for m in modules.values():
        m.to_empty(device=device)
        with torch.no_grad():
            for name, p in m.named_parameters():
                if p.ndim == 1:
                    p.fill_(0.0 if name.endswith("bias") else 1.0)
                else:
                    fan_in = math.prod(p.shape[1:])
                    p.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=gen)
                    if name.endswith("mix_factor"):
                        p.zero_()
            for name, b in m.named_buffers():
                if "position_ids" in name:
                    b.copy_(torch.arange(b.shape[-1], device=device).expand_as(b))
        m.to(dtype=dtype).eval()
    modules["unet"].register_to_config(num_frames=25)
    match_sgm_groupnorm_eps(modules["unet"])
    pipe = StableVideoDiffusionPipeline(scheduler=build_scheduler(), feature_extractor=build_feature_extractor(),
                                        **modules)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_pipeline(out: Path):
    from svd_core import make_tiny
    from svd_core.loader import load_pipeline

    return load_pipeline(make_tiny(out / "tiny_gpu_bench.safetensors", seed=1), device="cpu", dtype=torch.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="the tiny model on the CPU, 2 steps (CI)")
    ap.add_argument("--steps", type=int, help="timed steps (default 25; --cpu 2)")
    ap.add_argument("--offload-steps", type=int, default=3, help="steps of the balanced and low rows")
    ap.add_argument("--decode-chunk", type=int, default=8)
    ap.add_argument("--compile-backend", help="torch.compile backend (default inductor; --cpu: no compiled row "
                                              "unless given, since inductor takes minutes on a CPU)")
    ap.add_argument("--skip", default="", help="comma-separated rows to leave out (stock, cudnn, fused, compiled, "
                                               "balanced, low, profile)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = ap.parse_args(argv)

    from PIL import Image

    from svd_core import memory, pipeline
    from svd_core.compute import ComputeOptions, attention_context, fuse_qkv
    from svd_core.params import SamplingParams
    from svd_core.session import apply_memory_mode, to_uint8

    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / ("gpu_cpu.jsonl" if args.cpu else "gpu.jsonl")
    log.write_text("")
    skip = set(filter(None, args.skip.split(",")))
    if args.cpu:
        device, dtype = torch.device("cpu"), torch.float32
        pipe = tiny_pipeline(args.out)
        size, frames, steps = (64, 64), 4, args.steps or 2
        backend = args.compile_backend
    else:
        device, dtype = torch.device("cuda"), torch.float16
        torch.backends.cuda.matmul.allow_tf32 = True
        t0 = time.perf_counter()
        pipe = random_pipeline(device, dtype)
        sync(device)
        print(f"built full-size random SVD-XT on {torch.cuda.get_device_name(device)} in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        size, frames, steps = (1024, 576), 25, args.steps or 25
        backend = args.compile_backend or "inductor"
    image = Image.open(ROOT / "tests" / "fixtures" / "A" / "input_image_large.png").convert("RGB").resize(size)
    base = SamplingParams.for_variant("svd_xt", num_frames=frames, width=size[0], height=size[1],
                                      num_inference_steps=steps, decode_chunk_size=args.decode_chunk, seed=42)
    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "dtype": str(dtype), "frames": frames, "size": f"{size[0]}x{size[1]}",
            "steps": steps, "decode_chunk": base.decode_chunk}
    refs: dict[str, np.ndarray] = {}

    def emit(row: dict) -> None:
        row = {**row, "meta": meta}
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k != "meta"}), flush=True)

    def ours(p, options=ComputeOptions(), split=False, chunk=None):
        with attention_context(options, device):
            out = pipeline.run(pipe, image, p, decode_chunk_size=chunk or p.decode_chunk, split_guidance=split,
                               generator=torch.Generator("cpu").manual_seed(p.seed))
        return to_uint8(out.frames), out.timings

    def stock(p):
        marks = {}

        def cb(_pipe, i, t, kw):
            sync(device)
            marks["denoised"] = time.perf_counter()
            return kw
        sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = pipe(image, height=p.height, width=p.width, num_frames=p.num_frames,
                       num_inference_steps=p.num_inference_steps, min_guidance_scale=p.min_guidance_scale,
                       max_guidance_scale=p.max_guidance_scale, fps=p.fps, motion_bucket_id=p.motion_bucket_id,
                       noise_aug_strength=p.noise_aug_strength, decode_chunk_size=p.decode_chunk,
                       generator=torch.Generator("cpu").manual_seed(p.seed), output_type="np",
                       callback_on_step_end=cb)
        sync(device)
        end = time.perf_counter()
        return to_uint8(out.frames[0]), {"denoise_and_encode": marks["denoised"] - t0,
                                         "decode": end - marks["denoised"], "total": end - t0}

    def timed(label, fn, p=base, mode="fast", ref=None, **extra):
        fn(p.replace(num_inference_steps=2))  # warm-up (compiles, for the compiled row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        with DevicePeak(device) as peak:
            f, t = fn(p)
        row = {"row": label, **extra, "timings": {k: round(v, 3) for k, v in t.items()},
               "s_per_step": round((t.get("denoise") or t["denoise_and_encode"]) / p.num_inference_steps, 4)}
        est = memory.estimate(pipe.components, width=p.width, height=p.height, num_frames=p.num_frames,
                              decode_chunk_size=p.decode_chunk, dtype_bytes=dtype.itemsize)[mode]
        row["estimate_gb"] = round(est.peak / 1e9, 2)
        if device.type == "cuda":
            row.update(allocated_gb=round(torch.cuda.max_memory_allocated(device) / 1e9, 2),
                       reserved_gb=round(torch.cuda.max_memory_reserved(device) / 1e9, 2),
                       device_gb=round(peak.peak / 1e9, 2))
        if ref is not None:  # a row at other steps, against R at those steps
            row.update(psnr_vs_R=psnr(f, ref))
        else:
            refs.setdefault(label, f)
            row.update(psnr_vs_R=psnr(f, refs.get("R")) if label != "R" else None,
                       psnr_vs_stock=psnr(f, refs.get("stock")) if label != "stock" else None)
        emit(row)
        return f

    if "stock" not in skip:
        timed("stock", stock)
    timed("R", ours)
    if "cudnn" not in skip:
        timed("cudnn", lambda p: ours(p, ComputeOptions(attention="cudnn")),
              note=None if device.type == "cuda" else "CPU: SDPA's default kernels (cuDNN is CUDA only)")
    if "fused" not in skip:
        fuse_qkv(pipe.unet)
        timed("fused", ours)
    if "compiled" not in skip:
        if backend:
            pipe.unet.compile(backend=backend)
            pipe.vae.decoder.compile(backend=backend)
            t0 = time.perf_counter()
            timed("compiled", ours, backend=backend, fused="fused" not in skip)
            meta["compiled_row_wall_s"] = round(time.perf_counter() - t0, 1)
        else:
            emit({"row": "compiled", "skipped": "no --compile-backend in --cpu mode"})
    for m in (pipe.unet, pipe.vae.decoder):  # the offload rows and the profile run eager (no recompiles)
        m._compiled_call_impl = None
    modes = [m for m in ("balanced", "low") if m not in skip]
    if modes:
        short = base.replace(num_inference_steps=args.offload_steps)
        ref, _ = ours(short)  # R at the offload rows' steps
        pinned = None
        for mode in modes:
            pinned = apply_memory_mode(pipe, mode, device, pinned=pinned)
            chunk = min(base.decode_chunk, memory.LOW_DECODE_CHUNK) if mode == "low" else base.decode_chunk
            timed(mode, lambda p, m=mode, c=chunk: ours(p, split=m == "low", chunk=c), p=short, mode=mode, ref=ref,
                  decode_chunk=chunk, pinned=pinned is not None,
                  note=None if device.type == "cuda" else "CPU: nothing offloaded")
        apply_memory_mode(pipe, "fast", device, pinned=pinned)
    if "profile" not in skip:
        emit({"row": "profile", **profile(pipe, base, device, dtype)})
    print(f"rows: {log}")
    return 0


def profile(pipe, p, device, dtype) -> dict:
    """One guided UNet call and one decode chunk under the profiler: the ten costliest kernels (ops on the CPU)
    and their share of the device time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    unet, vae = pipe.unet, pipe.vae
    f, h, w = p.num_frames, p.height // 8, p.width // 8
    gen = torch.Generator(device).manual_seed(0)
    x = torch.randn(2, f, unet.config.in_channels, h, w, generator=gen, device=device, dtype=dtype)
    emb = torch.randn(2, 1, unet.config.cross_attention_dim, generator=gen, device=device, dtype=dtype)
    ids = torch.randn(2, 3, generator=gen, device=device, dtype=dtype)
    z = torch.randn(p.decode_chunk, 4, h, w, generator=gen, device=device, dtype=dtype)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out = {}
    for name, fn in (("unet_call", lambda: unet(x, torch.full((), 0.5, device=device), encoder_hidden_states=emb,
                                               added_time_ids=ids, return_dict=False)),
                     ("decode_chunk", lambda: vae.decode(z, num_frames=z.shape[0]))):
        with torch.inference_mode():
            fn()  # warm
            sync(device)
            with torch_profile(activities=acts) as prof:
                fn()
                sync(device)
        key = "device_time_total" if device.type == "cuda" else "cpu_time_total"
        events = [e for e in prof.key_averages() if getattr(e, key, 0) > 0]
        if device.type == "cuda":
            events = [e for e in events if not e.key.startswith(("aten::", "cuda", "Memcpy", "Memset"))] or events
        total = sum(getattr(e, key) for e in events) or 1
        top = sorted(events, key=lambda e: -getattr(e, key))[:10]
        out[name] = {"total_ms": round(total / 1e3, 2),
                     "top": [{"name": e.key[:90], "share": round(getattr(e, key) / total, 3)} for e in top]}
    return out


if __name__ == "__main__":
    sys.exit(main())
