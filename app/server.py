"""The studio's process-wide state, shared by every browser tab: which model is loaded and every job running or
queued on it. No Streamlit here (resources.py caches one ModelServer per process), so it is tested directly.

- The model's settings (checkpoint, device, memory mode) belong to the server, not to whichever session reran
  last: a session asks to change them with `select`, which is refused while any job is queued or running, and
  the old pipeline is released before the new one loads, so two never sit on one device.
- Every run of every session goes through the one Sampler's FIFO queue; `jobs()` lists them for every session to
  see. A job whose tab was closed runs to the end and its result stays in History.
"""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from app.jobs import write_json
from svd_core import SVDError


@dataclass(frozen=True)
class ModelChoice:
    path: str
    device: str = ""  # "" = the best available
    memory_mode: str = "auto"
    compile: bool = False  # torch.compile of the UNet and VAE decoder (svd_core.compute)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


PROGRESS_KEEP_S = 30.0  # an ended job's progress file stays this long for its page's last fetch, then goes


class Busy(SVDError):
    """The model cannot change now: runs are queued or running on it."""


class ModelServer:
    def __init__(self, make_sampler):
        self._make_sampler = make_sampler  # ModelChoice -> Sampler
        self._lock = threading.RLock()
        self._load_lock = threading.Lock()
        self.choice: ModelChoice | None = None
        self.changed_by = ""  # the session that chose the current model
        self.changed_at = 0.0
        self._sampler = None
        self._loaded_for: ModelChoice | None = None
        self.load_error = ""
        self._jobs: list = []
        self.decode_seconds_per_megapixel_frame: float | None = None  # learnt from finished runs, for estimates
        self.status_file: Path | None = None  # where publish() writes whether runs are active, for pages to fetch
        self.version = 0  # counts changes of the model or the queue (publish() notices them): the sidebar follows it
        self._seen: tuple | None = None

    # ---------------------------------------------------------------------------------------------- model
    def select(self, choice: ModelChoice, by: str = "") -> None:
        """Make `choice` the server's model (it loads on first use). Raises Busy while jobs are active."""
        with self._lock:
            if choice == self.choice:
                return
            active = self.jobs()
            if active and self.choice is not None:
                raise Busy(f"{self.choice.name} is in use by {len(active)} run(s) queued or running: the model can "
                           "change when they finish (or are cancelled)")
            self.choice, self.changed_by, self.changed_at = choice, by, time.time()
            self.load_error = ""
            self._release()
        self.publish()

    def _release(self) -> None:
        if self._sampler is None:
            return
        self._sampler, self._loaded_for = None, None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    @property
    def loaded(self) -> bool:
        return self._sampler is not None and self._loaded_for == self.choice

    def sampler(self):
        """The loaded Sampler for the current choice; loads it once (other callers wait). Raises SVDError /
        ValueError with the reason when it cannot load (kept in load_error until the choice changes)."""
        with self._load_lock:
            with self._lock:
                choice = self.choice
                if choice is None:
                    raise SVDError("no model chosen")
                if self._loaded_for == choice and self._sampler is not None:
                    return self._sampler
                if self.load_error:
                    raise SVDError(self.load_error)
                self._release()
            try:
                sampler = self._make_sampler(choice)
            except (SVDError, ValueError) as e:
                with self._lock:
                    if self.choice == choice:
                        self.load_error = str(e)
                raise
            with self._lock:
                if self.choice != choice:  # changed while loading: drop it rather than hold two
                    del sampler
                    gc.collect()
                    raise SVDError("the model was changed while it loaded: try again")
                self._sampler, self._loaded_for = sampler, choice
            self.publish()
            return sampler

    # ----------------------------------------------------------------------------------------------- jobs
    def submit(self, job) -> None:
        """Register and start a job; it leaves the list when it finishes."""
        with self._lock:
            self._jobs.append(job)
        job.on_finish = self._finished
        job.on_publish = lambda _job: self.publish()  # each step: the running job's time left moves
        self.publish()
        job.start()

    def _finished(self, job) -> None:
        with self._lock:
            if job in self._jobs:
                self._jobs.remove(job)
            seconds = getattr(job, "decode_rate", None)
            if seconds:
                self.decode_seconds_per_megapixel_frame = seconds
        self.publish()
        progress = getattr(job, "progress_file", None)
        if progress is not None:  # its tab may be closed: nobody else would remove it (a page finds it gone)
            def remove():
                job.done_event.wait(60)  # after the job's last write of it
                progress.unlink(missing_ok=True)
            timer = threading.Timer(PROGRESS_KEEP_S, remove)
            timer.daemon = True
            timer.start()

    def jobs(self) -> list:
        """Active jobs in submission order (running first in practice, then the queue)."""
        with self._lock:
            return [j for j in self._jobs if not j.finished]

    def device_type(self) -> str:
        """'cpu', 'cuda', 'mps' of the loaded model, or of the chosen device; '' while unknown (best available,
        not loaded yet)."""
        sampler = self._sampler
        if sampler is not None:
            return sampler.device.type
        return self.choice.device.split(":")[0] if self.choice is not None else ""

    def publish(self) -> None:
        """Write {"active": runs queued or running, "device": device_type()} to status_file, for every page to
        fetch without a rerun (the pages' video guard: app/results.py), with "busy_for_s": the running job's
        estimated time left, when known (the server is busy at least that long, unless it is cancelled; queued
        runs come after it), and "version": it moves when the model or the queue changes (a run queued, started or
        ended; the model chosen or loaded), not at each step. Rewritten when runs start or end and at each step of
        a run."""
        with self._lock:  # one writer at a time: they share the temporary file
            jobs = self.jobs()
            seen = (self.choice, self.loaded, self.load_error, tuple((id(j), j.status) for j in jobs))
            if seen != self._seen:
                self._seen, self.version = seen, self.version + 1
            if self.status_file is not None:
                data = {"active": len(jobs), "device": self.device_type(), "version": self.version}
                running = next((j for j in jobs if j.status == "running"), None)
                left = running.seconds_left() if running is not None else None
                if left is not None:
                    data["busy_for_s"] = round(left, 1)
                write_json(self.status_file, data)
