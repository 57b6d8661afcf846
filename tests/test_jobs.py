"""The background job's progress text and estimate (app/jobs.py has no Streamlit: tested directly)."""

import threading
import time

from app.jobs import Job


def test_phases_and_an_estimate_that_includes_the_decode():
    gate, stepped = threading.Event(), threading.Event()

    def work(job):
        job.on_phase("encoding")
        job.on_phase("denoising")
        for i in (1, 2):
            job.on_step(i, 10)
            time.sleep(0.05)
        stepped.set()
        gate.wait(5)
        return {}
    job = Job("generate", work, decode_estimate=7.0)
    thread = threading.Thread(target=job.run)
    thread.start()
    assert stepped.wait(5)
    assert job.status == "running" and job.status_text() == "denoising step 2/10"
    left = job.seconds_left()
    assert 7.0 + 8 * 0.04 < left < 7.0 + 8 * 1.0  # eight steps at the pace so far, plus the decode
    job.on_phase("decoding")
    assert job.status_text() == "decoding frames"
    gate.set()
    thread.join(5)
    assert job.status == "done" and job.done_event.is_set()


def test_unknown_decode_time_is_not_counted_as_zero():
    job = Job("generate", lambda j: {})
    job.on_step(1, 4)
    time.sleep(0.02)
    job.on_step(2, 4)
    assert job.decode_estimate is None and job.seconds_left() is not None  # the page says "+ decoding"


def test_how_a_job_ends_is_its_outcome():
    """What the page's slot gets: the result, or an error line (no traceback), or the cancel notice."""
    from svd_core import SVDError

    def fails(job):
        raise SVDError("out of luck")

    done, failed, cancelled = Job("generate", lambda j: {"ok": 1}), Job("generate", fails), Job("g", lambda j: {})
    cancelled.cancel()  # before it ran: it never runs
    for job in (done, failed, cancelled):
        job.run()
    assert done.outcome() == ({"ok": 1}, None)
    assert failed.outcome() == (None, ("error", "out of luck"))
    assert cancelled.status == "cancelled" and cancelled.outcome() == (None, ("info", "Cancelled: nothing was saved."))


def test_the_queued_line_names_the_place_in_the_queue():
    job = Job("generate", lambda j: {})
    assert "2 run(s) ahead of yours" in job.progress_text(2)
    assert job.progress_text(0) == "Waiting for the model…"
