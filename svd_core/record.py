"""A run, described once: the request that decides it (`RunRequest`: the knobs, the model, background removal,
formats) and the record of what ran (`RunRecord`: the request, the effective settings, seed, checkpoint and
sha256, timings, metrics, versions). `RunRecord.from_json` is the one check of every record read: a run.json or
the record inside one of our mp4s. Only runs.py writes or reads run.json."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RecordError
from .params import SamplingParams

RECORD_KEY = "svd_studio"  # marks our JSON inside an mp4's comment tag; its value is the record format's version
RECORD_VERSION = 1


@dataclass(frozen=True)
class ModelSpec:
    """The model a run asks for: a checkpoint (path, or file name in a record), device ("" = the best
    available), memory mode and torch.compile."""
    checkpoint: str
    device: str = ""
    memory_mode: str = "auto"
    compile: bool = False

    @property
    def name(self) -> str:
        return Path(self.checkpoint).name

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunRequest:
    """Everything that decides a run."""
    params: SamplingParams
    model: ModelSpec
    remove_bg: bool = False
    formats: tuple = ("mp4",)
    save_trajectory: bool = False

    def to_json(self) -> dict:
        return {"params": self.params.to_dict(), "model": self.model.to_json(), "remove_bg": self.remove_bg,
                "formats": list(self.formats), "save_trajectory": self.save_trajectory}

    @classmethod
    def from_json(cls, data, name: str = "the request") -> RunRequest:
        """A request as `to_json` writes it (or the request inside a run record); RecordError naming `name`."""
        def bad(what: str):
            return RecordError(f"{name} is not a run record of SVD Studio ({what})")
        if not isinstance(data, dict):
            raise bad(f"a JSON {type(data).__name__}, not an object")
        return _request(data, bad, "")


def _request(data: dict, bad, checkpoint: str) -> RunRequest:
    """The request in a record's (or a request's) object; `checkpoint`: the model's file when it names none (a
    run.json without a model object)."""
    if not isinstance(data.get("params"), dict):
        raise bad("params is " + ("missing" if "params" not in data else f"a {type(data['params']).__name__}"))
    try:
        params = SamplingParams.from_dict(data["params"])
    except (TypeError, ValueError, OverflowError) as e:
        raise bad(f"params: {e}") from None
    model = data.get("model") or {}
    if not isinstance(model, dict):
        raise bad(f"model is a {type(model).__name__}")
    try:
        spec = ModelSpec(**{"checkpoint": checkpoint, **model})
    except TypeError as e:
        raise bad(f"model: {e}") from None
    if not (isinstance(spec.checkpoint, str) and isinstance(spec.device, str) and isinstance(spec.memory_mode, str)
            and isinstance(spec.compile, bool)):
        raise bad("model is malformed")
    for key in ("remove_bg", "save_trajectory"):
        if not isinstance(data.get(key, False), bool):
            raise bad(f"{key} is not true or false")
    formats = data.get("formats") or ["mp4"]
    if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
        raise bad("formats is not a list of format names")
    return RunRequest(params, spec, data.get("remove_bg", False), tuple(formats), data.get("save_trajectory", False))


# A record's optional keys and their JSON types; _NULLABLE may be null (in an mp4's record).
_OPTIONAL = {"created": str, "kind": str, "label": str, "sweep": str, "seed": int, "files": list, "input": dict,
             "notes": list, "metrics": dict, "effective": dict, "timings_s": dict, "coords": dict, "cells": list,
             "input_pixels_sha256": str, "device": str, "dtype": str, "trajectory": dict, "video_metrics": list,
             "varied": list, "fps": dict, "versions": dict, "size": list,
             "frames": int, "seeds": list, "process": dict, "memory_mode": str, "grid_fps": int, "processes": int}
_NULLABLE = {"created", "seed", "input_pixels_sha256", "device", "dtype", "fps"}
_FLAGS = ("sweep_pending", "sweep_incomplete")


def _plain_name(f) -> bool:
    return isinstance(f, str) and f == Path(f).name and not f.startswith(".")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _list_of(value, kind) -> bool:
    return isinstance(value, list) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)


def _size(value) -> bool:
    """(width, height) as JSON writes it: two positive integers."""
    return _list_of(value, int) and len(value) == 2 and all(v > 0 for v in value)


def _camera(value) -> bool:
    """An SV3D run's effective camera: equally many elevations and azimuths, at least one, all numbers."""
    if not isinstance(value, dict):
        return False
    el, az = value.get("elevations_deg"), value.get("azimuths_deg")
    return (isinstance(el, list) and isinstance(az, list) and 0 < len(el) == len(az)
            and all(map(_number, el)) and all(map(_number, az)))


