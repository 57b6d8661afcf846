"""The model server: one worker runs every tab's jobs one at a time on the server's model (app/server.py has no
Streamlit: tested directly, on the tiny model), and a tab drawn before another tab changed the model cannot run
(AppTest sessions of the real app sharing the process-wide server)."""

import threading
import time
import weakref
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.jobs import Job
from app.server import Busy, ModelChanged, ModelServer
from svd_core import ModelSpec, SVDError

from .conftest import FIXTURES

APP = str(Path(__file__).resolve().parent.parent / "app" / "main.py")
PNG = (FIXTURES / "A" / "input_image.png").read_bytes()


@pytest.fixture
def server(tiny_checkpoint):
    from app.resources import _make_sampler

    s = ModelServer(_make_sampler)
    s.select(ModelSpec(str(tiny_checkpoint), device="cpu"))
    yield s
    for job in s.jobs():
        s.cancel(job)


def wait_until(cond, timeout=60):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def test_one_worker_runs_the_jobs_one_at_a_time_in_order_and_says_their_places(server):
    running, most, order, samplers = [0], [0], [], []
    gates = [threading.Event() for _ in range(3)]
    lock = threading.Lock()

    def work_of(i):
        def work(job, sampler):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            order.append(i)
            samplers.append(sampler)
            gates[i].wait(30)
            with lock:
                running[0] -= 1
            return {"i": i}
        return work
    jobs = [Job("generate", work_of(i), model=server.choice) for i in range(3)]
    for job in jobs:
        server.submit(job)
    wait_until(lambda: order == [0])
    assert [j.status for j in jobs] == ["running", "queued", "queued"]
    assert [server.position(j) for j in jobs] == [0, 1, 2]  # the progress line's place, from the server's queue
    assert "2 run(s) ahead" in jobs[2].progress_text(server.position(jobs[2]))
    assert server.jobs() == jobs
    gates[0].set()
    wait_until(lambda: order == [0, 1])
    assert server.position(jobs[2]) == 1
    time.sleep(0.2)
    assert order == [0, 1]  # job 2 waits for job 1: the worker runs one at a time
    gates[1].set()
    gates[2].set()
    for job in jobs:
        assert job.done_event.wait(30)
    assert [j.status for j in jobs] == ["done"] * 3 and [j.result["i"] for j in jobs] == [0, 1, 2]
    assert most[0] == 1 and order == [0, 1, 2]
    assert samplers[0] is samplers[1] is samplers[2] is server.sampler()  # the server's one pipeline
    wait_until(lambda: server.jobs() == [])


def test_cancel_of_a_queued_job_removes_it_without_running(server):
    gate, ran = threading.Event(), []
    first = Job("generate", lambda job, sampler: gate.wait(30) and {}, model=server.choice)
    queued = Job("generate", lambda job, sampler: ran.append(1) or {}, model=server.choice)
    server.submit(first)
    server.submit(queued)
    wait_until(lambda: first.status == "running")
    server.cancel(queued)
    assert queued.status == "cancelled" and queued.done_event.is_set() and server.jobs() == [first]
    gate.set()
    assert first.done_event.wait(30) and first.status == "done"
    wait_until(lambda: server.jobs() == [])
    assert ran == []


def test_a_job_for_another_model_is_refused(server, tiny_checkpoint):
    """At submit (a tab drawn before the model changed), and again when its turn comes."""
    other = ModelSpec(str(tiny_checkpoint), device="cpu", memory_mode="low")
    ran = []
    with pytest.raises(ModelChanged, match=r"^The model is now tiny.safetensors \(changed in another tab\): check "
                                           r"the settings and press again\.$"):
        server.submit(Job("generate", lambda job, sampler: ran.append(1) or {}, model=other))
    assert server.jobs() == []
    # select refuses while a job is queued, so the worker's own check is reached only past it
    gate = threading.Event()
    first = Job("generate", lambda job, sampler: gate.wait(30) and {}, model=server.choice)
    stale = Job("generate", lambda job, sampler: ran.append(1) or {}, model=server.choice)
    server.submit(first)
    server.submit(stale)
    with pytest.raises(Busy):
        server.select(other)
    server.choice = other  # past select
    gate.set()
    assert stale.done_event.wait(30)
    assert stale.status == "error" and "The model is now" in stale.error and ran == []


