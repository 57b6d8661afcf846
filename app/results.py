"""Background jobs on a page: their progress panel, and the results they leave in session state."""

from __future__ import annotations

import html

import streamlit as st

from jobs import Job
from svd_core import export_frames

S = st.session_state


def start_job(slot: str, kind: str, work) -> None:
    """Run `work(job)` in the background; its result lands in S[f'{slot}_result'] (see consume_job)."""
    S[f"{slot}_job"] = Job(kind, work).start()
    S.pop(f"{slot}_error", None)


def run_button(slot: str, label: str, hint: str | None, on_click, args) -> None:
    """A page's gated run button: disabled, with the hint, until the page can run (no image, bad settings) or
    while its job runs; then the job's progress and the last error."""
    job = S.get(f"{slot}_job")
    st.button(label, type="primary", disabled=job is not None or hint is not None, help=hint, on_click=on_click,
              args=args)
    if hint:
        st.caption(hint)
    if job is not None:
        job_panel(job)
    show_error(slot)


def job_panel(job: Job) -> None:
    """Progress of a running job (polls twice a second) with a Cancel button."""

    @st.fragment(run_every=0.5)
    def panel():
        if job.finished:
            st.rerun()
        if job.status == "queued" and job.queue_position:
            st.info(f"Waiting for the model: {job.queue_position} run(s) ahead of yours in the queue.",
                    icon=":material/hourglass_top:")
        left = job.seconds_left()
        what = f"{job.cell_label} · " if job.cells else ""
        cells = f"run {job.cell + 1}/{job.cells} · " if job.cells else ""
        text = f"{cells}{what}step {job.step}/{job.steps or '…'}"
        text += f" · about {left:.0f} s left" if left is not None else " · starting"
        st.progress(job.fraction, text=text)
        st.button("Cancel", key=f"cancel-{id(job)}", on_click=job.cancel, disabled=job.cancel_event.is_set())

    panel()


def _exporter(frames, fmt: str, fps: int):
    return lambda: export_frames(frames, fmt, fps)


def show_video(path, caption: str | None = None, frame_width: int | None = None) -> None:
    """A looping, muted, autoplaying video; shown at its own width, between 480 and 960 px."""
    width = max(480, min(960, frame_width)) if frame_width else "stretch"
    st.video(str(path), loop=True, autoplay=True, muted=True, width=width)
    if caption:
        st.caption(html.escape(caption))


def downloads(path, frames, fps: int, key: str) -> None:
    """mp4 and run.json from the run folder; GIF and frames zip made from the frames when clicked."""
    cols = st.columns(4)
    cols[0].download_button("mp4", (path / "video.mp4").read_bytes(), file_name=f"{path.name}.mp4",
                            mime="video/mp4", key=f"{key}-mp4", width="stretch")
    cols[1].download_button("GIF", _exporter(frames, "gif", fps), file_name=f"{path.name}.gif",
                            mime="image/gif", key=f"{key}-gif", width="stretch")
    cols[2].download_button("frames (zip)", _exporter(frames, "zip", fps), file_name=f"{path.name}.zip",
                            mime="application/zip", key=f"{key}-zip", width="stretch")
    cols[3].download_button("run.json", (path / "run.json").read_bytes(), file_name=f"{path.name}.json",
                            mime="application/json", key=f"{key}-json", width="stretch")


def consume_job(slot: str) -> None:
    """Move a finished job's result (or error) into session state, where the page renders it from."""
    job: Job | None = S.get(f"{slot}_job")
    if job is None or not job.finished:
        return
    S.pop(f"{slot}_job")
    if job.status == "done":
        S[f"{slot}_result"] = job.result
        S.pop(f"{slot}_error", None)
    elif job.status == "cancelled":
        S[f"{slot}_error"] = ("info", "Cancelled: nothing was saved.")
    else:
        S[f"{slot}_error"] = ("error", job.error)


def show_error(slot: str) -> None:
    err = S.get(f"{slot}_error")
    if err:
        if err[0] == "info":
            st.info(err[1], icon=":material/info:")
        else:
            st.error(err[1], icon=":material/error:")
