"""The instrument: metrics on synthetic videos of known motion, likeness with the tiny model's encoder, `measure`
on videos and run folders."""

import json

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from svd_core import read_video, save_run
from svd_core.metrics import Likeness, measure_frames, score_indices
from svd_core.video import to_gif, to_mp4

from .helpers import SMALL, cli


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


