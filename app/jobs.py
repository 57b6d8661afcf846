"""Background jobs: a run or a sweep on its own thread, so reruns and page switches never interrupt it.

The thread never touches Streamlit; pages poll `Job` for progress and results. Cancel sets an event that the
core checks between steps (`should_stop`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from svd_core import Cancelled, SVDError


class Job:
    def __init__(self, kind: str, work: Callable[[Job], dict]):
        self._work = work
        self.cancel_event = threading.Event()
        self.status = "queued"  # queued -> running -> done | cancelled | error
        self.queue_position = 0
        self.step = self.steps = 0
        self.cell = self.cells = 0
        self.cell_label = ""
        self.first_step_at: float | None = None  # pace of the current cell, from its first reported step
        self._first_i = 0
        self.result: dict | None = None
        self.error = ""
        self._thread = threading.Thread(target=self._run, name=f"svd-{kind}", daemon=True)

    def start(self) -> Job:
        self._thread.start()
        return self

    # callbacks handed to svd_core --------------------------------------------------------------------------
    def should_stop(self) -> bool:
        return self.cancel_event.is_set()

    def on_queue(self, position: int) -> None:
        self.queue_position = position
        if position == 0:
            self.status = "running"

    def on_step(self, i: int, n: int) -> None:
        self.status = "running"
        if self.first_step_at is None:
            self.first_step_at = time.monotonic()
            self._first_i = i
        self.step, self.steps = i, n

    def on_cell(self, cell: int, cells: int, i: int, n: int, label: str = "") -> None:
        if cell != self.cell:
            self.first_step_at = None
        self.cell, self.cells, self.cell_label = cell, cells, label
        self.on_step(i, n)

    def cancel(self) -> None:
        self.cancel_event.set()

    # ------------------------------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.status in ("done", "cancelled", "error")

    @property
    def fraction(self) -> float:
        per_cell = self.step / self.steps if self.steps else 0.0
        return min(1.0, (self.cell + per_cell) / self.cells) if self.cells else per_cell

    def seconds_left(self) -> float | None:
        """From the pace of the steps so far (decoding not included)."""
        if self.first_step_at is None or self.step <= self._first_i:
            return None
        pace = (time.monotonic() - self.first_step_at) / (self.step - self._first_i)
        left_steps = self.steps - self.step
        if self.cells:
            left_steps += (self.cells - self.cell - 1) * self.steps
        return pace * left_steps

    def _run(self) -> None:
        try:
            self.result = self._work(self)
            self.status = "done"
        except Cancelled:
            self.status = "cancelled"
        except (SVDError, ValueError) as e:
            self.error, self.status = str(e), "error"
        except Exception as e:  # unexpected: still one line in the UI; the traceback goes to the server log
            import traceback

            traceback.print_exc()
            self.error, self.status = f"{type(e).__name__}: {e}", "error"
