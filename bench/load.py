"""Load benchmark: our single-file loader vs the bare read+convert loop vs diffusers' from_pretrained (fp16 variant).

    python bench/load.py            # full size: writes a 9.56 GB random svd_xt in the real layout (bench/out/)
    python bench/load.py --small    # the tiny model, a few seconds (CI smoke test)

Each load runs in a fresh interpreter (library imports not timed); peak memory is anonymous RSS (RssAnon) polled
every 5 ms, so the reclaimable pages of the memory-mapped file do not count. Two cache states: cold (the files'
pages dropped from the page cache before each load) and warm (the files read once just before). Rows:
- plain read of the file: the bytes only, the disk's (or page cache's) speed;
- bare loop: `safe_open` -> `get_tensor` -> `.to(dtype)` of exactly the tensors the loader reads, in file order,
  all kept: the floor for a loader that builds nothing;
- svd_core.load_pipeline: the whole pipeline from the single file;
- diffusers from_pretrained: the same weights saved as a diffusers folder with its fp16 variant, loaded with
  `variant="fp16"` (half the bytes of the float32 single file).
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
from svd_core.loader import load_pipeline  # imports before the clock starts
base = rss_anon()
with PeakAnon() as peak:
    t = time.perf_counter()
    pipe = load_pipeline({path!r}, device="cpu", dtype=getattr(torch, {dtype!r}))
    dt = time.perf_counter() - t
kept = sum(p.numel() * p.element_size() for m in (pipe.unet, pipe.vae, pipe.image_encoder) for p in m.parameters())
print(json.dumps(dict(seconds=dt, peak=peak.peak, base=base, kept=kept)))
if {save!r}:
    pipe.save_pretrained({save!r}, variant="fp16")  # diffusers' fp16 variant files only: what its row loads
"""

CHILD_BARE = """
import json, sys, time, torch
sys.path.insert(0, {root!r})
from bench.common import PeakAnon, rss_anon
from safetensors import safe_open
from svd_core.checkpoints import read_safetensors_header
from svd_core.convert import is_unused
header = read_safetensors_header({path!r})
keys = sorted((k for k in header if k != "__metadata__" and not is_unused(k)),
              key=lambda k: header[k]["data_offsets"][0])
dtype = getattr(torch, {dtype!r})
base = rss_anon()
keep = []
with PeakAnon() as peak:
    t = time.perf_counter()
    with safe_open({path!r}, framework="pt", device="cpu") as f:
        for k in keys:
            keep.append(f.get_tensor(k).to(dtype))
    dt = time.perf_counter() - t
kept = sum(x.numel() * x.element_size() for x in keep)
print(json.dumps(dict(seconds=dt, peak=peak.peak, base=base, kept=kept)))
"""

CHILD_DIFFUSERS = """
import json, sys, time, torch
sys.path.insert(0, {root!r})
from bench.common import PeakAnon, rss_anon
import svd_core.loader  # imports diffusers' pipeline quietly
from diffusers import StableVideoDiffusionPipeline
base = rss_anon()
with PeakAnon() as peak:
    t = time.perf_counter()
    pipe = StableVideoDiffusionPipeline.from_pretrained({path!r}, torch_dtype=getattr(torch, {dtype!r}),
                                                        variant="fp16", local_files_only=True)
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
    """Read every byte of a file (or a folder's files) once; seconds."""
    t = time.perf_counter()
    for p in [path] if path.is_file() else sorted(x for x in path.rglob("*") if x.is_file()):
        with open(p, "rb", buffering=0) as f:
            buf = bytearray(64 << 20)
            while f.readinto(buf):
                pass
    return time.perf_counter() - t


def measure(ckpt: Path, folder: Path, dtype: str, cache: str, diffusers: bool, repeat: int) -> list[tuple]:
    """Rows (what, seconds, peak, kept) for one cache state; warm rows are the best of `repeat`."""
    def prepare(*paths):
        for p in paths:
            if cache == "cold":
                drop_page_cache(p)
            else:
                plain_read(p)

    def best(code, path):
        runs = []
        for _ in range(repeat if cache == "warm" else 1):
            prepare(path)
            runs.append(child(code, path=str(path), dtype=dtype, save=None))
        return min(runs, key=lambda r: r["seconds"])

    prepare(ckpt)
    rows = [("plain read of the file", plain_read(ckpt), None, None)]
    bare = best(CHILD_BARE, ckpt)
    rows.append(("bare loop (read + convert, kept)", bare["seconds"], bare["peak"], bare["kept"]))
    ours = best(CHILD_OURS, ckpt)
    rows.append(("svd_core.load_pipeline", ours["seconds"], ours["peak"], ours["kept"]))
    if diffusers:
        theirs = best(CHILD_DIFFUSERS, folder)
        rows.append(("diffusers from_pretrained (fp16 variant)", theirs["seconds"], theirs["peak"], theirs["kept"]))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny model (CI smoke test)")
    ap.add_argument("--dtype", default="float16", choices=("float16", "float32", "bfloat16"))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--cache", default=None, help="cache states to measure: warm, cold or both (default both; "
                                                   "warm with --small)")
    ap.add_argument("--repeat", type=int, default=None, help="warm loads per row, the best is shown (default 2; "
                                                             "1 with --small)")
    ap.add_argument("--no-diffusers", action="store_true", help="skip the from_pretrained comparison")
    args = ap.parse_args(argv)
    args.repeat = args.repeat or (1 if args.small else 2)
    args.cache = args.cache or ("warm" if args.small else "warm,cold")

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
    if not args.no_diffusers and not (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file():
        child(CHILD_OURS, path=str(ckpt), dtype="float16", save=str(folder))  # the same weights, fp16 variant

    print(f"\ncheckpoint {ckpt.name}: {gb(size)} float32 on disk; target dtype {args.dtype}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} on {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}")
    for cache in [c.strip() for c in args.cache.split(",") if c.strip()]:
        rows = measure(ckpt, folder, args.dtype, cache, not args.no_diffusers, args.repeat)
        bare, ours = rows[1], rows[2]
        note = f" (best of {args.repeat})" if cache == "warm" else ""
        print(f"\n{cache} page cache{note}")
        print(f"{'what':42s} {'seconds':>8s} {'peak RssAnon':>13s} {'weights kept':>13s}")
        for name, s, peak, kept in rows:
            print(f"{name:42s} {s:8.2f} {gb(peak) if peak else '':>13s} {gb(kept) if kept else '':>13s}")
        print(f"svd_core / bare loop: {ours[1] / bare[1]:.2f}x time; svd_core peak / weights kept: "
              f"{ours[2] / ours[3]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
