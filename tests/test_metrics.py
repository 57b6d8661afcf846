"""The instrument: metrics on synthetic videos of known motion, likeness with the tiny model's encoder, training
warnings, the fps vocabulary, mp4s that carry their record, the grid layout, `measure` on videos and run folders."""

import io
import itertools
import json
import zipfile
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from svd_core import SamplingParams, get_variant, read_video, read_video_record, save_run
from svd_core.conditioning import describe_fps, fps_vocabulary, is_untrained, training_warnings
from svd_core.grid import BG, _font, _text_w, grid_frames, grid_layout, plan_grid
from svd_core.metrics import Likeness, measure_frames, score_indices
from svd_core.video import to_gif, to_mp4

from .helpers import cli

SMALL = dict(width=64, height=64, num_frames=4, num_inference_steps=2, decode_chunk_size=4)


def texture(h, w, seed=0, sigma=2.0):
    rng = np.random.default_rng(seed)
    a = cv2.GaussianBlur(rng.normal(size=(h, w, 3)), (0, 0), sigma)
    return np.clip((a - a.mean()) / a.std() * 50 + 128, 0, 255).astype(np.uint8)


def shifted(k, n=8, h=72, w=96, seed=0):
    """A textured image moving right by k px per frame: a window sliding over a wider texture."""
    big = texture(h, w + k * n + 1, seed)
    return np.stack([big[:, k * n - k * t: k * n - k * t + w] for t in range(n)])


# ---------------------------------------------------------------------------------------------- motion, flicker

@pytest.mark.parametrize("k", [1, 2, 4])
def test_known_shift_gives_k_pixels_per_frame(k):
    m = measure_frames(shifted(k), fps=2.0)  # at 2 fps every frame is a score frame
    assert m["motion"]["flow_px_per_frame"] == pytest.approx(k, rel=0.05)
    assert m["motion"]["per_frame"] == pytest.approx([k] * 7, rel=0.08)
    assert m["motion"]["score"] == pytest.approx(k, rel=0.05)
    assert (m["frames"], m["width"], m["height"], m["fps"]) == (8, 96, 72, 2.0)


def test_score_is_per_half_second_at_the_time_base():
    v = shifted(1, n=9)
    assert score_indices(9, 8.0) == [0, 4, 8]
    assert score_indices(25, 7.0) == [0, 4, 7, 11, 14, 18, 21, 25][:7]  # nearest frame to each 0.5 s
    m8 = measure_frames(v, fps=8.0)  # 2 fps = every 4th frame: 4 px between score frames
    assert m8["motion"]["score"] == pytest.approx(4, rel=0.08)
    assert m8["motion"]["flow_px_per_frame"] == pytest.approx(1, rel=0.05)  # not per 0.5 s
    assert m8["time_base"]["score_frames"] == [0, 4, 8] and m8["time_base"]["kind"] == "file"
    short = measure_frames(v[:3], fps=8.0)  # 0.25 s: no pair half a second apart
    assert short["motion"]["score"] is None and "0.5 s" in short["motion"]["score_note"]


def test_large_frames_are_measured_in_their_own_pixels():
    """Frames above the flow working size are measured downscaled; vectors come back in full-size pixels."""
    big = texture(360, 640 + 3 * 6 + 1, sigma=3.0)
    v = np.stack([big[:, 18 - 3 * t: 18 - 3 * t + 640] for t in range(6)])
    m = measure_frames(v, fps=2.0)
    assert m["time_base"]["flow_size"] == [512, 288]
    assert m["motion"]["flow_px_per_frame"] == pytest.approx(3, rel=0.1)
    assert m["motion"]["score"] == pytest.approx(3, rel=0.1)


