"""svd_core.record: the run request and the run record, to and from JSON, validated in one place; the record
written by runs.py, read back through the type (History, --from, the mp4 record); one summary line."""

import json

import pytest
from PIL import Image

from svd_core import (
    ModelSpec,
    RunRecord,
    RunRequest,
    SamplingParams,
    load_run,
    read_video_record,
    save_run,
    summary_line,
)
from svd_core.errors import RecordError
from svd_core.record import timings_line

# A run.json as SVD Studio wrote it before the record had a type: no model, remove_bg or formats.
OLD_RUN = {
    "created": "2026-11-30T10:12:13+00:00",
    "params": {**SamplingParams.for_variant("svd_xt").to_dict(), "seed": 42},
    "seed": 42,
    "checkpoint": {"file": "svd_xt.safetensors", "variant": "svd_xt", "sha256": "ab" * 32, "dtype": "float16"},
    "device": "cuda:0", "dtype": "float16", "memory_mode": "balanced",
    "effective": {"decode_chunk_size": 8, "fps_id": 6, "memory_mode": "balanced", "fallback": None},
    "timings_s": {"total": 31.5, "image_encode": 0.4, "denoise": 25.0, "decode": 6.1},
    "frames": 25, "size": [1024, 576], "input": {"original_size": [1280, 720], "name": "cat.jpg"},
    "notes": ["decode_chunk_size lowered from 14 to 8"], "versions": {"python": "3.11.9"},
    "files": ["input.png", "input_original.jpg", "poster.png", "run.json", "video.mp4"],
    "metrics": {"motion": {"score": 2.5}}, "fps": {"conditioning_fps": 7, "fps_id": 6, "playback_fps": 7},
    "input_pixels_sha256": "cd" * 32, "save_trajectory": False,
    "sweep": "sweep-20261130-101000-abcdef", "label": "motion_bucket_id=32", "coords": {"motion_bucket_id": 32},
}


def test_a_run_json_in_the_earlier_format_loads(tmp_path):
    folder = tmp_path / "20261130-101213-abcdef"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps(OLD_RUN))
    rec = load_run(folder).record
    assert rec.params.seed == 42 and rec.seed == 42 and rec.checkpoint == "svd_xt.safetensors"
    assert rec.sha256 == "ab" * 32 and rec.effective["decode_chunk_size"] == 8 and rec.timings["total"] == 31.5
    assert rec.input_name == "cat.jpg" and rec.input_size == (1280, 720) and rec.label == "motion_bucket_id=32"
    assert rec.request == RunRequest(rec.params, ModelSpec("svd_xt.safetensors"))  # the defaults fill in
    assert load_run(folder).original_input is None  # its original is listed but not there
    again = rec.to_json()
    assert {k: again[k] for k in OLD_RUN} == OLD_RUN  # the keys on disk stay as they were
    assert RunRecord.from_json(again, "x") == rec


# A sweep folder's run.json in the earlier format (a calibration's: its own "calibration" entry).
OLD_SWEEP = {
    "kind": "sweep", "created": "2026-11-30T10:10:00+00:00", "params": OLD_RUN["params"], "seed": 42,
    "seeds": [42, 43], "varied": ["motion_bucket_id"], "grid_fps": 7,
    "checkpoint": {"file": "svd_xt.safetensors", "variant": "svd_xt"}, "processes": 1,
    "cells": [{"label": "motion_bucket_id=32", "run": "20261130-101213-abcdef", "params": OLD_RUN["params"],
               "coords": {"motion_bucket_id": 32}}],
    "calibration": {"summary": "found 42", "value": 42}, "files": ["grid.mp4", "metrics.csv", "run.json"],
}


def test_a_sweep_json_in_the_earlier_format_loads():
    rec = RunRecord.from_json(OLD_SWEEP, "sweep/run.json")
    assert rec.kind == "sweep" and rec.seeds == (42, 43) and rec.varied == ("motion_bucket_id",)
    assert rec.cells[0]["run"] == "20261130-101213-abcdef" and rec.calibration["value"] == 42 and not rec.extra
    again = rec.to_json()
    assert {k: again[k] for k in OLD_SWEEP} == OLD_SWEEP
    assert RunRecord.from_json(again, "x") == rec


