"""History: the runs in outputs/, newest first, a comparison's cells under it; reuse a run's settings and its
original image, or delete it (a comparison with or without its cells)."""

from __future__ import annotations

import dataclasses

import streamlit as st

from app import navigation, state
from app.controls import current_checkpoint, load_settings
from app.resources import checkpoints, get_server
from app.server import Busy
from app.widgets.result import picture, trajectory_steps, trajectory_view
from svd_core import (
    SVDError,
    background_removal_available,
    delete_run,
    load_run,
    read_video_record,
    scan_runs,
    summary_line,
)
from svd_core.params import label


def load_from_video(runs) -> None:
    """A dropped mp4 of ours carries its run's record: load its settings (and its image, if a run here used the
    same one)."""
    up = st.file_uploader("Load the settings of a video made with SVD Studio (mp4)", type=["mp4"],
                          key=state.UPLOAD_VIDEO,
                          help="Every mp4 we write carries its parameters, seed and checkpoint.")
    if up is None or state.video_loaded(up.file_id):
        return
    state.set_video_loaded(up.file_id)
    try:
        record = read_video_record(up.getvalue())
        params = record.params
    except (SVDError, ValueError) as e:
        st.error(f"{up.name}: {e}", icon=":material/error:")
        return
    grid = record.kind == "sweep"  # a comparison's grid.mp4: its first cell's settings

    info = current_checkpoint()
    load_settings(params, str(info.path) if info else None)
    state.set_remove_bg(record.request.remove_bg)
    state.set_save_trajectory(record.request.save_trajectory)
    same = next((r for r in runs if r.record.input_pixels_sha256 == record.input_pixels_sha256), None)
    image = (same.original_input or same.file("input.png")) if same is not None else None
    if image is not None and image.is_file():
        state.set_image(state.Upload(same.record.input_name or image.name, image.read_bytes()))
        got = "settings and image"
    else:
        got = "settings (its image is not among the runs here: upload it on Generate)"
    ck = record.checkpoint
    note = f" It was made with {ck}." if info is None or ck != info.name else ""
    if grid:
        varied = ", ".join(label(k) for k in record.varied or ["seed"])
        listed = " (listed below)" if record.sweep in {r.id for r in runs} else ""
        got = (f"{up.name} is the grid of comparison {record.sweep}{listed}, which varied {varied}: the "
               f"{got.replace('settings', 'settings of its first cell', 1)}")
    else:
        got = f"The {got} of {up.name}"
    state.slot("gen").result = None
    state.notify("generate", f"{got} loaded.{note}")
    st.success(f"{got} loaded.{note}", icon=":material/check_circle:")
    st.page_link(navigation.page("generate"), label="Open Generate to reproduce it", icon=":material/movie:")


def use_settings(run_id: str, path) -> bool:
    """Load the run's request (its settings, background removal and denoising-record option), original image and
    (when it is still here) checkpoint into Generate; False (and a note) when the run is gone, or when its
    checkpoint is here but cannot be loaded now (runs are active)."""
    try:
        run = load_run(path)
        image = run.original_input or run.file("input.png")
        data = image.read_bytes() if image is not None else None
    except (ValueError, OSError):
        state.notify("history", f"Run {run_id} was deleted (maybe in another tab): nothing loaded.")
        return False
    if data is None:
        state.notify("history", f"Run {run_id} has no input image in its folder: nothing loaded.")
        return False
    server = get_server()
    same_file = [c for c in checkpoints() if c.name == run.record.checkpoint]
    note = ""
    if same_file and server.choice is not None and str(same_file[0].path) != server.choice.checkpoint:
        try:  # only the checkpoint changes: the device, memory mode and compile stay the server's
            server.select(dataclasses.replace(server.choice, checkpoint=str(same_file[0].path)),
                          by=state.session_id())
        except Busy as e:  # its settings belong to its model (maybe another variant's): not loaded for this one
            state.notify("history", f"Run {run_id} was made with {same_file[0].name}, which cannot be loaded now: "
                                    f"{e}. Nothing loaded: try again then.")
            return False
    elif not same_file:
        note = f" Its checkpoint {run.record.checkpoint or '?'} is not in checkpoints/."
    info = current_checkpoint()
    request = run.record.request
    load_settings(request.params, str(info.path) if info else None)
    state.set_remove_bg(request.remove_bg)
    state.set_save_trajectory(request.save_trajectory)
    if request.remove_bg and not background_removal_available():
        note += " Its background was removed with rembg, which is not installed here: this run keeps it."
    state.set_image(state.Upload(run.record.input_name or f"{run.id}/{image.name}", data))
    gen = state.slot("gen")
    gen.result, gen.error = None, None  # the old result does not belong to these settings
    state.notify("generate", f"Settings and image of {run.id} loaded from History: Generate reproduces it.{note}")
    state.open_generate_next()  # the page opens Generate, which says what was loaded
    return True


