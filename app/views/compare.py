"""Compare: one image, one or two knobs over 2-6 values each on one or more seeds (or settings A vs B), run one
after another, shown in one synchronised grid video labelled by axis, with each metric's response to the knob;
or find the bucket: the value of a knob expected to give a target motion (svd_core.run_calibration)."""

from __future__ import annotations

import streamlit as st

from app import charts, state
from app.controls import image_uploader, prepare, ranged, require_sampler, warning_captions
from app.widgets.progress import run_section, start_job
from app.widgets.result import gone, picture, show_video, trajectory_steps
from svd_core import (
    SamplingParams,
    SVDError,
    calibration_cells,
    grid_cells,
    load_run,
    response_table,
    run_calibration,
    run_sweep,
)
from svd_core.params import CALIBRATION_VALUES, format_value, help_text, label, parse_seeds, parse_values

KNOBS = ("motion_bucket_id", "fps", "noise_aug_strength", "decode_chunk_size", "num_inference_steps",
         "max_guidance_scale", "sampler", "guider", "edge_perc", "period", "seed")
# A vs B: everything but the image, the seed and the video's size (a slider and a typed value each: controls.ranged)
AB_KNOBS = {"motion_bucket_id": 1, "fps": 1, "noise_aug_strength": 0.005, "num_inference_steps": 1,
            "min_guidance_scale": 0.1, "max_guidance_scale": 0.1, "decode_chunk_size": 1}
MODES = ["Knobs over values", "Settings A vs B", "Find the bucket"]