def test_a_malformed_calibration_is_one_line():
    for bad in ("found 42", {"value": 42}, {"summary": 42}):
        with pytest.raises(RecordError, match=r"^s/run.json is not a run record of SVD Studio \(calibration is not an "
                                              r"object with a summary\)$"):
            RunRecord.from_json({**OLD_SWEEP, "calibration": bad}, "s/run.json")


def test_request_round_trip_and_its_checks():
    req = RunRequest(SamplingParams.for_variant("svd", seed=3), ModelSpec("/m/svd.safetensors", "cuda", "low", True),
                     remove_bg=True, formats=("mp4", "gif"), save_trajectory=True)
    assert req.model.name == "svd.safetensors"
    assert RunRequest.from_json(json.loads(json.dumps(req.to_json()))) == req
    for bad in ({"remove_bg": "yes"}, {"model": {"checkpoint": "a", "warp": 1}}, {"model": {"compile": "no"}},
                {"formats": [1]}):
        with pytest.raises(RecordError, match="^req.json is not a run record of SVD Studio"):
            RunRequest.from_json({**req.to_json(), **bad}, "req.json")


def test_summary_line_says_the_camera_for_sv3d_and_motion_for_svd():
    svd = RunRecord.from_json(OLD_RUN)
    line = summary_line(svd)
    assert line.startswith("seed 42 · ") and "motion bucket 127 · conditioning fps 7" in line
    assert "2026-11-30 10:12 UTC" in line
    params = SamplingParams.for_variant("sv3d_p", seed=1)
    camera = {"elevations_deg": [10.0] * params.num_frames, "azimuths_deg": [15.0, 200.0]}
    sv3d = RunRecord(RunRequest(params, ModelSpec("sv3d_p.safetensors")), "sv3d_p.safetensors", "sv3d_p",
                     effective={"camera": camera})
    line = summary_line(sv3d)
    assert "camera: elevation 10.0°, azimuth 15.0° → 200.0°" in line
    assert "motion bucket" not in line and "fps" not in line
    assert "orbit (no camera input)" in summary_line(sv3d.replace(effective={}))
    orbit = sv3d.replace(effective={"camera": {"elevations_deg": [10.0] * params.num_frames,
                                               "azimuths_deg": [15.0 * k for k in range(params.num_frames)]}})
    assert RunRecord.from_json(orbit.to_json()) == orbit  # the camera a run records passes the record's check
    sweep = RunRecord.from_json({**OLD_RUN, "kind": "sweep", "varied": ["motion_bucket_id"], "seeds": [1, 2],
                                 "cells": [{"run": "a", "label": "m=3", "coords": {"motion_bucket_id": 3}},
                                           {"run": "b", "label": "m=9", "params": {"motion_bucket_id": 9}}]})
    line = summary_line(sweep, str.upper)
    assert line.startswith("seeds 1, 2 · varies MOTION_BUCKET_ID: 3, 9") and "motion bucket 127" not in line


def _sweep_over(knob, values):
    cells = [{"run": f"r{i}", "label": f"{knob}={v}", "coords": {knob: v},
              "params": {**OLD_RUN["params"], knob: v}} for i, v in enumerate(values)]
    return RunRecord.from_json({**OLD_RUN, "kind": "sweep", "varied": [knob], "cells": cells}, "sweep")


def test_a_sweep_summary_leaves_out_what_it_varied():
    """The first cell's value of a varied knob would mislead: each part names the knobs it shows."""
    line = summary_line(_sweep_over("max_guidance_scale", [1.0, 3.0]))
    assert "varies max_guidance_scale: 1, 3" in line and "guidance 1→" not in line and "guidance 1" not in line
    assert "motion bucket 127" in line and "euler" in line  # the rest stays
    line = summary_line(_sweep_over("sampler", ["euler", "heun"]))
    assert "varies sampler: euler, heun" in line and "/karras" not in line and "guidance" in line
    line = summary_line(_sweep_over("output_fps", [7, 12]))
    assert "playback fps" not in line and "conditioning fps" not in line
    line = summary_line(_sweep_over("width", [512, 1024]))
    assert "varies width: 512, 1024" in line and "x576" not in line
    line = summary_line(_sweep_over("period", [[1.5], [2.0]]))
    assert "varies period: 1.5, 2" in line  # a one-value list reads as its value


