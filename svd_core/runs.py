"""Run folders: outputs/<run id>/ with the video(s), the prepared input image, a poster and run.json.

With num_videos > 1 the k-th extra video (seed + k) is video-k.<fmt> (frames-k.zip) beside video.<fmt> (seed).

A run is written into a hidden temporary folder and renamed into place only when complete, so a killed or
failed run never leaves a folder that looks like a run; `list_runs` only sees complete ones.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from .checkpoints import CheckpointInfo
from .errors import Cancelled, RecordError
from .params import SamplingParams
from .record import RECORD_KEY, TRAJECTORY_FPS, RunRecord, parse_json, record_bytes, trajectory_names
from .video import UPLOADED, VideoError, export_frames, read_tags, to_mp4, to_png


def output_dir() -> Path:
    """outputs/ beside the package, or $SVD_OUTPUT_DIR."""
    return Path(os.environ.get("SVD_OUTPUT_DIR") or Path(__file__).resolve().parent.parent / "outputs")
RUN_FILE = "run.json"
TMP_PREFIX = ".tmp-"


def new_run_id(prefix: str = "") -> str:
    return f"{prefix}{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _tmp_name(name: str) -> str:
    """.tmp-<pid>-<name>: `clean_stale_temp` tells a dead writer's leftovers from a live one's by the pid."""
    return f"{TMP_PREFIX}{os.getpid()}-{name}"


def stage_folder(folder: Path, files) -> Path:
    """Write `files` into a hidden temporary sibling of `folder` and return it (see `commit_staged`). `files`:
    {name: bytes}, or a function of the temporary folder returning them (its scratch files go there: a kill
    leaves them only inside a folder `clean_stale_temp` removes)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / _tmp_name(folder.name)
    tmp.mkdir()
    try:
        for name, data in (files(tmp) if callable(files) else files).items():  # run.json last: the run is complete
            (tmp / name).write_bytes(data)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def commit_staged(staged: list[tuple[Path, Path]], should_stop=None) -> list[Path]:
    """Rename every (temporary, final) pair into place: all or none (renames done are undone on failure; a kill
    between two renames, a window of microseconds, is the one gap). `should_stop()` is asked once more before
    the first rename: a cancel up to that moment leaves nothing."""
    done = []
    try:
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled before the run was saved: nothing was written")
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


def _writer_alive(tmp: Path) -> bool | None:
    """Whether the process that named temporary `tmp` (.tmp-<pid>-...) still runs (this process counts); None
    when the name holds no pid."""
    pid = tmp.name[len(TMP_PREFIX):].split("-", 1)[0]
    if not pid.isdigit():
        return None
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: no process has such a pid
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def clean_stale_temp(out_dir=None, max_age_s: float = 24 * 3600) -> list[Path]:
    """Remove temporary folders left in `out_dir` by killed processes: those whose writer's pid is gone, and any
    older than `max_age_s` (its pid recycled by another process, or a name without a pid, which SVD Studio does
    not write). A live writer's folder is kept.
    The CLI and the app call this at start. Returns what was removed."""
    out_dir = Path(out_dir or output_dir())
    if not out_dir.is_dir():
        return []
    removed, now = [], time.time()
    for p in out_dir.iterdir():
        if not p.name.startswith(TMP_PREFIX):
            continue
        try:
            old = now - p.lstat().st_mtime > max_age_s
        except OSError:
            continue
        if _writer_alive(p) is False or old:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:  # a record's temporary file (write_record)
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed + repair_sweeps(out_dir)


def _writing(out_dir: Path, name: str) -> bool:
    """Whether a live process holds a temporary folder for `name` (it is between its renames)."""
    return any(p.name.startswith(TMP_PREFIX) and p.name.endswith(f"-{name}") and _writer_alive(p)
               for p in out_dir.iterdir())


def write_record(folder: Path, record: RunRecord) -> None:
    """Replace `folder`'s run.json by `record` atomically: written beside the folder under a temporary name
    (removed by `clean_stale_temp` if a kill leaves it), then renamed into place."""
    if not isinstance(record, RunRecord):
        raise TypeError(f"write_record writes a RunRecord, not a {type(record).__name__}")
    tmp = folder.parent / _tmp_name(f"{folder.name}.{RUN_FILE}")
    try:
        tmp.write_bytes(record_bytes(record))
        os.replace(tmp, folder / RUN_FILE)
    finally:
        tmp.unlink(missing_ok=True)


def settle_cells(cells: list[Path]) -> None:
    """The sweep folder is in place: its cells become ordinary runs (their sweep_pending mark goes)."""
    for folder in cells:
        try:
            write_record(folder, read_record(folder / RUN_FILE).replace(sweep_pending=False))
        except (OSError, RecordError):
            pass  # settled at the next start (repair_sweeps); a cell made unreadable stays listed as unreadable