@pytest.mark.slow
def test_a_tab_drawn_before_another_tab_changed_the_model_cannot_run(tmp_path, monkeypatch, tiny_checkpoint,
                                                                   reference_checkpoints):
    """Tab 1 draws Generate on model A; tab 2 changes the model to B; tab 1's click is refused with one line: it
    runs on neither pipeline, loads nothing, saves nothing."""
    from app import resources
    from svd_core.runs import list_runs

    ck, out = tmp_path / "checkpoints", tmp_path / "outputs"
    ck.mkdir()
    (ck / "tiny.safetensors").symlink_to(tiny_checkpoint)
    (ck / "svd_xt.safetensors").symlink_to(reference_checkpoints["A"])
    monkeypatch.setenv("SVD_CHECKPOINT_DIR", str(ck))
    monkeypatch.setenv("SVD_OUTPUT_DIR", str(out))
    loaded = []
    make = resources._make_sampler

    def counted(choice):
        sampler = make(choice)
        loaded.append(weakref.ref(sampler))
        return sampler
    monkeypatch.setattr(resources, "_make_sampler", counted)
    resources.get_server.clear()
    try:
        tab1, tab2 = AppTest.from_file(APP, default_timeout=120), AppTest.from_file(APP, default_timeout=120)
        tab1.run()
        tab1.sidebar.selectbox(key="model_ckpt").set_value(str(ck / "tiny.safetensors")).run()
        tab1.file_uploader(key="upload_gen").set_value(("cat.png", PNG, "image/png")).run()
        for key, value in (("knob_num_frames", 3), ("knob_num_inference_steps", 2)):
            tab1.number_input(key=key).set_value(value)
        tab1.run()
        assert not tab1.exception and tab1.title[0].value == "Generate"
        tab2.run()
        tab2.sidebar.selectbox(key="model_ckpt").set_value(str(ck / "svd_xt.safetensors")).run()
        assert not tab2.exception and resources.get_server().choice.name == "svd_xt.safetensors"
        loads = len(loaded)
        next(b for b in tab1.button if b.label == "Generate video").click().run()
        assert not tab1.exception
        slot = tab1.session_state["slot_gen"]
        assert slot.job is None and slot.error == (
            "error", "The model is now svd_xt.safetensors (changed in another tab): check the settings and press "
                     "again.")
        assert any("The model is now svd_xt.safetensors (changed in another tab)" in e.value for e in tab1.error)
        time.sleep(1)  # a run that slipped through would be under way
        assert resources.get_server().jobs() == [] and list_runs() == []
        assert len(loaded) == loads  # the click loaded nothing
        assert resources.get_server().sampler() is loaded[-1]()  # the server holds B's pipeline only
    finally:
        resources.get_server.clear()


def test_a_model_that_cannot_load_ends_its_job_and_the_worker_goes_on(tiny_checkpoint):
    """Loading can raise anything (torch's out of memory, a CUDA RuntimeError): the job ends with one line, the
    worker lives on, and the same model selected again loads and runs the next job."""
    from app.resources import _make_sampler

    fail = [True]

    def make(choice):
        if fail[0]:
            raise RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported")
        return _make_sampler(choice)
    server = ModelServer(make)
    server.select(ModelSpec(str(tiny_checkpoint), device="cpu"))
    first = Job("generate", lambda job, sampler: {"ran": 1}, model=server.choice)
    server.submit(first)
    assert first.done_event.wait(30)
    assert first.status == "error" and first.error == (
        "Cannot load tiny.safetensors: RuntimeError: CUDA error: out of memory")
    assert server.load_error == "RuntimeError: CUDA error: out of memory" and server.jobs() == []
    with pytest.raises(SVDError, match=r"^RuntimeError: CUDA error: out of memory$"):  # kept: no reload per rerun
        server.sampler()
    fail[0] = False
    server.select(server.choice)  # "Try loading again": the same model clears the error
    assert server.load_error == ""
    second = Job("generate", lambda job, sampler: {"ran": 2}, model=server.choice)
    server.submit(second)
    assert second.done_event.wait(30) and second.status == "done" and second.result == {"ran": 2}


def test_a_job_that_breaks_the_worker_ends_with_one_line_and_the_next_runs(server):
    """Whatever escapes a job's own handling ends that job, not the worker."""
    class Broken(Job):
        def run(self, *args):
            raise KeyError("oops")
    broken = Broken("generate", lambda job, sampler: {}, model=server.choice)
    after = Job("generate", lambda job, sampler: {"ok": 1}, model=server.choice)
    server.submit(broken)
    server.submit(after)
    assert broken.done_event.wait(30) and broken.status == "error" and broken.error == "KeyError: 'oops'"
    assert after.done_event.wait(30) and after.status == "done"


def test_a_job_cancelled_while_queued_ends_at_once_even_without_the_server(server):
    """job.cancel() (a download's Cancel, a closed test) ends a queued job itself; the worker skips it."""
    gate, ran = threading.Event(), []
    first = Job("generate", lambda job, sampler: gate.wait(30) and {}, model=server.choice)
    queued = Job("generate", lambda job, sampler: ran.append(1) or {}, model=server.choice)
    server.submit(first)
    server.submit(queued)
    wait_until(lambda: first.status == "running")
    queued.cancel()
    assert queued.status == "cancelled" and queued.done_event.is_set() and server.jobs() == [first]
    queued.end("error", "late")  # a job ends once
    assert queued.status == "cancelled" and queued.error == ""
    gate.set()
    assert first.done_event.wait(30) and first.status == "done"
    wait_until(lambda: server.jobs() == [])
    assert ran == []
