"""The background job's progress text and estimate (app/jobs.py has no Streamlit: tested directly)."""

import threading
import time

from app.jobs import Job


def test_phases_and_an_estimate_that_includes_the_decode():
    gate = threading.Event()

    def work(job):
        job.on_queue(1)
        job.on_queue(0)
        job.on_phase("encoding")
        job.on_phase("denoising")
        for i in (1, 2):
            job.on_step(i, 10)
            time.sleep(0.05)
        gate.wait(5)
        return {}
    job = Job("generate", work, decode_estimate=7.0).start()
    deadline = time.time() + 5
    while job.step < 2 and time.time() < deadline:
        time.sleep(0.01)
    assert job.status_text() == "denoising step 2/10"
    left = job.seconds_left()
    assert 7.0 + 8 * 0.04 < left < 7.0 + 8 * 1.0  # eight steps at the pace so far, plus the decode
    job.on_phase("decoding")
    assert job.status_text() == "decoding frames"
    gate.set()
    job._thread.join(5)
    assert job.status == "done"


def test_unknown_decode_time_is_not_counted_as_zero():
    job = Job("generate", lambda j: {})
    job.on_step(1, 4)
    time.sleep(0.02)
    job.on_step(2, 4)
    assert job.decode_estimate is None and job.seconds_left() is not None  # the page says "+ decoding"


def test_progress_file_tells_the_page_without_a_rerun(tmp_path):
    """What the page's progress bar fetches: place in the queue, then progress, then finished (which makes the
    page rerun once); every write is whole (atomic replace)."""
    import json

    steps, seen = threading.Event(), []

    def work(job):
        job.on_queue(2)
        seen.append(json.loads(job.progress_file.read_text()))
        job.on_queue(0)
        job.on_phase("denoising")
        job.on_step(1, 4)
        seen.append(json.loads(job.progress_file.read_text()))
        time.sleep(0.05)
        job.on_step(2, 4)
        seen.append(json.loads(job.progress_file.read_text()))
        steps.wait(5)
        return {"ok": True}
    job = Job("generate", work)
    job.progress_file = tmp_path / "p.json"
    job.start()
    deadline = time.time() + 5
    while len(seen) < 3 and time.time() < deadline:
        time.sleep(0.01)
    assert "2 run(s) ahead" in seen[0]["text"] and seen[0]["status"] == "queued" and not seen[0]["finished"]
    assert seen[1]["text"].startswith("denoising step 1/4") and seen[1]["fraction"] == 0.25
    # the time left, for the page to fetch less often while it is long: unknown until the steps have a pace
    assert seen[0]["left_s"] is None and seen[1]["left_s"] is None
    assert 2 * 0.04 <= seen[2]["left_s"] < 2 * 1.0  # two steps left at ~0.05 s each
    steps.set()
    job.done_event.wait(5)
    final = json.loads(job.progress_file.read_text())
    assert final["finished"] and final["status"] == "done"
    assert not list(tmp_path.glob("*.tmp"))


def _status(path) -> dict:
    """The server's status file without its version (the sidebar's: app/controls.py)."""
    import json

    data = json.loads(path.read_text())
    assert isinstance(data.pop("version"), int)
    return data


def test_server_status_file_says_when_runs_are_active_and_on_what(tmp_path, tiny_checkpoint):
    """What every page's video guard fetches: how many runs are queued or running, and the model's device type
    (known once it is loaded); rewritten when a run is submitted, when the model loads, when a run ends."""

    from app.resources import _make_sampler
    from app.server import ModelChoice, ModelServer

    server = ModelServer(_make_sampler)
    server.status_file = tmp_path / "server.json"
    server.select(ModelChoice(str(tiny_checkpoint), device="cpu"))
    server.publish()
    assert _status(server.status_file) == {"active": 0, "device": "cpu"}

    release, seen = threading.Event(), []

    def work(job):
        server.sampler()
        seen.append(_status(server.status_file))
        release.wait(10)
        return {}
    job = Job("generate", work)
    server.submit(job)
    deadline = time.time() + 30
    while not seen and time.time() < deadline:
        time.sleep(0.01)
    assert seen == [{"active": 1, "device": "cpu"}]
    during = server.version
    release.set()
    job.done_event.wait(10)
    assert _status(server.status_file) == {"active": 0, "device": "cpu"}
    assert server.version > during  # the sidebars follow the queue's changes
    assert not list(tmp_path.glob("*.tmp"))

    best = ModelServer(_make_sampler)
    best.select(ModelChoice(str(tiny_checkpoint)))  # "best available": unknown until it has loaded
    assert best.device_type() == ""
    best.sampler()
    assert best.device_type() == "cpu"


def test_server_status_says_how_long_the_running_job_has_left(tmp_path):
    """A page that holds its videos paused fetches the status again shortly before the server can be idle: the
    running job's estimate, rewritten at each of its steps; none while it is unknown, none when idle."""

    from app.server import ModelServer

    server = ModelServer(lambda choice: None)
    server.status_file = tmp_path / "server.json"
    step, seen = threading.Event(), []

    def read():
        return _status(server.status_file)

    def work(job):
        job.on_queue(0)
        job.on_phase("denoising")
        job.on_step(1, 10)
        seen.append(read())
        time.sleep(0.1)
        job.on_step(2, 10)
        seen.append(read())
        step.wait(5)
        job.on_step(9, 10)
        seen.append(read())
        return {}
    job = Job("generate", work)
    server.submit(job)
    deadline = time.time() + 5
    while len(seen) < 2 and time.time() < deadline:
        time.sleep(0.01)
    assert seen[0] == {"active": 1, "device": ""}  # one step: no pace yet
    assert 8 * 0.08 <= seen[1]["busy_for_s"] < 8 * 2.0  # eight steps left at ~0.1 s each
    waiting = Job("generate", lambda job: step.wait(5) and {})  # says nothing: stays queued
    server.submit(waiting)  # another run waits behind it: still the running one's time left
    assert read()["active"] == 2 and read()["busy_for_s"] >= seen[1]["busy_for_s"]
    step.set()
    job.done_event.wait(5)
    waiting.done_event.wait(5)
    assert seen[2]["busy_for_s"] < seen[1]["busy_for_s"] / 2  # one step left
    assert read() == {"active": 0, "device": ""}


def test_a_queued_job_rewrites_its_progress_file_only_when_its_place_changes(tmp_path):
    """The queue wakes its waiters 5 times a second (to see a cancel); a waiting job writes its progress file
    only when its place changes: each write is file I/O under the queue's lock and the GIL the run needs."""
    from svd_core.session import RunQueue

    queue = RunQueue()
    queue.acquire()  # a run holds the model

    def work(job):
        queue.acquire(on_wait=job.on_queue, should_stop=job.should_stop)
        queue.release()
        return {}
    job = Job("generate", work)
    job.progress_file = tmp_path / "p.json"
    job.start()
    deadline = time.time() + 5
    while not job.progress_file.exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    st = job.progress_file.stat()
    first = (st.st_ino, st.st_mtime_ns)  # every write replaces the file: a new file, written later
    time.sleep(1.0)  # ~5 wake-ups, place unchanged
    st = job.progress_file.stat()
    assert (st.st_ino, st.st_mtime_ns) == first and job.status == "queued"
    queue.release()
    job.done_event.wait(5)
    assert job.status == "done"
