"""AppTest of the sidebar (app/controls.py): the server's one model and queue, shared by every tab."""

import time

import pytest

from svd_core import read_video

from .apptest import (
    PNG,
    app,
    button,
    job,
    small,
    wait,
)

pytestmark = pytest.mark.usefixtures("fresh_server")  # a fresh model server per test


def test_cpu_only_hides_memory_modes(with_tiny):
    at = app()
    keys = {w.key for w in at.sidebar.selectbox}
    assert "model_memory_mode" not in keys and "model_device" not in keys
    assert any("Memory modes apply to GPUs only" in c.value for c in at.sidebar.caption)


def test_two_sessions_take_turns_on_one_pipeline(with_tiny):
    """Sessions share the server's sampler; the second waits, sees its place in the queue, then runs."""
    a, b = app(), app()
    for at, steps in ((a, 200), (b, 2)):
        at.file_uploader(key="upload_gen").set_value(("cat.png", PNG, "image/png")).run()
        small(at, frames=4, steps=steps)
    button(a, "Generate video").click().run()
    job_a = job(a, "gen")
    while job_a.step < 1:
        time.sleep(0.05)
    button(b, "Generate video").click().run()
    job_b = job(b, "gen")
    b.run()
    # its progress line says its place in the server's queue
    assert job_b.status == "queued"
    assert any("1 run(s) ahead of yours" in p.proto.text for p in b.get("progress"))
    queue = " ".join(m.value for m in b.sidebar.markdown)  # people in words, not session ids
    assert "Generate · another tab: running" in queue and "Generate · this tab: queued (1 ahead)" in queue
    assert job_a.owner not in queue
    button(a, "Cancel").click().run()
    res = wait(b, "gen")
    assert read_video(res["path"] / "video.mp4")[0].shape[0] == 4 and job_a.status == "cancelled"


def test_two_sessions_one_model(with_tiny, reference_checkpoints):
    """The model belongs to the server: a change is refused while a run is active, then it is one change for
    every session (no reloading back and forth), and the other session's settings follow, visibly."""
    from app.resources import get_server

    ck, _ = with_tiny
    (ck / "svd_xt.safetensors").symlink_to(reference_checkpoints["A"])
    a, b = app(), app()
    tiny, xt = str(ck / "tiny.safetensors"), str(ck / "svd_xt.safetensors")
    assert a.sidebar.selectbox(key="model_ckpt").value == xt  # the server's default
    a.sidebar.selectbox(key="model_ckpt").set_value(tiny).run()
    b.run()
    assert b.sidebar.selectbox(key="model_ckpt").value == tiny
    assert any("Chosen by another tab" in c.value for c in b.sidebar.caption)
    assert any("Chosen by this tab" in c.value for c in a.sidebar.caption)
    assert b.number_input(key="knob_num_frames").value == 6
    assert any("The model is now tiny.safetensors" in i.value for i in b.info)
    a.file_uploader(key="upload_gen").set_value(("cat.png", PNG, "image/png")).run()
    small(a, frames=4, steps=200)
    button(a, "Generate video").click().run()
    while job(a, "gen").step < 1:
        time.sleep(0.05)
    sampler = get_server().sampler()
    b.sidebar.selectbox(key="model_ckpt").set_value(xt).run()
    assert any("in use by 1 run(s)" in w.value for w in b.sidebar.warning)
    assert b.sidebar.selectbox(key="model_ckpt").value == tiny and get_server().choice.checkpoint == tiny
    assert get_server().sampler() is sampler  # never reloaded
    button(a, "Cancel").click().run()
    wait(a, "gen", "error")
    b.sidebar.selectbox(key="model_ckpt").set_value(xt).run()
    assert get_server().choice.checkpoint == xt and not b.sidebar.warning
    a.run()
    assert a.sidebar.selectbox(key="model_ckpt").value == xt


def test_a_stale_sidebar_changes_only_the_setting_it_changed(with_tiny, monkeypatch):
    """Tab A's sidebar was drawn before tab B turned compile on: A's change of memory mode keeps B's compile."""
    from app import controls
    from app.resources import get_server
    from svd_core import ModelSpec

    monkeypatch.setattr(controls, "available_devices", lambda: ["cuda", "cpu"])  # the GPU widgets are drawn
    a, b = app("history"), app("history")  # History loads no model
    tiny = str(with_tiny[0] / "tiny.safetensors")
    b.sidebar.checkbox(key="model_compile").check().run()
    assert get_server().choice == ModelSpec(tiny, compile=True)
    a.sidebar.selectbox(key="model_memory_mode").set_value("low").run()  # A still shows compile off
    assert not a.exception
    assert get_server().choice == ModelSpec(tiny, memory_mode="low", compile=True)


def test_a_model_that_cannot_load_says_one_line_and_can_be_tried_again(with_tiny, monkeypatch):
    """Loading can fail with anything (torch's out of memory, a CUDA error): the page shows one line, no
    traceback, and "Try loading again" loads it once the cause is gone."""
    from app import resources

    make, fail = resources._make_sampler, [True]

    def flaky(choice):
        if fail[0]:
            raise RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported")
        return make(choice)
    monkeypatch.setattr(resources, "_make_sampler", flaky)
    at = app()
    assert [e.value for e in at.error] == ["Cannot load tiny.safetensors: RuntimeError: CUDA error: out of memory"]
    assert not at.exception and not at.title  # the page stops there
    at.run()
    assert len(at.error) == 1  # a rerun does not load again (each try of a large model takes a minute)
    fail[0] = False
    button(at, "Try loading again").click().run()
    assert not at.error and at.title[0].value == "Generate"
