"""Parameter sweeps: one image, one or two knobs over lists, each value on the same seeds; cells run one after
another and land as ordinary runs plus a grid video, a contact sheet, metrics.csv and response.png, all or
nothing."""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import video
from .errors import Cancelled, ProcessLost, RecordError, SweepFailed
from .grid import contact_sheet, grid_frames
from .params import METRIC_LABELS, SamplingParams, parse_values
from .params import format_value as _fmt
from .record import record_bytes, sweep_record
from .runs import (
    RUN_FILE,
    commit_staged,
    discard_staged,
    new_run_id,
    output_dir,
    settle_cells,
    stage_folder,
    stage_run,
)

MAX_CELLS = 48


class Cell(tuple):
    """(label, params), unpacking like a pair, plus `coords`: the ordered {name: value} of what differs (the
    varied knobs, then `seed` when there are several seeds), which lays out the grid."""

    coords: dict

    def __new__(cls, label: str, params: SamplingParams, coords: dict | None = None):
        cell = super().__new__(cls, (label, params))
        cell.coords = dict(coords or {})
        return cell

    def __getnewargs__(self):  # copy and pickle rebuild it through __new__
        return (self[0], self[1], self.coords)


def parse_vary(spec: str) -> tuple[str, list]:
    """'motion_bucket_id=32,127,255' -> ('motion_bucket_id', [32, 127, 255]); 'sampler=euler,heun' ->
    ('sampler', ['euler', 'heun']). Values as `parse_values` reads them."""
    name, sep, values = spec.partition("=")
    name = name.strip()
    if not sep or not values.strip():
        raise ValueError(f"--vary takes NAME=V1,V2,..., got {spec!r}")
    if name == "guidance_scales":  # one value per cell, never one per frame
        raise ValueError("--vary cannot take guidance_scales (one scale per frame, a cell gets one value): "
                         "set --guidance-scales, and --vary guider to compare it with the others")
    return name, parse_values(name, values)


def grid_cells(base: SamplingParams, vary: dict[str, list], max_cells: int = MAX_CELLS,
               seeds: list[int] | None = None) -> list[Cell]:
    """Every combination of one or two knobs' values, each on every seed in `seeds` (default: base.seed only),
    labelled 'name=value ... [seed=s]'. Invalid cells raise ValueError."""
    if not 1 <= len(vary) <= 2:
        raise ValueError(f"vary one or two parameters, got {len(vary)}")
    if "seed" in vary and seeds:
        raise ValueError("vary the seed with seeds=..., not as a knob as well")
    names = list(vary)
    seeds = list(seeds or [base.seed])
    combos = list(itertools.product(*(vary[n] for n in names)))
    if len(combos) < 2 and len(seeds) < 2:
        one = [n for n in names if len(vary[n]) < 2]
        raise ValueError(f"give at least two values to compare ({', '.join(one) or names[0]} has "
                         f"{len(vary[(one or names)[0]])}), or several seeds")
    if len(combos) * len(seeds) > max_cells:
        raise ValueError(f"a comparison has at most {max_cells} cells, got {len(combos) * len(seeds)}: give fewer "
                         "values or seeds")
    cells = []
    for combo in combos:
        for seed in seeds:
            changes = dict(zip(names, combo))
            coords = dict(zip(names, combo))
            if len(seeds) > 1:
                changes["seed"] = coords["seed"] = seed
            label = " ".join(f"{n}={_fmt(v)}" for n, v in coords.items())
            cells.append(Cell(label, base.replace(**changes), coords))
    return cells


@dataclass
class SweepResult:
    cells: list[tuple[str, object]]  # (label, SampleResult)
    grid: np.ndarray
    path: Path | None = None
    run_paths: tuple[Path, ...] = ()
    coords: list[dict] = dataclasses.field(default_factory=list)  # per cell: what differs (see Cell)
    processes: list[dict] = dataclasses.field(default_factory=list)  # per cell: who made it (run.json "process")


