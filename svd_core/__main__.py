"""python -m svd_core {sample, sweep, calibrate, measure, list, download, make-tiny, estimate}.

Expected errors: one line, exit 2."""

from __future__ import annotations

import argparse
import os
import sys

from .calibrate import COARSE, KNOBS
from .memory import MEMORY_MODES
from .params import CHOICES, GUIDER_LISTS, RANGES, parse_seeds, parse_values

EXIT_ERROR, EXIT_CANCELLED = 2, 130
DTYPES = ("float16", "bfloat16", "float32")


def _param_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling parameters (default: the checkpoint variant's)")
    for name, (lo, hi, help_) in RANGES.items():
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=int if isinstance(lo, int) else float,
                       default=None, metavar="N", help=f"{help_} [{lo}..{hi}]")
    for name, (valid, help_) in CHOICES.items():
        g.add_argument("--" + name.replace("_", "-"), dest=name, choices=valid, default=None,
                       help=f"{help_} (default {valid[0]})")
    for name, (lo, hi, help_) in GUIDER_LISTS.items():
        g.add_argument("--" + name.replace("_", "-"), dest=name, default=None, metavar="V1,V2,...",
                       help=f"{help_} [{lo:g}..{hi:g}]")
    from .camera import list_camera_paths

    c = p.add_argument_group("SV3D_p camera (elevation and azimuth per frame, degrees)")
    c.add_argument("--elevation", type=float, metavar="DEG", help="one elevation for every frame (default 10)")
    c.add_argument("--path", choices=list_camera_paths(), help="orbit: Stability's sampling script (last frame at "
                   "azimuth 0, the input view; the default) · orbit_demo: their demo's 'same elevation' (last at "
                   "360) · dynamic: their demo's wandering loop, seeded by --path-seed")
    c.add_argument("--path-seed", type=int, default=0, metavar="N", help="seed of the dynamic path (default 0)")
    c.add_argument("--elevations", metavar="E1,E2,...", help="one elevation per frame")
    c.add_argument("--azimuths", metavar="A1,A2,...", help="one azimuth per frame")
    c.add_argument("--remove-background", action=argparse.BooleanOptionalAction, default=None,
                   help="cut the object out onto white first (needs the optional rembg package and its weights on "
                        "disk; an image with transparency goes on white anyway) (default: off; with --from: as that "
                        "run did)")


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", "-c", help="checkpoint file, diffusers folder or SVD repo id in the Hugging Face "
                                              "cache (default: svd_xt, else the first in checkpoints/, else the "
                                              "cache)")
    p.add_argument("--device", help="cuda, mps or cpu (default: best available)")
    p.add_argument("--dtype", choices=DTYPES, help="default float16 on GPU, "
                                                                               "float32 on CPU")
    p.add_argument("--memory-mode", default="auto", choices=MEMORY_MODES,
                   help="auto: the first of fast, balanced, low whose estimated peak fits the GPU (GPUs only)")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet and VAE decoder (the first run "
                                                          "with a new shape compiles; later runs are faster)")
    p.add_argument("--fuse-qkv", action="store_true", help="fuse the UNet's q, k, v projections into one matmul")
    p.add_argument("--attention", choices=("default", "cudnn"), default="default",
                   help="SDPA kernel: default (PyTorch's choice) or cudnn (cuDNN attention first; CUDA only)")
    p.add_argument("--no-pin-memory", dest="pin_memory", action="store_false",
                   help="balanced/low: keep offloaded weights in pageable host memory")
    p.add_argument("--out", help="output folder (default outputs/)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m svd_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="one image -> one run folder")
    s.add_argument("image", nargs="?", help="the conditioning image (with --from a run.json: its input.png)")
    _model_flags(s)
    _param_flags(s)
    s.add_argument("--format", default="mp4", help="comma-separated: mp4,gif,webp,zip (default mp4)")
    s.add_argument("--from", dest="from_file", metavar="FILE",
                   help="rerun a run: one of our mp4s or a run.json (its params and seed; flags override)")
    s.add_argument("--preview", metavar="FILE", help="keep FILE (a PNG) showing the model's current estimate of "
                                                     "the video as the run goes (a cheap latent-to-RGB preview, "
                                                     "at most twice a second)")
    _trajectory_flag(s)
    w = sub.add_parser("sweep", help="one image, one seed, one or two knobs over lists -> runs + grid")
    w.add_argument("image")
    w.add_argument("--vary", action="append", required=True, metavar="NAME=V1,V2,...",
                   help="e.g. motion_bucket_id=32,127,255 (give --vary twice for a 2-D grid)")
    _trajectory_flag(w)
    w.add_argument("--seeds", metavar="N|S1,S2,...", help="run each value on N seeds (seed, seed+1, ...) or on "
                                                         "the listed seeds (default: one, --seed)")
    _model_flags(w)
    _param_flags(w)
    k = sub.add_parser("calibrate", help="which motion_bucket_id (or fps, noise_aug_strength) gives a target motion "
                                         "for this image: sample a few values on a few seeds, fit, confirm")
    k.add_argument("image")
    k.add_argument("--target-motion", type=float, required=True, metavar="M",
                   help="the motion score wanted, in the SVD paper's units (as `measure` reports motion.score)")
    k.add_argument("--knob", default=KNOBS[0], choices=KNOBS, help=f"the knob to calibrate (default {KNOBS[0]})")
    k.add_argument("--seeds", default="3", metavar="N|S1,S2,...", help="each value on N seeds (seed, seed+1, ...) "
                                                                       "or the listed seeds; at least 2 (default 3)")
    k.add_argument("--values", metavar="V1,V2,...", help="the knob's values to sample (default: " + "; ".join(
        f"{knob} {','.join(f'{v:g}' for v in vs)}" for knob, vs in COARSE.items()) + ")")
    k.add_argument("--steps", type=int, metavar="S", help="sample those values at S steps instead of the settings' "
                                                          "(faster, said in the result); the confirming run uses the "
                                                          "settings' steps")
    _model_flags(k)
    _param_flags(k)
    m = sub.add_parser("measure", help="motion, flicker (and likeness) of a video file or run folder, as JSON")
    m.add_argument("file", help="a video (mp4, WebM, GIF, ...) or a run folder")
    m.add_argument("--checkpoint", "-c", help="with --image: add likeness, with this checkpoint's image encoder")
    m.add_argument("--image", help="the conditioning image, for likeness (a run folder's input.png by default)")
    m.add_argument("--fps", type=float, help="time base for the motion score (default: the file's frame rate; "
                                             "a run folder's conditioning fps)")
    m.add_argument("--device", help="device for the image encoder (default: best available)")
    ls = sub.add_parser("list", help="checkpoints in checkpoints/ (and why others cannot be used), SVD pipelines "
                                     "in the Hugging Face cache")
    ls.add_argument("folder", nargs="?")
    ls.add_argument("--no-hf-cache", action="store_true", help="skip the Hugging Face cache")
    d = sub.add_parser("download", help="download a Stability release from the Hugging Face Hub into checkpoints/")
    d.add_argument("variant", help="svd, svd_image_decoder, svd_xt, svd_xt_image_decoder, svd_xt_1_1, sv3d_u or sv3d_p")
    d.add_argument("--token", help="Hugging Face token (default: HF_TOKEN or the one from `hf auth login`)")
    d.add_argument("--dir", help="checkpoint folder (default checkpoints/ or $SVD_CHECKPOINT_DIR)")
    e = sub.add_parser("estimate", help="pre-flight memory estimate: the peak GPU memory of a run in each memory mode")
    e.add_argument("--checkpoint", "-c", help="checkpoint file or diffusers folder (default as for sample)")
    e.add_argument("--width", type=int, default=1024)
    e.add_argument("--height", type=int, default=576)
    e.add_argument("--num-frames", type=int, help="default: the checkpoint variant's")
    e.add_argument("--decode-chunk-size", type=int, default=14)
    e.add_argument("--dtype", choices=DTYPES, default="float16")
    e.add_argument("--guider", choices=CHOICES["guider"][0], default="linear")
    t = sub.add_parser("make-tiny", help="write a tiny random-weight checkpoint (sgm layout) for tests and demos")
    t.add_argument("path")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--decoder", choices=("video", "image"), help="SVD's decoder (default video)")
    t.add_argument("--variant", choices=("svd", "sv3d_u", "sv3d_p"), default="svd",
                   help="svd (default) or one of Stability's SV3D models (orbit videos; image decoder only)")
    parser.commands = sub.choices  # name -> its parser: a command's own usage for its unknown flags
    return parser


def _trajectory_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--save-trajectory", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the denoising record in the run folder: denoising.mp4 (the estimate at every step, "
                        "labelled with step and sigma) and per-step statistics (denoising.json, .csv) (default: "
                        "off; with --from: as that run did)")