def repair_sweeps(out_dir=None) -> list[Path]:
    """A sweep lands as its cells' folders, then its own: a kill between those renames leaves cells marked
    sweep_pending without a sweep. Those are removed (a sweep is all or nothing); cells whose sweep did land are
    settled. Runs at start with `clean_stale_temp`. Returns what was removed."""
    out_dir = Path(out_dir or output_dir())
    removed = []
    for p in out_dir.iterdir() if out_dir.is_dir() else []:
        if p.name.startswith((".", TMP_PREFIX)) or p.is_symlink() or not (p / RUN_FILE).is_file():
            continue
        try:
            record = read_record(p / RUN_FILE)
        except (OSError, RecordError):
            continue  # unreadable: not a cell this can settle; History lists it as unreadable
        sweep = record.sweep_pending and record.sweep
        if not sweep or sweep != Path(sweep).name:
            continue
        if _writing(out_dir, sweep):  # its writer settles it once the sweep lands; after a kill, the next start
            continue
        if (out_dir / sweep).is_dir():  # looked at after the writer: it may have renamed its sweep into place
            settle_cells([p])
            continue
        try:
            delete_run(p, out_dir)
        except (OSError, ValueError):
            continue
        removed.append(p)
    return removed


ORIGINAL_INPUT = "input_original"  # + the upload's own suffix: the user's image as given, before resizing


def save_run(result, checkpoint: CheckpointInfo, out_dir=None, formats=("mp4",), run_id: str | None = None,
             source: tuple[str, bytes] | None = None, should_stop=None, **fields) -> Path:
    """Write one run's folder and return its path. `source`: (file name, bytes) of the image as the user gave
    it, kept beside the prepared input so the run can be reloaded from the original. A cancel (`should_stop`)
    up to the final rename writes nothing. `fields`: more RunRecord fields (a sweep cell's)."""
    out_dir = Path(out_dir or output_dir())
    staged = stage_run(result, checkpoint, out_dir / (run_id or new_run_id()), formats, source, **fields)
    return commit_staged([staged], should_stop)[0]


def stage_run(result, checkpoint: CheckpointInfo, folder: Path, formats=("mp4",),
              source: tuple[str, bytes] | None = None, **fields) -> tuple[Path, Path]:
    """save_run up to the rename: (temporary folder, final folder). run.json and each mp4's record are the run's
    RunRecord (result.record)."""
    fps = result.params.video_fps
    files = {}
    for k, frames in enumerate(result.videos or [result.frames]):
        tail = f"-{k}" if k else ""  # num_videos: video.mp4 is seed, video-1.mp4 seed + 1, ...
        files.update({(f"frames{tail}.zip" if fmt == "zip" else f"video{tail}.{fmt}"): (frames, fmt, k)
                      for fmt in formats})
    still = {"input.png": to_png(np.asarray(result.image.image)), "poster.png": to_png(result.frames[0])}
    still.update(trajectory_files(result))
    if source is not None:
        suffix = Path(source[0]).suffix.lower()
        still[ORIGINAL_INPUT + (suffix if suffix in (".png", ".jpg", ".jpeg", ".webp") else ".img")] = source[1]
    record = result.record(checkpoint, [*files, *still], formats,
                           Path(source[0]).name if source is not None else None, **fields)

    def contents(tmp: Path) -> dict[str, bytes]:
        out = {name: export_frames(frames, fmt, fps, metadata=record.for_video(k), workdir=tmp)
               for name, (frames, fmt, k) in files.items()}
        return {**out, **still, RUN_FILE: record_bytes(record)}
    return stage_folder(folder, contents), folder


def trajectory_files(result) -> dict[str, bytes]:
    """The denoising record of each video (generate(trajectory=True)): denoising.mp4, one labelled preview grid
    per step; denoising.json and .csv, the per-step statistics (svd_core.preview.Trajectory)."""
    from .preview import stats_csv

    out = {}
    for k, traj in enumerate(result.trajectories or []):
        video, stats, table = trajectory_names(k)
        out[video] = to_mp4(traj.frames(), TRAJECTORY_FPS)
        out[stats] = json.dumps(traj.stats(), indent=1).encode()
        out[table] = stats_csv(traj.stats())
    return out


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_trajectory_stats(stats, name: str = "the denoising record") -> list[dict]:
    """The per-step rows of a parsed denoising.json if it has the shape SVD Studio writes: {"steps": [rows]},
    each row with numeric step, steps and sigma and an estimate_change that is null or a list of numbers; else
    RecordError, one line naming `name`. The one check of every denoising.json read."""
    rows = stats.get("steps") if isinstance(stats, dict) else None
    if not isinstance(rows, list) or not all(
            isinstance(r, dict) and all(_number(r.get(k)) for k in ("step", "steps", "sigma"))
            and (r.get("estimate_change") is None
                 or isinstance(r["estimate_change"], list) and all(map(_number, r["estimate_change"])))
            for r in rows):
        raise RecordError(f"{name} is not a denoising record of SVD Studio (each step needs a numeric step, "
                          "steps and sigma): delete it or save the run again with its record")
    return rows


