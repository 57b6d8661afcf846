"""The studio's process-wide state, shared by every browser tab: which model is loaded and every job running or
queued on it. No Streamlit here (resources.py caches one ModelServer per process), so it is tested directly.

- The model's settings (checkpoint, device, memory mode) belong to the server, not to whichever session reran
  last: a session asks to change them with `select`, which is refused while any job is queued or running, and
  the old pipeline is released before the new one loads, so two never sit on one device.
- One worker thread runs every job of every session, one at a time, in the order they were submitted (a deque
  whose head the worker takes, woken by a Condition); `jobs()` lists them for every session to see. A job
  carries the model its page was drawn for: one submitted for another model than the server's (the model
  changed in another tab) is refused, at `submit` and again when its turn comes. A job whose tab was closed runs
  to the end and its result stays in History. Whatever goes wrong with one job (its model cannot load, an
  unexpected error) ends that job with one line, and the worker goes on.
"""

from __future__ import annotations

import gc
import threading
import time
import traceback
from collections import deque

import torch

from svd_core import ModelSpec, SVDError


class Busy(SVDError):
    """The model cannot change now: runs are queued or running on it."""


class ModelChanged(SVDError):
    """A job was submitted for a model that is not the server's (it changed in another tab)."""


def model_changed(choice: ModelSpec | None) -> str:
    return (f"The model is now {choice.name if choice else 'none'} (changed in another tab): check the settings "
            "and press again.")


def one_line(e: Exception) -> str:
    """An exception as one line for the page: our errors say it in their message; anything else (torch's out of
    memory, a CUDA error) is named by its type, with the first line of its message."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else ""
    return text if isinstance(e, (SVDError, ValueError)) else f"{type(e).__name__}: {text}"


class ModelServer:
    def __init__(self, make_sampler):
        self._make_sampler = make_sampler  # ModelSpec -> Sampler
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)  # a job was queued
        self._load_lock = threading.Lock()
        self.choice: ModelSpec | None = None
        self.changed_by = ""  # the session that chose the current model
        self.changed_at = 0.0
        self._sampler = None
        self._loaded_for: ModelSpec | None = None
        self.load_error = ""
        self._running = None  # the job the worker runs now
        self._queue: deque = deque()  # the jobs waiting, in submission order: the worker takes the head
        self.decode_seconds_per_megapixel_frame: float | None = None  # learnt from finished runs, for estimates
        threading.Thread(target=self._serve, name="svd-worker", daemon=True).start()

    # ---------------------------------------------------------------------------------------------- model
    def select(self, choice: ModelSpec, by: str = "") -> None:
        """Make `choice` the server's model (it loads on first use). Raises Busy while jobs are active. The same
        choice again, after it failed to load, clears the error: the next use tries to load it again."""
        with self._lock:
            if choice == self.choice:
                if not self.loaded:
                    self.load_error = ""
                return
            active = self.jobs()
            if active and self.choice is not None:
                raise Busy(f"{self.choice.name} is in use by {len(active)} run(s) queued or running: the model can "
                           "change when they finish (or are cancelled)")
            self.choice, self.changed_by, self.changed_at = choice, by, time.time()
            self.load_error = ""
            self._release()

    def _release(self) -> None:
        if self._sampler is None:
            return
        self._sampler, self._loaded_for = None, None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def loaded(self) -> bool:
        return self._sampler is not None and self._loaded_for == self.choice

    def sampler(self):
        """The loaded Sampler for the current choice; loads it once (other callers wait). Raises SVDError with
        the reason, in one line, when it cannot load, whatever went wrong (kept in load_error until the choice is
        selected again; an unexpected error's traceback goes to the server's log)."""
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
            except Exception as e:
                if not isinstance(e, (SVDError, ValueError)):
                    traceback.print_exc()
                line = one_line(e)
                with self._lock:
                    if self.choice == choice:
                        self.load_error = line
                raise SVDError(line) from e
            with self._lock:
                if self.choice != choice:  # changed while loading: drop it rather than hold two
                    del sampler
                    gc.collect()
                    raise SVDError("the model was changed while it loaded: try again")
                self._sampler, self._loaded_for = sampler, choice
            return sampler

    # ----------------------------------------------------------------------------------------------- jobs
    def submit(self, job) -> None:
        """Queue a model run: the worker calls `job.run(sampler)` when its turn comes. Raises ModelChanged (one
        line) when `job.model` is not the server's model."""
        with self._lock:
            if job.model != self.choice:
                raise ModelChanged(model_changed(self.choice))
            self._queue.append(job)
            self._wake.notify()

    def _serve(self) -> None:
        """The worker: one job at a time, in submission order, each on the model it was submitted for. Whatever
        goes wrong with one job ends that job (one line; the traceback to the server's log), not the worker."""
        while True:
            with self._lock:
                while not self._queue:
                    self._wake.wait()
                job = self._running = self._queue.popleft()
            try:
                self._run(job)
            except Exception as e:
                traceback.print_exc()
                job.end("error", one_line(e))
            finally:
                with self._lock:
                    self._running = None

    def _run(self, job) -> None:
        if job.finished:  # cancelled while queued
            return
        if job.model != self.choice:  # select refuses while jobs are queued: checked again all the same
            job.end("error", model_changed(self.choice))
            return
        try:
            sampler = self.sampler()
        except SVDError as e:
            job.end("error", f"Cannot load {job.model.name}: {e}")
            return
        job.run(sampler)
        if job.decode_rate:
            self.decode_seconds_per_megapixel_frame = job.decode_rate

    def cancel(self, job) -> None:
        """Cancel a job: a queued one ends at once and leaves the queue (it never runs); a running one stops at
        its next check."""
        job.cancel()
        with self._lock:
            if job.finished and job in self._queue:
                self._queue.remove(job)

    def jobs(self) -> list:
        """Queued and running jobs in submission order: the running one first, then the queue."""
        with self._lock:
            return [j for j in ([self._running] if self._running else []) + list(self._queue) if not j.finished]

    def position(self, job) -> int:
        """How many jobs run before `job` (0: it runs now, or next)."""
        jobs = self.jobs()
        return jobs.index(job) if job in jobs else 0