def remove(paths) -> None:
    """Delete run folders (a comparison and maybe its cells)."""
    for path in paths:
        try:
            delete_run(path)
        except (ValueError, OSError):
            pass  # already gone (another tab): nothing to do


def card(run, cells_of: dict, nested: bool = False) -> None:
    """One run, comparison or calibration: its poster, summary, player, "Use these settings" and Delete; a
    comparison's cells under it."""
    rec = run.record
    with st.container(border=True, key=state.run_widget_key("card", run.id)):
        c1, c2, c3 = st.columns([1, 3, 1], vertical_alignment="center")
        with c1:
            if not picture(run.file("poster.png"), width="stretch"):
                st.caption("no poster")
        with c2:
            calibration = rec.calibration
            kind = ("Calibration" if calibration else "Comparison" if run.kind == "sweep" else
                    "Cell" if nested else "Run")
            named = f" · {rec.label}" if rec.label is not None else ""
            st.markdown(f"**{kind}{named}** · `{run.id}` · {rec.checkpoint or '?'}")
            st.caption(summary_line(rec, label))
            if calibration:  # "find the bucket": its answer (or why none) and the fit
                st.caption(str(calibration.get("summary", "")).replace("\n", " · "))
            video = run.file("grid.mp4" if run.kind == "sweep" else "video.mp4")
            record = " (with the denoising record)" if rec.trajectory else ""
            with st.popover("Play" + record) if nested else st.expander("Play" + record):  # expanders do not nest
                # Streamlit runs a closed expander's body: a record is decoded only when its toggle asks for it
                # (a cell's record is in its comparison's step view)
                cells = cells_of.get(run.id, []) if run.kind == "sweep" else []
                kept = any(r.record.trajectory for r in cells or [run])
                wanted = kept and not nested and st.toggle("Denoising record", key=state.run_widget_key("traj", run.id))
                if wanted and run.kind != "sweep":
                    trajectory_view(run, run.id)
                elif video is not None:
                    st.video(str(video), loop=True, muted=True)
                if wanted and cells:
                    trajectory_steps(cells, [c.record.label or c.id for c in cells], run.id)
                if calibration:
                    picture(run.file("calibration.png"))
        with c3:
            st.button("Use these settings", key=state.run_widget_key("use", run.id), on_click=use_settings,
                      args=(run.id, run.path), width="stretch",
                      help="Load this run's settings, image and checkpoint, and open Generate")
            with st.popover("Delete", width="stretch"):
                cells = cells_of.get(run.id, [])
                st.write(f"Delete `{run.id}` and its files for good?")
                with_cells = bool(cells) and st.checkbox(f"Also delete its {len(cells)} cells", value=True,
                                                         key=state.run_widget_key("delcells", run.id))
                st.button("Yes, delete", key=state.run_widget_key("del", run.id), type="primary", on_click=remove,
                          args=([run.path] + ([c.path for c in cells] if with_cells else []),))
        if run.kind == "sweep" and cells_of.get(run.id):
            with st.expander(f"Its {len(cells_of[run.id])} cells"):
                for cell in cells_of[run.id]:
                    card(cell, cells_of, nested=True)



def page() -> None:
    st.title("History")
    if state.take_open_generate():  # "Use these settings" (a callback: it runs even for a card now gone)
        st.switch_page(navigation.page("generate"))
    for note in state.take_notices("history"):
        st.info(note, icon=":material/info:")
    runs, unreadable = scan_runs()
    load_from_video(runs)
    for path, reason in unreadable:  # a malformed run.json costs its own card, nothing else
        st.caption(f":material/broken_image: Unreadable run `{path.name}`: {reason}")
    if not runs:
        st.info("No runs yet: they appear here as soon as Generate or Compare finishes.", icon=":material/history:")
        st.stop()

    by_id = {r.id: r for r in runs}
    cells_of = {r.id: [by_id[c["run"]] for c in r.record.cells if c["run"] in by_id]
                for r in runs if r.kind == "sweep"}
    in_a_sweep = {c.id for cells in cells_of.values() for c in cells}
    top = [r for r in runs if r.id not in in_a_sweep]  # a comparison's cells are shown under it
    shown = state.history_shown()
    entries = f"{len(top)} entr{'y' if len(top) == 1 else 'ies'}"
    folders = f"{len(runs)} run folder{'' if len(runs) == 1 else 's'}"
    st.caption(f"{entries} in outputs/ ({folders}: a comparison's cells are listed under it)")
    for run in top[:shown]:
        card(run, cells_of)
    if len(top) > shown:
        if st.button(f"Show {min(state.HISTORY_PAGE, len(top) - shown)} more"):
            state.show_more_history()
            st.rerun()