@dataclass(frozen=True)
class RunInfo:
    path: Path
    record: RunRecord

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def params(self) -> SamplingParams:
        return self.record.params

    @property
    def kind(self) -> str:
        return self.record.kind

    def trajectory_stats(self, video_name: str) -> list[dict]:
        """The per-step rows of the statistics beside the denoising record `video_name` (its .json, validated
        by validate_trajectory_stats); [] when there is none. RecordError, one line, when it is unreadable."""
        stats = self.file(Path(video_name).with_suffix(".json").name)
        if stats is None:
            return []
        where = f"{self.id}/{stats.name}"
        try:
            text = stats.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise RecordError(f"{where} is not readable ({e})") from None
        return validate_trajectory_stats(parse_json(text, where), where)

    def file(self, name: str) -> Path | None:
        """The run's file `name` when it is a regular file in the run's folder itself (not a symlink, which could
        point anywhere: these files are served to every visitor); else None."""
        path = self.path / name
        try:
            return path if name == path.name and stat.S_ISREG(path.lstat().st_mode) else None
        except OSError:
            return None

    @property
    def original_input(self) -> Path | None:
        """The image as the user gave it (None for a run folder without one)."""
        return next((self.file(f) for f in self.record.files if f.startswith(ORIGINAL_INPUT)), None)


def read_record(path, name: str | None = None) -> RunRecord:
    """The record in the run.json file `path`; RecordError (a ValueError) naming it (`name`, default the path)
    when it is unreadable or not a record of ours."""
    path = Path(path)
    name = name or str(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise RecordError(f"{name} is not a readable run.json ({e})") from None
    return RunRecord.from_json(parse_json(text, name), name)


def load_run(path) -> RunInfo:
    """The run in folder `path`; RecordError (a ValueError) naming it when its run.json is unreadable or not a
    record of ours."""
    path = Path(path)
    return RunInfo(path, read_record(path / RUN_FILE, f"{path.name}/{RUN_FILE}"))


def read_video_record(source) -> RunRecord:
    """The run record embedded in one of our mp4s (a path or the file's bytes; RunRecord.for_video wrote it).
    Raises VideoError naming the file when it is unreadable or carries no record, RecordError when the record is
    malformed."""
    tags = read_tags(source)
    name = UPLOADED if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).name
    comment = tags.get("comment", "")
    try:
        record = parse_json(comment, name)
    except RecordError:
        if RECORD_KEY in comment:  # ours, but unreadable
            raise
        record = None  # another program's comment
    if not isinstance(record, dict) or RECORD_KEY not in record:
        raise VideoError(f"{name} carries no SVD Studio record (only mp4s written by SVD Studio do)")
    return RunRecord.from_json(record, name)


def scan_runs(out_dir=None) -> tuple[list[RunInfo], list[tuple[Path, str]]]:
    """(complete runs newest first, unreadable run folders with the one-line reason). Temporary folders and
    symlinks (a run lives in outputs/ itself) are skipped."""
    out_dir = Path(out_dir or output_dir())
    if not out_dir.is_dir():
        return [], []
    runs, problems = [], []
    for p in out_dir.iterdir():
        if p.name.startswith((".", TMP_PREFIX)) or p.is_symlink() or not (p / RUN_FILE).is_file():
            continue
        try:
            runs.append(load_run(p))
        except ValueError as e:
            problems.append((p, str(e)))
    names = {r.id for r in runs}  # a cell of a sweep that has not landed (or never will) is not a run yet
    runs = [r for r in runs if not r.record.sweep_pending or r.record.sweep in names]
    runs.sort(key=lambda r: (r.record.created or "", r.path.stat().st_mtime), reverse=True)
    return runs, sorted(problems)


def list_runs(out_dir=None) -> list[RunInfo]:
    """Complete runs, newest first (`scan_runs` also says which folders are unreadable)."""
    return scan_runs(out_dir)[0]


def delete_run(path, out_dir=None) -> None:
    """Delete one run folder (only a folder directly inside `out_dir` holding a run.json)."""
    path = Path(path).resolve()
    out_dir = Path(out_dir or output_dir()).resolve()
    if path.parent != out_dir or not (path / RUN_FILE).is_file():
        raise ValueError(f"{path} is not a run folder in {out_dir}")
    trash = path.parent / _tmp_name(f"del-{path.name}-{int(time.time())}")
    os.replace(path, trash)  # disappears from listings at once, even if removal is slow
    shutil.rmtree(trash, ignore_errors=True)
