"""Background jobs: a run or a sweep on its own thread, so reruns and page switches never interrupt it.

The thread never touches Streamlit; pages poll `Job` for progress and results. Cancel sets an event that the
core checks while queued, between steps, before each decode call and just before the run folder is renamed into
place (`should_stop`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from svd_core import Cancelled, SVDError

PHASES = {"queued": "waiting for the model", "encoding": "encoding the image", "denoising": "denoising",
          "decoding": "decoding frames", "saving": "saving",
          "compiling": "compiling the model for these shapes (torch.compile, first run)"}


# Streamlit's static serving (Starlette's FileResponse) takes a file's size, then opens it: a file replaced in
# between by one of another length breaks the response ("Too much data for declared Content-Length"), the page's
# fetch fails and the server logs a traceback. So every file written here has the same length: its JSON padded
# with spaces to a multiple of JSON_BYTES (a job's progress is a few hundred bytes).
JSON_BYTES = 1024
PREVIEWS_KEPT = 3  # live previews kept on disk: the page may still be fetching the one before the latest


def write_json(path: Path, data: dict) -> None:
    """Replace `path` with `data` as JSON padded to a multiple of JSON_BYTES, atomically (a page fetching it never
    sees half a file, or a length that is not the file's). A failed write only loses that update."""
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(data)  # ASCII: one byte a character
    try:
        tmp.write_text(text + " " * (-len(text) % JSON_BYTES))
        os.replace(tmp, path)
    except OSError:
        pass


class Job:
    def __init__(self, kind: str, work: Callable[[Job], dict], owner: str = "", label: str = "",
                 decode_estimate: float | None = None):
        self._work = work
        self.kind, self.owner, self.label = kind, owner, label
        self.cancel_event = threading.Event()
        self.done_event = threading.Event()  # set when the job has finished, whichever way
        self.status = "queued"  # queued -> running -> done | cancelled | error
        self.phase = "queued"  # queued, encoding, denoising, decoding, saving
        self.queue_position = 0
        self.step = self.steps = 0
        self.cell = self.cells = 0
        self.cell_label = ""
        self.first_step_at: float | None = None  # pace of the current cell, from its first reported step
        self._first_i = 0
        self.decode_estimate = decode_estimate  # seconds, from the server's earlier runs (None: unknown yet)
        self.decode_rate: float | None = None  # measured here: decode seconds per megapixel-frame
        self.result: dict | None = None
        self.error = ""
        self.on_finish: Callable[[Job], None] | None = None
        self.on_publish: Callable[[Job], None] | None = None  # after each publish (the server's status follows it)
        self.progress_file: Path | None = None  # where publish() writes the progress for the page to fetch
        self.preview_dir: Path | None = None  # where on_preview writes the live previews (None: nobody watches)
        self.preview_file: Path | None = None  # the latest one
        self._previews: list[Path] = []
        self._preview_writer = None
        self._thread = threading.Thread(target=self._run, name=f"svd-{kind}", daemon=True)

    def start(self) -> Job:
        self._thread.start()
        return self

    # callbacks handed to svd_core --------------------------------------------------------------------------
    def should_stop(self) -> bool:
        return self.cancel_event.is_set()

    def on_queue(self, position: int) -> None:
        """Called at every wake-up of the queue (5 a second while waiting): the page hears only of changes."""
        changed = position != self.queue_position or (position == 0 and self.status != "running")
        self.queue_position = position
        if position == 0:
            self.status = "running"
        if changed:
            self.publish()

    def on_phase(self, phase: str) -> None:
        self.status, self.phase = "running", phase
        self.publish()

    def on_step(self, i: int, n: int) -> None:
        self.status = "running"
        if self.first_step_at is None:
            self.first_step_at = time.monotonic()
            self._first_i = i
        self.step, self.steps = i, n
        self.publish()

    def on_preview(self, step, steps, sigma, denoised, latents) -> None:
        """The model's current estimate, mapped to a small image here (on the run's device), written as a PNG in
        preview_dir by a thread of its own (svd_core.preview.BackgroundWriter); the next publish names it. Each
        preview is a new file (a file the page may be fetching is never rewritten: the static server takes a
        file's size before reading it), the oldest deleted once PREVIEWS_KEPT newer ones exist; at the writer's
        pace (BackgroundWriter.due). Handed to the core only when a page watches (preview_dir set)."""
        from svd_core.preview import BackgroundWriter, preview_image

        if self.preview_dir is None or self.progress_file is None:
            return
        if self._preview_writer is None:
            self._preview_writer = BackgroundWriter(self._write_preview)
        if self._preview_writer.due():
            self._preview_writer.submit(preview_image(denoised))

    def _write_preview(self, image) -> None:
        from svd_core.preview import png, write_atomically

        path = self.preview_dir / f"{self.progress_file.stem}-{len(self._previews)}.png"
        write_atomically(path, png(image))
        self._previews.append(path)
        self.preview_file = path
        if len(self._previews) > PREVIEWS_KEPT:
            self._previews[-PREVIEWS_KEPT - 1].unlink(missing_ok=True)

    def remove_previews(self) -> None:
        """After the run: the writer's last preview written, every file it left removed."""
        if self._preview_writer is not None:
            self._preview_writer.close()
        for path in self._previews[-PREVIEWS_KEPT - 1:]:
            path.unlink(missing_ok=True)

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
        """From the pace of the steps so far, plus the decode as long as earlier runs took for it."""
        if self.first_step_at is None or self.step <= self._first_i:
            return None
        pace = (time.monotonic() - self.first_step_at) / (self.step - self._first_i)
        cells_left = (self.cells - self.cell - 1) if self.cells else 0
        left = pace * (self.steps - self.step + cells_left * self.steps)
        if self.decode_estimate is not None:
            left += self.decode_estimate * (cells_left + (self.phase != "saving"))
        return left

    def progress_text(self) -> str:
        """The progress bar's line: '[run 2/4 · label · ]denoising step 3/40 · about 12 s left'."""
        if self.status == "queued":
            ahead = self.queue_position
            return (f"Waiting for the model: {ahead} run(s) ahead of yours in the queue (every tab shares it)"
                    if ahead else "Waiting for the model…")
        left = self.seconds_left()
        what = f"run {self.cell + 1}/{self.cells} · {self.cell_label} · " if self.cells else ""
        text = f"{what}{self.status_text()}"
        if left is not None:
            text += f" · about {left:.0f} s left" + ("" if self.decode_estimate is not None else " + decoding")
        return text

    def publish(self) -> None:
        """Write the progress as JSON to progress_file (atomically: a reader never sees half a file), for a page
        to fetch without rerunning its script; at every change (steps come at most ~10 a second: a few hundred
        bytes each). `left_s` is seconds_left() (null while unknown): the page fetches less often while it is
        long. A failed write only loses that update. Then on_publish, if set."""
        if self.progress_file is not None:
            left = self.seconds_left() if self.status == "running" else None
            write_json(self.progress_file, {"status": self.status, "finished": self.finished,
                                            "fraction": self.fraction, "text": self.progress_text(),
                                            "left_s": None if left is None else round(left, 1),
                                            "preview": None if self.preview_file is None or self.finished
                                            else self.preview_file.name})
        if self.on_publish is not None:
            self.on_publish(self)

    def status_text(self) -> str:
        """'denoising step 3/40', 'decoding frames', ... for the progress bar."""
        if self.status == "queued":
            return PHASES["queued"]
        if self.phase == "denoising":
            return f"denoising step {self.step}/{self.steps or '…'}"
        return PHASES.get(self.phase, self.phase)

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
        finally:
            if self.on_finish is not None:
                self.on_finish(self)  # off the server's list first: the page reruns as soon as it reads this
            self.publish()
            self.remove_previews()
            self.done_event.set()  # last: whoever waits on it sees the server's list and files up to date