def test_still_video_is_near_zero_and_noise_raises_flicker_not_motion():
    still = np.repeat(texture(72, 96)[None], 6, axis=0)
    m = measure_frames(still, fps=7.0)
    assert m["motion"]["flow_px_per_frame"] < 0.01 and m["flicker"]["mean"] < 0.1  # grey levels of 255
    clean = shifted(2, n=6)
    noisy = np.clip(clean + np.random.default_rng(1).normal(0, 8, clean.shape), 0, 255).astype(np.uint8)
    a, b = measure_frames(clean, fps=2.0), measure_frames(noisy, fps=2.0)
    assert b["flicker"]["mean"] > a["flicker"]["mean"] + 5  # ~8 grey levels of independent noise per frame
    assert b["motion"]["flow_px_per_frame"] == pytest.approx(2, rel=0.1)
    assert len(b["flicker"]["per_frame"]) == 5


def test_flicker_is_flow_compensated():
    """A moving image has large raw frame differences but almost no flicker once the flow is compensated."""
    v = shifted(3, n=5)
    raw = np.abs(v[1:].astype(float) - v[:-1]).mean()
    m = measure_frames(v, fps=2.0)
    assert raw > 10 and m["flicker"]["mean"] < raw / 5


def test_measure_frames_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2 frames"):
        measure_frames(np.zeros((1, 8, 8, 3), np.uint8), 7)
    with pytest.raises(ValueError, match="unknown time base 'wall'; valid: conditioning, file"):
        measure_frames(np.zeros((2, 8, 8, 3), np.uint8), 7, "wall")


# ------------------------------------------------------------------------------------------------- likeness

def test_likeness_with_the_pipelines_encoder(tiny_sampler, input_png):
    image = Image.open(input_png).convert("RGB")
    same = np.repeat(np.asarray(image)[None], 3, axis=0)
    other = np.stack([np.asarray(image)[::-1, ::-1], 255 - np.asarray(image), shifted(1, 1, 64, 64)[0]])
    like = Likeness(tiny_sampler.pipe)
    assert like(same, image) == pytest.approx([1.0] * 3, abs=1e-5)
    assert all(v < 0.9999 for v in like(other, image))


def test_every_run_is_measured_and_recorded(tiny_sampler, input_png, tmp_path):
    params = tiny_sampler.default_params(**SMALL, output_fps=12)
    result = tiny_sampler.generate(input_png, params)
    m = result.metrics
    assert m["time_base"] == {**m["time_base"], "kind": "conditioning", "fps": float(params.fps)}
    assert len(m["motion"]["per_frame"]) == 3 and len(m["likeness"]["per_frame"]) == 4
    assert result.timings["measure"] > 0
    path = save_run(result, tiny_sampler.info, tmp_path, formats=("mp4",))
    rec = json.loads((path / "run.json").read_text())
    assert rec["metrics"] == json.loads(json.dumps(m))
    assert rec["fps"] == {"conditioning_fps": params.fps, "fps_id": params.fps - 1, "playback_fps": 12}
    frames, fps = read_video(path / "video.mp4")
    assert fps == 12 and len(frames) == 4  # the file plays at the playback fps


# ------------------------------------------------------------------------------------------ training warnings

def _xt(**kw):
    return SamplingParams.for_variant("svd_xt", **kw)


def test_defaults_inside_training_warn_nothing():
    assert training_warnings(_xt(), "svd_xt") == []
    assert training_warnings(_xt(width=576, height=1024), "svd_xt") == []
    assert training_warnings(SamplingParams.for_variant("svd"), "svd") == []
    assert training_warnings(SamplingParams.for_variant("svd_xt_1_1"), "svd_xt_1_1") == []