def parse_json(text, name: str):
    """The JSON value in `text` (a record, a denoising record); RecordError, one line naming `name`, when it is
    not JSON, nests too deep or holds a number too long to convert."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError and too-long ints are ValueErrors
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise RecordError(f"{name} is not readable JSON ({reason})") from None


def finite(value):
    """`value` with every NaN or infinity (a metric that could not be measured) replaced by None: a record is
    strict JSON, which every parser reads."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def record_bytes(record) -> bytes:
    """A run.json's bytes (a RunRecord, or a plain object such as the CLI's measurements): strict JSON
    (non-finite numbers as null)."""
    if isinstance(record, RunRecord):
        record = record.to_json()
    return json.dumps(finite(record), indent=2, allow_nan=False).encode()


@dataclass(frozen=True)
class RunRecord:
    """What ran. run.json's keys: `to_json` writes them, `from_json` reads them (runs saved by earlier versions
    included: keys they lack take their defaults). A sweep's own folder is a record of kind "sweep" (its first
    cell's request, `cells`, `seeds`, `varied`)."""
    request: RunRequest
    checkpoint: str | None = None  # the file name
    variant: str | None = None
    sha256: str | None = None
    checkpoint_dtype: str | None = None  # the dtype stored in the file
    kind: str = "run"
    created: str | None = None
    device: str | None = None
    dtype: str | None = None  # the dtype the run computed in
    memory_mode: str | None = None  # the mode applied (the request's may be auto)
    effective: dict = field(default_factory=dict)  # what else the run really used (decode chunk, camera, ...)
    timings: dict = field(default_factory=dict)  # seconds per phase
    frames: int | None = None
    size: tuple | None = None  # (width, height)
    input_size: tuple | None = None  # the image as given
    input_name: str | None = None
    input_pixels_sha256: str | None = None
    notes: tuple = ()
    versions: dict = field(default_factory=dict)
    files: tuple = ()
    metrics: dict = field(default_factory=dict)
    video_metrics: tuple = ()  # num_videos > 1: each video's metrics, in file order
    fps: dict | None = None  # params.fps_vocabulary; None: the model has no fps input (SV3D)
    trajectory: dict | None = None  # the denoising record's files, when saved
    # a sweep's cell
    sweep: str | None = None
    label: str | None = None
    coords: dict | None = None
    process: dict | None = None
    sweep_pending: bool = False
    sweep_incomplete: bool = False
    # a sweep's own folder
    seeds: tuple = ()
    varied: tuple | None = None
    grid_fps: int | None = None
    processes: int | None = None
    cells: tuple = ()
    calibration: dict | None = None  # a calibration's sweep: its fit and answer (calibrate.Calibration), "summary"
    extra: dict = field(default_factory=dict)  # other keys, kept as written

    @property
    def params(self) -> SamplingParams:
        return self.request.params

    @property
    def seed(self) -> int:
        return self.request.params.seed

    @property
    def is_sv3d(self) -> bool:
        from .checkpoints import get_variant

        try:
            return get_variant(self.variant or "").is_sv3d
        except ValueError:
            return False

    def replace(self, **changes) -> RunRecord:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------------------------------------ JSON

    def to_json(self) -> dict:
        """run.json's object."""
        r = self.request
        out = {"created": self.created, "params": r.params.to_dict(), "seed": r.params.seed,
               "checkpoint": {k: v for k, v in (("file", self.checkpoint), ("variant", self.variant),
                                                ("sha256", self.sha256), ("dtype", self.checkpoint_dtype))
                              if v is not None},
               "model": r.model.to_json(), "remove_bg": r.remove_bg, "formats": list(r.formats),
               "save_trajectory": r.save_trajectory}
        if self.kind != "run":
            out["kind"] = self.kind
        optional = {
            "device": self.device, "dtype": self.dtype, "memory_mode": self.memory_mode,
            "effective": self.effective or None, "timings_s": self.timings or None, "frames": self.frames,
            "size": list(self.size) if self.size else None,
            "input": {k: v for k, v in (("original_size", list(self.input_size) if self.input_size else None),
                                        ("name", self.input_name)) if v is not None} or None,
            "notes": list(self.notes) if self.kind == "run" else None, "versions": self.versions or None,
            "metrics": self.metrics if self.kind == "run" else None, "fps": self.fps,
            "input_pixels_sha256": self.input_pixels_sha256,
            "video_metrics": [dict(m) for m in self.video_metrics] or None, "trajectory": self.trajectory,
            "sweep": self.sweep, "label": self.label, "coords": self.coords, "process": self.process,
            "sweep_pending": self.sweep_pending or None, "sweep_incomplete": self.sweep_incomplete or None,
            "seeds": list(self.seeds) or None, "varied": None if self.varied is None else list(self.varied),
            "grid_fps": self.grid_fps, "processes": self.processes, "cells": [dict(c) for c in self.cells] or None,
            "calibration": self.calibration,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        out["files"] = list(self.files)
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, data, name: str = "the record") -> RunRecord:
        """The record in `data` (a parsed run.json, or the record inside one of our mp4s) if it has the shape SVD
        Studio writes: an object whose params make a SamplingParams, whose checkpoint is an object, and whose
        other fields (when present) have their types; else RecordError, one line naming `name`."""
        def bad(what: str):
            return RecordError(f"{name} is not a run record of SVD Studio ({what})")
        if not isinstance(data, dict):
            raise bad(f"a JSON {type(data).__name__}, not an object")
        ck = data.get("checkpoint")
        if isinstance(data.get("params"), dict) and (not isinstance(ck, dict) or not all(
                isinstance(ck.get(k), (str, type(None))) for k in ("file", "variant", "sha256", "dtype"))):
            raise bad("checkpoint is " + ("missing" if ck is None else "malformed" if isinstance(ck, dict)
                                          else f"a {type(ck).__name__}"))
        request = _request(data, bad, (ck.get("file") if isinstance(ck, dict) else None) or "")
        for key, kind in _OPTIONAL.items():
            value = data.get(key)
            if key in data and not (value is None and key in _NULLABLE) and (
                    not isinstance(value, kind) or isinstance(value, bool)):
                raise bad(f"{key} is {'null' if value is None else f'a {type(value).__name__}'}")
        for key in _FLAGS:
            if not isinstance(data.get(key, False), bool):
                raise bad(f"{key} is not true or false")
        if not all(_plain_name(f) for f in data.get("files", [])):
            raise bad("files is not a list of file names in the run's folder")
        traj = data.get("trajectory") or {}
        if not all(isinstance(names, list) and all(_plain_name(f) for f in names)
                   for names in (traj.get(k, []) for k in ("videos", "stats", "tables"))):
            raise bad("trajectory does not list file names in the run's folder")
        inp = data.get("input") or {}
        if not isinstance(inp.get("name", ""), str):
            raise bad("input name is not a string")
        if inp.get("original_size") is not None and not _size(inp["original_size"]):
            raise bad("input original_size is not two positive integers")
        if data.get("size") is not None and not _size(data["size"]):
            raise bad("size is not two positive integers")
        for key, kind, what in (("varied", str, "knob names"), ("seeds", int, "integers"),
                                ("notes", str, "strings")):
            if data.get(key) is not None and not _list_of(data[key], kind):
                raise bad(f"{key} is not a list of {what}")
        camera = (data.get("effective") or {}).get("camera")
        if camera is not None and not _camera(camera):
            raise bad("effective camera is not equally many elevations_deg and azimuths_deg (numbers)")
        for cell in data.get("cells") or []:
            if not (isinstance(cell, dict) and isinstance(cell.get("run"), str)
                    and isinstance(cell.get("label", ""), str)):
                raise bad("a cell is not {run, label}")
        calibration = data.get("calibration")
        if calibration is not None and not (isinstance(calibration, dict)
                                            and isinstance(calibration.get("summary"), str)):
            raise bad("calibration is not an object with a summary")
        metrics, video_metrics = data.get("metrics") or {}, data.get("video_metrics") or []
        if not all(isinstance(m, dict) for m in video_metrics):
            raise bad("video_metrics is not a list of objects")
        size, original = data.get("size"), inp.get("original_size")
        known = {"created", "params", "seed", "checkpoint", "model", "remove_bg", "formats", "save_trajectory",
                 "kind", "device", "dtype", "memory_mode", "effective", "timings_s", "frames", "size", "input",
                 "notes", "versions", "metrics", "fps", "input_pixels_sha256", "video_metrics", "trajectory",
                 "sweep", "label", "coords", "process", "sweep_pending", "sweep_incomplete", "seeds", "varied",
                 "grid_fps", "processes", "cells", "calibration", "files", RECORD_KEY}
        return cls(
            request, ck.get("file"), ck.get("variant"), ck.get("sha256"), ck.get("dtype"),
            kind=data.get("kind", "run"), created=data.get("created"), device=data.get("device"),
            dtype=data.get("dtype"), memory_mode=data.get("memory_mode"), effective=data.get("effective") or {},
            timings=data.get("timings_s") or {}, frames=data.get("frames"), size=tuple(size) if size else None,
            input_size=tuple(original) if original else None, input_name=inp.get("name"),
            input_pixels_sha256=data.get("input_pixels_sha256"), notes=tuple(data.get("notes") or ()),
            versions=data.get("versions") or {}, files=tuple(data.get("files") or ()), metrics=metrics,
            video_metrics=tuple(video_metrics), fps=data.get("fps"), trajectory=data.get("trajectory"),
            sweep=data.get("sweep"), label=data.get("label"), coords=data.get("coords"),
            process=data.get("process"), sweep_pending=data.get("sweep_pending", False),
            sweep_incomplete=data.get("sweep_incomplete", False), seeds=tuple(data.get("seeds") or ()),
            varied=None if data.get("varied") is None else tuple(data["varied"]), grid_fps=data.get("grid_fps"),
            processes=data.get("processes"), cells=tuple(data.get("cells") or ()), calibration=calibration,
            extra={k: v for k, v in data.items() if k not in known})

    def for_video(self, k: int = 0) -> dict:
        """What the k-th video of this run carries (its mp4's comment tag): enough to rerun it alone (seed + k,
        one video). A sweep's grid.mp4 carries the sweep: its folder name, what it varied, each cell's label and
        params, and its first cell's params."""
        r = self.request
        if self.kind == "sweep":
            return {RECORD_KEY: RECORD_VERSION, "kind": "sweep", "sweep": self.sweep, "created": self.created,
                    "params": r.params.to_dict(), "seed": r.params.seed, "varied": list(self.varied or ()),
                    "checkpoint": {"file": self.checkpoint, "variant": self.variant},
                    "cells": [{"run": c["run"], "label": c["label"], "params": c["params"]} for c in self.cells]}
        params = r.params.replace(seed=r.params.seed + k, num_videos=1)
        return {RECORD_KEY: RECORD_VERSION, "created": self.created, "params": params.to_dict(),
                "seed": params.seed, "checkpoint": {"file": self.checkpoint, "variant": self.variant,
                                                    "sha256": self.sha256},
                "input_pixels_sha256": self.input_pixels_sha256, "fps": self.fps, "device": self.device,
                "dtype": self.dtype, "save_trajectory": r.save_trajectory, "remove_bg": r.remove_bg}


