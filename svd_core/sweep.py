"""Parameter sweeps: one image, one seed, one or two knobs over lists; cells run one after another and land as
ordinary runs plus a labelled side-by-side grid video and a contact sheet."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import export
from .params import CHOICES, SamplingParams, field_names
from .runs import new_run_id, output_dir, save_run, utc_now, write_folder_atomically

MAX_CELLS = 16


def parse_vary(spec: str) -> tuple[str, list]:
    """'motion_bucket_id=32,127,255' -> ('motion_bucket_id', [32, 127, 255]); 'sampler=euler,heun' ->
    ('sampler', ['euler', 'heun']) (string knobs are checked against their valid values)."""
    name, sep, values = spec.partition("=")
    name = name.strip()
    if not sep or not values.strip():
        raise ValueError(f"--vary takes NAME=V1,V2,..., got {spec!r}")
    fields = {f.name: f for f in dataclasses.fields(SamplingParams)}
    if name not in fields:
        raise ValueError(f"unknown parameter {name!r}; valid: {', '.join(field_names())}")
    ftype = str(fields[name].type)  # a string under postponed annotations: 'int', 'float', 'Optional[int]', 'str'
    cast = int if "int" in ftype else float if "float" in ftype else str
    try:
        parsed = [cast(v.strip()) for v in values.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"bad value in --vary {spec!r}: expected {cast.__name__}s") from None
    valid = CHOICES.get(name, (None,))[0]
    bad = [v for v in parsed if valid is not None and v not in valid]
    if bad:
        raise ValueError(f"unknown {name} {bad[0]!r} in --vary; valid: {', '.join(valid)}")
    return name, parsed


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def grid_cells(base: SamplingParams, vary: dict[str, list], max_cells: int = MAX_CELLS
               ) -> list[tuple[str, SamplingParams]]:
    """Every combination of one or two knobs' values, labelled 'name=value'. Invalid cells raise ValueError."""
    if not 1 <= len(vary) <= 2:
        raise ValueError(f"vary one or two parameters, got {len(vary)}")
    names = list(vary)
    combos = list(itertools.product(*(vary[n] for n in names)))
    if not 2 <= len(combos) <= max_cells:
        raise ValueError(f"a comparison needs 2 to {max_cells} cells, got {len(combos)}")
    cells = []
    for combo in combos:
        changes = dict(zip(names, combo))
        label = " ".join(f"{n}={_fmt(v)}" for n, v in zip(names, combo))
        cells.append((label, base.replace(**changes)))
    return cells


@dataclass
class SweepResult:
    cells: list[tuple[str, object]]  # (label, SampleResult)
    grid: np.ndarray
    path: Path | None = None
    run_paths: tuple[Path, ...] = ()


def run_sweep(sampler, image, cells: list[tuple[str, SamplingParams]],
              on_progress: Callable[[int, int, int, int], None] | None = None,
              should_stop: Callable[[], bool] | None = None, out_dir=None, save: bool = True,
              on_queue=None) -> SweepResult:
    """Run the cells in order. on_progress(cell_index, n_cells, step, n_steps). A cancelled sweep raises
    Cancelled and writes nothing."""
    prepared, results = {}, []  # one preparation per output size
    for idx, (label, params) in enumerate(cells):
        size = (params.width, params.height, params.resize_mode)
        if size not in prepared:
            prepared[size] = sampler.prepare(image, params)
        img = prepared[size]

        def step(i, n, idx=idx):
            if on_progress is not None:
                on_progress(idx, len(cells), i, n)
        results.append((label, sampler.generate(img, params, on_step=step, should_stop=should_stop,
                                                on_queue=on_queue)))
    labels = [label for label, _ in results]
    grid = export.grid_frames([r.frames for _, r in results], labels)
    if not save:
        return SweepResult(results, grid)
    return save_sweep(results, grid, sampler.info, out_dir)


def save_sweep(results, grid, checkpoint, out_dir=None) -> SweepResult:
    out_dir = Path(out_dir or output_dir())
    sweep_id = new_run_id("sweep-")
    run_paths = tuple(save_run(r, checkpoint, out_dir, extra={"sweep": sweep_id, "label": label})
                      for label, r in results)
    labels = [label for label, _ in results]
    sheet = export.contact_sheet([r.frames for _, r in results], labels)
    first = results[0][1]
    files = {
        "grid.mp4": export.to_mp4(grid, first.params.video_fps),
        "contact_sheet.png": export.to_png(np.asarray(sheet)),
        "poster.png": export.to_png(grid[0]),
        "input.png": export.to_png(np.asarray(first.image.image)),
    }
    record = {
        "kind": "sweep",
        "created": utc_now(),
        "params": first.params.to_dict(),
        "seed": first.params.seed,
        "checkpoint": {"file": checkpoint.name, "variant": checkpoint.variant.name},
        "cells": [{"label": label, "run": p.name, "params": r.params.to_dict()}
                  for (label, r), p in zip(results, run_paths)],
        "files": sorted(files),
    }
    files["run.json"] = json.dumps(record, indent=2).encode()
    path = write_folder_atomically(out_dir / sweep_id, files)
    return SweepResult(results, grid, path, run_paths)
