"""Videos that reproduce themselves: the run's record (params, seed, checkpoint name and sha256, the sampled
image's pixel hash) goes into every mp4 we write as its `comment` tag, and comes back out of a dropped file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .record import RECORD_KEY, RunRecord
from .video import UPLOADED, VideoError, read_tags


def image_sha256(image) -> str:
    """sha256 of an image's pixels (PIL or array) with its shape: the same sampled image, the same hash."""
    a = np.ascontiguousarray(np.asarray(image))
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()


def read_video_record(source) -> RunRecord:
    """The run record embedded in one of our mp4s (a path or the file's bytes; RunRecord.for_video wrote it).
    Raises VideoError naming the file when it is unreadable or carries no record, RecordError when the record is
    malformed."""
    tags = read_tags(source)
    name = UPLOADED if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).name
    try:
        record = json.loads(tags.get("comment", ""))
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or RECORD_KEY not in record:
        raise VideoError(f"{name} carries no SVD Studio record (only mp4s written by SVD Studio do)")
    return RunRecord.from_json(record, name)