def camera_words(camera: dict) -> str:
    """A run's camera (the effective "camera") in a few words, angles to a tenth of a degree."""
    el, az = camera["elevations_deg"], camera["azimuths_deg"]
    low, high = min(el), max(el)
    elevation = f"elevation {low:.1f}°" if round(low, 1) == round(high, 1) else f"elevation {low:.1f}…{high:.1f}°"
    return f"camera: {elevation}, azimuth {az[0]:.1f}° → {az[-1]:.1f}°"


def summary_line(record: RunRecord, label=str) -> str:
    """A run in one line: its seed(s), what a comparison varied, the sampler, what the model was conditioned on
    (SV3D: the camera; SVD: motion bucket and fps), noise augmentation, guidance, frames, steps, size and when.
    Each part names the knobs it shows; a sweep leaves out the parts of the knobs it varied (its first cell's
    values would mislead). `label(knob)`: a knob's name as the reader knows it."""
    from .params import describe_fps, format_value

    p = record.params
    n = p.num_videos
    parts = [(("seed", "num_videos"), f"seed {p.seed}" if n == 1 else f"{n} videos, seeds {p.seed}-{p.seed + n - 1}")]
    varied = set(record.varied or ()) if record.kind == "sweep" else set()
    if record.kind == "sweep":
        if len(record.seeds) > 1:
            parts = [((), f"seeds {', '.join(map(str, record.seeds))}")]
        for k in record.varied or ():
            values = list(dict.fromkeys(format_value((c.get("coords") if isinstance(c.get("coords"), dict) else {}).get(
                k, (c.get("params") if isinstance(c.get("params"), dict) else {}).get(k))) for c in record.cells))
            parts.append(((), f"varies {label(k)}: {', '.join(values)}"))
    parts.append((("sampler", "discretization", "guider"), f"{p.sampler}/{p.discretization}/{p.guider}"))
    if record.is_sv3d:
        camera = record.effective.get("camera")
        parts.append((("elevations_deg", "azimuths_deg"),
                      camera_words(camera) if camera else "orbit (no camera input)"))
    else:
        parts += [(("motion_bucket_id",), f"motion bucket {p.motion_bucket_id}"),
                  (("fps", "output_fps"), describe_fps(p))]
    parts += [(("noise_aug_strength",), f"noise augmentation {format_value(p.noise_aug_strength)}"),
              (("min_guidance_scale", "max_guidance_scale"),
               f"guidance {format_value(p.min_guidance_scale)}→{format_value(p.max_guidance_scale)}"),
              (("num_frames",), f"{p.num_frames} frames"), (("num_inference_steps",), f"{p.num_inference_steps} steps"),
              (("width", "height"), f"{p.width}x{p.height}")]
    if record.created:
        parts.append(((), f"{record.created[:16].replace('T', ' ')} UTC"))
    return " · ".join(text for fields, text in parts if varied.isdisjoint(fields))


