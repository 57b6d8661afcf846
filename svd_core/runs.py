"""Run folders: outputs/<run id>/ with the video(s), the prepared input image, a poster and run.json.

A run is written into a hidden temporary folder and renamed into place only when complete, so a killed or
failed run never leaves a folder that looks like a run; `list_runs` only sees complete ones.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import export
from .checkpoints import CheckpointInfo, file_sha256
from .params import SamplingParams


def output_dir() -> Path:
    """outputs/ beside the package, or $SVD_OUTPUT_DIR."""
    return Path(os.environ.get("SVD_OUTPUT_DIR") or Path(__file__).resolve().parent.parent / "outputs")
RUN_FILE = "run.json"
TMP_PREFIX = ".tmp-"


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "diffusers", "transformers", "accelerate", "safetensors", "imageio-ffmpeg"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id(prefix: str = "") -> str:
    return f"{prefix}{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _tmp_name(name: str) -> str:
    """.tmp-<pid>-<name>: `clean_stale_temp` tells a dead writer's leftovers from a live one's by the pid."""
    return f"{TMP_PREFIX}{os.getpid()}-{name}"


def stage_folder(folder: Path, files: dict[str, bytes]) -> Path:
    """Write `files` into a hidden temporary sibling of `folder` and return it (see `commit_staged`)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / _tmp_name(folder.name)
    tmp.mkdir()
    try:
        for name, data in files.items():  # run.json comes last: it marks the run as complete
            (tmp / name).write_bytes(data)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def commit_staged(staged: list[tuple[Path, Path]]) -> list[Path]:
    """Rename every (temporary, final) pair into place: all or none (renames done are undone on failure; a kill
    between two renames, a window of microseconds, is the one gap)."""
    done = []
    try:
        for tmp, folder in staged:
            os.replace(tmp, folder)
            done.append(folder)
    except BaseException:
        for folder in done:
            shutil.rmtree(folder, ignore_errors=True)
        for tmp, _ in staged:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return done


def discard_staged(staged: list[tuple[Path, Path]]) -> None:
    for tmp, _ in staged:
        shutil.rmtree(tmp, ignore_errors=True)


def write_folder_atomically(folder: Path, files: dict[str, bytes]) -> Path:
    """Write `files` into a temporary sibling of `folder`, then rename it into place."""
    return commit_staged([(stage_folder(folder, files), folder)])[0]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def clean_stale_temp(out_dir=None, max_age_s: float = 24 * 3600) -> list[Path]:
    """Remove temporary folders left in `out_dir` by killed processes: those whose writer's pid is gone, and any
    older than `max_age_s` (a recycled pid, or an old name without a pid). A live writer's folder is kept.
    The CLI and the app call this at start. Returns what was removed."""
    out_dir = Path(out_dir or output_dir())
    if not out_dir.is_dir():
        return []
    removed, now = [], time.time()
    for p in out_dir.iterdir():
        if not p.name.startswith(TMP_PREFIX) or not p.is_dir():
            continue
        pid = p.name[len(TMP_PREFIX):].split("-", 1)[0]
        try:
            old = now - p.stat().st_mtime > max_age_s
        except OSError:
            continue
        dead = pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid))
        if dead or old:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def run_record(result, checkpoint: CheckpointInfo, files: list[str], extra: dict | None = None) -> dict:
    return {
        "created": utc_now(),
        "params": result.params.to_dict(),
        "seed": result.params.seed,
        "checkpoint": {"file": checkpoint.name, "variant": checkpoint.variant.name,
                       "sha256": file_sha256(checkpoint.path), "dtype": checkpoint.dtype},
        "device": result.device,
        "dtype": result.dtype,
        "memory_mode": result.memory_mode,
        "timings_s": {k: round(v, 4) for k, v in result.timings.items()},
        "frames": int(result.frames.shape[0]),
        "size": [int(result.frames.shape[2]), int(result.frames.shape[1])],
        "input": {"original_size": list(result.image.original_size)},
        "notes": list(result.notes),
        "versions": library_versions(),
        "files": files,
        **(extra or {}),
    }


def save_run(result, checkpoint: CheckpointInfo, out_dir=None, formats=("mp4",), run_id: str | None = None,
             extra: dict | None = None) -> Path:
    """Write one run's folder and return its path."""
    out_dir = Path(out_dir or output_dir())
    return commit_staged([stage_run(result, checkpoint, out_dir / (run_id or new_run_id()), formats, extra)])[0]


def stage_run(result, checkpoint: CheckpointInfo, folder: Path, formats=("mp4",), extra: dict | None = None
              ) -> tuple[Path, Path]:
    """save_run up to the rename: (temporary folder, final folder)."""
    fps = result.params.video_fps
    videos = {("frames.zip" if fmt == "zip" else f"video.{fmt}"): fmt for fmt in formats}
    files = {"input.png": export.to_png(np.asarray(result.image.image)), "poster.png": export.to_png(result.frames[0])}
    record = run_record(result, checkpoint, sorted([*videos, *files]), extra)
    record.update(instrument_record(result))
    from .provenance import video_record

    embedded = video_record(record)
    files = {**{name: export.export_frames(result.frames, fmt, fps, metadata=embedded) for name, fmt in videos.items()},
             **files}
    files[RUN_FILE] = json.dumps(record, indent=2).encode()
    return stage_folder(folder, files), folder


def instrument_record(result) -> dict:
    """What issue 10 adds to run.json: the metrics, the three fps numbers, the sampled image's pixel hash."""
    from .provenance import image_sha256
    from .training import fps_vocabulary

    return {"metrics": dict(getattr(result, "metrics", {}) or {}), "fps": fps_vocabulary(result.params),
            "input_pixels_sha256": image_sha256(result.image.image)}


@dataclass(frozen=True)
class RunInfo:
    path: Path
    record: dict

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def params(self) -> SamplingParams:
        return SamplingParams.from_dict(self.record["params"])

    @property
    def kind(self) -> str:
        return self.record.get("kind", "run")

    def file(self, name: str) -> Path:
        return self.path / name


def load_run(path) -> RunInfo:
    path = Path(path)
    try:
        return RunInfo(path, json.loads((path / RUN_FILE).read_text()))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a complete run folder ({e})") from None


def list_runs(out_dir=None) -> list[RunInfo]:
    """Complete runs, newest first. Temporary and unreadable folders are skipped."""
    out_dir = Path(out_dir or output_dir())
    if not out_dir.is_dir():
        return []
    runs = []
    for p in out_dir.iterdir():
        if p.name.startswith((".", TMP_PREFIX)) or not (p / RUN_FILE).is_file():
            continue
        try:
            runs.append(load_run(p))
        except ValueError:
            continue
    return sorted(runs, key=lambda r: (r.record.get("created", ""), r.path.stat().st_mtime), reverse=True)


def delete_run(path, out_dir=None) -> None:
    """Delete one run folder (only a folder directly inside `out_dir` holding a run.json)."""
    path = Path(path).resolve()
    out_dir = Path(out_dir or output_dir()).resolve()
    if path.parent != out_dir or not (path / RUN_FILE).is_file():
        raise ValueError(f"{path} is not a run folder in {out_dir}")
    trash = path.parent / _tmp_name(f"del-{path.name}-{int(time.time())}")
    os.replace(path, trash)  # disappears from listings at once, even if removal is slow
    shutil.rmtree(trash, ignore_errors=True)
