"""Smoke tests of the benchmark scripts in their --small mode (no timing asserts: they print figures)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args, out):
    r = subprocess.run([sys.executable, *args, "--small", "--out", str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.mark.slow
def test_load_bench_small(tmp_path):
    out = run("bench/load.py", out=tmp_path)
    assert "svd_core.load_pipeline" in out and "diffusers from_pretrained" in out and "peak RssAnon" in out


@pytest.mark.slow
def test_sample_bench_small(tmp_path):
    out = run("bench/sample.py", "--repeat", "1", out=tmp_path)
    assert "| svd_core Sampler | fast |" in out
    data = json.loads((tmp_path / "sample_small.json").read_text())
    rows = data["rows"]
    assert {r["config"] for r in rows} == {"diffusers (stock call)", "svd_core Sampler"}
    assert all(r["steps_per_s"] > 0 and r["denoise_tflops"] > 0 for r in rows)
    # same seed, same modules: our sampler (sgm's float32 sampling loop) reproduces the stock pipeline up to the
    # uint8 rounding of a few pixels on the CPU
    assert all(r["psnr_vs_baseline"] > 60 for r in rows if r["config"] == "svd_core Sampler")
    panel = {r["config"]: r for r in data["panel"]}
    assert panel["guider=identity"]["unet_rows_per_call"] * 2 == panel["guider=linear"]["unet_rows_per_call"]
    steps = panel["guider=linear"]["steps"]
    assert panel["guider=linear"]["model_calls"] == panel["sampler=dpmpp_2m"]["model_calls"] == steps
    assert panel["sampler=heun"]["model_calls"] == 2 * steps - 1
    assert data["meta"]["flops_per_step_tflop"] > 0


@pytest.mark.slow
def test_gpu_bench_cpu_mode(tmp_path):
    r = subprocess.run([sys.executable, "bench/gpu.py", "--cpu", "--out", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["row"]: row for row in map(json.loads, (tmp_path / "gpu_cpu.jsonl").read_text().splitlines())}
    assert set(rows) == {"stock", "R", "cudnn", "fused", "compiled", "balanced", "low", "profile"}
    # the offload rows through the Sampler's memory modes, against R at their steps: on the CPU nothing is
    # offloaded, so balanced is R; low decodes 2 frames at a time
    assert rows["balanced"]["psnr_vs_R"] == float("inf") and rows["low"]["decode_chunk"] == 2
    assert 10 < rows["low"]["psnr_vs_R"] < float("inf")
    assert all(rows[k]["estimate_gb"] > 0 for k in ("R", "balanced", "low"))
    # same modules, same seed: ours reproduces itself with fused projections, and stock up to uint8 rounding
    assert rows["fused"]["psnr_vs_R"] > 60 and rows["R"]["psnr_vs_stock"] > 60
    assert all(rows[k]["timings"]["total"] > 0 for k in ("stock", "R", "cudnn", "fused"))
    assert rows["profile"]["unet_call"]["top"] and rows["profile"]["decode_chunk"]["top"]
