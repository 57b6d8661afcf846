"""Sampler, params, image preparation, run folders, sweeps and the CLI on the tiny model (CPU)."""

import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from svd_core import Cancelled, SamplingParams, grid_cells, load_run, run_sweep, save_run
from svd_core.errors import ImageError
from svd_core.images import ImageSpec, prepare_image
from svd_core.runs import delete_run, list_runs
from svd_core.sweep import parse_vary

SMALL = dict(width=64, height=64, num_frames=4, num_inference_steps=2, decode_chunk_size=4)


@pytest.fixture(scope="module")
def base(tiny_sampler):
    return tiny_sampler.default_params(**SMALL)


# -------------------------------------------------------------------------------------------------- params

def test_params_validation_names_field_and_range():
    with pytest.raises(ValueError, match=r"motion_bucket_id must be between 0 and 1023, got 1024"):
        SamplingParams(motion_bucket_id=1024)
    with pytest.raises(ValueError, match=r"decode_chunk_size must be between 1 and 64, got 0"):
        SamplingParams(decode_chunk_size=0)
    # a chunk larger than the clip decodes every frame at once, as diffusers and Stability's scripts do
    assert SamplingParams(num_frames=6, decode_chunk_size=20).decode_chunk == 6
    with pytest.raises(ValueError, match="num_frames must be an integer"):
        SamplingParams(num_frames=2.5)
    with pytest.raises(ValueError, match="resize_mode must be one of crop, pad, stretch"):
        SamplingParams(resize_mode="zoom")
    with pytest.raises(ValueError, match="unknown parameter"):
        SamplingParams.from_dict({"guidance": 3})
    p = SamplingParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.seed = 1
    assert p.replace(seed=5).seed == 5 and p.video_fps == p.fps


def test_variant_defaults():
    svd = SamplingParams.for_variant("svd")
    xt = SamplingParams.for_variant("svd_xt")
    xt11 = SamplingParams.for_variant("svd_xt_1_1")
    assert (svd.num_frames, svd.num_inference_steps, svd.max_guidance_scale) == (14, 25, 2.5)
    assert (xt.num_frames, xt.num_inference_steps, xt.min_guidance_scale, xt.max_guidance_scale) == (25, 30, 1.5, 3.0)
    assert (xt11.fps, xt11.motion_bucket_id) == (7, 127)  # sgm fps_id 6
    assert xt.decode_chunk_size == 14 and (xt.width, xt.height) == (1024, 576)
    assert SamplingParams.for_variant("svd_xt", num_frames=8).decode_chunk_size == 14  # kept as set
    assert SamplingParams.for_variant("svd_image_decoder").num_frames == 14
    assert SamplingParams.for_variant("svd_xt", motion_bucket_id=30).motion_bucket_id == 30
    with pytest.raises(ValueError, match="valid variants: svd, "):
        SamplingParams.for_variant("svd_xxl")


# --------------------------------------------------------------------------------------------- generation

def test_same_seed_same_frames_and_timings(tiny_sampler, base, input_png):
    a = tiny_sampler.generate(input_png, base)
    b = tiny_sampler.generate(input_png, base)
    assert a.frames.shape == (4, 64, 64, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames)
    assert set(a.timings) == {"image_encode", "denoise", "decode", "total", "measure"}
    assert all(v >= 0 for v in a.timings.values())
    c = tiny_sampler.generate(input_png, base.replace(seed=24))
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("change", [dict(motion_bucket_id=255), dict(fps=20), dict(noise_aug_strength=0.3)])
def test_micro_conditioning_changes_frames(tiny_sampler, base, input_png, change):
    a = tiny_sampler.generate(input_png, base)
    b = tiny_sampler.generate(input_png, base.replace(**change))
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() > 0


