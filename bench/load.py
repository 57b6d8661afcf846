"""Load benchmark: our single-file loader vs a plain read of the file vs diffusers' from_pretrained.

    python bench/load.py            # full size: writes a 9.56 GB random svd_xt in the real layout (bench/out/)
    python bench/load.py --small    # the tiny model, a few seconds (CI smoke test)

Each load runs in a fresh interpreter; peak memory is anonymous RSS (RssAnon) polled every 5 ms, so the
reclaimable pages of the memory-mapped file do not count. Page cache is dropped for the file before each load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import OUT, drop_page_cache, gb, real_layout, write_random_checkpoint  # noqa: E402

CHILD_OURS = """
import json, sys, time, torch
sys.path.insert(0, {root!r})
from bench.common import PeakAnon, rss_anon
import svd_core
base = rss_anon()
with PeakAnon() as peak:
    t = time.perf_counter()
    pipe = svd_core.load_pipeline({path!r}, device="cpu", dtype=getattr(torch, {dtype!r}))
    dt = time.perf_counter() - t
kept = sum(p.numel() * p.element_size() for m in (pipe.unet, pipe.vae, pipe.image_encoder) for p in m.parameters())
print(json.dumps(dict(seconds=dt, peak=peak.peak, base=base, kept=kept)))
if {save!r}:
    pipe.save_pretrained({save!r})
"""

CHILD_DIFFUSERS = """
import json, sys, time, torch
sys.path.insert(0, {root!r})
from bench.common import PeakAnon, rss_anon
from diffusers import StableVideoDiffusionPipeline
base = rss_anon()
with PeakAnon() as peak:
    t = time.perf_counter()
    pipe = StableVideoDiffusionPipeline.from_pretrained({path!r}, torch_dtype=getattr(torch, {dtype!r}),
                                                        local_files_only=True)
    dt = time.perf_counter() - t
kept = sum(p.numel() * p.element_size() for m in (pipe.unet, pipe.vae, pipe.image_encoder) for p in m.parameters())
print(json.dumps(dict(seconds=dt, peak=peak.peak, base=base, kept=kept)))
"""


def child(code: str, **kw) -> dict:
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    r = subprocess.run([sys.executable, "-c", code.format(root=root, **kw)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def plain_read(path: Path) -> float:
    drop_page_cache(path)
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(64 << 20)
        while f.readinto(buf):
            pass
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny model (CI smoke test)")
    ap.add_argument("--dtype", default="float16", choices=("float16", "float32", "bfloat16"))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--no-diffusers", action="store_true", help="skip the from_pretrained comparison")
    args = ap.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    if args.small:
        from svd_core import make_tiny

        ckpt = make_tiny(args.out / "tiny.safetensors")
    else:
        ckpt = args.out / "svd_xt.safetensors"
        if not ckpt.is_file():
            t = time.perf_counter()
            write_random_checkpoint(ckpt, real_layout("video"))
            print(f"wrote {ckpt} ({gb(ckpt.stat().st_size)}) in {time.perf_counter() - t:.0f} s")
    size = ckpt.stat().st_size
    folder = args.out / ("tiny-diffusers" if args.small else "svd_xt-diffusers")

    read_s = plain_read(ckpt)
    drop_page_cache(ckpt)
    ours = child(CHILD_OURS, path=str(ckpt), dtype=args.dtype, save=None)
    rows = [("plain read of the file", read_s, None, None), ("svd_core.load_pipeline", ours["seconds"],
                                                            ours["peak"], ours["kept"])]
    limit = 1.3 * ours["kept"] + 0.5e9
    if not args.no_diffusers:
        if not (folder / "model_index.json").is_file():
            child(CHILD_OURS, path=str(ckpt), dtype="float32", save=str(folder))  # the same weights, float32
        drop_page_cache(folder)
        theirs = child(CHILD_DIFFUSERS, path=str(folder), dtype=args.dtype)
        rows.append(("diffusers from_pretrained (folder)", theirs["seconds"], theirs["peak"], theirs["kept"]))

    print(f"\ncheckpoint {ckpt.name}: {gb(size)} float32 on disk; target dtype {args.dtype}; page cache dropped "
          f"before each load")
    print(f"{'what':38s} {'seconds':>8s} {'peak RssAnon':>13s} {'weights kept':>13s}")
    for name, s, peak, kept in rows:
        print(f"{name:38s} {s:8.2f} {gb(peak) if peak else '':>13s} {gb(kept) if kept else '':>13s}")
    print(f"\nmemory bound (1.3 x weights kept + 0.5 GB): {gb(limit)}; svd_core peak {gb(ours['peak'])} "
          f"({'within' if ours['peak'] <= limit else 'OVER'}); ratio peak/kept {ours['peak'] / ours['kept']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