def _save_trajectory(args) -> bool:
    if args.save_trajectory is not None:
        return args.save_trajectory
    return bool(getattr(args, "from_record", None) and args.from_record.request.save_trajectory)


def _pick_checkpoint(arg):
    from .checkpoints import resolve_checkpoint

    return resolve_checkpoint(arg)  # a path, an SVD repo id in the Hugging Face cache, or the default


def _checked_inputs(args):
    """Everything that can be checked before a minute of model loading: the checkpoint's header, the
    parameters against its variant's defaults, the image's decoding. Returns (checkpoint info, params)."""
    from .checkpoints import inspect_checkpoint
    from .images import open_image
    from .params import SamplingParams

    record = _from_record(args) if getattr(args, "from_file", None) else None
    info = inspect_checkpoint(_pick_checkpoint(args.checkpoint))
    if args.checkpoint is None:
        print(f"note: checkpoint {info.label} ({info.variant.name}), the default: choose another with -c",
              file=sys.stderr)
    overrides = {k: getattr(args, k) for k in [*RANGES, *CHOICES] if getattr(args, k) is not None}
    overrides.update({k: parse_values(k, getattr(args, k)) for k in GUIDER_LISTS if getattr(args, k) is not None})
    if record is not None:
        params = record.params.replace(**overrides)
        _check_same_checkpoint(record, info)
        if args.remove_background is None:
            args.remove_background = record.request.remove_bg
    else:
        params = SamplingParams.for_variant(info.variant, **overrides)
    args.remove_background = bool(args.remove_background)
    params = _with_camera(args, params)
    if args.image is None:
        raise ValueError("give the conditioning image (or --from a run.json whose folder holds input.png)")
    open_image(args.image)
    if args.remove_background:
        from .images import background_removal_available, remove_background

        if not background_removal_available():
            remove_background(None)  # its one-line error, before a minute of model loading
    return info, params