def test_timings_line_says_where_a_run_ran():
    rec = RunRecord.from_json(OLD_RUN)
    assert timings_line(rec) == "31.5 s (encode 0.4, denoise 25.0, decode 6.1) · balanced mode on cuda:0"
    assert timings_line(rec.replace(device="cpu")).endswith(" · on cpu")  # memory modes apply to GPUs only


def test_the_saved_record_is_the_one_record(tiny_sampler, input_png, tmp_path):
    """run.json, the type read back and each mp4's record come from the same RunRecord."""
    params = tiny_sampler.default_params(width=64, height=64, num_frames=2, num_inference_steps=1, seed=5,
                                         num_videos=2)
    result = tiny_sampler.generate(input_png, params)
    assert result.model == tiny_sampler.spec and result.model.checkpoint == tiny_sampler.info.path.name
    assert (result.memory_mode, result.device, result.dtype) == tuple(
        result.effective[k] for k in ("memory_mode", "device", "dtype"))
    path = save_run(result, tiny_sampler.info, tmp_path, formats=("mp4",), source=("cat.png", input_png.read_bytes()))
    rec = load_run(path).record
    assert rec == RunRecord.from_json(json.loads((path / "run.json").read_text()), "x")
    assert rec.request.formats == ("mp4",) and rec.request.remove_bg is False and rec.input_name == "cat.png"
    assert len(rec.sha256) == 64  # the checkpoint's hash
    assert rec.frames == 2 and rec.size == (64, 64)
    # each fact once: device, dtype and memory mode in their fields, fps_id in fps, the rest in effective
    assert rec.effective == {k: v for k, v in result.effective.items()
                             if k not in ("memory_mode", "device", "dtype", "fps_id")}
    assert (rec.memory_mode, rec.device, rec.dtype) == (result.memory_mode, result.device, result.dtype)
    assert rec.fps["fps_id"] == result.effective["fps_id"] == params.fps - 1
    saved = json.loads((path / "run.json").read_text())
    assert saved["model"]["checkpoint"] == tiny_sampler.info.path.name  # the file, not the server's folders
    assert str(tiny_sampler.info.path.parent) not in (path / "run.json").read_text()
    assert len(rec.video_metrics) == 2 and {"video.mp4", "video-1.mp4"} <= set(rec.files)
    second = read_video_record(path / "video-1.mp4")
    assert second == RunRecord.from_json(rec.for_video(1), "v")
    assert second.params == params.replace(seed=6, num_videos=1) and second.sha256 == rec.sha256
    assert second.request.remove_bg is False


@pytest.fixture
def fake_rembg(monkeypatch):
    """Background removal without rembg's weights (not on this machine): the image on white, each call counted."""
    from svd_core import images

    calls = []

    def remove(img):
        calls.append(img.size)
        return Image.new("RGB", img.size, (255, 255, 255))
    monkeypatch.setattr(images, "remove_background", remove)
    monkeypatch.setattr(images, "background_removal_available", lambda: True)
    return calls


def test_from_redoes_a_run_that_removed_the_background(tiny_checkpoint, input_png, tmp_path, fake_rembg, capsys):
    from svd_core.__main__ import main

    small = ["-c", str(tiny_checkpoint), "--width", "64", "--height", "64", "--num-frames", "2",
             "--num-inference-steps", "1"]
    assert main(["sample", str(input_png), "--remove-background", "--out", str(tmp_path / "a"), *small]) == 0
    first = next((tmp_path / "a").iterdir())
    rec = load_run(first).record
    assert rec.request.remove_bg and len(fake_rembg) == 1
    assert read_video_record(first / "video.mp4").request.remove_bg  # the mp4 carries it too
    assert summary_line(rec) in capsys.readouterr().out  # the CLI prints the one summary line

    assert main(["sample", "--from", str(first / "run.json"), "--out", str(tmp_path / "b"), *small]) == 0
    again = load_run(next((tmp_path / "b").iterdir())).record
    assert again.request.remove_bg and len(fake_rembg) == 2 and again.params == rec.params
    assert main(["sample", "--from", str(first / "video.mp4"), str(input_png), "--out", str(tmp_path / "c"),
                 *small]) == 0
    assert len(fake_rembg) == 3 and load_run(next((tmp_path / "c").iterdir())).record.request.remove_bg
    assert main(["sample", "--from", str(first / "run.json"), "--no-remove-background", "--out",
                 str(tmp_path / "d"), *small]) == 0  # a flag overrides the record
    assert len(fake_rembg) == 3 and not load_run(next((tmp_path / "d").iterdir())).record.request.remove_bg


