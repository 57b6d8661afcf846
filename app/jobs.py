"""Background jobs: a run, a sweep or a download, described by a `Job` that pages read for progress and results.

A job's life: queued -> running -> done | cancelled | error. `run()` is that life: it calls the job's work, with
the callbacks below handed to svd_core, and records how it ended. Runs go through the model server's one worker
(app/server.py), which calls `run(sampler)`; a download runs on a thread of its own (`start_thread()`). No
Streamlit here: the pages poll a Job (app/widgets/progress.py). Cancel sets an event that the core checks between
steps, before each decode call and just before the run folder is renamed into place (`should_stop`); a job
cancelled while queued ends at once and never runs. `end()` is the one place a job ends.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable

from svd_core import Cancelled, SVDError, preview_image

PREVIEW_EVERY_S = 0.5  # the live preview's pace: nobody looks faster
PHASES = {"queued": "waiting for the model", "encoding": "encoding the image", "denoising": "denoising",
          "decoding": "decoding frames", "saving": "saving", "downloading": "downloading",
          "compiling": "compiling the model for these shapes (torch.compile, first run)"}


class Job:
    def __init__(self, kind: str, work: Callable[..., dict], owner: str = "", label: str = "", model=None,
                 decode_estimate: float | None = None, watch: bool = False):
        self._work = work  # work(job, *args of run()) -> the result dict
        self.kind, self.owner, self.label = kind, owner, label
        self.model = model  # the model choice the page was drawn for (None: not a model run, e.g. a download)
        self._lock = threading.RLock()  # status changes: run, end, cancel
        self.cancel_event = threading.Event()
        self.done_event = threading.Event()  # set when the job has finished, whichever way
        self.status = "queued"  # queued -> running -> done | cancelled | error
        self.phase = "queued"  # queued, encoding, denoising, decoding, saving
        self.step = self.steps = 0
        self.cell = self.cells = 0
        self.cell_label = ""
        self.first_step_at: float | None = None  # pace of the current cell, from its first reported step
        self._first_i = 0
        self.decode_estimate = decode_estimate  # seconds, from the server's earlier runs (None: unknown yet)
        self.decode_rate: float | None = None  # measured here: decode seconds per megapixel-frame
        self.watch = watch  # a page shows the live preview: on_preview is handed to the core
        self.preview = None  # the latest live preview (uint8 image), in memory
        self._preview_at: float | None = None
        self.result: dict | None = None
        self.error = ""

    # the job's life ---------------------------------------------------------------------------------------
    def run(self, *args) -> None:
        """Run the work now, on this thread, unless the job has already ended (cancelled while queued); record
        how it ended."""
        with self._lock:
            if self.status != "queued":
                return
            self.status = "running"
        try:
            self.result = self._work(self, *args)
            self.end("done")
        except Cancelled:
            self.end("cancelled")
        except (SVDError, ValueError) as e:
            self.end("error", str(e))
        except Exception as e:  # unexpected: still one line in the UI; the traceback goes to the server log
            traceback.print_exc()
            self.end("error", f"{type(e).__name__}: {e}")

    def end(self, status: str, error: str = "") -> None:
        """The one place a job ends: done, cancelled or error (with its line); a job ends once."""
        with self._lock:
            if self.finished:
                return
            self.status, self.error, self.preview = status, error, None
            self.done_event.set()

    def start_thread(self) -> Job:
        """Run on a thread of its own (a download: not a model run, so not the model server's worker)."""
        threading.Thread(target=self.run, name=f"svd-{self.kind}", daemon=True).start()
        return self

    def outcome(self, cancelled: str = "Cancelled: nothing was saved.") -> tuple[dict | None, tuple | None]:
        """(result, error) of a finished job, for its page: error is ("info"|"error", text) or None."""
        if self.status == "done":
            return self.result, None
        if self.status == "cancelled":
            return None, ("info", cancelled)
        return None, ("error", self.error)

    # callbacks handed to svd_core --------------------------------------------------------------------------
    def should_stop(self) -> bool:
        return self.cancel_event.is_set()

    def on_phase(self, phase: str) -> None:
        self.phase = phase

    def on_step(self, i: int, n: int) -> None:
        if self.first_step_at is None:
            self.first_step_at = time.monotonic()
            self._first_i = i
        self.step, self.steps = i, n

    def on_preview(self, step, steps, sigma, denoised, latents) -> None:
        """The model's current estimate as a small image (mapped on the run's device), kept for the page to show;
        at most one every PREVIEW_EVERY_S (a slower step gets one each)."""
        now = time.monotonic()
        if self._preview_at is None or now - self._preview_at >= PREVIEW_EVERY_S:
            self._preview_at = now
            self.preview = preview_image(denoised)

    def on_cell(self, cell: int, cells: int, i: int, n: int, label: str = "") -> None:
        if cell != self.cell:
            self.first_step_at = None
        self.cell, self.cells, self.cell_label = cell, cells, label
        self.on_step(i, n)

    def cancel(self) -> None:
        """A queued job ends now and never runs; a running one stops at the core's next check."""
        self.cancel_event.set()
        with self._lock:
            if self.status == "queued":
                self.end("cancelled")

    # ------------------------------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.status in ("done", "cancelled", "error")

    @property
    def fraction(self) -> float:
        per_cell = self.step / self.steps if self.steps else 0.0
        return min(1.0, (self.cell + per_cell) / self.cells) if self.cells else per_cell

    def seconds_left(self) -> float | None:
        """From the pace of the steps so far, plus the decode as long as earlier runs took for it."""
        if self.first_step_at is None or self.step <= self._first_i:
            return None
        pace = (time.monotonic() - self.first_step_at) / (self.step - self._first_i)
        cells_left = (self.cells - self.cell - 1) if self.cells else 0
        left = pace * (self.steps - self.step + cells_left * self.steps)
        if self.decode_estimate is not None:
            left += self.decode_estimate * (cells_left + (self.phase != "saving"))
        return left

    def progress_text(self, ahead: int = 0) -> str:
        """The progress bar's line: '[run 2/4 · label · ]denoising step 3/40 · about 12 s left'; while queued,
        the place in the queue (`ahead`: runs before it, from the server's queue)."""
        if self.status == "queued":
            return (f"Waiting for the model: {ahead} run(s) ahead of yours in the queue (every tab shares it)"
                    if ahead else "Waiting for the model…")
        left = self.seconds_left()
        what = f"run {self.cell + 1}/{self.cells} · {self.cell_label} · " if self.cells else ""
        text = f"{what}{self.status_text()}"
        if left is not None:
            text += f" · about {left:.0f} s left" + ("" if self.decode_estimate is not None else " + decoding")
        return text

    def status_text(self) -> str:
        """'denoising step 3/40', 'decoding frames', ... for the progress bar."""
        if self.status == "queued":
            return PHASES["queued"]
        if self.phase == "denoising":
            return f"denoising step {self.step}/{self.steps or '…'}"
        return PHASES.get(self.phase, self.phase)


def record_decode_rate(job: Job, result) -> None:
    """After a run: how long its decode took per megapixel-frame, for the next runs' estimates."""
    f, h, w = result.frames.shape[:3]
    videos = max(1, len(result.videos))  # timings add up over num_videos
    if result.timings.get("decode"):
        job.decode_rate = result.timings["decode"] / (videos * f * h * w / 1e6)
