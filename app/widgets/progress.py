"""A page's background job: start it, show its progress (a bar, its line of text, the live preview, Cancel),
hand its result or error to the page's slot, show the error.

The progress panel is a fragment that reruns every POLL_S while its job is queued or running and reads the Job
(and the server's queue for its place) in memory; when the job has ended it asks for one rerun of the page, which
moves the outcome into the slot (consume_job) and draws the result once: Streamlit autoplays a video when its
element first mounts, which a result drawn by a fragment rerun and then again by the page's next run can miss.
"""

from __future__ import annotations

import streamlit as st

from app import state
from app.jobs import Job
from app.resources import get_server
from app.server import ModelChanged

POLL_S = 1.0  # the panel's pace while its job is queued or running
PREVIEW_WIDTH = 640  # px: the live preview (a grid of every frame at 1/8 of the video's size)


def start_job(slot_name: str, kind: str, work, label: str = "", frame_megapixels: float = 0.0,
              watch: bool = False) -> None:
    """Queue `work(job, sampler)` on the server's worker for the model this page was drawn for; its outcome lands
    in the page's slot (consume_job). A second click while a job of this slot is active starts nothing; a model
    changed in another tab since the page was drawn starts nothing and says so. `watch`: the page shows the live
    preview (the work hands job.on_preview to the core when job.watch)."""
    slot = state.slot(slot_name)
    if slot.job is not None and not slot.job.finished:
        return
    server = get_server()
    rate = server.decode_seconds_per_megapixel_frame
    job = Job(kind, work, owner=state.session_id(), label=label, model=state.page_model(),
              decode_estimate=rate * frame_megapixels if rate and frame_megapixels else None, watch=watch)
    try:
        server.submit(job)
    except ModelChanged as e:
        slot.error = ("error", str(e))
        return
    slot.job, slot.error = job, None


@st.fragment
def run_section(slot_name: str, label: str, hint: str | None, on_click, args, show_result) -> None:
    """A page's gated run button (disabled, with the hint, until the page can run or while its job runs), its
    job's progress, the last error and the page's result (`show_result()`), as one fragment: the click reruns
    this part of the page only. A fragment rerun reuses the arguments of the page's last full run, which are what
    its widgets show."""
    consume_job(slot_name)
    job = state.slot(slot_name).job
    st.button(label, type="primary", disabled=job is not None or hint is not None, help=hint, on_click=on_click,
              args=args)
    if hint:
        st.caption(hint)
    if job is not None:
        job_panel(job)
    show_error(slot_name)
    show_result()


def job_panel(job: Job, cancel_label: str = "Cancel") -> None:
    """The job's progress bar (with its line of text), the live preview while it has one, and Cancel; reruns
    every POLL_S until the job ends, then the page once."""

    @st.fragment(run_every=POLL_S)
    def panel():
        if job.finished:
            st.rerun()
        server = get_server()
        ahead = server.position(job) if job.status == "queued" else 0
        st.progress(job.fraction, text=job.progress_text(ahead))
        if job.watch and job.preview is not None:
            st.image(job.preview, caption="The model's current estimate of the video", width=PREVIEW_WIDTH)
        st.button(cancel_label, key=f"cancel-{id(job)}", on_click=job.cancel,
                  disabled=job.cancel_event.is_set())

    panel()


def consume_job(slot_name: str, cancelled: str = "Cancelled: nothing was saved.") -> None:
    """Move a finished job's result (or error) into the page's slot, where the page renders it from."""
    slot = state.slot(slot_name)
    job: Job | None = slot.job
    if job is None or not job.finished:
        return
    slot.job = None
    result, error = job.outcome(cancelled)
    if result is not None:
        slot.result = result
    slot.error = error


def show_error(slot_name: str) -> None:
    err = state.slot(slot_name).error
    if err:
        if err[0] == "info":
            st.info(err[1], icon=":material/info:")
        else:
            st.error(err[1], icon=":material/error:")