@dataclass
class CellFailure:
    """A cell that raised: its label, coords, params, the error's line and the process it ran on."""
    label: str
    coords: dict
    params: SamplingParams
    error: str
    process: dict


def run_sweep(sampler, image, cells: list[tuple[str, SamplingParams]],
              on_progress: Callable[[int, int, int, int], None] | None = None,
              should_stop: Callable[[], bool] | None = None, out_dir=None, save: bool = True,
              state=None, trajectory: bool = False, remove_bg: bool = False) -> SweepResult | None:
    """Run the cells in order. on_progress(cell_index, n_cells, step, n_steps).

    A cell that raises does not stop the others; when every cell has run, a sweep with failed cells raises
    SweepFailed naming each (label and error) after saving the finished cells as ordinary runs; the sweep
    folder (grid, contact sheet, metrics.csv, response.png) is written only when every cell succeeded. A cancel
    stops the sweep and writes nothing; so does a failed write: the cells and the sweep folder are saved
    together, or none. save=False returns the cells unsaved (the caller saves them) when every cell succeeded;
    failed cells save the finished ones either way.

    `state`: accelerate's PartialState of a multi-process launch (svd_core.distributed): this process runs its
    share of the cells (`distributed.assign`), the main process gathers every result and saves; the other
    processes return None. `trajectory`: every cell keeps its denoising record (Sampler.generate). `remove_bg`:
    the image's background is removed first (svd_core.images.prepare_image), and recorded."""
    from .distributed import assign, gather_to_main, process_record

    world, rank = (state.num_processes, state.process_index) if state is not None else (1, 0)
    mine = assign(cells, world)[rank] if world > 1 else list(range(len(cells)))
    outcomes = _run_cells(sampler, image, cells, mine, process_record(state), on_progress, should_stop,
                          trajectory, remove_bg)
    if world > 1:
        outcomes = gather_to_main(outcomes, state)
        if outcomes is None:
            return None
    coords = [getattr(c, "coords", None) or {} for c in cells]
    coords = coords if all(coords) else []
    ordered = [outcomes[i] for i in range(len(cells))]
    failures = [o for o in ordered if isinstance(o, CellFailure)]
    done = [i for i, o in enumerate(ordered) if not isinstance(o, CellFailure)]
    results = [(cells[i][0], ordered[i][0]) for i in done]
    processes = [ordered[i][1] for i in done]
    if failures:
        paths = save_cells(results, sampler.info, out_dir, [coords[i] for i in done] if coords else None,
                           processes, should_stop) if results else []
        raise SweepFailed(_failure_line(failures, len(cells), paths), failures, paths)
    fps = results[0][1].params.video_fps
    grid = grid_frames([r.frames for _, r in results], [label for label, _ in results], coords=coords,
                              caption=f"every cell plays at {fps} fps")
    if not save:
        return SweepResult(results, grid, coords=coords, processes=processes)
    return save_sweep(results, grid, sampler.info, out_dir, coords=coords, should_stop=should_stop,
                      processes=processes)


def _run_cells(sampler, image, cells, indices, process, on_progress, should_stop,
               trajectory: bool = False, remove_bg: bool = False) -> dict:
    """{cell index: (SampleResult, process) or CellFailure} for the cells `indices`, one after another. A cancel
    (Cancelled, KeyboardInterrupt) stops at once; any other error fails that cell only."""
    prepared, out = {}, {}  # one preparation per output size
    for idx in indices:
        label, params = cells[idx]

        def step(i, n, idx=idx):
            if on_progress is not None:
                on_progress(idx, len(cells), i, n)
        try:
            size = (params.width, params.height, params.resize_mode)
            if size not in prepared:
                prepared[size] = sampler.prepare(image, params, remove_bg)
            out[idx] = (sampler.generate(prepared[size], params, on_step=step, should_stop=should_stop,
                                         trajectory=trajectory), process)
        except (Cancelled, ProcessLost):  # the whole sweep stops
            raise
        except Exception as e:  # noqa: BLE001 - reported with the cell's parameters; the other cells go on
            text = " ".join(str(e).split())
            out[idx] = CellFailure(label, dict(getattr(cells[idx], "coords", None) or {}), params,
                                   f"{type(e).__name__}: {text}" if text else type(e).__name__, process)
    return out


