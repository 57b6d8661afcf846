"""Background jobs on a page: their progress panel, and the results they leave in session state."""

from __future__ import annotations

import html
from pathlib import Path

import streamlit as st

from app import state
from app.jobs import Job
from app.resources import get_server
from svd_core import export_frames

# Progress refresh: each poll reruns a small fragment of the tab, holding the GIL the sampling thread needs for a
# moment. 1 s while this tab's job runs; 3 s while it waits in the queue (nothing moves but its place).
POLL_S, POLL_QUEUED_S = 1.0, 3.0


def start_job(slot_name: str, kind: str, work, label: str = "", frame_megapixels: float = 0.0) -> None:
    """Run `work(job)` in the background on the server's queue; its result lands in the page's slot (see
    consume_job). A second click while a job of this slot is active starts nothing."""
    slot = state.slot(slot_name)
    if slot.job is not None and not slot.job.finished:
        return
    server = get_server()
    rate = server.decode_seconds_per_megapixel_frame
    job = Job(kind, work, owner=state.session_id(), label=label,
              decode_estimate=rate * frame_megapixels if rate and frame_megapixels else None)
    slot.job, slot.error = job, None
    server.submit(job)


def run_button(slot_name: str, label: str, hint: str | None, on_click, args) -> None:
    """A page's gated run button: disabled, with the hint, until the page can run (no image, bad settings) or
    while its job runs; then the job's progress and the last error."""
    job = state.slot(slot_name).job
    st.button(label, type="primary", disabled=job is not None or hint is not None, help=hint, on_click=on_click,
              args=args)
    if hint:
        st.caption(hint)
    if job is not None:
        job_panel(job)
    show_error(slot_name)


def job_panel(job: Job) -> None:
    """Progress of a running job with a Cancel button; the fragment polls the job (never the model)."""
    queued = job.status == "queued"

    @st.fragment(run_every=POLL_QUEUED_S if queued else POLL_S)
    def panel():
        if job.finished or (queued and job.status != "queued"):  # done, or its turn came: poll faster
            st.rerun()
        if job.status == "queued":
            ahead = job.queue_position
            st.info(f"Waiting for the model: {ahead} run(s) ahead of yours in the queue (every tab shares it)."
                    if ahead else "Waiting for the model…", icon=":material/hourglass_top:")
        left = job.seconds_left()
        what = f"run {job.cell + 1}/{job.cells} · {job.cell_label} · " if job.cells else ""
        text = f"{what}{job.status_text()}"
        if left is not None:
            text += f" · about {left:.0f} s left" + ("" if job.decode_estimate is not None else " + decoding")
        st.progress(job.fraction, text=text)
        st.button("Cancel", key=f"cancel-{id(job)}", on_click=job.cancel, disabled=job.cancel_event.is_set())

    panel()


def record_decode_rate(job: Job, result) -> None:
    """After a run: how long its decode took per megapixel-frame, for the next runs' estimates."""
    f, h, w = result.frames.shape[:3]
    videos = max(1, len(result.videos))  # timings add up over num_videos
    if result.timings.get("decode"):
        job.decode_rate = result.timings["decode"] / (videos * f * h * w / 1e6)


def gone(path: Path) -> bool:
    """A result whose run folder was deleted (in History, maybe in another tab): say so instead of failing."""
    if Path(path).is_dir():
        return False
    st.info(f"Run {Path(path).name} was deleted (in History): its video and files are gone.",
            icon=":material/delete:")
    return True


def show_video(path, caption: str | None = None, frame_width: int | None = None) -> None:
    """A looping, muted, autoplaying video; shown at its own width, between 480 and 960 px."""
    width = max(480, min(960, frame_width)) if frame_width else "stretch"
    if not Path(path).is_file():
        st.caption(f"{Path(path).parent.name}: video deleted")
        return
    st.video(str(path), loop=True, autoplay=True, muted=True, width=width)
    if caption:
        st.caption(html.escape(caption))


METRIC_CHARTS = [("motion", "Motion (flow, px per frame)"), ("flicker", "Flicker"),
                 ("likeness", "Likeness to the input (CLIP cosine)")]


def show_metrics(metrics: dict, untrained: bool) -> None:
    """Each run's measurements: one number and a small per-frame chart per metric."""
    if not metrics:
        return
    if "error" in metrics:
        st.caption(f":material/info: not measured: {metrics['error']}")
        return
    st.markdown("**Measured**" + (" · :orange[demo model with random weights: these numbers are meaningless]"
                                  if untrained else ""))
    tb = metrics.get("time_base", {})
    cols = st.columns(len(METRIC_CHARTS))
    for col, (key, title) in zip(cols, METRIC_CHARTS):
        m = metrics.get(key)
        if not m:
            continue
        with col:
            value = m.get("score") if key == "motion" else m.get("mean")
            extra = f" · {m['flow_px_per_frame']:.2f} px/frame" if key == "motion" else ""
            st.caption(f"{title}: **{value:.3g}**{extra}" if value is not None else title)
            if m.get("per_frame"):
                st.line_chart({key: m["per_frame"]}, height=110, x_label="frame", y_label="")
    if tb:
        st.caption(f"Motion score in the SVD paper's units (Farneback flow at 2 fps, 16 px short side) on the "
                   f"{tb.get('kind', '?')} time base ({tb.get('fps', '?')} fps). See docs/metrics.md.")


def _exporter(frames, fmt: str, fps: int):
    return lambda: export_frames(frames, fmt, fps)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def downloads(path, frames, fps: int, key: str) -> None:
    """mp4 and run.json from the run folder; GIF and frames zip made from the frames when clicked."""
    cols = st.columns(4)
    cols[0].download_button("mp4", _read(path / "video.mp4"), file_name=f"{path.name}.mp4",
                            mime="video/mp4", key=f"{key}-mp4", width="stretch")
    cols[1].download_button("GIF", _exporter(frames, "gif", fps), file_name=f"{path.name}.gif",
                            mime="image/gif", key=f"{key}-gif", width="stretch")
    cols[2].download_button("frames (zip)", _exporter(frames, "zip", fps), file_name=f"{path.name}.zip",
                            mime="application/zip", key=f"{key}-zip", width="stretch")
    cols[3].download_button("run.json", _read(path / "run.json"), file_name=f"{path.name}.json",
                            mime="application/json", key=f"{key}-json", width="stretch")


def consume_job(slot_name: str) -> None:
    """Move a finished job's result (or error) into the page's slot, where the page renders it from."""
    slot = state.slot(slot_name)
    job: Job | None = slot.job
    if job is None or not job.finished:
        return
    slot.job = None
    if job.status == "done":
        slot.result = job.result
        slot.error = None
    elif job.status == "cancelled":
        slot.error = ("info", "Cancelled: nothing was saved.")
    else:
        slot.error = ("error", job.error)


def show_error(slot_name: str) -> None:
    err = state.slot(slot_name).error
    if err:
        if err[0] == "info":
            st.info(err[1], icon=":material/info:")
        else:
            st.error(err[1], icon=":material/error:")