def _with_camera(args, params):
    """--path / --elevation / --elevations / --azimuths -> params.elevations_deg, azimuths_deg (per frame)."""
    from .camera import camera_path

    if args.elevations and args.elevation is not None:
        raise ValueError("give --elevation (one for every frame) or --elevations (one per frame), not both")
    if args.path and args.azimuths:
        raise ValueError("give --path or --azimuths, not both")
    changes = {}
    if args.elevation is not None:
        changes["elevations_deg"] = args.elevation
    if args.elevations:
        changes["elevations_deg"] = parse_values("elevations_deg", args.elevations)
    if args.azimuths:
        changes["azimuths_deg"] = parse_values("azimuths_deg", args.azimuths)
    if args.path:
        elevation = 10.0 if args.elevation is None else args.elevation
        elevations, changes["azimuths_deg"] = camera_path(args.path, params.num_frames, elevation, args.path_seed)
        if args.path == "dynamic" or args.elevations is None:
            changes["elevations_deg"] = elevations if args.path == "dynamic" else elevation
    return params.replace(**changes) if changes else params


def _from_record(args):
    """The RunRecord of `--from` (an mp4 of ours or a run.json); fills in the image and checkpoint when it can."""
    from pathlib import Path

    from .checkpoints import list_checkpoints
    from .runs import read_video_record

    src = Path(args.from_file)
    if src.is_dir():
        src = src / "run.json"
    if src.suffix.lower() == ".json":
        from .runs import read_record

        record = read_record(src)
        if args.image is None and (src.parent / "input.png").is_file():
            args.image = str(src.parent / "input.png")
    else:
        record = read_video_record(src)
    if record.kind == "sweep":
        raise ValueError(f"{src.name} is {'the grid of ' if src.suffix.lower() != '.json' else ''}comparison "
                         f"{record.sweep or src.parent.name}: rerun it with `sweep` (it varied "
                         f"{', '.join(record.varied or ['the seed'])}), or give one of its cells' video.mp4 to --from")
    if args.checkpoint is None:
        want = record.checkpoint
        match = next((c for c in list_checkpoints() if c.name == want), None)
        if match is None:
            raise ValueError(f"{src.name} was made with {want}, which is not in checkpoints/: pass it with -c")
        args.checkpoint = str(match.path)
    args.from_record = record
    return record