def _failure_line(failures: list[CellFailure], n: int, paths) -> str:
    def where(f):
        p = f.process
        return f" on process {p['rank']} ({p['host']})" if p.get("processes", 1) > 1 else ""
    each = "; ".join(f"{f.label}{where(f)}: {f.error}" for f in failures)
    kept = (f"The {len(paths)} finished cell(s) are saved as runs in {Path(paths[0]).parent}" if paths
            else "No cell finished")
    return (f"{len(failures)} of {n} cells failed ({each}). {kept}; no sweep folder (grid, metrics.csv) was "
            "written: fix or drop the failed values and run the sweep again")


def metric_rows(results, coords: list[dict] | None = None) -> list[dict]:
    """One row per cell: label, every varied knob, seed, every scalar metric (None where not measured)."""
    from .metrics import scalar_metrics

    rows = []
    knobs = [k for k in (coords[0] if coords else {}) if k != "seed"]
    if not coords:  # hand-made cells: the fields that differ
        dicts = [r.params.to_dict() for _, r in results]
        knobs = [k for k in dicts[0] if k != "seed" and len({repr(d[k]) for d in dicts}) > 1]
    for i, (label, r) in enumerate(results):
        p = r.params.to_dict()
        varied = coords[i] if coords else p  # the value as varied (elevations_deg=30, not [30.0])
        row = {"label": label, **{k: varied[k] for k in knobs}, "seed": p["seed"]}
        values = scalar_metrics(r.metrics or {})
        row.update({k: values.get(k) for k in METRICS})
        rows.append(row)
    return rows


METRICS = ("motion.score", "motion.flow_px_per_frame", "flicker.mean", "likeness.mean")


def to_csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return buf.getvalue().encode()


def response_table(sweep) -> list[dict]:
    """The response of each metric to the knob(s), over seeds: one row per (knob value(s), metric) with mean,
    std, min, max and n. `sweep`: a SweepResult, a sweep folder (reads its metrics.csv) or rows from
    `metric_rows`. Long format, ready for Streamlit's charts."""
    rows, knobs = _rows_and_knobs(sweep)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in knobs), []).append(row)
    out = []
    for key, members in groups.items():
        for m in METRICS:
            vals = [float(r[m]) for r in members if r.get(m) not in (None, "")]
            if not vals:
                continue
            a = np.asarray(vals)
            out.append({**dict(zip(knobs, key)), "metric": m, "mean": float(a.mean()), "std": float(a.std()),
                        "min": float(a.min()), "max": float(a.max()), "n": len(vals)})
    return out


def _rows_and_knobs(sweep) -> tuple[list[dict], list[str]]:
    if isinstance(sweep, SweepResult):
        rows = metric_rows(sweep.cells, sweep.coords)
    elif isinstance(sweep, (str, Path)):  # a sweep folder: checked as one (its run.json) before its table is read
        from .runs import read_record

        record = read_record(Path(sweep) / RUN_FILE, f"{Path(sweep).name}/{RUN_FILE}")
        if record.kind != "sweep":
            raise RecordError(f"{Path(sweep).name} is a run, not a sweep: it has no response table")
        rows = _read_metrics(Path(sweep) / "metrics.csv", f"{Path(sweep).name}/metrics.csv")
    else:
        rows = list(sweep)
    if not rows:
        return [], []
    knobs = [k for k in rows[0] if k not in ("label", "seed", *METRICS)]
    return rows, knobs or ["seed"]  # a sweep over seeds alone: the seed is the knob