def timings_line(record: RunRecord) -> str:
    """How long a run took and where: '31.5 s (encode 0.4, denoise 28.0, decode 3.1) · balanced mode on cuda'
    (memory modes apply to GPUs only)."""
    t = record.timings
    device = record.device or "?"
    where = f"{record.memory_mode} mode on {device}" if device.startswith("cuda") else f"on {device}"
    return (f"{t.get('total', 0):.1f} s (encode {t.get('image_encode', 0):.1f}, denoise {t.get('denoise', 0):.1f}, "
            f"decode {t.get('decode', 0):.1f}) · {where}")


def utc_now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "diffusers", "transformers", "accelerate", "safetensors", "imageio-ffmpeg"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


TRAJECTORY_FPS = 4  # denoising.mp4: one frame per step


def trajectory_names(k: int) -> tuple[str, str, str]:
    """The denoising record's files of the k-th video, named like its video."""
    tail = f"-{k}" if k else ""
    return f"denoising{tail}.mp4", f"denoising{tail}.json", f"denoising{tail}.csv"


# What a record keeps in its own fields (device, dtype, memory_mode, fps: fps_id is in fps) rather than in
# `effective`; records that carry both still load.
_OWN_FIELDS = ("memory_mode", "device", "dtype", "fps_id")


def _request_of(result, formats) -> RunRequest:
    """The request a result (session.SampleResult) ran, saved in `formats`."""
    return RunRequest(result.params, result.model, result.remove_bg, tuple(formats), bool(result.trajectories))


