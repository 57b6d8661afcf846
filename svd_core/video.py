"""All video I/O: frames (uint8 array (F, H, W, 3)) to files, files to frames, and the run record a container
carries in its `comment` tag.

Writing (our own frames): mp4 is H.264, yuv420p, +faststart through imageio-ffmpeg's bundled ffmpeg (it plays in
Chromium, Firefox and Safari; odd sizes are padded to even, never resized); GIF, animated WebP and the frames zip
through Pillow.

Reading (a stranger's file, a path or bytes): in-process, no external program. GIF and WebP go to Pillow with only
that decoder allowed; mp4/mov, WebM/Matroska and AVI go to PyAV with the demuxer their magic bytes name, so
FFmpeg never probes for another format (playlists, concat lists). Every failure is one VideoError naming the file.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tempfile
import zipfile
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from .errors import SVDError
from .record import finite

MAX_SIDE = 8192  # the largest frame H.264 has a level for (8K); a header that claims more is refused unread
MAX_BYTES = 4 << 30  # decoded frames held in memory at most (a 25-frame 4K clip is 0.6 GB)
UPLOADED = "the uploaded video"  # how bytes without a file name are named in errors


class VideoError(SVDError):
    """A video file cannot be read."""


# --------------------------------------------------------------------------------------------------- writing

def check_frames(frames) -> np.ndarray:
    a = np.asarray(frames)
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8 or len(a) == 0:
        raise ValueError(f"frames must be a non-empty uint8 array (F, H, W, 3), got {a.dtype} {a.shape}")
    return a


def _even(a: np.ndarray) -> np.ndarray:
    pad_h, pad_w = a.shape[1] % 2, a.shape[2] % 2
    return np.pad(a, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge") if pad_h or pad_w else a


def _comment(metadata: dict) -> str:
    """The comment tag's text: the record as strict JSON (a NaN metric is null, as in run.json)."""
    return json.dumps(finite(metadata), separators=(",", ":"), sort_keys=True, allow_nan=False)


def _ffmetadata(text: str) -> str:
    """`text` as a value in FFmpeg's ffmetadata file: '=', ';', '#', '\\' and newlines behind a backslash."""
    return re.sub(r"([=;#\\\n])", r"\\\1", text)


def to_mp4(frames, fps: float, crf: int = 18, metadata: dict | None = None, workdir=None) -> bytes:
    """`metadata`: a run record to embed as the file's comment tag (`read_tags` reads it back); it reaches ffmpeg
    as an ffmetadata file, so its size is not bounded by the system's limit on one command-line argument.
    `workdir`: where ffmpeg's scratch files go (a run's own temporary folder, removed with it after a kill);
    default the system's temporary folder."""
    a = _even(check_frames(frames))
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path, tags = os.path.join(tmp, "video.mp4"), []
        if metadata:
            tags_path = os.path.join(tmp, "tags.txt")
            with open(tags_path, "w", encoding="utf-8") as f:
                f.write(";FFMETADATA1\ncomment=" + _ffmetadata(_comment(metadata)) + "\n")
            tags = ["-f", "ffmetadata", "-i", tags_path, "-map", "0:v", "-map_metadata", "1"]
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-f", "rawvideo", "-vcodec", "rawvideo",
               "-s", f"{a.shape[2]}x{a.shape[1]}", "-pix_fmt", "rgb24", "-r", str(Fraction(fps).limit_denominator()),
               "-i", "-", *tags, "-an", "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-v", "error",
               "-crf", str(crf), "-movflags", "+faststart", "-preset", "medium", path]
        with open(os.path.join(tmp, "ffmpeg.log"), "w+b") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
            try:
                for frame in a:
                    proc.stdin.write(np.ascontiguousarray(frame).data)
            except BrokenPipeError:
                pass  # ffmpeg stopped: its log says why
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
                rc = proc.wait()
            if rc != 0:
                log.seek(0)
                lines = log.read().decode(errors="replace").strip().splitlines()
                raise OSError(f"ffmpeg could not write the mp4 ({lines[-1] if lines else f'exit status {rc}'})")
        with open(path, "rb") as f:
            return f.read()


def to_gif(frames, fps: float) -> bytes:
    imgs = [Image.fromarray(f) for f in check_frames(frames)]
    buf = io.BytesIO()
    imgs[0].save(buf, "GIF", save_all=True, append_images=imgs[1:], duration=round(1000 / fps), loop=0,
                 optimize=False, disposal=2)
    return buf.getvalue()


