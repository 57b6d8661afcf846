"""Sweeps over several processes with accelerate (svd_core.distributed): a real 2-process launch on the CPU
(gloo) against the one-process sweep, cell by cell; a failing cell; a dying process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from svd_core import SamplingParams, grid_cells
from svd_core.distributed import assign, cell_cost
from svd_core.runs import list_runs
from svd_core.video import read_video

ROOT = Path(__file__).resolve().parent.parent
# 4 cells: two values on two seeds (23, 24); tiny sizes so a launch takes seconds
SWEEP = ["--width", "64", "--height", "64", "--num-frames", "3", "--num-inference-steps", "2",
         "--vary", "motion_bucket_id=0,255", "--seeds", "2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path, **more) -> dict:
    # HF_HOME in tmp: no user `accelerate config` is read (its default file lives under HF_HOME/accelerate)
    return {**os.environ, "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", **more}


def _launch(tmp_path, target: list[str], *args, processes: int = 2, **env):
    """`accelerate launch` with every flag given (no config file): torchrun underneath, one process per device;
    with no GPU each process takes the CPU and the processes talk over gloo."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), *target, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(tmp_path, **env), timeout=300)


def _one(tmp_path, target: list[str], *args, **env):
    return subprocess.run([sys.executable, *target, *args], capture_output=True, text=True, cwd=ROOT,
                          env=_env(tmp_path, **env), timeout=300)


def _cells(sweep: Path) -> list[dict]:
    return json.loads((sweep / "run.json").read_text())["cells"]


def test_cells_are_shared_by_cost():
    base = SamplingParams(num_frames=4, width=64, height=64)
    cells = grid_cells(base, {"num_inference_steps": [9, 3, 3, 3]})
    assert assign(cells, 2) == [[0], [1, 2, 3]]  # 9 steps ~ the three 3-step cells together
    assert assign(cells, 1) == [[0, 1, 2, 3]] and assign(cells[:2], 3) == [[0], [1], []]
    heun = grid_cells(base, {"sampler": ["heun", "euler"]}, seeds=[1, 2])  # heun: two model calls a step
    assert cell_cost(heun[0][1]) > 1.9 * cell_cost(heun[2][1])
    assert cell_cost(base.replace(guider="identity")) == cell_cost(base) / 2  # no guidance: half the UNet batch
    plan = assign(grid_cells(base, {"num_inference_steps": [9, 3, 3, 3]}, seeds=[1, 2]), 3)
    assert sorted(i for p in plan for i in p) == list(range(8)) and all(plan)


@pytest.mark.slow
def test_two_processes_make_the_one_process_sweep(tiny_checkpoint, input_png, tmp_path):
    args = [str(input_png), "-c", str(tiny_checkpoint), *SWEEP]
    one = _one(tmp_path, ["-m", "svd_core", "sweep"], *args, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = _launch(tmp_path, ["-m", "svd_core", "sweep"], *args, "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr
    sweeps = [Path(r.stdout.split()[0]) for r in (one, two)]
    assert [s.parent.name for s in sweeps] == ["one", "two"]  # each printed its own sweep folder
    assert (sweeps[0] / "metrics.csv").read_bytes() == (sweeps[1] / "metrics.csv").read_bytes()
    assert (sweeps[0] / "poster.png").read_bytes() == (sweeps[1] / "poster.png").read_bytes()  # the grid's frame 0
    a, b = _cells(sweeps[0]), _cells(sweeps[1])
    assert [c["label"] for c in a] == [c["label"] for c in b] and [c["params"] for c in a] == [c["params"] for c in b]
    for ca, cb in zip(a, b):  # every cell: the same frames (poster lossless; the video decoded, same encode)
        ra, rb = sweeps[0].parent / ca["run"], sweeps[1].parent / cb["run"]
        assert (ra / "poster.png").read_bytes() == (rb / "poster.png").read_bytes(), ca["label"]
        assert np.array_equal(read_video(ra / "video.mp4")[0], read_video(rb / "video.mp4")[0]), ca["label"]
    assert {c["process"]["rank"] for c in b} == {0, 1}  # both processes made cells
    assert all(c["process"]["processes"] == 2 and c["process"]["host"] for c in b)
    assert all(c["process"]["threads"] == 1 for c in a + b)  # OMP_NUM_THREADS=1 kept: the frames depend on it
    assert {c["process"]["rank"] for c in a} == {0} and json.loads((sweeps[1] / "run.json").read_text())[
        "processes"] == 2
    for c in b:  # each cell's own run.json says who made it, as the sweep's record does
        assert json.loads((sweeps[1].parent / c["run"] / "run.json").read_text())["process"] == c["process"]
    assert len(list_runs(tmp_path / "two")) == 5  # 4 cells + the sweep: the other process wrote nothing


@pytest.mark.slow
@pytest.mark.parametrize("processes", [2, 1])
def test_a_failing_cell_is_reported_and_the_rest_saved(tiny_checkpoint, input_png, tmp_path, processes):
    args = [str(input_png), "-c", str(tiny_checkpoint), *SWEEP, "--out", str(tmp_path / "out")]
    target = [str(ROOT / "tests" / "sweep_fault.py"), "sweep"]
    r = (_launch(tmp_path, target, *args, SVD_TEST_FAULT="oom") if processes == 2 else
         _one(tmp_path, target, *args, SVD_TEST_FAULT="oom"))
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.stderr  # one line, from the main process
    assert "1 of 4 cells failed (motion_bucket_id=255 seed=24" in lines[0] and "OutOfMemory: out of memory" in \
        lines[0]
    assert ("on process" in lines[0]) == (processes == 2)
    runs = list_runs(tmp_path / "out")
    assert sorted(run.record.label for run in runs) == ["motion_bucket_id=0 seed=23", "motion_bucket_id=0 seed=24",
                                                           "motion_bucket_id=255 seed=23"]
    assert all(run.kind == "run" and run.record.sweep_incomplete for run in runs)  # no sweep folder
    if processes == 2:
        assert {run.record.process["rank"] for run in runs} == {0, 1}


@pytest.mark.slow
def test_a_dying_process_fails_the_sweep_and_saves_nothing(tiny_checkpoint, input_png, tmp_path):
    r = _launch(tmp_path, [str(ROOT / "tests" / "sweep_fault.py"), "sweep"], str(input_png), "-c",
                str(tiny_checkpoint), *SWEEP, "--out", str(tmp_path / "out"), SVD_TEST_FAULT="kill")
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "ProcessLost" in lines[0] and "nothing was saved" in lines[0], r.stderr
    assert not (tmp_path / "out").exists() or list_runs(tmp_path / "out") == []


@pytest.mark.slow
def test_only_sweep_runs_on_several_processes(tiny_checkpoint, input_png, tmp_path):
    r = _launch(tmp_path, ["-m", "svd_core", "sample"], str(input_png), "-c", str(tiny_checkpoint), "--out",
                str(tmp_path / "out"))
    assert r.returncode != 0 and "error: ValueError: only `sweep` shares its work over processes" in r.stderr
    assert not (tmp_path / "out").exists()  # neither process sampled
