"""Weights in one click: download a Stability release from the Hugging Face Hub in the background, with progress,
speed, time left and Cancel. The token is used for this download only: it never reaches session state, a file or
a run record (an empty field uses the one the user already has from `hf auth login` / HF_TOKEN)."""

from __future__ import annotations

import time

import streamlit as st

from app import state
from app.jobs import Job
from app.resources import clear_checkpoints
from app.widgets.progress import consume_job, job_panel, show_error
from svd_core import download, get_variant, list_variants

CANCELLED = "Download cancelled: the part already fetched is kept (hidden) and resumes next time."


class Download(Job):
    """A Job whose progress is bytes. Not a model run: it runs on a thread of its own, not the model server's."""

    def __init__(self, variant: str, work):
        super().__init__("download", work, owner=state.session_id(), label=variant)
        self.done_bytes = self.total_bytes = 0
        self.started = time.monotonic()
        self._resumed = None

    def on_bytes(self, done: int, total: int) -> None:
        self.status, self.phase = "running", "downloading"
        if self._resumed is None:
            self._resumed = done  # a resumed download starts with what is already on disk
        self.done_bytes, self.total_bytes = done, total

    def text(self) -> str:
        gb = 1e9
        got = self.done_bytes - (self._resumed or 0)
        elapsed = time.monotonic() - self.started
        speed = got / elapsed if elapsed > 0.5 and got > 0 else None
        t = f"{self.done_bytes / gb:.2f} of {self.total_bytes / gb:.2f} GB"
        if speed:
            left = (self.total_bytes - self.done_bytes) / speed
            t += f" · {speed / 1e6:.1f} MB/s · about {left / 60:.0f} min left" if left > 90 else \
                f" · {speed / 1e6:.1f} MB/s · about {left:.0f} s left"
        return t

    @property
    def fraction(self) -> float:
        return self.done_bytes / self.total_bytes if self.total_bytes else 0.0

    def progress_text(self, ahead: int = 0) -> str:
        return f"Downloading {self.label}: " + (self.text() if self.total_bytes else "asking the hub…")


def _downloadable() -> list[str]:
    """The variants with a release on the hub."""
    return [n for n in list_variants() if get_variant(n).repo_id]


def _start(variant: str, token_key: str) -> None:
    slot = state.slot("download")
    if slot.job is not None and not slot.job.finished:
        return
    token = state.take_token(token_key)

    def work(job: Download):
        path = download(variant, token=token, on_progress=job.on_bytes, should_stop=job.should_stop)
        clear_checkpoints()
        return {"path": path}
    slot.job, slot.error, slot.result = Download(variant, work).start_thread(), None, None


def download_panel(key: str) -> None:
    """Pick a release, optionally a token, download; progress while it runs; the outcome after."""
    consume_job("download", CANCELLED)
    slot = state.slot("download")
    job = slot.job
    names = _downloadable()
    c1, c2 = st.columns([1, 1])
    with c1:
        variant = st.selectbox("Release", names, index=names.index("svd_xt") if "svd_xt" in names else 0,
                               key=state.download_key(key, "variant"),
                               format_func=lambda n: f"{n} · {get_variant(n).title}",
                               disabled=job is not None)
    with c2:
        st.text_input("Hugging Face token (optional)", type="password", key=state.download_key(key, "token"),
                      disabled=job is not None,
                      help="Empty: the token you already have (`hf auth login` or HF_TOKEN). Used for this download "
                           "only, never saved. The repository is gated: accept its licence on its page first.")
    v = get_variant(variant)
    st.caption(f"From [{v.repo_id}]({v.url}), file {v.filename}: accept the licence on that page first.")
    st.button("Download", type="primary", on_click=_start, args=(variant, state.download_key(key, "token")),
              disabled=job is not None, key=state.download_key(key, "go"))
    if job is not None:
        job_panel(job, cancel_label="Cancel download")
    if slot.result:
        st.success(f"{slot.result['path'].name} is complete and verified (sha256): pick it in the sidebar.",
                   icon=":material/check_circle:")
    show_error("download")