def _check_out(out) -> None:
    """--out must be a folder that can be made or written, found out before a minute of model loading."""
    if out is None:
        return
    from pathlib import Path

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: name a folder (it is made if missing)")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {existing} cannot be written: name a folder you can write to")


def _check_same_checkpoint(record, info) -> None:
    from .checkpoints import file_sha256

    want = record.sha256
    if want and file_sha256(info.path) != want:
        print(f"note: {info.name} is not the checkpoint this run was made with (sha256 differs): the frames will "
              "differ", file=sys.stderr)


def _sampler(info, args):
    from .session import Sampler

    return Sampler(info.path, device=args.device, dtype=args.dtype, memory_mode=args.memory_mode,
                   compile=args.compile, fuse_qkv=args.fuse_qkv, attention=args.attention,
                   pin_memory=args.pin_memory)


def _progress(desc):
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="step", leave=False)

    def on_step(i, n):
        bar.total = n
        bar.n = i
        bar.refresh()
    return bar, on_step


def cmd_sample(args) -> int:
    from .runs import save_run
    from .video import EXPORTERS

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    bad = [f for f in formats if f not in EXPORTERS]
    if bad:  # before the model loads, not after the run
        raise ValueError(f"unknown format {bad[0]!r}; valid: {', '.join(EXPORTERS)}")
    if not formats:
        raise ValueError(f"--format names no format: give one or more of {', '.join(EXPORTERS)}")
    _check_out(args.out)
    info, params = _checked_inputs(args)
    sampler = _sampler(info, args)
    prepared = sampler.prepare(args.image, params, args.remove_background)
    if args.from_file:
        _check_same_image(args, prepared)
    bar, on_step = _progress("sampling")
    on_preview = None
    if args.preview:
        from .preview import PngFile

        on_preview = PngFile(args.preview)
    try:
        result = sampler.generate(prepared, params, on_step=on_step, on_preview=on_preview,
                                  trajectory=_save_trajectory(args))
    finally:
        bar.close()
        if on_preview is not None:
            on_preview.close()
    for note in result.notes:
        print("note:", note, file=sys.stderr)
    if params.inapplicable():
        print(f"note: ignored by {params.sampler} / {params.discretization} / {params.guider}: "
              f"{', '.join(params.inapplicable())}", file=sys.stderr)
    unused = [k for k in result.effective.get("ignored_knobs", []) if k not in params.inapplicable()]
    if unused:
        print(f"note: {sampler.info.variant.name} has no input for {', '.join(unused)}: ignored", file=sys.stderr)
    path = save_run(result, sampler.info, args.out, formats=formats)
    from .record import summary_line, timings_line
    from .runs import load_run

    record = load_run(path).record
    print(path)
    print(summary_line(record))
    print(timings_line(record))
    _print_metrics(result, sampler.info)
    return 0