def _read_metrics(path: Path, name: str) -> list[dict]:
    """The rows of a sweep's metrics.csv (`to_csv`) if it is one: a header of distinct names with label, every
    row as long as the header, the metric columns numbers or empty; else RecordError, one line naming `name`."""
    def bad(what: str):
        return RecordError(f"{name} is not a sweep's metrics table ({what}): run the sweep again")
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header, raw = reader.fieldnames or [], list(reader)
    except FileNotFoundError:
        raise bad("it is missing") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise bad(str(e)) from None
    if "label" not in header or len(set(header)) != len(header):
        raise bad("its header does not name distinct columns with label")
    rows = []
    for i, r in enumerate(raw, 2):
        if None in r or None in r.values():
            raise bad(f"line {i} has {'more' if None in r else 'fewer'} values than the header")
        row = {k: _num(v) for k, v in r.items()}
        if not all(row.get(m) is None or isinstance(row[m], (int, float)) for m in METRICS):
            raise bad(f"line {i} has a metric that is not a number")
        rows.append(row)
    return rows


def _num(v: str):
    if v == "":
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def response_png(sweep, title: str = "") -> bytes:
    """The response curves for papers and slides (matplotlib): per metric, mean and spread (min-max band, each
    seed as a dot) against the knob; for two knobs a heat map of the mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, knobs = _rows_and_knobs(sweep)
    table = response_table(rows)
    metrics = [m for m in METRICS if any(t["metric"] == m for t in table)]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(4.2 * max(1, len(metrics)), 3.6), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        t = [r for r in table if r["metric"] == m]
        if len(knobs) == 1:
            k = knobs[0]
            xs = [r[k] for r in t]
            numeric = all(isinstance(x, (int, float)) for x in xs)
            pos = xs if numeric else list(range(len(xs)))
            ax.fill_between(pos, [r["min"] for r in t], [r["max"] for r in t], alpha=0.2, label="min-max")
            ax.errorbar(pos, [r["mean"] for r in t], yerr=[r["std"] for r in t], marker="o", capsize=3,
                        label="mean ± std")
            for r in rows:
                if r.get(m) not in (None, ""):
                    ax.plot(r[k] if numeric else xs.index(r[k]), float(r[m]), ".", color="k", alpha=0.4)
            if not numeric:
                ax.set_xticks(pos, [str(x) for x in xs])
            ax.set_xlabel(k)
        else:
            kx, ky = knobs[0], knobs[1]
            xs = list(dict.fromkeys(r[kx] for r in t))
            ys = list(dict.fromkeys(r[ky] for r in t))
            grid = np.full((len(ys), len(xs)), np.nan)
            for r in t:
                grid[ys.index(r[ky]), xs.index(r[kx])] = r["mean"]
            im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
            ax.set_xticks(range(len(xs)), [str(x) for x in xs])
            ax.set_yticks(range(len(ys)), [str(y) for y in ys])
            ax.set_xlabel(kx)
            ax.set_ylabel(ky)
            for (yi, xi), v in np.ndenumerate(grid):
                if not np.isnan(v):
                    ax.text(xi, yi, f"{v:.3g}", ha="center", va="center", color="w", fontsize=8)
            fig.colorbar(im, ax=ax)
        n = max((r["n"] for r in t), default=0)
        ax.set_title(f"{METRIC_LABELS[m]}\n(n={n} seed{'s' if n != 1 else ''} per point)", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _stage_cells(results, checkpoint, out_dir: Path, sweep_id: str, coords, processes, staged: list,
                 **fields) -> None:
    for i, (label, r) in enumerate(results):
        staged.append(stage_run(r, checkpoint, out_dir / new_run_id(), sweep=sweep_id, label=label,
                                coords=coords[i] if coords else None,
                                process=processes[i] if processes else None, **fields))


def save_cells(results, checkpoint, out_dir=None, coords: list[dict] | None = None,
               processes: list[dict] | None = None, should_stop: Callable[[], bool] | None = None) -> list[Path]:
    """The finished cells of a sweep that had failed cells: ordinary run folders (run.json: the sweep id, label,
    coords, process and "sweep_incomplete": true), all or none; no sweep folder."""
    out_dir = Path(out_dir or output_dir())
    staged = []
    try:
        _stage_cells(results, checkpoint, out_dir, new_run_id("sweep-"), coords, processes, staged,
                     sweep_incomplete=True)
        return commit_staged(staged, should_stop)
    except BaseException:
        discard_staged(staged)
        raise


def save_sweep(results, grid, checkpoint, out_dir=None, coords: list[dict] | None = None,
               should_stop: Callable[[], bool] | None = None, processes: list[dict] | None = None,
               calibration: dict | None = None, extra_files: dict[str, bytes] | None = None,
               extra_runs: list[tuple[str, object]] | None = None) -> SweepResult:
    """Every cell's run folder and the sweep folder, staged as temporary folders and renamed into place
    together: all or nothing (a cancel up to the first rename leaves nothing). `processes`: per cell, the
    process that made it (run.json's "process"). `calibration`: a calibration's fit and answer (the record's
    `calibration`); `extra_files`: more files in its folder; `extra_runs`: (label, SampleResult) saved with it,
    listed after the cells in its "cells" (no coords; not in the grid or metrics.csv), their paths after the
    cells' in run_paths."""

    out_dir = Path(out_dir or output_dir())
    sweep_id = new_run_id("sweep-")
    coords = coords or []
    processes = processes or []
    staged = []
    try:
        # the cells are pending until the sweep folder lands (runs.repair_sweeps)
        _stage_cells(results, checkpoint, out_dir, sweep_id, coords, processes, staged, sweep_pending=True)
        _stage_cells(extra_runs or [], checkpoint, out_dir, sweep_id, [], [], staged, sweep_pending=True)
        labels = [label for label, _ in results]
        sheet = contact_sheet([r.frames for _, r in results], labels, coords=coords or None)
        first = results[0][1]
        rows = metric_rows(results, coords)
        title = checkpoint.name + (" (untrained demo model: metrics are meaningless)"
                                   if checkpoint.variant.untrained else "")
        files = {
            "contact_sheet.png": video.to_png(np.asarray(sheet)),
            "poster.png": video.to_png(grid[0]),
            "input.png": video.to_png(np.asarray(first.image.image)),
            "metrics.csv": to_csv(rows),
            "response.png": response_png(rows, title),
        }
        cells = [{"label": label, "run": folder.name, "params": r.params.to_dict(),
                  **({"coords": coords[i]} if coords else {}), **({"process": processes[i]} if processes else {})}
                 for i, ((label, r), (_, folder)) in enumerate(zip(results, staged))]
        cells += [{"label": label, "run": folder.name, "params": r.params.to_dict()}
                  for (label, r), (_, folder) in zip(extra_runs or [], staged[len(results):])]
        files.update(extra_files or {})
        record = sweep_record(results, checkpoint, sweep_id, cells, [*files, "grid.mp4"], processes, calibration)

        def contents(tmp: Path) -> dict[str, bytes]:
            return {"grid.mp4": video.to_mp4(grid, first.params.video_fps, workdir=tmp,
                                              metadata=record.for_video()), **files,
                    RUN_FILE: record_bytes(record)}
        staged.append((stage_folder(out_dir / sweep_id, contents), out_dir / sweep_id))
        paths = commit_staged(staged, should_stop)  # the sweep folder last: its cells are marked until it lands
    except BaseException:
        discard_staged(staged)
        raise
    settle_cells(paths[:-1])
    return SweepResult(results, grid, paths[-1], tuple(paths[:-1]), coords, processes)