@pytest.mark.parametrize("change, variant, needle", [
    (dict(motion_bucket_id=256), "svd_xt", "motion_bucket_id 256 is above the trained 0-255"),
    (dict(fps=5), "svd_xt", "fps 5 is fps_id 4, outside the trained fps_id 5-30"),
    (dict(fps=32), "svd_xt", "fps 32 is fps_id 31"),
    (dict(noise_aug_strength=0.0), "svd_xt", "noise_aug_strength 0 is outside the training spread 0.018-0.135"),
    (dict(noise_aug_strength=3.0), "svd_xt", "noise_aug_strength 3 is outside"),
    (dict(width=768, height=768), "svd_xt", "768x768 is not a trained size (1024x576 or 576x1024)"),
    (dict(num_frames=14, decode_chunk_size=14), "svd_xt", "14 frames: svd_xt was trained on 25"),
    (dict(fps=8), "svd_xt_1_1", "trained at fps 7 (Stability's fps_id 6) and motion_bucket_id 127 only"),
    (dict(motion_bucket_id=200), "svd_xt_1_1", "motion_bucket_id 127 only"),
])
def test_each_training_warning(change, variant, needle):
    params = SamplingParams.for_variant(variant, **change)
    warnings = training_warnings(params, variant)
    assert len(warnings) == 1 and needle in warnings[0], warnings


def test_boundaries_and_demo_model():
    assert training_warnings(_xt(fps=6, motion_bucket_id=255), "svd_xt") == []  # fps_id 5, bucket 255: trained
    assert training_warnings(_xt(fps=31), "svd_xt") == []  # fps_id 30
    tiny = SamplingParams.for_variant("tiny")
    assert training_warnings(tiny, "tiny") == []  # 128x128, 6 frames: no size or frame warnings for the demo
    assert is_untrained("tiny") and is_untrained(get_variant("tiny_image_decoder")) and not is_untrained("svd_xt")
    # beyond the training range still samples: nothing blocks
    assert SamplingParams(motion_bucket_id=1023, fps=240, noise_aug_strength=10.0).motion_bucket_id == 1023


def test_fps_vocabulary():
    p = _xt(fps=7, output_fps=24)
    assert fps_vocabulary(p) == {"conditioning_fps": 7, "fps_id": 6, "playback_fps": 24}
    assert describe_fps(p) == "conditioning fps 7 (Stability's fps_id 6) · playback fps 24"


# ------------------------------------------------------------------------------------------ videos with records

def _zip_frames(path):
    with zipfile.ZipFile(path) as z:
        return np.stack([np.asarray(Image.open(io.BytesIO(z.read(n)))) for n in sorted(z.namelist())])


@pytest.mark.slow
def test_mp4_round_trip_to_identical_frames(tiny_checkpoint, input_png, tmp_path):
    out = tmp_path / "out"
    r = cli("sample", str(input_png), "-c", str(tiny_checkpoint), "--out", str(out), "--width", "64", "--height",
            "64", "--num-frames", "4", "--num-inference-steps", "2", "--seed", "7", "--motion-bucket-id", "300",
            "--format", "mp4,zip")
    assert r.returncode == 0, r.stderr
    first = Path(r.stdout.split()[0])
    assert "metrics: motion score" in r.stdout and "fps_id 6" in r.stdout and "meaningless" in r.stdout
    assert "motion_bucket_id 300 is above the trained 0-255" in r.stderr  # a warning, not a refusal
    rec = read_video_record(first / "video.mp4")
    assert rec.params.seed == 7 and rec.params.motion_bucket_id == 300
    assert rec.checkpoint == tiny_checkpoint.name and len(rec.sha256) == 64
    assert read_video_record((first / "video.mp4").read_bytes()) == rec
    # rerun from the mp4 alone (the image is given again): identical frames
    r = cli("sample", "--from", str(first / "video.mp4"), str(input_png), "-c", str(tiny_checkpoint), "--out",
            str(out), "--format", "zip")
    assert r.returncode == 0, r.stderr
    second = Path(r.stdout.split()[0])
    assert second != first and np.array_equal(_zip_frames(first / "frames.zip"), _zip_frames(second / "frames.zip"))
    # from a run.json: its folder's input.png is the image; the checkpoint is found by name in checkpoints/
    r = cli("sample", "--from", str(first / "run.json"), "--out", str(out), "--format", "zip",
            env={"SVD_CHECKPOINT_DIR": str(tiny_checkpoint.parent)})
    assert r.returncode == 0, r.stderr
    third = Path(r.stdout.split()[0])
    assert np.array_equal(_zip_frames(first / "frames.zip"), _zip_frames(third / "frames.zip"))
    # another image: a note says the frames will differ
    other = tmp_path / "other.png"
    Image.open(input_png).rotate(90).save(other)
    r = cli("sample", "--from", str(first / "video.mp4"), str(other), "-c", str(tiny_checkpoint), "--out",
            str(out), "--format", "zip")
    assert r.returncode == 0 and "not the image this run was sampled from" in r.stderr


