"""One AppTest per page, on the real tiny model (no mocks)."""

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.errors import AppTestError

from svd_core import list_runs

from .conftest import FIXTURES

APP = str(Path(__file__).resolve().parent.parent / "app" / "main.py")
PNG = (FIXTURES / "A" / "input_image.png").read_bytes()


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    ck, out = tmp_path / "checkpoints", tmp_path / "outputs"
    ck.mkdir()
    monkeypatch.setenv("SVD_CHECKPOINT_DIR", str(ck))
    monkeypatch.setenv("SVD_OUTPUT_DIR", str(out))
    return ck, out


@pytest.fixture
def with_tiny(dirs, tiny_checkpoint):
    ck, out = dirs
    (ck / "tiny.safetensors").symlink_to(tiny_checkpoint)
    return ck, out


def app(page=None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def small(at, frames=3, steps=2, size=64):
    """Advanced settings small enough for a quick CPU run."""
    at.number_input(key="knob_width").set_value(size)
    at.number_input(key="knob_height").set_value(size)
    at.number_input(key="knob_num_frames").set_value(frames)
    at.number_input(key="knob_num_inference_steps").set_value(steps)
    at.run()


def wait_for(at, get, timeout=120):
    """Rerun the app until get() returns something (a background job finished)."""
    t = time.time()
    while time.time() - t < timeout:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        value = get()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("the job never finished")


def wait(at, key, timeout=120):
    return wait_for(at, lambda: at.session_state[key] if key in at.session_state else None, timeout)


def button(at, label):
    return next(b for b in at.button if b.label.startswith(label))


def test_first_run_screen_and_demo_model(dirs):
    at = app()
    assert at.title[0].value == "Welcome to SVD Studio"
    assert any("svd_xt.safetensors" in m.value for m in at.markdown)
    button(at, "Create the demo model").click().run()
    assert not at.exception
    assert (dirs[0] / "tiny_demo.safetensors").is_file()
    assert at.title[0].value == "Generate"
    assert any("random weights" in w.value for w in at.sidebar.warning)


def test_generate_gate_without_image(with_tiny):
    at = app()
    gen = button(at, "Generate video")
    assert gen.disabled
    assert any("Upload an image" in c.value for c in at.caption)
    with pytest.raises(AppTestError, match="disabled"):  # AppTest, like a browser, cannot click it
        gen.click()
    at.run()
    assert "gen_job" not in at.session_state and not at.exception


def test_defaults_and_ranges_follow_checkpoint(with_tiny, reference_checkpoints):
    ck, _ = with_tiny
    (ck / "svd_xt.safetensors").symlink_to(reference_checkpoints["A"])  # tiny weights, released name
    at = app()
    assert at.sidebar.selectbox(key="ckpt").value.endswith("svd_xt.safetensors")
    motion = at.slider(key="knob_motion_bucket_id")
    assert (motion.value, motion.min, motion.max) == (127, 0, 1023)  # beyond the trained 0-255: the instrument issue
    assert at.number_input(key="knob_num_frames").value == 25
    assert at.slider(key="knob_decode_chunk_size").value == 14
    assert at.number_input(key="knob_max_guidance_scale").value == 3.0
    at.sidebar.selectbox(key="ckpt").set_value(str(ck / "tiny.safetensors")).run()
    assert at.number_input(key="knob_num_frames").value == 6
    assert at.slider(key="knob_decode_chunk_size").max == 6
    assert not at.exception


def test_generate_full_run_survives_reruns(with_tiny):
    at = app()
    at.file_uploader(key="gen_upload").set_value(("cat.png", PNG, "image/png")).run()
    small(at)
    assert not button(at, "Generate video").disabled
    assert at.image  # the preview
    button(at, "Generate video").click().run()
    res = wait(at, "gen_result")
    assert (res["path"] / "video.mp4").is_file() and res["result"].frames.shape == (3, 64, 64, 3)
    assert at.get("video")
    at.slider(key="knob_motion_bucket_id").set_value(40).run()  # any widget change keeps the result
    assert at.get("video") and at.session_state["gen_result"]["path"] == res["path"]
    labels = [b.label for b in at.get("download_button")]
    assert labels[:4] == ["mp4", "GIF", "frames (zip)", "run.json"]


def test_generate_cancel(with_tiny):
    at = app()
    at.file_uploader(key="gen_upload").set_value(("cat.png", PNG, "image/png")).run()
    small(at, frames=4, steps=200)
    button(at, "Generate video").click().run()
    job = at.session_state["gen_job"]
    while job.step < 1:
        time.sleep(0.05)
    button(at, "Cancel").click().run()
    err = wait(at, "gen_error")
    assert err[0] == "info" and "Cancelled" in err[1]
    assert job.status == "cancelled" and job.step < 200
    assert list_runs() == []


def test_bad_image_shows_error_not_traceback(with_tiny):
    at = app()
    at.file_uploader(key="gen_upload").set_value(("bad.png", b"not an image", "image/png")).run()
    assert not at.exception
    assert any("not a readable image" in e.value for e in at.error)
    assert button(at, "Generate video").disabled


def test_compare_two_cells(with_tiny):
    at = app("views/compare.py")
    assert button(at, "Run").disabled  # no image yet
    at.file_uploader(key="cmp_upload").set_value(("cat.png", PNG, "image/png")).run()
    at.switch_page("views/generate.py").run()
    small(at, frames=3, steps=1)
    at.switch_page("views/compare.py").run()
    at.text_input(key="cmp_values_motion_bucket_id").set_value("0, 255").run()
    run = button(at, "Run 2 samplings")
    assert not run.disabled
    run.click().run()
    res = wait(at, "cmp_result")
    assert len(res["cells"]) == 2 and (res["path"] / "grid.mp4").is_file()
    assert [c[0] for c in res["cells"]] == ["motion_bucket_id=0", "motion_bucket_id=255"]
    assert len(at.get("video")) >= 1
    at.radio(key="cmp_mode").set_value("Settings A vs B").run()
    at.slider(key="cmp_B_noise_aug_strength").set_value(0.5).run()
    button(at, "Run 2 samplings").click().run()
    at.session_state["cmp_result"] = None
    res = wait_for(at, lambda: at.session_state["cmp_result"])
    assert [c[0] for c in res["cells"]] == ["A: motion_bucket_id=127 noise_aug_strength=0.02",
                                            "B: motion_bucket_id=187 noise_aug_strength=0.5"]
    assert res["cells"][1][2].noise_aug_strength == 0.5 and res["cells"][0][2].seed == res["cells"][1][2].seed


def test_history_reload_and_delete(with_tiny, tiny_sampler, input_png):
    from svd_core import save_run

    params = tiny_sampler.default_params(width=64, height=64, num_frames=3, num_inference_steps=1,
                                         decode_chunk_size=3, motion_bucket_id=42, seed=7)
    path = save_run(tiny_sampler.generate(input_png, params), tiny_sampler.info)
    at = app("views/history.py")
    assert any(path.name in m.value for m in at.markdown)
    button(at, "Use these settings").click().run()
    assert at.session_state["knobs"]["motion_bucket_id"] == 42 and at.session_state["knobs"]["seed"] == 7
    assert at.session_state["image"]["bytes"] == (path / "input.png").read_bytes()
    at.switch_page("views/generate.py").run()
    assert at.slider(key="knob_motion_bucket_id").value == 42
    assert not button(at, "Generate video").disabled  # the run's image is loaded
    at.switch_page("views/history.py").run()
    button(at, "Yes, delete").click().run()
    assert not path.exists() and list_runs() == []
    assert any("No runs yet" in i.value for i in at.info)


def test_setup_page(with_tiny):
    ck, _ = with_tiny
    (ck / "old_model.ckpt").write_bytes(b"\x80\x04 pickle")
    (ck / "svd_xt.safetensors").write_bytes(b"half a download")
    at = app("views/setup.py")
    assert at.title[0].value == "Setup" and not at.exception
    assert any("svd_xt.safetensors" in m.value for m in at.markdown)
    warnings = " ".join(w.value for w in at.warning)
    assert "old_model.ckpt" in warnings and "pickle" in warnings and "not a safetensors file" in warnings


def test_two_sessions_take_turns_on_one_pipeline(with_tiny):
    """Sessions share the cached sampler; the second waits, sees its place in the queue, then runs."""
    a, b = app(), app()
    for at, steps in ((a, 200), (b, 2)):
        at.file_uploader(key="gen_upload").set_value(("cat.png", PNG, "image/png")).run()
        small(at, frames=4, steps=steps)
    button(a, "Generate video").click().run()
    job_a = a.session_state["gen_job"]
    while job_a.step < 1:
        time.sleep(0.05)
    button(b, "Generate video").click().run()
    job_b = b.session_state["gen_job"]
    deadline = time.time() + 30
    while job_b.queue_position != 1 and time.time() < deadline:
        time.sleep(0.05)
    b.run()
    assert job_b.status == "queued" and any("1 run(s) ahead" in i.value for i in b.info)
    button(a, "Cancel").click().run()
    res = wait(b, "gen_result")
    assert res["result"].frames.shape[0] == 4 and job_a.status == "cancelled"


def test_new_seed_button(with_tiny):
    at = app()
    old = at.number_input(key="knob_seed").value
    next(b for b in at.button if b.help == "A new random seed").click().run()
    assert at.number_input(key="knob_seed").value != old and not at.exception
    assert at.session_state["knobs"]["seed"] == at.number_input(key="knob_seed").value