def _print_metrics(result, info) -> None:
    """The metrics line; SV3D's playback fps (its summary line has no fps: the model has no fps input)."""
    from .metrics import metrics_line

    extra = [f"playback fps {result.params.video_fps} (SV3D has no fps input)"] if info.variant.is_sv3d else []
    if info.variant.untrained:
        extra.append("untrained demo model: these metrics are meaningless")
    print(" · ".join([metrics_line(result.metrics) + f" · measured in {result.timings.get('measure', 0):.2f} s",
                      *extra]))


def _check_same_image(args, prepared) -> None:
    from .images import image_sha256

    want = args.from_record.input_pixels_sha256
    if want and image_sha256(prepared.image) != want:
        print(f"note: {args.image} is not the image this run was sampled from (pixels differ): the frames will "
              "differ", file=sys.stderr)


def cmd_sweep(args) -> int:
    from .distributed import assign, launched, process_state
    from .sweep import grid_cells, parse_vary, run_sweep

    vary = dict(parse_vary(v) for v in args.vary)
    _check_out(args.out)
    info, params = _checked_inputs(args)
    seeds = parse_seeds(args.seeds, params.seed) if args.seeds else None
    cells = grid_cells(params, vary, seeds=seeds)
    state = None
    if launched():  # accelerate launch: one process per device, the cells shared out by cost
        if args.device:
            raise ValueError("--device: under accelerate launch each process uses its own device (--cpu, "
                             "--multi_gpu, --gpu_ids choose them): drop --device")
        state = process_state()
        _stop_on_sigterm()
        args.device = str(state.device)
    elif os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true":  # accelerate launch --cpu: one process
        args.device = args.device or "cpu"
        print("note: one process on the CPU (accelerate launch --cpu starts one unless through MPI); for several "
              "use accelerate launch --multi_gpu --num_processes N, which without a GPU runs CPU processes",
              file=sys.stderr)
    sampler = _sampler(info, args)
    world, rank = (state.num_processes, state.process_index) if state else (1, 0)
    mine = assign(cells, world)[rank] if state else list(range(len(cells)))
    bar = None
    if rank == 0:  # one line for the whole sweep: the main process's share stands for the others' (balanced)
        from tqdm import tqdm

        bar = tqdm(total=len(cells), desc="cells" if world == 1 else f"cells ({world} processes)", unit="cell",
                   leave=False)

    def on_progress(idx, n, i, steps):
        if bar is not None:
            bar.n = round((mine.index(idx) + i / steps) * len(cells) / len(mine), 2)
            bar.set_postfix_str(cells[idx][0])
            bar.refresh()
    try:
        res = run_sweep(sampler, args.image, cells, on_progress=on_progress, out_dir=args.out, state=state,
                        trajectory=_save_trajectory(args), remove_bg=args.remove_background)
    finally:
        if bar is not None:
            bar.close()
        if state is not None:  # each process closes its process group: gloo's threads end before the interpreter
            state.destroy_process_group()
    if res is None:  # not the main process: it sent its cells there, and its work is done
        # It leaves without the interpreter's teardown, as multiprocessing's children do: torch and gloo threads
        # still alive at teardown can abort the process ("terminate called without an active exception"),
        # which the launcher would report as a dead process and the main process as a lost sweep.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    from .metrics import metrics_line

    for note in dict.fromkeys(n for _, r in res.cells for n in r.notes):
        print("note:", note, file=sys.stderr)
    print(res.path)
    for (label, r), p in zip(res.cells, res.run_paths):
        print(f"  {label}: {p}\n    {metrics_line(r.metrics)}")
    print(f"  metrics.csv, response.png: {res.path}")
    return 0