def presets(knob: str, base: SamplingParams) -> str:
    """Starting values for a knob, valid for the loaded model's settings."""
    if knob == "decode_chunk_size":
        n = base.num_frames
        return ", ".join(str(v) for v in sorted({1, max(1, n // 2), n}))
    return {"motion_bucket_id": "32, 127, 255", "fps": "3, 7, 15", "noise_aug_strength": "0, 0.1, 0.3",
            "num_inference_steps": "10, 25, 40", "max_guidance_scale": "1, 2.5, 4", "sampler": "euler, heun, dpmpp_2m",
            "guider": "linear, triangle, trapezoid", "edge_perc": "0.1, 0.2, 0.3", "period": "0.5, 1, 2",
            "elevations_deg": "0, 10, 30",
            "seed": f"{base.seed}, {base.seed + 1}, {base.seed + 2}"}[knob]


def knobs_of(variant) -> tuple[list[str], dict]:
    """The knobs this model reads (SV3D: no fps or motion; SV3D_p: the elevation), for both modes."""
    unused = set(variant.unused_knobs)
    knobs = [k for k in KNOBS if k not in unused]
    if variant.family == "sv3d_p":
        knobs.insert(0, "elevations_deg")
    return knobs, {k: v for k, v in AB_KNOBS.items() if k not in unused}


def values_of(knob: str, text: str) -> list:
    """2 to 6 values typed for a knob (params.parse_values reads them)."""
    out = parse_values(knob, text)
    if not 2 <= len(out) <= 6:
        raise ValueError(f"type 2 to 6 values for {label(knob)} (you typed {len(out)})")
    return out


def _reset_ab(base: SamplingParams, ab_knobs) -> None:
    for side in "AB":
        for name in ab_knobs:
            state.put(state.ab_key(side, name), getattr(base, name))


# ------------------------------------------------------------------------------------------------ the page

def page() -> None:
    sampler = require_sampler()
    variant = sampler.info.variant
    knobs, ab_knobs = knobs_of(variant)
    st.title("Compare")
    try:
        base = state.params()
    except ValueError as e:
        st.error(f"Fix the settings on Generate first: {e}")
        st.stop()
    conditioning = ("the camera path" if variant.family == "sv3d_p" else "" if variant.is_sv3d
                    else f"motion bucket {base.motion_bucket_id}, conditioning fps {base.fps}")
    st.caption(f"Everything not varied comes from Generate's settings: seed {base.seed}, {base.num_frames} frames, "
               f"{base.num_inference_steps} steps, {base.width}x{base.height}, "
               + (f"{conditioning}, " if conditioning else "") + f"noise augmentation {base.noise_aug_strength:g}.")

    left, right = st.columns([1, 2], gap="large")
    with left:
        upload = image_uploader(state.UPLOAD_COMPARE)
        if upload is not None:
            try:
                st.image(prepare(sampler, upload.data, base).image, caption="As sampled")
            except (SVDError, ValueError) as e:
                st.error(f"{upload.name}: {e}", icon=":material/broken_image:")
                upload = None
    with right:
        state.setdefault(state.COMPARE_MODE, MODES[0])
        mode = st.radio("What to compare", MODES, horizontal=True, key=state.COMPARE_MODE, persist_state="session")
        calibration = None
        if mode == MODES[0]:
            cells, problem = knobs_over_values(base, knobs)
        elif mode == MODES[2]:
            calibration, problem = find_the_bucket(base, variant)
            cells = calibration["cells"] if calibration else None
        else:
            cells, problem = a_vs_b(base, variant, ab_knobs)
        if problem:
            st.error(problem, icon=":material/warning:")
    hint = ("Upload an image to enable comparing." if upload is None else
            "Change a setting of B (or A) to compare." if mode == MODES[1] and not cells and not problem else
            "Fix the values above." if not cells else None)
    untrained = variant.untrained
    if mode == MODES[2]:
        run_section("cmp", f"Run {len(cells)} samplings and 1 to confirm" if cells else "Run", hint,
                    start_calibration, (upload, base, calibration), lambda: result(untrained))
    else:
        st.checkbox("Save each cell's denoising record", key=state.COMPARE_TRAJECTORY, persist_state="session",
                    help="Every cell keeps the model's estimate at every step (denoising.mp4) and its statistics: the "
                         "result then shows the same step of every cell side by side.")
        run_section("cmp", f"Run {len(cells)} samplings" if cells else "Run", hint, start, (upload, cells),
                    lambda: result(untrained))


def knobs_over_values(base: SamplingParams, knobs: list[str]) -> tuple[list | None, str | None]:
    """One or two knobs over typed values, on one or more seeds: (cells, None) or (None, what is wrong)."""
    if state.get(state.COMPARE_KNOB) not in knobs:  # a model without this knob
        state.put(state.COMPARE_KNOB, knobs[0])
    current = state.get(state.COMPARE_KNOB)
    knob = st.selectbox("Knob", knobs, key=state.COMPARE_KNOB, persist_state="session", format_func=label,
                        help=help_text(current, "Elevation: one camera elevation per cell, on the same azimuths."
                                       if current == "elevations_deg" else ""))
    key = state.compare_values_key(knob)
    state.setdefault(key, presets(knob, base))
    text = st.text_input("Values (2 to 6, separated by commas or spaces)", key=key, persist_state="session")
    state.setdefault(state.COMPARE_SEEDS, 1)
    n_seeds = 1 if knob == "seed" else st.number_input(
        "Seeds per value", min_value=1, max_value=5, key=state.COMPARE_SEEDS, persist_state="session",
        help="Each value runs on seeds seed, seed+1, ... (the same seeds for every value): the response curve "
             "shows the mean and the spread over seeds.")
    others = ["none"] + [k for k in knobs if k not in (knob, "seed")]
    if state.get(state.COMPARE_KNOB2) not in others:
        state.put(state.COMPARE_KNOB2, "none")
    knob2 = st.selectbox("Second knob (optional: a grid of both)", others, key=state.COMPARE_KNOB2,
                         persist_state="session", format_func=lambda k: "none" if k == "none" else label(k))
    vary_text = {knob: text}
    if knob2 != "none":
        key2 = state.compare_values_key(knob2, second=True)
        state.setdefault(key2, presets(knob2, base))
        vary_text[knob2] = st.text_input(f"Values of {label(knob2)}", key=key2, persist_state="session",
                                         help=help_text(knob2))
    try:
        seeds = parse_seeds(str(n_seeds), base.seed) if n_seeds > 1 else None
        return grid_cells(base, {k: values_of(k, t) for k, t in vary_text.items()}, max_cells=36, seeds=seeds), None
    except ValueError as e:
        return None, str(e)


def a_vs_b(base: SamplingParams, variant, ab_knobs: dict) -> tuple[list | None, str | None]:
    """Two settings side by side, each with Generate's warnings: (cells, None), (None, what is wrong), or
    (None, None) while A and B are the same."""
    if not state.has(state.ab_key("A", next(iter(ab_knobs)))):  # A and B both start as Generate's settings
        _reset_ab(base, ab_knobs)
    sets = []
    for col, side in zip(st.columns(2), "AB"):
        with col:
            st.markdown(f"**{side}**")
            changes = {name: ranged(name, state.ab_key(side, name)) for name in ab_knobs}
            try:  # the same warnings as Generate's, on each side
                side_warnings = variant.warnings(base.replace(**changes))
            except ValueError:
                side_warnings = []
            warning_captions(side_warnings)
            sets.append(changes)
    st.button("Reset A and B to Generate's settings", on_click=_reset_ab, args=(base, ab_knobs))
    differ = [k for k in ab_knobs if sets[0][k] != sets[1][k]]
    if not differ:
        st.info("A and B start as Generate's settings: change a setting of B (or A) to compare them.",
                icon=":material/info:")
        return None, None
    st.markdown("**Differs:** " + " · ".join(
        f":orange-badge[{label(k)}: A {format_value(sets[0][k])} → B {format_value(sets[1][k])}]" for k in differ))
    try:
        return [(f"{side}: " + ", ".join(f"{k}={format_value(ch[k])}" for k in differ), base.replace(**ch))
                for side, ch in zip("AB", sets)], None
    except ValueError as e:
        return None, str(e)


def find_the_bucket(base: SamplingParams, variant) -> tuple[dict | None, str | None]:
    """The calibration's inputs: the knob, the target motion, the values, the seeds, fewer steps if allowed.
    Returns (spec, None) or (None, what is wrong)."""
    knobs = [k for k in CALIBRATION_VALUES if k not in variant.unused_knobs]
    if state.get(state.CALIBRATE_KNOB) not in knobs:
        state.put(state.CALIBRATE_KNOB, knobs[0])
    st.caption("Which value of a knob gives this image a target motion? Each value runs on a few seeds, the motion "
               "(the SVD paper's units) is fitted against the knob with a monotone fit, and the value expected to "
               "give the target is confirmed by one run with Generate's seed and steps. When the motion does not "
               "follow the knob (flat or not monotone over the seeds), the result says so and gives no value.")
    c1, c2 = st.columns(2)
    with c1:
        knob = st.selectbox("Knob", knobs, key=state.CALIBRATE_KNOB, persist_state="session", format_func=label,
                            help=help_text(state.get(state.CALIBRATE_KNOB)))
    with c2:
        state.setdefault(state.CALIBRATE_TARGET, 2.0)
        target = st.number_input("Target motion (paper units)", min_value=0.0, max_value=1000.0, step=0.5,
                                 key=state.CALIBRATE_TARGET, persist_state="session",
                                 help="The motion score wanted, as the result panel and `measure` report it.")
    key = state.calibrate_values_key(knob)
    state.setdefault(key, ", ".join(format_value(v) for v in CALIBRATION_VALUES[knob]))
    text = st.text_input("Values to sample (3 or more)", key=key, persist_state="session")
    c3, c4 = st.columns(2)
    with c3:
        state.setdefault(state.CALIBRATE_SEEDS, 3)
        n_seeds = st.number_input("Seeds per value", min_value=2, max_value=5, key=state.CALIBRATE_SEEDS,
                                  persist_state="session", help="The spread over seeds decides what the fit can "
                                                                "tell: at least 2.")
    with c4:
        fewer = st.checkbox("Sample at fewer steps", key=state.CALIBRATE_FEWER, persist_state="session",
                            help="Faster; the fit is then of those runs (the result says so). The confirming run "
                                 "uses Generate's steps.")
        steps = state.setdefault(state.CALIBRATE_STEPS, max(1, base.num_inference_steps // 2))
        state.put(state.CALIBRATE_STEPS, min(steps, base.num_inference_steps))  # Generate's steps went down
        steps = st.number_input("Steps for the sampled values", min_value=1, max_value=base.num_inference_steps,
                                key=state.CALIBRATE_STEPS, persist_state="session", disabled=not fewer)
    try:
        if base.num_videos != 1:  # only the first video would be measured
            raise ValueError("calibrate runs one video per cell: set Videos per run to 1")
        values = parse_values(knob, text)
        seeds = parse_seeds(str(n_seeds), base.seed)
        steps = int(steps) if fewer and steps < base.num_inference_steps else None
        cells = calibration_cells(base, knob, values, seeds, steps, variant)
    except ValueError as e:
        return None, str(e)
    return {"knob": knob, "target": float(target), "values": values, "seeds": seeds, "steps": steps,
            "cells": cells}, None


# ------------------------------------------------------------------------------------------------ the jobs

def _cell_runs(paths) -> list:
    """The cells' runs (RunInfo), read once when the job ends; a cell deleted meanwhile is left out."""
    runs = []
    for path in paths:
        try:
            runs.append(load_run(path))
        except ValueError:
            pass
    return runs


def start_calibration(upload, base: SamplingParams, spec: dict | None) -> None:
    if upload is None or not spec:
        return
    cells = spec["cells"]

    def work(job, sampler):
        def progress(idx, n, i, steps):
            job.on_cell(idx, n, i, steps, cells[idx][0] if idx < len(cells) else "confirming run")
        res = run_calibration(sampler, upload.data, base, spec["knob"], spec["target"], spec["values"],
                              spec["seeds"], spec["steps"], on_progress=progress, should_stop=job.should_stop)
        return {"path": res.path, "calibration": res.summary(), "verdict": res.fit.verdict,
                "confirm": res.confirm_path, "width": cells[0][1].width, "runs": _cell_runs(res.run_paths)}
    p = cells[0][1]
    start_job("cmp", "calibrate", work, label=f"{len(cells) + 1} cells",
              frame_megapixels=p.num_frames * p.width * p.height / 1e6)


def start(upload, cells) -> None:
    if upload is None or not cells:  # the gate: no image, no run
        return
    trajectory = bool(state.get(state.COMPARE_TRAJECTORY))

    def work(job, sampler):
        def progress(idx, n, i, steps):
            job.on_cell(idx, n, i, steps, cells[idx][0])
        res = run_sweep(sampler, upload.data, cells, on_progress=progress, should_stop=job.should_stop,
                        trajectory=trajectory)
        return {"path": res.path, "runs": _cell_runs(res.run_paths)}
    p = cells[0][1]
    start_job("cmp", "compare", work, label=f"{len(cells)} cells",
              frame_megapixels=p.num_frames * p.width * p.height / 1e6)


# ---------------------------------------------------------------------------------------------- the result

def response(path, untrained: bool) -> None:
    """Each metric against the knob: mean over seeds with its min-max spread."""
    try:
        rows = response_table(path)
    except (OSError, ValueError):
        return
    knobs = [k for k in (rows[0] if rows else {}) if k not in ("metric", "mean", "std", "min", "max", "n")]
    if not 1 <= len(knobs) <= 2:
        return
    knob = knobs[0]
    st.markdown(f"**Response to {' and '.join(label(k) for k in knobs)}**"
                + (" · :orange[demo model: meaningless numbers]" if untrained else ""))
    order = {k: list(dict.fromkeys(str(r[k]) for r in rows)) for k in knobs}  # the values as they were given
    metrics = sorted({r["metric"] for r in rows})
    cols = st.columns(min(3, len(metrics)) or 1)
    for i, metric in enumerate(metrics):
        pts = [r for r in rows if r["metric"] == metric]
        with cols[i % len(cols)]:
            if len(knobs) == 2:  # a heat map of the mean over seeds, its axes in the grid's order (not as text)
                st.caption(f"{label(metric)} (mean over {pts[0]['n']} seed(s))")
                st.vega_lite_chart(
                    [{k: str(r[k]) for k in knobs} | {"mean": r["mean"]} for r in pts],
                    {"mark": "rect", "height": 160,
                     "encoding": {"x": {"field": knobs[0], "type": "ordinal", "sort": order[knobs[0]],
                                        "title": label(knobs[0]), "axis": {"labelAngle": 0}},
                                  "y": {"field": knobs[1], "type": "ordinal", "sort": order[knobs[1]],
                                        "title": label(knobs[1])},
                                  "color": {"field": "mean", "type": "quantitative"},
                                  "tooltip": [{"field": "mean", "type": "quantitative"}]}})
                continue
            spread = f", spread over {pts[0]['n']} seeds" if pts and pts[0]["n"] > 1 else ""
            st.caption(f"{label(metric)} (mean{spread})")
            series = ("mean", "min", "max") if spread else ("mean",)
            charts.chart([{knob: str(r[knob]), "series": k, "value": r[k]} for r in pts for k in series], knob,
                         "value", x_type="ordinal", color="series" if spread else None, y_title=None,
                         height=160, x_title=label(knob))
    f = path / "metrics.csv"
    if f.is_file():
        st.download_button("metrics.csv", f.read_bytes(), file_name=f"{path.name}-metrics.csv", mime="text/csv",
                           key="cmp-dl-csv")


def calibration_result(res: dict, untrained: bool) -> None:
    st.subheader("Find the bucket")
    if gone(res["path"]):
        return
    lines = res["calibration"].splitlines()
    (st.success if res["verdict"] == "ok" else st.warning)(lines[0], icon=":material/target:")
    for line in lines[1:]:
        st.caption(line)
    picture(res["path"] / "calibration.png", caption="Motion per seed (dots), mean ± std, the monotone fit, "
            "the target line; the value found, its interval and the confirming run (star)")
    if res.get("confirm"):
        show_video(res["confirm"] / "video.mp4", "the confirming run", frame_width=res["width"])
    response(res["path"], untrained)


def result(untrained: bool) -> None:
    """The last comparison of this session: the grid video, the downloads, the response, each cell's run."""
    res = state.slot("cmp").result
    if not res:
        return
    st.divider()
    if res.get("calibration"):
        calibration_result(res, untrained)
        return
    st.subheader("Side by side")
    if gone(res["path"]):
        return
    runs = res["runs"]
    st.caption("One video, all cells in sync, labelled with their values.")
    grid_width = sum(r.params.width for r in runs[:3]) + 8
    show_video(res["path"] / "grid.mp4", frame_width=grid_width)
    c = st.columns(3)
    for col, (title, name, mime) in zip(c, [("Grid video (mp4)", "grid.mp4", "video/mp4"),
                                            ("Contact sheet (png)", "contact_sheet.png", "image/png")]):
        f = res["path"] / name
        if f.is_file():
            col.download_button(title, f.read_bytes(), file_name=f"{res['path'].name}-{name}", mime=mime,
                                key=f"cmp-dl-{name}")
    response(res["path"], untrained)
    if any(r.record.trajectory for r in runs) and st.toggle("Denoising, step by step", key=state.COMPARE_STEPS):
        trajectory_steps(runs, [r.record.label or r.id for r in runs], "cmp")
    if runs:
        with st.expander("Each run on its own"):
            cols = st.columns(min(3, len(runs)))
            for i, run in enumerate(runs):
                with cols[i % len(cols)]:
                    show_video(run.path / "video.mp4", run.record.label or run.id, frame_width=run.params.width)