def test_sweep_folder_record_and_its_grid(tiny_sampler, input_png, tmp_path):
    from svd_core import grid_cells, run_sweep
    from svd_core.sweep import response_table

    base = tiny_sampler.default_params(width=64, height=64, num_frames=2, num_inference_steps=1)
    res = run_sweep(tiny_sampler, input_png, grid_cells(base, {"motion_bucket_id": [3, 9]}), out_dir=tmp_path)
    rec = load_run(res.path).record
    assert rec.kind == "sweep" and rec.varied == ("motion_bucket_id",) and [c["label"] for c in rec.cells] == [
        "motion_bucket_id=3", "motion_bucket_id=9"]
    grid = read_video_record(res.path / "grid.mp4")
    assert grid.kind == "sweep" and grid.sweep == res.path.name and grid.varied == rec.varied
    cell = load_run(res.run_paths[0]).record
    assert cell.sweep == res.path.name and cell.label == "motion_bucket_id=3" and not cell.sweep_pending
    assert {r["motion_bucket_id"] for r in response_table(res.path)} == {3, 9}
    with pytest.raises(RecordError, match="is a run, not a sweep"):
        response_table(res.run_paths[0])
    table = (res.path / "metrics.csv").read_text()
    header, first, *rest = table.splitlines()
    metric = header.split(",").index("motion.score")
    broken = {
        "an extra column": "\n".join([header, first + ",9", *rest]),
        "a short row": "\n".join([header, first.rsplit(",", 1)[0], *rest]),
        "a metric that is not a number": "\n".join([header, ",".join(
            v if i != metric else "fast" for i, v in enumerate(first.split(","))), *rest]),
        "no label column": table.replace("label,", "name,", 1),
        "not text": b"\xff\xfe\x00",
        None: None,  # missing
    }
    for what, text in broken.items():
        if text is None:
            (res.path / "metrics.csv").unlink()
        elif isinstance(text, bytes):
            (res.path / "metrics.csv").write_bytes(text)
        else:
            (res.path / "metrics.csv").write_text(text)
        with pytest.raises(RecordError, match=f"^{res.path.name}/metrics.csv is not a sweep's metrics table") as e:
            response_table(res.path)
        assert "\n" not in str(e.value), what


def test_a_sweep_records_its_cells_request(tiny_sampler, input_png, tmp_path):
    """The sweep folder's request is its cells' (save_trajectory and formats included): "Use these settings" on
    a comparison keeps them."""
    from svd_core import grid_cells, run_sweep

    base = tiny_sampler.default_params(width=64, height=64, num_frames=2, num_inference_steps=1)
    res = run_sweep(tiny_sampler, input_png, grid_cells(base, {"motion_bucket_id": [3, 9]}), out_dir=tmp_path,
                    trajectory=True)
    rec, cell = load_run(res.path).record, load_run(res.run_paths[0]).record
    assert rec.request.save_trajectory and cell.request.save_trajectory
    assert rec.request == cell.request  # the first cell's: formats, remove_bg, model and save_trajectory
    assert rec.calibration is None and "calibration" not in json.loads((res.path / "run.json").read_text())


def test_a_sweep_records_its_background_removal(tiny_sampler, input_png, tmp_path, fake_rembg):
    from svd_core import grid_cells, run_sweep

    base = tiny_sampler.default_params(width=64, height=64, num_frames=2, num_inference_steps=1)
    res = run_sweep(tiny_sampler, input_png, grid_cells(base, {"seed": [1, 2]}), out_dir=tmp_path, remove_bg=True)
    assert len(fake_rembg) == 1  # one preparation for both cells
    assert all(load_run(p).record.request.remove_bg for p in (*res.run_paths, res.path))