def cmd_calibrate(args) -> int:
    from .calibrate import calibration_cells, run_calibration

    _check_out(args.out)
    info, params = _checked_inputs(args)
    seeds = parse_seeds(args.seeds, params.seed)
    values = parse_values(args.knob, args.values) if args.values else None
    if args.target_motion < 0:
        raise ValueError(f"--target-motion is a motion score (0 or more), got {args.target_motion:g}")
    calibration_cells(params, args.knob, values or COARSE[args.knob], seeds, args.steps,  # before the model loads
                      info.variant)
    sampler = _sampler(info, args)
    from tqdm import tqdm

    bar = tqdm(desc="calibrating", unit="cell", leave=False)

    def on_progress(idx, n, i, steps):
        bar.total = n
        bar.n = round(idx + i / steps, 2)
        bar.refresh()
    try:
        cal = run_calibration(sampler, args.image, params, args.knob, args.target_motion, values, seeds, args.steps,
                              on_progress=on_progress, out_dir=args.out, remove_bg=args.remove_background)
    finally:
        bar.close()
    print(cal.path)
    print(cal.summary())
    if cal.confirm_path is not None:
        print(f"  confirming run: {cal.confirm_path}")
    print(f"  calibration.png, metrics.csv, response.png: {cal.path}")
    if info.variant.untrained:
        print("untrained demo model: its motion does not follow any knob; these numbers are meaningless")
    return 0


def _stop_on_sigterm() -> None:
    """The launcher stops the other processes with SIGTERM when one dies: end with one line, nothing saved."""
    import signal

    from .errors import ProcessLost

    def stop(signum, frame):
        raise ProcessLost("stopped by the launcher: another sweep process died (see its lines above); nothing "
                          "was saved")
    signal.signal(signal.SIGTERM, stop)


def cmd_measure(args) -> int:
    from pathlib import Path

    from .metrics import Likeness, measure_frames
    from .video import read_frames_zip, read_video

    path = Path(args.file)
    image, fps, time_base = args.image, args.fps, "file"
    if path.is_dir():
        from .runs import load_run

        run = load_run(path)
        if (path / "frames.zip").is_file():  # lossless, when the run kept it
            frames = read_frames_zip(path / "frames.zip")
        else:
            video = next((path / n for n in ("video.mp4", "video.webm", "video.webp", "video.gif")
                          if (path / n).is_file()), None)
            if video is None:
                raise ValueError(f"{path} holds no video (video.mp4, .webm, .webp, .gif or frames.zip)")
            frames, _ = read_video(video)
        fps, time_base = fps or run.params.fps, "conditioning"
        image = image or str(path / "input.png")
    else:
        frames, file_fps = read_video(path)
        fps = fps or file_fps
    likeness = None
    if args.checkpoint and image:
        from .images import open_image
        from .session import Sampler

        img, _ = open_image(image)
        sampler = Sampler(args.checkpoint, device=args.device, memory_mode="auto")
        likeness = Likeness(sampler.pipe)(frames, img.convert("RGB"))
    elif args.checkpoint:
        raise ValueError("likeness needs the conditioning image: add --image IMG")
    out = measure_frames(frames, fps, time_base, likeness)
    out["file"] = str(path)
    from .record import record_bytes

    print(record_bytes(out).decode())
    return 0


def cmd_list(args) -> int:
    from .checkpoints import DOWNLOAD_HINT, checkpoint_dir, scan_checkpoints, scan_hf_cache

    folder = args.folder or checkpoint_dir()
    found, problems = scan_checkpoints(folder)
    cached, cache_problems = ([], []) if args.no_hf_cache else scan_hf_cache()
    if not found and not problems and not cached:
        print(f"no checkpoints in {folder}: {DOWNLOAD_HINT}, or `python -m svd_core download svd_xt`")
    if found or cached or problems or cache_problems:
        print(f"{'model':40s} {'variant':22s} {'size':>10s}  {'dtype':9s} frames")
    for c in found + cached:
        print(f"{c.label:40s} {c.variant.name:22s} {c.size_gb:7.2f} GB  {c.dtype:9s} "
              f"{c.variant.num_frames}")
    for path, reason in problems + cache_problems:
        print(f"{path.name:40s} unusable: {reason}")
    if not args.no_hf_cache and not cached and not cache_problems:
        from huggingface_hub import constants

        print(f"Hugging Face cache ({constants.HF_HUB_CACHE}): no SVD pipeline")
    return 0