def to_webp(frames, fps: float, quality: int = 90) -> bytes:
    imgs = [Image.fromarray(f) for f in check_frames(frames)]
    buf = io.BytesIO()
    imgs[0].save(buf, "WEBP", save_all=True, append_images=imgs[1:], duration=round(1000 / fps), loop=0,
                 quality=quality)
    return buf.getvalue()


def to_png(frame, compress_level: int = 6) -> bytes:
    """One uint8 (H, W, 3) frame as PNG; `compress_level` 0-9 trades size for speed (zlib's, Pillow's default 6)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(frame)).save(buf, "PNG", compress_level=compress_level)
    return buf.getvalue()


def to_frames_zip(frames) -> bytes:
    a = check_frames(frames)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for i, frame in enumerate(a):
            z.writestr(f"frame_{i:04d}.png", to_png(frame))
    return buf.getvalue()


EXPORTERS = {"mp4": to_mp4, "gif": to_gif, "webp": to_webp, "zip": lambda frames, fps: to_frames_zip(frames)}


def export_frames(frames, fmt: str, fps: float, metadata: dict | None = None, workdir=None) -> bytes:
    """`metadata` (a run record) is embedded where the format has a place for it (mp4); `workdir`: see to_mp4."""
    if fmt not in EXPORTERS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(EXPORTERS)}")
    if fmt == "mp4":
        return to_mp4(frames, fps, metadata=metadata, workdir=workdir)
    return EXPORTERS[fmt](frames, fps)


# --------------------------------------------------------------------------------------------------- reading

def _source(source) -> tuple[object, str, bytes]:
    """(what to open: a path or a BytesIO, the name errors give, the first 16 bytes)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return io.BytesIO(data), UPLOADED, data[:16]
    path = Path(source)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise VideoError(f"{path} is not readable ({e.strerror or e})") from None
    return path, str(path), head


def _kind(head: bytes) -> str | None:
    """The reader the magic bytes name: 'gif' or 'webp' (Pillow), else a PyAV demuxer; None: not a video."""
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # also WebM
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "mov"  # mp4, mov, m4v
    return None


def _not_a_video(name: str) -> VideoError:
    return VideoError(f"{name} is not a readable video (SVD Studio reads mp4, mov, WebM, mkv, AVI, GIF and "
                      "animated WebP)")


def _unreadable(name: str, e: Exception, what: str = "video") -> VideoError:
    text = str(getattr(e, "strerror", None) or e).strip()  # FFmpeg's errors: the message without its number
    text = text.splitlines()[0] if text else type(e).__name__
    return VideoError(f"{name} is not a readable {what} ({text[:160]})")


def _check_size(name: str, width: int, height: int) -> None:
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise VideoError(f"{name} says its frames are {width}x{height}: SVD Studio reads videos up to "
                         f"{MAX_SIDE} pixels a side")


def _add_frame(frames: list, frame: np.ndarray, name: str) -> None:
    if frames and frame.shape != frames[0].shape:
        raise VideoError(f"{name} changes its frame size from {frames[0].shape[1]}x{frames[0].shape[0]} to "
                         f"{frame.shape[1]}x{frame.shape[0]} mid-stream")
    if (len(frames) + 1) * frame.nbytes > MAX_BYTES:
        raise VideoError(f"{name} is too long to hold in memory ({len(frames)} frames of {frame.shape[1]}x"
                         f"{frame.shape[0]} make {MAX_BYTES >> 30} GB): cut a shorter clip")
    frames.append(frame)


def _enough(frames: list, name: str) -> np.ndarray:
    """The frames as one array, moved out of `frames` one at a time: each frame is freed once copied and the
    array's memory is committed by the OS as it is written, so reading holds about one copy of the video (up to
    MAX_BYTES), not the list and the array at once."""
    if len(frames) < 2:
        raise VideoError(f"{name} has {len(frames)} frame(s): a video needs at least 2")
    out = np.empty((len(frames), *frames[0].shape), frames[0].dtype)
    for i in range(len(frames)):
        out[i], frames[i] = frames[i], None
    return out