def test_progress_and_cancel(tiny_sampler, base, input_png):
    seen, phases = [], []
    tiny_sampler.generate(input_png, base.replace(num_inference_steps=3), on_step=lambda i, n: seen.append((i, n)),
                          on_phase=phases.append)
    assert seen == [(1, 3), (2, 3), (3, 3)] and phases == ["encoding", "denoising", "decoding"]
    seen.clear()
    with pytest.raises(Cancelled):
        tiny_sampler.generate(input_png, base.replace(num_inference_steps=5),
                              on_step=lambda i, n: seen.append(i), should_stop=lambda: len(seen) >= 2)
    assert seen == [1, 2]
    # the sampler stays usable after a cancel
    assert tiny_sampler.generate(input_png, base).frames.shape[0] == 4


def test_cancel_during_the_last_step_and_the_decode(tiny_sampler, base, input_png):
    decoder_calls = []
    hook = tiny_sampler.pipe.vae.decoder.register_forward_pre_hook(lambda m, a: decoder_calls.append(1))
    try:
        steps = []
        with pytest.raises(Cancelled):  # cancelled while the last step runs: no decode at all
            tiny_sampler.generate(input_png, base, on_step=lambda i, n: steps.append(i),
                                  should_stop=lambda: len(steps) == base.num_inference_steps)
        assert decoder_calls == []
        with pytest.raises(Cancelled):  # cancelled during the decode (one frame per call): it stops there
            tiny_sampler.generate(input_png, base.replace(decode_chunk_size=1),
                                  should_stop=lambda: len(decoder_calls) >= 1)
        assert len(decoder_calls) == 1
    finally:
        hook.remove()


def test_cancel_up_to_the_save(tiny_sampler, base, input_png, tmp_path):
    result = tiny_sampler.generate(input_png, base)
    with pytest.raises(Cancelled, match="nothing was written"):
        save_run(result, tiny_sampler.info, tmp_path, should_stop=lambda: True)
    assert list(tmp_path.iterdir()) == []
    assert save_run(result, tiny_sampler.info, tmp_path, should_stop=lambda: False).is_dir()


def test_fixed_conditioning_note(tiny_sampler, base, input_png, monkeypatch):
    from svd_core import get_variant
    from svd_core.conditioning import training_warnings

    xt11 = get_variant("svd_xt_1_1")
    monkeypatch.setattr(tiny_sampler, "info", dataclasses.replace(tiny_sampler.info, variant=xt11))
    assert not [w for w in training_warnings(base.replace(fps=7, motion_bucket_id=127), xt11) if "trained at" in w]
    result = tiny_sampler.generate(input_png, base.replace(fps=7, motion_bucket_id=40))
    assert any("trained at fps 7 (Stability's fps_id 6) and motion_bucket_id 127 only" in n for n in result.notes)


# ---------------------------------------------------------------------------------------------- images

def _png_bytes(img, fmt="PNG", **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


SPEC = ImageSpec(multiple=32, min_side=32)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "CMYK", "I;16", "1", "F"])
def test_any_colour_mode_to_rgb(mode):
    img = Image.new("RGB", (80, 60), (200, 40, 10)).convert(mode)
    fmt = "TIFF" if mode in ("CMYK", "F") else "PNG"
    out = prepare_image(_png_bytes(img, fmt), 64, 64, spec=SPEC)
    assert out.image.mode == "RGB" and out.image.size == (64, 64)


def test_alpha_goes_on_white():
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    out = prepare_image(_png_bytes(img), 64, 64, spec=SPEC)
    assert out.image.getpixel((10, 10)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (96, 64), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 48, 64))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = prepare_image(_png_bytes(img, "JPEG", exif=exif), 64, 96, resize_mode="stretch", spec=SPEC)
    r, g, b = out.image.getpixel((32, 10))  # the red half is now on top
    assert r > 200 and b < 60


@pytest.mark.parametrize("mode, size", [("crop", (128, 64)), ("pad", (128, 64)), ("stretch", (64, 128))])
def test_resize_modes_hit_target(large_png, mode, size):
    out = prepare_image(large_png, *size, resize_mode=mode, spec=SPEC)
    assert out.image.size == size and out.original_size == (1024, 576)


