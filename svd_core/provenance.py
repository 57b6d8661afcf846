"""Videos that reproduce themselves: the run's record (params, seed, checkpoint name and sha256, the sampled
image's pixel hash) goes into every mp4 we write as its `comment` tag, and comes back out of a dropped file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .video import UPLOADED, VideoError, read_tags

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


def read_video_record(source) -> dict:
    """The run record embedded in one of our mp4s (a path or the file's bytes). Raises VideoError naming the
    file when it is unreadable or carries no record."""
    tags = read_tags(source)
    name = UPLOADED if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).name
    try:
        record = json.loads(tags.get("comment", ""))
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or RECORD_KEY not in record:
        raise VideoError(f"{name} carries no SVD Studio record (only mp4s written by SVD Studio do)")
    from .runs import validate_record

    return validate_record(record, name)