def read_video(source) -> tuple[np.ndarray, float]:
    """Frames (uint8 (F, H, W, 3)) and frame rate of a video file (mp4, mov, WebM, mkv, AVI, GIF, animated WebP)
    or its bytes. Raises VideoError with one line naming the file."""
    src, name, head = _source(source)
    kind = _kind(head)
    if kind is None:
        raise _not_a_video(name)
    if kind in ("gif", "webp"):
        return _read_pillow(src, kind, name)
    return _read_av(src, kind, name)


def _read_pillow(src, kind: str, name: str) -> tuple[np.ndarray, float]:
    frames, durations = [], []
    try:
        with Image.open(src, formats=[kind.upper()]) as img:  # what the magic said: no other decoder
            _check_size(name, *img.size)
            for f in ImageSequence.Iterator(img):
                _add_frame(frames, np.asarray(f.convert("RGB")), name)
                durations.append(f.info.get("duration") or 100)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, EOFError) as e:
        raise _unreadable(name, e) from None
    return _enough(frames, name), 1000.0 / float(np.mean(durations))


@contextmanager
def _container(src, kind: str, name: str):
    """The PyAV container of `src` (a path, opened here as a plain file: its name is never parsed as an FFmpeg
    URL, or a BytesIO) with the demuxer `kind`."""
    import av

    f = open(src, "rb") if isinstance(src, Path) else src  # closed below, not by PyAV
    try:
        try:
            container = av.open(f, format=kind, metadata_errors="replace")
        except (av.FFmpegError, OSError, ValueError, EOFError) as e:
            raise _unreadable(name, e) from None
        with container:
            yield container
    finally:
        if f is not src:
            f.close()


def _read_av(src, kind: str, name: str) -> tuple[np.ndarray, float]:
    import av

    frames = []
    with _container(src, kind, name) as container:
        if not container.streams.video:
            raise VideoError(f"{name} holds no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise VideoError(f"{name} is not a readable video (no decoder for its video stream)")
        width, height = stream.codec_context.width, stream.codec_context.height
        if width > MAX_SIDE or height > MAX_SIDE:  # what the header says, before a frame is decoded
            _check_size(name, width, height)
        stream.thread_type = "AUTO"  # frame and slice threads: a long 1080p clip decodes on every core
        try:
            for frame in container.decode(stream):
                _check_size(name, frame.width, frame.height)
                _add_frame(frames, frame.to_ndarray(format="rgb24"), name)
        except (av.FFmpegError, OSError, ValueError, EOFError) as e:
            raise _unreadable(name, e) from None
        expected, rate = stream.frames, stream.average_rate or stream.guessed_rate
    if expected and len(frames) < expected:
        raise VideoError(f"{name} is truncated: {len(frames)} of its {expected} frames decode")
    out = _enough(frames, name)
    if not rate or not float(rate) > 0:
        raise VideoError(f"{name} has no frame rate in its header")
    return out, float(rate)


def read_tags(source) -> dict[str, str]:
    """The container's global tags (lower-case keys: `comment` carries our run record) of a video file or its
    bytes, read in-process. Raises VideoError naming the file when it is not a readable video."""
    src, name, head = _source(source)
    kind = _kind(head)
    if kind is None:
        raise _not_a_video(name)
    if kind in ("gif", "webp"):
        return {}  # we write no tags into these
    with _container(src, kind, name) as container:
        return {k.lower(): v for k, v in container.metadata.items()}


def read_frames_zip(path) -> np.ndarray:
    """The frames of a frames zip (`to_frames_zip`: one PNG per frame, in name order)."""
    path = Path(path)
    frames = []
    try:
        with zipfile.ZipFile(path) as z:
            for info in sorted(z.infolist(), key=lambda i: i.filename):
                if info.file_size > MAX_BYTES:
                    raise VideoError(f"{path} holds {info.filename} of {info.file_size} bytes: not a frames zip")
                with Image.open(io.BytesIO(z.read(info)), formats=["PNG"]) as img:
                    _check_size(f"{path} ({info.filename})", *img.size)
                    _add_frame(frames, np.asarray(img.convert("RGB")), str(path))
    # RuntimeError: an encrypted entry; NotImplementedError: an unknown compression method
    except (zipfile.BadZipFile, zipfile.LargeZipFile, Image.DecompressionBombError, OSError, ValueError, EOFError,
            RuntimeError, NotImplementedError) as e:
        raise _unreadable(str(path), e, "frames zip") from None
    return _enough(frames, str(path))