def test_size_snapping_minimum_and_upscale_notes(input_png):
    out = prepare_image(input_png, 100, 70, spec=SPEC)
    assert out.image.size == (96, 64)
    assert any("snapped to 96x64" in n for n in out.notes)
    assert any("upscaled" in n for n in out.notes)
    with pytest.raises(ImageError, match="minimum side of 256"):
        prepare_image(input_png, 128, 128, spec=ImageSpec(64, 256))


def test_animated_uses_first_frame():
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = prepare_image(buf.getvalue(), 64, 64, spec=SPEC)
    assert any("first frame of 2" in n for n in out.notes)
    assert out.image.getpixel((5, 5))[0] > 200


@pytest.mark.parametrize("data, match", [
    (b"", "not a readable image"),
    (b"definitely not an image", "not a readable image"),
])
def test_broken_images(data, match):
    with pytest.raises(ImageError, match=match):
        prepare_image(data, 64, 64, spec=SPEC)


def test_truncated_image(input_png):
    data = Path(input_png).read_bytes()
    with pytest.raises(ImageError, match="broken or truncated"):
        prepare_image(data[: len(data) // 2], 64, 64, spec=SPEC)


def test_too_small_and_bomb():
    with pytest.raises(ImageError, match="too small"):
        prepare_image(_png_bytes(Image.new("RGB", (8, 8))), 64, 64, spec=SPEC)
    bomb = _png_bytes(Image.new("1", (10000, 10000)))  # 100 MP, a few kB
    with pytest.raises(ImageError, match="MP"):
        prepare_image(bomb, 64, 64, spec=SPEC)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        prepare_image(tmp_path / "nope.png", 64, 64, spec=SPEC)


# ------------------------------------------------------------------------------------------- run folders

def test_run_folder_contents(tiny_sampler, base, input_png, tmp_path):
    result = tiny_sampler.generate(input_png, base)
    path = save_run(result, tiny_sampler.info, tmp_path, formats=("mp4", "gif", "zip"))
    names = {p.name for p in path.iterdir()}
    assert names == {"video.mp4", "video.gif", "frames.zip", "input.png", "poster.png", "run.json"}
    rec = json.loads((path / "run.json").read_text())
    assert rec["params"] == base.to_dict() and rec["seed"] == base.seed
    assert rec["checkpoint"]["variant"] == "tiny" and len(rec["checkpoint"]["sha256"]) == 64
    assert {"torch", "diffusers"} <= set(rec["versions"]) and rec["device"] == "cpu"
    assert set(rec["timings_s"]) == {"image_encode", "denoise", "decode", "total", "measure"}
    runs = list_runs(tmp_path)
    assert [r.id for r in runs] == [path.name] and runs[0].params == base
    delete_run(path, tmp_path)
    assert list_runs(tmp_path) == []


def test_failed_write_leaves_nothing(tiny_sampler, base, input_png, tmp_path, monkeypatch):
    result = tiny_sampler.generate(input_png, base)
    real_replace, seen = os.replace, []

    def full_disk(src, dst):  # fails after every file is in the temporary folder
        seen.append(sorted(p.name for p in Path(src).iterdir()))
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        save_run(result, tiny_sampler.info, tmp_path)
    monkeypatch.setattr(os, "replace", real_replace)
    assert "run.json" in seen[0]  # the temporary folder existed, complete, when the write failed
    assert list(tmp_path.iterdir()) == []


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from svd_core.runs import commit_staged, stage_folder
class Dying(dict):
    def items(self):
        yield "video.mp4", b"x" * 1000
        os.kill(os.getpid(), signal.SIGKILL)
folder = Path(sys.argv[1]) / "run-1"
commit_staged([(stage_folder(folder, Dying(a=1)), folder)])
"""


def test_killed_run_leaves_no_complete_folder(tmp_path):
    from svd_core.runs import clean_stale_temp

    r = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)])
    assert r.returncode != 0
    assert list_runs(tmp_path) == []
    assert not (tmp_path / "run-1").exists()
    leftover = next(tmp_path.iterdir())
    with pytest.raises(ValueError):
        load_run(leftover)
    live = tmp_path / f".tmp-{os.getpid()}-writing"  # a live process's folder stays
    live.mkdir()
    old = tmp_path / ".tmp-legacy-name"  # no pid, a day old: removed
    old.mkdir()
    os.utime(old, (0, 0))
    assert set(clean_stale_temp(tmp_path)) == {leftover, old}
    assert list(tmp_path.iterdir()) == [live]


# ------------------------------------------------------------------------------------------------- sweeps

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


def test_sweep_across_seeds_metrics_csv_and_response(tiny_sampler, base, input_png, tmp_path):
    import csv

    from svd_core.sweep import parse_seeds, response_table

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


# ----------------------------------------------------------------------------------------------------- CLI

def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "svd_core", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_cli_end_to_end(tiny_checkpoint, input_png, tmp_path):
    out = tmp_path / "out"
    r = _cli("sample", str(input_png), "-c", str(tiny_checkpoint), "--out", str(out), "--width", "64",
             "--height", "64", "--num-frames", "3", "--num-inference-steps", "2", "--format", "mp4,gif")
    assert r.returncode == 0, r.stderr
    run = Path(r.stdout.split()[0])
    assert (run / "video.mp4").is_file() and (run / "video.gif").is_file()
    rec = json.loads((run / "run.json").read_text())
    assert rec["params"]["decode_chunk_size"] == 6 and rec["effective"]["decode_chunk_size"] == 3  # 3 frames
    r = _cli("sweep", str(input_png), "-c", str(tiny_checkpoint), "--out", str(out), "--width", "64",
             "--height", "64", "--num-frames", "3", "--num-inference-steps", "1", "--vary", "motion_bucket_id=0,255")
    assert r.returncode == 0, r.stderr
    assert (Path(r.stdout.split()[0]) / "grid.mp4").is_file()
    assert len(list_runs(out)) == 4  # 1 sample + 2 cells + the sweep
    ckdir = tmp_path / "ck"
    ckdir.mkdir()
    (ckdir / "svd_xt.safetensors").symlink_to(tiny_checkpoint)
    r = _cli("list", str(ckdir))
    assert r.returncode == 0 and "svd_xt.safetensors" in r.stdout and "tiny" in r.stdout


@pytest.mark.parametrize("args, match", [
    (["--motion-bucket-id", "1024"], "motion_bucket_id must be between 0 and 1023"),
    (["--num-frames", "1"], "num_frames must be between 2 and 64"),
    (["--format", "avi"], "unknown format"),
])
def test_cli_bad_params_one_line(tiny_checkpoint, input_png, args, match):
    r = _cli("sample", str(input_png), "-c", str(tiny_checkpoint), *args)
    assert r.returncode == 2 and match in r.stderr and "Traceback" not in r.stderr


def test_cli_bad_image_and_no_checkpoint(tiny_checkpoint, tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"nope")
    r = _cli("sample", str(bad), "-c", str(tiny_checkpoint))
    assert r.returncode == 2 and "not a readable image" in r.stderr and "Traceback" not in r.stderr
    r = _cli("sample", str(bad), env={"SVD_CHECKPOINT_DIR": str(tmp_path)})
    assert r.returncode == 2 and "no checkpoint in checkpoints/" in r.stderr


def test_cli_speaks_to_a_newcomer(tiny_checkpoint, input_png, tmp_path):
    """A command's own usage for its unknown flag, the default checkpoint named, no memory mode on the CPU, a
    headed list that says the Hugging Face cache is empty, and a one-value sweep told to give two values."""
    r = _cli("sample", str(input_png), "--bogus")
    assert r.returncode == 2 and "usage: python -m svd_core sample" in r.stderr and "--bogus" in r.stderr
    ck, cache = tmp_path / "ck", tmp_path / "hf"
    ck.mkdir()
    cache.mkdir()
    (ck / "tiny.safetensors").symlink_to(tiny_checkpoint)
    env = {"SVD_CHECKPOINT_DIR": str(ck), "HF_HUB_CACHE": str(cache)}
    r = _cli("sample", str(input_png), "--out", str(tmp_path / "out"), "--width", "64", "--height", "64",
             "--num-frames", "3", "--num-inference-steps", "1", env=env)
    assert r.returncode == 0, r.stderr
    assert "note: checkpoint tiny.safetensors" in r.stderr and "-c" in r.stderr
    assert "; on cpu)" in r.stdout and "mode on cpu" not in r.stdout
    r = _cli("list", env=env)
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and lines[0].split()[:2] == ["model", "variant"] and lines[1].startswith("tiny")
    assert f"Hugging Face cache ({cache}): no SVD pipeline" in r.stdout
    r = _cli("sweep", str(input_png), "--vary", "motion_bucket_id=1", env=env)
    assert r.returncode == 2 and "give at least two values" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------ memory fallback

def test_out_of_memory_retries_once_in_the_next_mode_for_that_run_only(tiny_sampler, base, input_png,
                                                                        monkeypatch, tmp_path):
    import torch

    from svd_core.errors import OutOfMemory

    real_run, calls = tiny_sampler._run, []

    def oom_once(prepared, params, on_step, should_stop, on_phase, mode, *rest):
        calls.append(mode)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run(prepared, params, on_step, should_stop, on_phase, mode, *rest)
    monkeypatch.setattr(tiny_sampler, "_run", oom_once)
    monkeypatch.setattr(tiny_sampler, "memory_mode", "fast")
    result = tiny_sampler.generate(input_png, base)
    assert calls == ["fast", "balanced"] and result.memory_mode == "balanced"
    assert tiny_sampler.memory_mode == "fast"  # the server's mode is not changed for later runs
    assert any("this run was retried in 'balanced' mode" in n for n in result.notes)
    rec = json.loads((save_run(result, tiny_sampler.info, tmp_path) / "run.json").read_text())
    assert rec["effective"]["fallback"] == {"from": "fast", "to": "balanced", "reason": "out of memory"}
    assert rec["effective"]["memory_mode"] == "balanced"

    def always_oom(*a, **k):
        raise RuntimeError("MPS backend out of memory")
    monkeypatch.setattr(tiny_sampler, "_run", always_oom)
    with pytest.raises(OutOfMemory, match="lower the resolution"):
        tiny_sampler.generate(input_png, base)


def test_low_mode_caps_the_decode_chunk_and_says_so(tiny_sampler, base, input_png, monkeypatch, tmp_path):
    decoded = []
    hook = tiny_sampler.pipe.vae.decoder.register_forward_pre_hook(lambda m, a: decoded.append(a[0].shape[0]))
    monkeypatch.setattr(tiny_sampler, "memory_mode", "low")  # on the CPU, low only changes the decode chunk
    try:
        result = tiny_sampler.generate(input_png, base)  # decode_chunk_size 4
    finally:
        hook.remove()
    assert decoded == [2, 2]  # what the decoder really got
    assert result.effective["decode_chunk_size"] == 2 and result.params.decode_chunk_size == 4
    assert any("decode_chunk_size lowered from 4 to 2" in n for n in result.notes)
    rec = json.loads((save_run(result, tiny_sampler.info, tmp_path) / "run.json").read_text())
    assert rec["effective"]["decode_chunk_size"] == 2 and rec["params"]["decode_chunk_size"] == 4


def test_auto_memory_mode_from_the_estimate(monkeypatch):
    import torch

    from svd_core.memory import estimate
    from svd_core.session import resolve_memory_mode
    from tests.test_gpu_path import _full_size_modules

    m = _full_size_modules()

    def for_chunk(chunk):
        return estimate(m, width=1024, height=576, num_frames=25, decode_chunk_size=chunk)

    GiB = 1 << 30
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    for free, want in [(80 * GiB, "fast"), (24 * GiB, "balanced"), (7.5 * GiB, "low")]:
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None, f=free: (int(f), 80 * GiB))
        assert resolve_memory_mode("auto", cuda, for_chunk, 14) == want, free / GiB
    assert resolve_memory_mode("low", cuda) == "low"
    assert resolve_memory_mode("auto", torch.device("cpu")) == "fast"
    with pytest.raises(ValueError, match="valid: auto, fast, balanced, low"):
        resolve_memory_mode("turbo", cuda)


def test_fps_id_reaches_the_unet(tiny_sampler, base, input_png):
    """diffusers' fps is Stability's fps_id + 1: the UNet must see fps - 1, and run.json says so."""
    seen = []
    hook = tiny_sampler.pipe.unet.register_forward_pre_hook(
        lambda m, a, k: seen.append(k["added_time_ids"][0].tolist()), with_kwargs=True)
    try:
        result = tiny_sampler.generate(input_png, base.replace(fps=9, motion_bucket_id=50, noise_aug_strength=0.1))
    finally:
        hook.remove()
    fps_id, bucket, aug = seen[0]
    assert (fps_id, bucket) == (8, 50) and aug == pytest.approx(0.1)
    assert result.effective["fps_id"] == fps_id


def test_unet_forward_chunking_is_diffusers_recipe_and_changes_nothing(tiny_checkpoint, input_png):
    """Chunking only splits the feed-forward's batch: the same frames. In float64, so that the CPU's GEMM
    blocking (a different row count per call) stays far below one level of 8-bit output; in float32 it moves
    0.03 % of the pixels by one level."""
    import torch

    from svd_core import Sampler
    from svd_core.session import set_unet_chunking

    sampler = Sampler(tiny_checkpoint, device="cpu", dtype=torch.float64)
    base = sampler.default_params(**SMALL)
    unet = sampler.pipe.unet
    blocks = [m for m in unet.modules() if hasattr(m, "set_chunk_feed_forward")]
    rows = []  # batch rows of each spatial block's feed-forward call
    spatial = [m for m in blocks if type(m).__name__ == "BasicTransformerBlock"]
    hooks = [m.ff.register_forward_pre_hook(lambda mod, a: rows.append(a[0].shape[0])) for m in spatial]
    try:
        plain = sampler.generate(input_png, base)
        plain_calls, plain_rows = len(rows), set(rows)
        set_unet_chunking(unet, True)
        assert all(m._chunk_size == 1 for m in blocks)
        rows.clear()
        chunked = sampler.generate(input_png, base)
        assert chunked.effective["unet_ff_chunking"] and not plain.effective["unet_ff_chunking"]
    finally:
        for h in hooks:
            h.remove()
    set_unet_chunking(unet, False)
    assert all(m._chunk_size is None for m in blocks)
    # spatial blocks: one call per frame of the CFG batch (2 x 4 frames, so batch 1); temporal blocks: one per frame
    # position (diffusers fixes their dim). Chunking over tokens instead would multiply calls by the token count.
    assert spatial and plain_rows == {8} and set(rows) == {1} and len(rows) == 8 * plain_calls
    assert np.array_equal(plain.frames, chunked.frames)


def test_sweep_over_seeds_alone_has_a_response(tiny_sampler, base, input_png, tmp_path):
    """A comparison of seeds only (Compare's 'seed' knob) has no other knob: its response is per seed."""
    from svd_core.sweep import response_table

    res = run_sweep(tiny_sampler, input_png, grid_cells(base.replace(num_inference_steps=1), {"seed": [1, 2]}),
                    out_dir=tmp_path)
    assert Image.open(res.path / "response.png").size[0] > 0
    rows = response_table(res.path)
    assert sorted({r["seed"] for r in rows}) == [1, 2] and all(r["n"] == 1 for r in rows)