def cmd_download(args) -> int:
    from tqdm import tqdm

    from .hub import download

    bars = []

    def on_progress(done, total):
        if not bars:  # first call: the checks passed, the hub answered
            bars.append(tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
                             desc=args.variant, dynamic_ncols=True))
        bars[0].update(done - bars[0].n)
    try:
        path = download(args.variant, folder=args.dir, token=args.token, on_progress=on_progress)
    finally:
        for bar in bars:
            bar.close()
    print(f"{path}  ({'downloaded, sha256 verified against the hub' if bars else 'already there'})")
    return 0


def cmd_make_tiny(args) -> int:
    from .tiny import make_tiny

    path = make_tiny(args.path, seed=args.seed, decoder=args.decoder, family=args.variant)
    what = "SVD" if args.variant == "svd" else args.variant.replace("sv3d", "SV3D")
    decoder = args.decoder or ("video" if args.variant == "svd" else "image")
    print(f"{path}  (tiny random-weight {what}, {decoder} decoder: produces noise, for tests and demos)")
    return 0


def cmd_estimate(args) -> int:
    from .checkpoints import inspect_checkpoint
    from .memory import HEADROOM, checkpoint_modules, format_table, run_estimates
    from .params import SamplingParams

    info = inspect_checkpoint(_pick_checkpoint(args.checkpoint))
    params = SamplingParams.for_variant(info.variant, width=args.width, height=args.height, guider=args.guider,
                                        decode_chunk_size=args.decode_chunk_size,
                                        **({"num_frames": args.num_frames} if args.num_frames else {}))
    dtype_bytes = 4 if args.dtype == "float32" else 2
    estimates = run_estimates(checkpoint_modules(info), params, dtype_bytes)(params.decode_chunk)
    print(f"{info.name}: {params.num_frames} frames {params.width}x{params.height}, decode chunk "
          f"{params.decode_chunk}, {args.dtype}, {params.guider} guider (allocated GB; add the CUDA context, "
          f"~0.6 GB, and {HEADROOM - 1:.0%} allocator slack for the card)")
    print(format_table(estimates))
    return 0


COMMANDS = {"sample": cmd_sample, "sweep": cmd_sweep, "calibrate": cmd_calibrate, "measure": cmd_measure,
            "list": cmd_list, "download": cmd_download, "make-tiny": cmd_make_tiny, "estimate": cmd_estimate}


def main(argv=None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the command's own usage, not the top level's
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command != "download":  # only `download` talks to the hub
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no import-time chatter around one-line errors
    from .distributed import env_rank, launched
    from .errors import Cancelled, SVDError

    rank = env_rank()  # accelerate launch: only the main process writes (and cleans)
    who = f"process {rank}: " if rank else ""
    if args.command in ("sample", "sweep", "calibrate") and not rank:
        from .runs import clean_stale_temp

        clean_stale_temp(args.out)
    try:
        if launched() and args.command != "sweep":  # N processes would each do the same work and save it N times
            raise ValueError(f"only `sweep` shares its work over processes: run `python -m svd_core {args.command}` "
                             "without accelerate launch")
        return COMMANDS[args.command](args)
    except (SVDError, ValueError) as e:
        print(f"{who}error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_CANCELLED if isinstance(e, Cancelled) else EXIT_ERROR
    except KeyboardInterrupt:
        print("cancelled: the partial download is kept (hidden) and resumes next time" if args.command == "download"
              else "cancelled: nothing was written", file=sys.stderr)
        return EXIT_CANCELLED
    except OSError as e:
        print(f"{who}error: {e.strerror or e}: {getattr(e, 'filename', '') or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