# ---------------------------------------------------------------------------------------------------- measure

def _webm(frames, fps, path):
    w = imageio_ffmpeg.write_frames(str(path), (frames.shape[2], frames.shape[1]), fps=fps, codec="libvpx-vp9",
                                    quality=None, macro_block_size=1, ffmpeg_log_level="error",
                                    output_params=["-lossless", "1"])
    w.send(None)
    for f in frames:
        w.send(np.ascontiguousarray(f))
    w.close()


@pytest.mark.slow
def test_measure_cli_on_videos(tmp_path):
    v = shifted(2, n=8)
    (tmp_path / "a.gif").write_bytes(to_gif(v, 4))
    (tmp_path / "a.mp4").write_bytes(to_mp4(v, 4))
    _webm(v, 4, tmp_path / "a.webm")
    for name in ("a.gif", "a.mp4", "a.webm"):
        r = cli("measure", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
        m = json.loads(r.stdout)
        assert (m["frames"], m["fps"], m["width"], m["height"]) == (8, 4.0, 96, 72), name
        assert m["time_base"]["kind"] == "file"
        assert m["motion"]["flow_px_per_frame"] == pytest.approx(2, rel=0.15), name
        assert m["motion"]["score"] == pytest.approx(4, rel=0.15), name  # 2 frames per 0.5 s at 4 fps
        assert len(m["flicker"]["per_frame"]) == 7 and "likeness" not in m


@pytest.mark.slow
def test_measure_cli_run_folder_with_likeness(tiny_checkpoint, tiny_sampler, input_png, tmp_path):
    result = tiny_sampler.generate(input_png, tiny_sampler.default_params(**SMALL, fps=4))
    path = save_run(result, tiny_sampler.info, tmp_path, formats=("mp4",))
    r = cli("measure", str(path), "-c", str(tiny_checkpoint))
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["time_base"] == {**m["time_base"], "kind": "conditioning", "fps": 4.0}
    assert len(m["likeness"]["per_frame"]) == 4 and -1 <= m["likeness"]["mean"] <= 1


# --------------------------------------------------------------------------------------------------- the grid

def _two_knob_coords():
    return [{"motion_bucket_id": a, "noise_aug_strength": b} for a, b in itertools.product((32, 127, 255), (0.0, 0.1))]


def test_two_knob_grid_is_three_columns_by_two_rows():
    coords = _two_knob_coords()  # the order grid_cells makes: the second knob varies fastest
    layout = grid_layout(6, coords=coords)
    assert (layout.n_rows, layout.n_cols) == (2, 3)
    assert layout.positions == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
    assert (layout.col_title, layout.col_labels) == ("motion_bucket_id", ["32", "127", "255"])
    assert (layout.row_title, layout.row_labels) == ("noise_aug_strength", ["0", "0.1"])
    plan = plan_grid(layout, 96, 64)
    xs = sorted({x for x, _ in plan.tiles})
    ys = sorted({y for _, y in plan.tiles})
    assert len(xs) == 3 and len(ys) == 2
    assert plan.tiles[1] == (xs[0], ys[1]) and plan.tiles[4] == (xs[2], ys[0])


def test_seeds_are_a_further_row_axis():
    coords = [{"motion_bucket_id": a, "seed": s} for a in (0, 255) for s in (23, 24, 25)]
    layout = grid_layout(6, coords=coords)
    assert (layout.n_rows, layout.n_cols, layout.row_labels) == (3, 2, ["seed 23", "seed 24", "seed 25"])
    three = [{**c, "seed": s} for c in _two_knob_coords() for s in (1, 2)]
    layout = grid_layout(12, coords=three)
    assert (layout.n_rows, layout.n_cols) == (4, 3)
    assert layout.row_labels == ["0 · seed 1", "0 · seed 2", "0.1 · seed 1", "0.1 · seed 2"]


def _boxes_hold_all_text(img: np.ndarray, plan) -> None:
    """Every drawn pixel outside the tiles lies inside a text box, each box has text, and each line fits."""
    mask = np.zeros(img.shape[:2], bool)
    tw, th = plan.tile_size
    for x, y in plan.tiles:
        mask[y:y + th, x:x + tw] = True
    for t in plan.texts:
        x0, y0, x1, y1 = t.box
        assert 0 <= x0 < x1 <= img.shape[1] and 0 <= y0 < y1 <= img.shape[0], t
        assert all(_text_w(_font(t.size), line) <= x1 - x0 for line in t.lines), t
        assert (img[y0:y1, x0:x1] != BG).any(), f"nothing drawn for {t.lines}"
        mask[y0:y1, x0:x1] = True
    spill = (img != BG).any(axis=-1) & ~mask
    assert not spill.any(), f"text outside its box at {np.argwhere(spill)[:3]}"


@pytest.mark.parametrize("tile", [(96, 64), (40, 24), (1024, 576)])
def test_labels_fit_and_are_never_cut(tile):
    tw, th = tile
    coords = [{**c, "seed": s} for c in _two_knob_coords() for s in (23, 123456789)]
    videos = [np.zeros((2, th, tw, 3), np.uint8) for _ in coords]
    caption = "every cell plays at 7 fps"
    grid = grid_frames(videos, ["x"] * len(videos), coords=coords, caption=caption, max_side=100_000)
    layout = grid_layout(len(videos), coords=coords)
    plan = plan_grid(layout, tw, th, 4, caption)
    assert grid.shape[1:3] == (plan.height, plan.width)
    _boxes_hold_all_text(grid[0], plan)
    texts = [" ".join(t.lines) for t in plan.texts]
    assert {"32", "127", "255"} <= set(texts)
    if tw >= 200:  # room enough: nothing wrapped
        assert {"0.1 · seed 123456789", "motion_bucket_id", "noise_aug_strength", caption} <= set(texts)


def test_large_grids_are_scaled_to_play_in_browsers():
    videos = [np.zeros((2, 576, 1024, 3), np.uint8) for _ in range(6)]
    grid = grid_frames(videos, ["x"] * 6, coords=_two_knob_coords())
    assert max(grid.shape[1:3]) <= 4096 and grid.shape[2] > 2000


def test_wrapped_one_knob_grid_labels_each_tile():
    coords = [{"motion_bucket_id": v} for v in range(0, 800, 100)]
    layout = grid_layout(8, coords=coords)
    assert (layout.n_rows, layout.n_cols) == (2, 4) and layout.tile_labels[5] == "motion_bucket_id=500"
    plan = plan_grid(layout, 64, 48)
    img = Image.new("RGB", (plan.width, plan.height), BG)
    from svd_core.grid import _draw_texts

    _draw_texts(img, plan.texts)
    _boxes_hold_all_text(np.asarray(img), plan)


def test_contact_sheet_labels_fit(tmp_path):
    from svd_core.grid import contact_sheet

    coords = [{**c, "seed": 23} for c in _two_knob_coords()]
    videos = [np.zeros((5, 40, 60, 3), np.uint8) + 0 for _ in coords]
    sheet = np.asarray(contact_sheet(videos, ["x"] * 6, coords=coords, max_frames=3))
    # the label column is left of the frames and holds drawn text; frames are untouched (black here)
    frames_w = 3 * 60
    label_w = sheet.shape[1] - frames_w
    assert label_w >= 120 and (sheet[:, :label_w] != 0).any()


