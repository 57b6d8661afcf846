"""Sweeps over knobs and seeds on the tiny model: cells, the grid and contact sheet, metrics.csv and the
response, failing and cancelled sweeps."""

import json

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from svd_core import Cancelled, SamplingParams, grid_cells, run_sweep
from svd_core.runs import delete_run, list_runs
from svd_core.sweep import parse_vary


def test_parse_vary_and_cells(base):
    assert parse_vary("motion_bucket_id=32,127,255") == ("motion_bucket_id", [32, 127, 255])
    assert parse_vary("noise_aug_strength=0.0,0.1") == ("noise_aug_strength", [0.0, 0.1])
    assert parse_vary("fps=3 7, 15") == ("fps", [3, 7, 15])  # commas or spaces, as Compare takes them
    with pytest.raises(ValueError, match="fps takes whole numbers: '7.5' is not one"):
        parse_vary("fps=3,7.5")
    with pytest.raises(ValueError, match="unknown parameter 'motion'"):
        parse_vary("motion=1,2")
    cells = grid_cells(base, dict([parse_vary("motion_bucket_id=1,2"), parse_vary("fps=4,8,12")]))
    assert len(cells) == 6 and cells[0][0] == "motion_bucket_id=1 fps=4"
    with pytest.raises(ValueError, match="motion_bucket_id must be between 0 and 1023"):
        grid_cells(base, {"motion_bucket_id": [1, 1999]})


@pytest.mark.slow
def test_sweep_grid_and_contact_sheet(tiny_sampler, base, input_png, tmp_path):
    from svd_core.grid import grid_layout, plan_grid

    cells = grid_cells(base, {"motion_bucket_id": [0, 127, 255]})
    progress = []
    res = run_sweep(tiny_sampler, input_png, cells, on_progress=lambda *a: progress.append(a), out_dir=tmp_path)
    assert len(res.cells) == 3 and len(res.run_paths) == 3
    n, h, w, _ = res.grid.shape
    assert n == 4 and w == 3 * 64 + 2 * 4 and h > 64  # three tiles side by side under their headings
    plan = plan_grid(grid_layout(3, coords=res.coords), 64, 64, caption="x")
    for (x, y), (_, r) in zip(plan.tiles, res.cells):  # each cell's frames sit in its column
        assert np.array_equal(res.grid[:, y:y + 64, x:x + 64], r.frames)
    sheet = Image.open(res.path / "contact_sheet.png")
    assert sheet.size[0] > 4 * 64 and sheet.size[1] >= 3 * 64
    assert imageio_ffmpeg.count_frames_and_secs(str(res.path / "grid.mp4"))[0] == 4
    rec = json.loads((res.path / "run.json").read_text())
    assert rec["kind"] == "sweep" and [c["label"] for c in rec["cells"]] == [c[0] for c in cells]
    assert rec["varied"] == ["motion_bucket_id"] and rec["grid_fps"] == base.fps
    assert progress[-1][:2] == (2, 3)
    # different cells really differ
    frames = [r.frames for _, r in res.cells]
    assert not np.array_equal(frames[0], frames[2])


