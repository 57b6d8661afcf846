"""Videos that reproduce themselves: the run's record (params, seed, checkpoint name and sha256, the sampled
image's pixel hash) goes into every mp4 we write as its `comment` tag, and comes back out of a dropped file."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .metrics import VideoError

RECORD_KEY = "svd_studio"  # marks our JSON inside the comment tag; its value is the record format's version
RECORD_VERSION = 1


def image_sha256(image) -> str:
    """sha256 of an image's pixels (PIL or array) with its shape: the same sampled image, the same hash."""
    a = np.ascontiguousarray(np.asarray(image))
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()


def video_record(record: dict) -> dict:
    """What a video carries of its run.json: enough to rerun it."""
    ck = record.get("checkpoint", {})
    return {RECORD_KEY: RECORD_VERSION, "created": record.get("created"), "params": record["params"],
            "seed": record["params"]["seed"],
            "checkpoint": {k: ck.get(k) for k in ("file", "variant", "sha256")},
            "input_pixels_sha256": record.get("input_pixels_sha256"), "fps": record.get("fps"),
            "device": record.get("device"), "dtype": record.get("dtype"),
            "save_trajectory": bool(record.get("save_trajectory"))}


def metadata_args(record: dict | None) -> list[str]:
    """ffmpeg output arguments that embed `record`."""
    if not record:
        return []
    from .runs import finite  # strict JSON: a NaN metric is null, as in run.json

    return ["-metadata", "comment=" + json.dumps(finite(record), separators=(",", ":"), sort_keys=True,
                                                 allow_nan=False)]


def _unescape(value: str) -> str:
    out, it = [], iter(value)
    for ch in it:
        out.append(next(it, "") if ch == "\\" else ch)
    return "".join(out)


def _tags(path: Path) -> dict[str, str]:
    import imageio_ffmpeg

    r = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                       capture_output=True, timeout=60)
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip().splitlines()
        raise VideoError(f"{path.name} is not a readable video ({(err[-1] if err else 'ffmpeg failed')[:160]})")
    tags = {}
    for line in r.stdout.decode(errors="replace").splitlines()[1:]:
        if line.startswith("[") or line.startswith(";"):  # a stream/chapter section: the global tags are done
            break
        key, sep, value = line.partition("=")
        if sep:
            tags[key.lower()] = _unescape(value)
    return tags


def read_video_record(source) -> dict:
    """The run record embedded in one of our mp4s (a path or the file's bytes). Raises VideoError naming the
    file when it is unreadable or carries no record."""
    if isinstance(source, (bytes, bytearray)):
        with tempfile.NamedTemporaryFile(suffix=".mp4") as tmp:
            tmp.write(source)
            tmp.flush()
            return _record_from(Path(tmp.name), "the uploaded video")
    path = Path(source)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    return _record_from(path, path.name)


def _record_from(path: Path, name: str) -> dict:
    try:
        tags = _tags(path)
    except VideoError as e:
        raise VideoError(str(e).replace(path.name, name, 1)) from None
    try:
        record = json.loads(tags.get("comment", ""))
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or RECORD_KEY not in record:
        raise VideoError(f"{name} carries no SVD Studio record (only mp4s written by SVD Studio do)")
    from .runs import validate_record

    return validate_record(record, name)
