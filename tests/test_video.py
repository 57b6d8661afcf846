"""svd_core.video: frames to mp4/GIF/WebP/zip and back, the record in an mp4's comment tag, and every way a
stranger's file can fail to be a video: one VideoError line naming the file, no external program started; a run's
mp4 redone by `--from` to identical frames."""

import io
import json
import struct
import subprocess
import zipfile
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from svd_core import export_frames, read_video, read_video_record
from svd_core import video as svd_video
from svd_core.video import VideoError, read_frames_zip, read_tags, to_frames_zip, to_gif, to_mp4, to_webp

from .helpers import cli


def _frames(n=5, h=48, w=64):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8)


def _smooth(n=6, h=48, w=64):
    """Frames an encoder keeps close: a gradient that brightens frame by frame."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([np.stack([x * 3 % 256, y * 4 % 256, np.full_like(x, 20 * t)], -1) for t in range(n)]
                    ).astype(np.uint8)


@pytest.fixture
def no_subprocess(monkeypatch):
    """Call it once the test's own files are written: from then on every subprocess start is recorded and
    refused (reading a stranger's file runs no program); it returns the record."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args[:1])
        raise AssertionError("subprocess.Popen was reached")

    def arm():
        monkeypatch.setattr(subprocess, "Popen", refuse)
        return calls
    return arm


# --------------------------------------------------------------------------------------------------- writing

def test_mp4_is_h264_yuv420p_with_all_frames(tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(to_mp4(_frames(7, 50, 66), fps=7))  # odd-ish sizes are padded to even
    meta = next(imageio_ffmpeg.read_frames(str(path)))
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p") and meta["size"] == (66, 50)
    assert imageio_ffmpeg.count_frames_and_secs(str(path))[0] == 7
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # faststart: playable while downloading


def test_gif_webp_zip():
    f = _frames(4)
    gif = Image.open(io.BytesIO(export_frames(f, "gif", 8)))
    assert gif.n_frames == 4
    webp = Image.open(io.BytesIO(export_frames(f, "webp", 8)))
    assert webp.n_frames == 4
    with zipfile.ZipFile(io.BytesIO(export_frames(f, "zip", 8))) as z:
        assert len(z.namelist()) == 4
    with pytest.raises(ValueError, match="valid: mp4, gif, webp, zip"):
        export_frames(f, "avi", 8)


# --------------------------------------------------------------------------------------------------- reading

@pytest.mark.parametrize("fps", [7, 7.5, 24])
def test_mp4_reads_back_from_path_and_bytes(tmp_path, fps, no_subprocess):
    frames = _smooth()
    path = tmp_path / "v.mp4"
    path.write_bytes(to_mp4(frames, fps))
    calls = no_subprocess()
    for source in (path, str(path), path.read_bytes()):
        got, got_fps = read_video(source)
        assert got.shape == frames.shape and got.dtype == np.uint8 and got_fps == fps
        assert np.abs(got.astype(int) - frames).mean() < 3  # H.264 at crf 18: close, not identical
    assert calls == []  # decoded in-process


def test_gif_webp_and_zip_read_back(tmp_path):
    frames = _smooth(4)
    for name, data, fps in (("v.gif", to_gif(frames, 10), 10.0), ("v.webp", to_webp(frames, 5), 5.0)):
        (tmp_path / name).write_bytes(data)
        got, got_fps = read_video(tmp_path / name)
        assert got.shape == frames.shape and got_fps == pytest.approx(fps, rel=0.02), name
    (tmp_path / "frames.zip").write_bytes(to_frames_zip(frames))
    assert np.array_equal(read_frames_zip(tmp_path / "frames.zip"), frames)  # PNG: lossless


def test_record_tag_round_trips_any_text(tmp_path, no_subprocess):
    """The comment carries strict JSON; characters FFmpeg's metadata syntax escapes come back unchanged."""
    record = {"svd_studio": 1, "note": "a=b; #c \\ d\nline two · é ✓", "metric": float("nan")}
    path = tmp_path / "v.mp4"
    path.write_bytes(to_mp4(_frames(2, 16, 16), 8, metadata=record))
    calls = no_subprocess()
    for source in (path, path.read_bytes()):
        assert json.loads(read_tags(source)["comment"]) == {**record, "metric": None}
    assert calls == []


def test_foreign_and_broken_videos_have_no_record(tmp_path):
    plain = tmp_path / "plain.mp4"
    plain.write_bytes(to_mp4(_smooth(3), 7))
    with pytest.raises(VideoError, match="plain.mp4 carries no SVD Studio record"):
        read_video_record(plain)
    with pytest.raises(VideoError, match="the uploaded video is not a readable video"):
        read_video_record(b"not a video at all")
    gif = tmp_path / "clip.gif"
    gif.write_bytes(to_gif(_smooth(3), 7))
    with pytest.raises(VideoError, match="clip.gif carries no SVD Studio record"):
        read_video_record(gif)


# ---------------------------------------------------------------------------------------- hostile files

def _gif_header_only(w, h) -> bytes:
    """A GIF whose screen descriptor claims w x h, with one 1x1 image."""
    return (b"GIF89a" + struct.pack("<HHBBB", w, h, 0, 0, 0) + b",\0\0\0\0\1\0\1\0\0" + b"\2\2\x4c\x01\0" + b";")


def _big_mkv(path, w, h):
    import av

    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("ffv1", rate=4)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for _ in range(2):
            frame = av.VideoFrame.from_ndarray(np.zeros((h, w, 3), np.uint8), format="rgb24").reformat(
                format="yuv420p")
            c.mux(s.encode(frame))
        c.mux(s.encode(None))


HOSTILE = {
    "garbage.mp4": lambda: b"\x00\x01 not a video " * 50,
    "text.mp4": lambda: b"just some text, named like a video\n" * 20,
    "empty.webm": lambda: b"",
    "text.gif": lambda: b"GIF89a but nothing else",
    "one_frame.gif": lambda: (lambda b: (Image.new("RGB", (8, 8)).save(b, "GIF"), b.getvalue())[1])(io.BytesIO()),
    "bomb.gif": lambda: _gif_header_only(65535, 65535),
    "wide.gif": lambda: to_gif(np.arange(2, dtype=np.uint8)[:, None, None, None].repeat(2, 1).repeat(
        svd_video.MAX_SIDE + 8, 2).repeat(3, 3) * 200, 8),
    "playlist.mp4": lambda: b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
    "concat.mp4": lambda: b"ffconcat version 1.0\nfile /etc/passwd\n",
    "truncated.mp4": lambda: to_mp4(_frames(8), 7)[:600],
    "half.mp4": lambda: (lambda d: d[:len(d) // 2])(to_mp4(_frames(8), 7)),
    "tail_cut.mp4": lambda: (lambda d: d[:-100])(to_mp4(_frames(8), 7)),
}


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize("as_bytes", [False, True])
def test_hostile_videos_are_one_video_error(tmp_path, name, as_bytes, no_subprocess):
    data = HOSTILE[name]()
    path = tmp_path / name
    path.write_bytes(data)
    calls = no_subprocess()
    with pytest.raises(VideoError) as e:
        read_video(data if as_bytes else path)
    message = str(e.value)
    assert "\n" not in message and (svd_video.UPLOADED if as_bytes else name) in message, message
    if name.endswith(".mp4"):
        with pytest.raises(VideoError) as e:
            read_video_record(data if as_bytes else path)
        assert "\n" not in str(e.value) and (svd_video.UPLOADED if as_bytes else name) in str(e.value)
    assert calls == []


def test_huge_frames_are_refused_from_the_header(tmp_path):
    path = tmp_path / "wide.mkv"
    _big_mkv(path, svd_video.MAX_SIDE + 16, 16)
    with pytest.raises(VideoError, match=rf"wide.mkv says its frames are {svd_video.MAX_SIDE + 16}x16"):
        read_video(path)


def test_a_video_too_long_for_memory_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "long.mp4"
    path.write_bytes(to_mp4(_frames(8, 16, 16), 8))
    monkeypatch.setattr(svd_video, "MAX_BYTES", 16 * 16 * 3 * 5)
    with pytest.raises(VideoError, match="long.mp4 is too long to hold in memory"):
        read_video(path)


def test_broken_frames_zips(tmp_path, no_subprocess):
    calls = no_subprocess()
    bad = tmp_path / "frames.zip"
    bad.write_bytes(b"PK\3\4 not really")
    with pytest.raises(VideoError, match="frames.zip is not a readable frames zip"):
        read_frames_zip(bad)
    eps = tmp_path / "eps.zip"
    with zipfile.ZipFile(eps, "w") as z:
        z.writestr("frame_0000.png", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n")
        z.writestr("frame_0001.png", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n")
    with pytest.raises(VideoError, match="eps.zip is not a readable frames zip"):
        read_frames_zip(eps)
    assert calls == []


def _patched_zip(data: bytes, flags: int = 0, method: int | None = None) -> bytes:
    """`data` (a zip) with `flags` set in every entry's general-purpose bits and, given, its compression method
    replaced: in each local header (flags at +6, method at +8) and central directory entry (+8, +10)."""
    out = bytearray(data)
    for signature, at in ((b"PK\3\4", 6), (b"PK\1\2", 8)):
        i = out.find(signature)
        while i >= 0:
            bits = struct.unpack_from("<H", out, i + at)[0] | flags
            struct.pack_into("<H", out, i + at, bits)
            if method is not None:
                struct.pack_into("<H", out, i + at + 2, method)
            i = out.find(signature, i + 4)
    return bytes(out)


@pytest.mark.parametrize("case", ["encrypted", "unknown compression"])
def test_frames_zip_with_an_entry_zipfile_cannot_read_is_one_video_error(tmp_path, case, no_subprocess):
    """An encrypted entry (zipfile: RuntimeError) or an unknown compression method (NotImplementedError)."""
    good = to_frames_zip(_frames(2, 16, 16))
    path = tmp_path / "frames.zip"
    path.write_bytes(_patched_zip(good, flags=1) if case == "encrypted" else _patched_zip(good, method=99))
    with zipfile.ZipFile(path) as z:  # the zip itself opens: only reading an entry fails
        assert len(z.infolist()) == 2
    with pytest.raises(VideoError) as e:
        read_frames_zip(path)
    assert str(e.value).startswith(f"{path} is not a readable frames zip (") and "\n" not in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["garbage.mp4", "empty.webm", "text.gif", "one_frame.gif", "truncated.mp4",
                                  "bomb.gif", "playlist.mp4"])
def test_measure_cli_broken_files_one_line(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(HOSTILE[name]())
    r = cli("measure", path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and name in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_measure_cli_missing_file(tmp_path):
    r = cli("measure", tmp_path / "nope.mp4")
    assert r.returncode == 2 and "nope.mp4: no such file" in r.stderr


def test_a_comment_that_is_not_utf8_is_read_not_a_crash(tmp_path):
    data = to_mp4(_frames(2, 16, 16), 8, metadata={"svd_studio": 1, "note": "XYZ"})
    assert data.count(b"XYZ") == 1
    path = tmp_path / "latin.mp4"
    path.write_bytes(data.replace(b"XYZ", b"X\xffZ"))  # same length: the file stays well-formed
    assert json.loads(read_tags(path)["comment"])["note"] == "X\ufffdZ"
    with pytest.raises(ValueError, match="latin.mp4 is not a run record"):  # one line, as any malformed record
        read_video_record(path)


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


def test_a_record_larger_than_one_command_line_argument_round_trips(tmp_path):
    """Linux limits one argument to 128 KiB: a sweep's record of many cells is larger, and still written."""
    from svd_core import SamplingParams, read_video_record

    cells = [{"run": f"cell-{i:03d}", "label": f"max_guidance_scale={i} = ; # \\ x",
              "params": SamplingParams(seed=i).to_dict(), "pad": "x" * 600} for i in range(200)]
    record = {"svd_studio": 1, "kind": "sweep", "params": SamplingParams().to_dict(), "seed": 0,
              "checkpoint": {"file": "svd.safetensors"}, "varied": ["max_guidance_scale"], "cells": cells}
    assert len(json.dumps(record)) > 140_000
    path = tmp_path / "grid.mp4"
    path.write_bytes(to_mp4(_frames(2, 16, 16), 8, metadata=record))
    assert json.loads(read_tags(path)["comment"]) == record
    assert [c["run"] for c in read_video_record(path).cells] == [c["run"] for c in cells]


def test_decoded_frames_are_freed_as_they_are_gathered():
    """Reading never holds the decoded frames twice (a list and the stacked array): each frame is released as
    it is copied into the video's array."""
    import weakref

    from svd_core.video import _enough

    frames = list(_frames(4, 8, 8))
    frames = [f.copy() for f in frames]  # each its own buffer, referenced only by the list
    alive = [weakref.ref(f) for f in frames]
    expected = np.stack(frames)
    out = _enough(frames, "v.mp4")
    assert np.array_equal(out, expected)
    assert all(r() is None for r in alive) and frames == [None] * 4