@pytest.mark.slow
def test_sweep_across_seeds_metrics_csv_and_response(tiny_sampler, base, input_png, tmp_path):
    import csv

    from svd_core.params import parse_seeds
    from svd_core.sweep import response_table

    assert parse_seeds("3", 23) == [23, 24, 25] and parse_seeds("1,5,9", 23) == [1, 5, 9]
    with pytest.raises(ValueError, match="a count \\(3\\) or a list"):
        parse_seeds("a,b", 23)
    cells = grid_cells(base, {"motion_bucket_id": [0, 255]}, seeds=[5, 9])
    assert [c[0] for c in cells] == ["motion_bucket_id=0 seed=5", "motion_bucket_id=0 seed=9",
                                     "motion_bucket_id=255 seed=5", "motion_bucket_id=255 seed=9"]
    res = run_sweep(tiny_sampler, input_png, cells, out_dir=tmp_path)
    seeds = [r.params.seed for _, r in res.cells]
    assert seeds == [5, 9, 5, 9]  # the same seeds for every value
    alone = tiny_sampler.generate(input_png, base.replace(motion_bucket_id=255, seed=9))
    assert np.array_equal(res.cells[3][1].frames, alone.frames)  # a cell is an ordinary seeded run
    assert not np.array_equal(res.cells[0][1].frames, res.cells[1][1].frames)
    with open(res.path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["label", "motion_bucket_id", "seed", "motion.score", "motion.flow_px_per_frame",
                             "flicker.mean", "likeness.mean"]
    assert [(r["motion_bucket_id"], r["seed"]) for r in rows] == [("0", "5"), ("0", "9"), ("255", "5"), ("255", "9")]
    assert float(rows[3]["flicker.mean"]) == pytest.approx(res.cells[3][1].metrics["flicker"]["mean"])
    assert (res.path / "response.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = response_table(res.path)
    assert table == response_table(res)  # from the folder or the result: the same numbers
    flick = [t for t in table if t["metric"] == "flicker.mean"]
    assert [(t["motion_bucket_id"], t["n"]) for t in flick] == [(0, 2), (255, 2)]
    pair = [float(r["flicker.mean"]) for r in rows[2:]]
    assert flick[1]["mean"] == pytest.approx(np.mean(pair)) and flick[1]["std"] == pytest.approx(np.std(pair))


@pytest.mark.slow
def test_two_knob_sweep_response_and_layout(tiny_sampler, base, input_png, tmp_path):
    from svd_core.sweep import response_table

    cells = grid_cells(base.replace(num_inference_steps=1),
                       {"motion_bucket_id": [32, 127, 255], "noise_aug_strength": [0.0, 0.1]})
    res = run_sweep(tiny_sampler, input_png, cells, out_dir=tmp_path)
    assert res.coords[1] == {"motion_bucket_id": 32, "noise_aug_strength": 0.1}
    table = [t for t in response_table(res) if t["metric"] == "motion.flow_px_per_frame"]
    assert {(t["motion_bucket_id"], t["noise_aug_strength"]) for t in table} == {
        (a, b) for a in (32, 127, 255) for b in (0.0, 0.1)}
    n, h, w, _ = res.grid.shape
    assert w < 4 * 64 + 64 * 2 and h > 2 * 64  # three columns (plus the row labels), two rows


@pytest.mark.slow
def test_sweep_with_a_failing_cell_keeps_the_rest_and_no_sweep(tiny_sampler, base, input_png, tmp_path,
                                                                monkeypatch):
    from svd_core import video
    from svd_core.errors import SweepFailed

    cells = grid_cells(base, {"motion_bucket_id": [0, 127, 255]})
    real, calls = tiny_sampler.generate, []

    def second_fails(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the device fell over")
        return real(*a, **k)
    monkeypatch.setattr(tiny_sampler, "generate", second_fails)
    with pytest.raises(SweepFailed, match=r"1 of 3 cells failed \(motion_bucket_id=127: RuntimeError: the device "
                                          r"fell over\)\. The 2 finished") as e:
        run_sweep(tiny_sampler, input_png, cells, out_dir=tmp_path)
    assert len(calls) == 3  # the third cell still ran
    assert [f.coords for f in e.value.failures] == [{"motion_bucket_id": 127}]
    runs = list_runs(tmp_path)
    assert sorted(r.record.label for r in runs) == ["motion_bucket_id=0", "motion_bucket_id=255"]
    assert all(r.kind == "run" and r.record.sweep_incomplete for r in runs) and set(e.value.run_paths) == {
        r.path for r in runs}
    for r in runs:  # out of the way for the next part
        delete_run(r.path, tmp_path)
    monkeypatch.setattr(tiny_sampler, "generate", real)
    real_mp4 = video.to_mp4

    def grid_write_fails(frames, fps, *a, **k):  # cells are staged by then; the grid is the last video
        if frames.shape[1] > 64:
            raise OSError("disk full")
        return real_mp4(frames, fps, *a, **k)
    monkeypatch.setattr(video, "to_mp4", grid_write_fails)
    with pytest.raises(OSError, match="disk full"):
        run_sweep(tiny_sampler, input_png, cells, out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cancelled_sweep_writes_nothing(tiny_sampler, base, input_png, tmp_path):
    cells = grid_cells(base, {"fps": [4, 8]})
    calls = []
    with pytest.raises(Cancelled):
        run_sweep(tiny_sampler, input_png, cells, on_progress=lambda *a: calls.append(a),
                  should_stop=lambda: len(calls) >= 3, out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_sweep_over_seeds_alone_has_a_response(tiny_sampler, base, input_png, tmp_path):
    """A comparison of seeds only (Compare's 'seed' knob) has no other knob: its response is per seed."""
    from svd_core.sweep import response_table

    res = run_sweep(tiny_sampler, input_png, grid_cells(base.replace(num_inference_steps=1), {"seed": [1, 2]}),
                    out_dir=tmp_path)
    assert Image.open(res.path / "response.png").size[0] > 0
    rows = response_table(res.path)
    assert sorted({r["seed"] for r in rows}) == [1, 2] and all(r["n"] == 1 for r in rows)


def test_parse_vary_string_knobs():
    assert parse_vary("sampler=euler, heun") == ("sampler", ["euler", "heun"])
    assert parse_vary("guider=identity,triangle") == ("guider", ["identity", "triangle"])
    with pytest.raises(ValueError, match="unknown sampler 'ddim'.*valid: euler, heun"):
        parse_vary("sampler=euler,ddim")


def test_cells_carry_their_coords_through_copies():
    import copy
    import pickle

    from svd_core import grid_cells

    cells = grid_cells(SamplingParams(), {"fps": [6, 8], "motion_bucket_id": [1, 2]}, seeds=[3, 4])
    assert len(cells) == 8 and cells[5].coords == {"fps": 8, "motion_bucket_id": 1, "seed": 4}
    for c in (copy.deepcopy(cells), pickle.loads(pickle.dumps(cells))):  # Streamlit's session state copies
        label, params = c[5]
        assert c[5].coords == cells[5].coords and params.seed == 4 and label == "fps=8 motion_bucket_id=1 seed=4"
