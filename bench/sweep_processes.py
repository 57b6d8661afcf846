"""Wall time of one sweep on 1 process against N processes under `accelerate launch`.

Runs the same CLI sweep three ways, each timed as a whole command (interpreter start, model load, sampling,
saving: what a user waits for): one process with torch's default threads; one process with 1 thread; N processes
(`accelerate launch --multi_gpu --num_processes N`: on a machine without a GPU, N CPU processes over gloo, 1
thread each when N equals the cores). Checks the sweeps made the same metrics.csv. Default: the tiny demo model on
the CPU; `--checkpoint` for a real one (then on GPUs, one per process).

    python bench/sweep_processes.py [--processes 2] [--cells 4] [--size 128] [--frames 6] [--steps 4]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "sweep_processes"


def run(cmd, env) -> tuple[float, Path]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return wall, Path(r.stdout.split()[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--cells", type=int, default=4, help="seeds of one value pair: cells = 2 x cells/2")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--checkpoint", help="default: the tiny demo model (written to bench/out/)")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    ckpt = a.checkpoint
    if ckpt is None:
        sys.path.insert(0, str(ROOT))
        from svd_core import make_tiny

        ckpt = str(make_tiny(OUT / "tiny.safetensors", seed=1))
    image = str(ROOT / "tests" / "fixtures" / "A" / "input_image.png")
    sweep = ["sweep", image, "-c", ckpt, "--width", str(a.size), "--height", str(a.size), "--num-frames",
             str(a.frames), "--num-inference-steps", str(a.steps), "--vary", "motion_bucket_id=0,255",
             "--seeds", str(max(1, a.cells // 2))]
    env = {**os.environ, "HF_HOME": str(OUT / "hf"), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rows = []
    for name, cmd, extra in [
        ("1 process, default threads", [sys.executable, "-m", "svd_core"], {}),
        ("1 process, 1 thread", [sys.executable, "-m", "svd_core"], {"OMP_NUM_THREADS": "1"}),
        (f"{a.processes} processes (accelerate launch)",
         [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(a.processes),
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
          str(port), "-m", "svd_core"], {}),
    ]:
        wall, path = run([*cmd, *sweep, "--out", str(OUT / "runs")], {**env, **extra})
        rows.append((name, wall, (path / "metrics.csv").read_bytes()))
        print(f"{name:40s} {wall:7.1f} s  ({path.name})", flush=True)
    print(f"cells: {2 * max(1, a.cells // 2)}, {a.frames} frames {a.size}x{a.size}, {a.steps} steps; "
          f"cpu cores: {os.cpu_count()}")
    print(f"metrics.csv: {a.processes} processes = 1 process at 1 thread: {rows[2][2] == rows[1][2]}; "
          f"= 1 process at default threads: {rows[2][2] == rows[0][2]} (on the CPU the thread count changes the "
          "rounding, so the frames)")
    print(f"speed-up of {a.processes} processes: {rows[0][1] / rows[2][1]:.2f}x over 1 process at default threads, "
          f"{rows[1][1] / rows[2][1]:.2f}x over 1 process at 1 thread")


if __name__ == "__main__":
    main()