def sweep_record(results, checkpoint, sweep: str, cells, files=(), processes=(), calibration: dict | None = None,
                 formats=("mp4",)) -> RunRecord:
    """The record of a sweep's own folder: the one place it is made. `results`: its cells' (label,
    SampleResult), which ran with `checkpoint` (CheckpointInfo) and were saved in `formats`; its request is
    the first cell's (background removal, formats and the denoising record as the cells had them). `cells`:
    run.json's {run, label, params, coords, process} per cell; `processes`: the cells' process records;
    `calibration`: a calibration's fit and answer."""
    first = results[0][1]
    return RunRecord(
        _request_of(first, formats), checkpoint.name, checkpoint.variant.name, kind="sweep", created=utc_now(),
        sweep=sweep, seeds=tuple(sorted({r.params.seed for _, r in results})),
        varied=tuple(k for k in (cells[0].get("coords") or {}) if k != "seed"), grid_fps=first.params.video_fps,
        processes=max((p.get("processes", 1) for p in processes), default=1), cells=tuple(cells),
        files=tuple(sorted(files)), calibration=calibration)


def record_of(result, checkpoint, files=(), formats=("mp4",), input_name: str | None = None,
              **fields) -> RunRecord:
    """The record of what ran in `result` (a session.SampleResult) with `checkpoint` (CheckpointInfo): the one
    place a run's record is made. `files`: the run folder's files; `fields`: more RunRecord fields (a sweep
    cell's sweep, label, coords, process, ...)."""
    from .checkpoints import file_sha256
    from .images import image_sha256
    from .params import fps_vocabulary

    trajectories = result.trajectories or []
    trajectory = None
    if trajectories:
        names = [trajectory_names(k) for k in range(len(trajectories))]
        trajectory = {"videos": [n[0] for n in names], "stats": [n[1] for n in names],
                      "tables": [n[2] for n in names], "steps": len(trajectories[0]), "fps": TRAJECTORY_FPS,
                      "decoder": "latent_rgb"}
    request = _request_of(result, formats)
    return RunRecord(
        request, checkpoint.name, checkpoint.variant.name, file_sha256(checkpoint.path), checkpoint.dtype,
        created=utc_now(), device=result.device, dtype=result.dtype, memory_mode=result.memory_mode,
        effective={k: v for k, v in result.effective.items() if k not in _OWN_FIELDS},
        timings={k: round(v, 4) for k, v in result.timings.items()},
        frames=int(result.frames.shape[0]), size=(int(result.frames.shape[2]), int(result.frames.shape[1])),
        input_size=tuple(result.image.original_size), input_name=input_name,
        input_pixels_sha256=image_sha256(result.image.image), notes=tuple(result.notes),
        versions=library_versions(), files=tuple(sorted(files)), metrics=dict(result.metrics or {}),
        video_metrics=tuple(dict(m) for m in result.video_metrics) if len(result.video_metrics) > 1 else (),
        fps=None if result.effective.get("fps_id") is None else fps_vocabulary(result.params),
        trajectory=trajectory, **fields)
