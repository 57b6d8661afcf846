"""One AppTest per page, on the real tiny model (no mocks)."""

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.errors import AppTestError

from svd_core import list_runs

from .conftest import FIXTURES
from .test_hub import GOOD_TOKEN, fake_hub  # noqa: F401  (the hub stand-in fixture)

APP = str(Path(__file__).resolve().parent.parent / "app" / "main.py")
PNG = (FIXTURES / "A" / "input_image.png").read_bytes()


@pytest.fixture(autouse=True)
def fresh_server():
    """Each test starts with a fresh process-wide model server (st.cache_resource outlives AppTests)."""
    from app.resources import get_server

    get_server.clear()
    yield
    for job in get_server().jobs():  # nothing of this test runs on into the next
        job.cancel()
    get_server.clear()


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


def slot(at, name):
    return at.session_state[f"slot_{name}"] if f"slot_{name}" in at.session_state else None


def result(at, name):
    return getattr(slot(at, name), "result", None)


def wait(at, name, what="result", timeout=120):
    """Rerun until the page's slot holds a result (or an error)."""
    return wait_for(at, lambda: getattr(slot(at, name), what, None), timeout)


def job(at, name):
    return slot(at, name).job


def button(at, label):
    return next(b for b in at.button if b.label.startswith(label))


def charts(at) -> dict[str, list]:
    """The page's Vega-Lite charts: their y field -> the values they plot, in order."""
    import pyarrow as pa

    out = {}
    for el in at.get("vega_lite_chart"):
        spec = json.loads(el.proto.spec)
        rows = pa.ipc.open_stream(el.proto.data.data).read_all().to_pylist()
        y = spec["encoding"]["y"]["field"]
        out.setdefault(y, []).append([r[y] for r in rows])
    return out


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
    assert slot(at, "gen").job is None and not at.exception


def test_defaults_and_ranges_follow_checkpoint(with_tiny, reference_checkpoints):
    ck, _ = with_tiny
    (ck / "svd_xt.safetensors").symlink_to(reference_checkpoints["A"])  # tiny weights, released name
    at = app()
    assert at.sidebar.selectbox(key="model_ckpt").value.endswith("svd_xt.safetensors")
    motion = at.slider(key="knob_motion_bucket_id")
    assert (motion.value, motion.min, motion.max) == (127, 0, 255)  # the slider spans the trained range ...
    assert at.number_input(key="knob_motion_bucket_id-typed").max == 1023  # ... the typed value reaches beyond
    assert at.number_input(key="knob_num_frames").value == 25
    assert "SVD-XT on 25" in at.number_input(key="knob_num_frames").help  # model names keep their case
    assert at.slider(key="knob_decode_chunk_size").value == 14
    assert at.number_input(key="knob_max_guidance_scale").value == 3.0
    at.sidebar.selectbox(key="model_ckpt").set_value(str(ck / "tiny.safetensors")).run()
    assert at.number_input(key="knob_num_frames").value == 6
    assert at.slider(key="knob_decode_chunk_size").value == 6
    assert not at.exception


def test_cpu_only_hides_memory_modes(with_tiny):
    at = app()
    keys = {w.key for w in at.sidebar.selectbox}
    assert "model_memory_mode" not in keys and "model_device" not in keys
    assert any("Memory modes apply to GPUs only" in c.value for c in at.sidebar.caption)


def test_frames_change_keeps_decode_chunk(with_tiny):
    """Issue: Frames 6 -> 10 made the decode chunk jump to 1. The value is kept; above the frame count it
    means 'all at once', and the page says so."""
    at = app()
    at.slider(key="knob_decode_chunk_size").set_value(5).run()
    for frames in (10, 4, 8):
        at.number_input(key="knob_num_frames").set_value(frames).run()
        assert at.slider(key="knob_decode_chunk_size").value == 5
        assert at.session_state["knob_decode_chunk_size"] == 5
    at.number_input(key="knob_num_frames").set_value(4).run()
    assert any("all of them are decoded at once" in c.value for c in at.caption)
    assert not at.error


def test_generate_full_run_survives_reruns(with_tiny):
    at = app()
    at.file_uploader(key="upload_gen").set_value(("cat.png", PNG, "image/png")).run()
    small(at)
    assert not button(at, "Generate video").disabled
    assert at.image  # the preview
    estimate = next(c.value for c in at.caption if c.value.startswith("Memory estimate for these settings"))
    assert all(f"{m} " in estimate for m in ("fast", "balanced", "low")) and "this server: auto → fast" in estimate
    button(at, "Generate video").click().run()
    res = wait(at, "gen")
    assert (res["path"] / "video.mp4").is_file() and res["result"].frames.shape == (3, 64, 64, 3)
    assert at.get("video")
    metrics = res["result"].metrics  # each per-frame metric of the run is charted, frame by frame
    drawn = charts(at)
    for key, field in (("motion", "flow (px)"), ("flicker", "flicker"), ("likeness", "likeness")):
        assert drawn[field] == [pytest.approx(metrics[key]["per_frame"])], key
    captions = " ".join(c.value for c in at.caption)  # each number with its own name and unit
    assert f"Flow: **{metrics['motion']['flow_px_per_frame']:.3g}** px/frame" in captions
    assert "Motion score (SVD paper units)" in captions or metrics["motion"]["score"] is None
    caption = next(c.value for c in at.caption if c.value.startswith("seed "))
    assert "decode chunk 3" in caption and "guidance 1→2.5" in caption and "fps_id 6" in caption
    assert (res["path"] / "input_original.png").read_bytes() == PNG  # the upload as given
    at.slider(key="knob_motion_bucket_id").set_value(40).run()  # any widget change keeps the result
    assert at.get("video") and result(at, "gen")["path"] == res["path"]
    labels = [b.label for b in at.get("download_button")]
    assert labels[:4] == ["mp4", "GIF", "frames (zip)", "run.json"]


def test_generate_cancel(with_tiny):
    at = app()
    at.file_uploader(key="upload_gen").set_value(("cat.png", PNG, "image/png")).run()
    small(at, frames=4, steps=200)
    button(at, "Generate video").click().run()
    j = job(at, "gen")
    while j.step < 1:
        time.sleep(0.05)
    button(at, "Cancel").click().run()
    err = wait(at, "gen", "error")
    assert err[0] == "info" and "Cancelled" in err[1]
    assert j.status == "cancelled" and j.step < 200
    assert list_runs() == []


def test_bad_image_shows_error_not_traceback(with_tiny):
    at = app()
    at.file_uploader(key="upload_gen").set_value(("bad.png", b"not an image", "image/png")).run()
    assert not at.exception
    assert any(e.value.startswith("bad.png: ") and "not a readable image" in e.value for e in at.error)
    assert button(at, "Generate video").disabled


def test_compare_two_cells(with_tiny):
    at = app("views/compare.py")
    assert button(at, "Run").disabled  # no image yet
    at.file_uploader(key="upload_cmp").set_value(("cat.png", PNG, "image/png")).run()
    at.switch_page("views/generate.py").run()
    small(at, frames=3, steps=1)
    at.switch_page("views/compare.py").run()
    at.text_input(key="cmp_values_motion_bucket_id").set_value("0 255").run()  # spaces work too
    run = button(at, "Run 2 samplings")
    assert not run.disabled
    run.click().run()
    res = wait(at, "cmp")
    assert len(res["cells"]) == 2 and (res["path"] / "grid.mp4").is_file()
    assert [c[0] for c in res["cells"]] == ["motion_bucket_id=0", "motion_bucket_id=255"]
    assert len(at.get("video")) >= 1
    at.radio(key="cmp_mode").set_value("Settings A vs B").run()
    # B starts equal to A (Generate's settings): nothing differs until the user changes something
    assert at.slider(key="cmp_B_motion_bucket_id").value == at.slider(key="cmp_A_motion_bucket_id").value
    # on opening: a hint, not an error
    assert button(at, "Run").disabled and not at.error and any("A and B start as" in i.value for i in at.info)
    # B's noise beyond its slider (0-0.3), typed: the slider widens to hold it; Generate's warnings on B's side
    at.number_input(key="cmp_B_noise_aug_strength-typed").set_value(0.5).run()
    assert at.slider(key="cmp_B_noise_aug_strength").value == 0.5
    assert any("Noise augmentation: A 0.02 → B 0.5" in m.value for m in at.markdown)
    assert sum("noise_aug_strength 0.5 is outside the training spread" in c.value for c in at.caption) == 1
    at.number_input(key="cmp_B_motion_bucket_id-typed").set_value(331).run()
    assert any("motion_bucket_id 331 is above the trained 0-255" in c.value for c in at.caption)
    at.number_input(key="cmp_B_motion_bucket_id-typed").set_value(at.slider(key="cmp_A_motion_bucket_id").value).run()
    slot(at, "cmp").result = None
    button(at, "Run 2 samplings").click().run()
    res = wait(at, "cmp")
    assert [c[0] for c in res["cells"]] == ["A: noise_aug_strength=0.02", "B: noise_aug_strength=0.5"]
    assert res["cells"][1][2].noise_aug_strength == 0.5 and res["cells"][0][2].seed == res["cells"][1][2].seed
    assert res["cells"][0][2].motion_bucket_id == res["cells"][1][2].motion_bucket_id


def test_compare_remembers_and_speaks_the_ui(with_tiny):
    at = app("views/compare.py")
    at.selectbox(key="cmp_knob").set_value("fps").run()
    at.text_input(key="cmp_values_fps").set_value("3 7 15").run()
    assert not at.error
    at.text_input(key="cmp_values_fps").set_value("3, x").run()
    assert [e.value for e in at.error] == ["'x' is not a number: type values for fps separated by commas or spaces"]
    at.text_input(key="cmp_values_fps").set_value("3, 7, 15").run()
    at.switch_page("views/generate.py").run()
    at.switch_page("views/history.py").run()
    at.switch_page("views/compare.py").run()
    assert at.selectbox(key="cmp_knob").value == "fps"
    assert at.text_input(key="cmp_values_fps").value == "3, 7, 15"
    # presets valid for the loaded model: the demo has 6 frames
    at.selectbox(key="cmp_knob").set_value("decode_chunk_size").run()
    assert at.text_input(key="cmp_values_decode_chunk_size").value == "1, 3, 6" and not at.error


def _saved_run(sampler, png, **kw):
    from svd_core import save_run

    params = sampler.default_params(width=64, height=64, num_frames=3, num_inference_steps=1,
                                    decode_chunk_size=3, **kw)
    return save_run(sampler.generate(png, params), sampler.info, source=("photo.png", PNG))


def test_history_reload_and_delete(with_tiny, tiny_sampler, input_png):
    path = _saved_run(tiny_sampler, input_png, motion_bucket_id=42, seed=7)
    at = app()
    slot(at, "gen").result = {"path": path, "result": None}  # an older result on Generate
    at.switch_page("views/history.py").run()
    assert any(path.name in m.value for m in at.markdown)
    button(at, "Use these settings").click().run()
    assert at.title[0].value == "Generate"  # the click opens Generate with the settings, and says so there
    assert at.session_state["knob_motion_bucket_id"] == 42 and at.session_state["knob_seed"] == 7
    img = at.session_state["image"]
    assert img.data == PNG and img.name == "photo.png"  # the original upload, not the 64x64 as sampled
    assert at.slider(key="knob_motion_bucket_id").value == 42
    assert result(at, "gen") is None  # the older result is gone with the old settings
    assert any(f"Settings and image of {path.name} loaded from History" in i.value for i in at.info)
    assert not button(at, "Generate video").disabled  # the run's image is loaded
    at.switch_page("views/history.py").run()
    button(at, "Yes, delete").click().run()
    assert not path.exists() and list_runs() == []
    assert any("No runs yet" in i.value for i in at.info)


def test_history_groups_a_comparison_and_deletes_it_with_its_cells(with_tiny, tiny_sampler, input_png):
    from svd_core import grid_cells, run_sweep

    base = tiny_sampler.default_params(width=64, height=64, num_frames=2, num_inference_steps=1)
    sweep = run_sweep(tiny_sampler, input_png, grid_cells(base, {"motion_bucket_id": [1, 2, 3]}))
    at = app("views/history.py")
    assert sum("Comparison" in m.value for m in at.markdown) == 1
    assert len([b for b in at.button if b.label == "Use these settings"]) == 4  # the comparison + its 3 cells
    assert any("1 entries" in c.value for c in at.caption)
    at.checkbox(key=f"delcells_{sweep.path.name}").uncheck().run()
    button(at, "Yes, delete").click().run()
    assert not sweep.path.exists() and all(p.exists() for p in sweep.run_paths)  # kept on request
    sweep = run_sweep(tiny_sampler, input_png, grid_cells(base, {"seed": [1, 2]}))
    at.run()
    next(b for b in at.button if b.key == f"del_{sweep.path.name}").click().run()
    assert not sweep.path.exists() and not any(p.exists() for p in sweep.run_paths)


def test_setup_page(with_tiny):
    ck, _ = with_tiny
    (ck / "old_model.ckpt").write_bytes(b"\x80\x04 pickle")
    (ck / "svd_xt.safetensors").write_bytes(b"half a download")
    at = app("views/setup.py")
    assert at.title[0].value == "Setup" and not at.exception
    assert any("svd_xt.safetensors" in m.value for m in at.markdown)
    warnings = " ".join(w.value for w in at.warning)
    assert "old_model.ckpt" in warnings and "pickle" in warnings and "not a safetensors file" in warnings
    from streamlit import config

    port = config.get_option("server.port")
    config.set_option("server.port", 8599)  # the serving note names the port the app runs on
    try:
        at.run()
    finally:
        config.set_option("server.port", port)
    assert any("ssh -L 8599:localhost:8599" in m.value for m in at.markdown)


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
    assert res["result"].frames.shape[0] == 4 and job_a.status == "cancelled"


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


def test_delete_while_shown_elsewhere(with_tiny, tiny_sampler, input_png):
    """Tab A shows a run in Generate and Compare; tab B deletes it in History: A shows a note, no exception."""
    from svd_core import grid_cells, run_sweep

    path = _saved_run(tiny_sampler, input_png)
    base = tiny_sampler.default_params(width=64, height=64, num_frames=2, num_inference_steps=1)
    sweep = run_sweep(tiny_sampler, input_png, grid_cells(base, {"seed": [1, 2]}))
    a = app()
    slot(a, "gen").result = {"path": path, "result": None}
    slot(a, "cmp").result = {"path": sweep.path, "cells": [(lbl, p, r.params) for (lbl, r), p in
                                                           zip(sweep.cells, sweep.run_paths)]}
    b = app("views/history.py")
    stale = app("views/history.py")  # a third tab whose History still lists the run
    for key in (f"del_{path.name}", f"del_{sweep.path.name}"):
        next(x for x in b.button if x.key == key).click().run()
    assert not path.exists() and not sweep.path.exists()
    a.run()
    assert not a.exception and any(f"Run {path.name} was deleted" in i.value for i in a.info)
    a.switch_page("views/compare.py").run()
    assert not a.exception and any(f"Run {sweep.path.name} was deleted" in i.value for i in a.info)
    next(x for x in stale.button if x.key == f"use_{path.name}").click().run()
    assert not stale.exception and any("was deleted" in i.value for i in stale.info)


def test_new_seed_button(with_tiny):
    at = app()
    old = at.number_input(key="knob_seed").value
    button(at, "Random seed").click().run()  # a labelled button, not a bare icon
    assert at.number_input(key="knob_seed").value != old and not at.exception


def test_sampler_panel_shows_what_applies_and_runs_several_videos(with_tiny):
    at = app()
    at.file_uploader(key="upload_gen").set_value(("cat.png", PNG, "image/png")).run()
    small(at, frames=3, steps=2)
    numbers = {w.key for w in at.number_input}
    assert "knob_s_churn" in numbers and "knob_eta" not in numbers  # euler: churn, no eta
    sigma = at.number_input(key="knob_sigma_min")  # a label in words, the API name in the help, 0.002 not "0.00"
    assert sigma.label == "Smallest noise level" and "`sigma_min`" in sigma.help
    assert sigma.proto.format % sigma.value == "0.002"
    assert "knob_s_noise" not in numbers  # read only with churn
    at.selectbox(key="knob_sampler").set_value("euler_ancestral").run()
    numbers = {w.key for w in at.number_input}
    assert {"knob_eta", "knob_s_noise"} <= numbers and "knob_s_churn" not in numbers
    at.selectbox(key="knob_discretization").set_value("legacy_ddpm").run()
    assert "knob_sigma_max" not in {w.key for w in at.number_input}
    at.selectbox(key="knob_guider").set_value("triangle").run()
    from svd_core import SamplingParams, guidance_scales

    lo, hi = (at.number_input(key=f"knob_{k}_guidance_scale").value for k in ("min", "max"))
    scales = guidance_scales(SamplingParams(num_frames=3, guider="triangle", min_guidance_scale=lo,
                                            max_guidance_scale=hi))
    assert len(set(scales.tolist())) > 1
    assert charts(at)["guidance"] == [pytest.approx(scales.tolist())]  # the scale of each frame
    assert any("triangle guider" in c.value for c in at.caption)
    at.number_input(key="knob_num_videos").set_value(2).run()
    button(at, "Generate video").click().run()
    res = wait(at, "gen")
    r = res["result"]
    assert len(r.videos) == 2 and (res["path"] / "video-1.mp4").is_file()
    assert any(c.value == f"seed {r.params.seed + 1}" for c in at.caption)  # side by side, each with its seed
    import json
    rec = json.loads((res["path"] / "run.json").read_text())
    assert rec["params"]["sampler"] == "euler_ancestral" and rec["params"]["guider"] == "triangle"
    assert rec["effective"]["model_calls"] == 2 * 2  # two videos of two steps
    assert any("meaningless" in m.value for m in at.markdown)  # the demo model's metrics are labelled
    # each video its own measurements and downloads; run.json has every video's
    assert len(rec["video_metrics"]) == 2 and rec["video_metrics"][0] == rec["metrics"]
    assert rec["video_metrics"][1]["flicker"] != rec["video_metrics"][0]["flicker"]
    assert any("Measured (video 1, seed" in m.value for m in at.markdown)
    at.button_group(key="gen_video").set_value(1).run()
    assert any(f"Measured (video 2, seed {r.params.seed + 1})" in m.value for m in at.markdown)
    assert charts(at)["flicker"] == [pytest.approx(rec["video_metrics"][1]["flicker"]["per_frame"])]
    mp4 = next(b for b in at.get("download_button") if b.proto.label == "mp4")
    assert mp4.proto.id.endswith("gen-mp4-1")  # video-1.mp4's button


def test_warnings_next_to_the_knob_and_the_fps_vocabulary(with_tiny):
    at = app()
    at.file_uploader(key="upload_gen").set_value(("cat.png", PNG, "image/png")).run()
    # the sliders span the trained range; values beyond it are typed beside them
    assert at.slider(key="knob_motion_bucket_id").max == 255 and at.slider(key="knob_fps").max == 31
    assert at.slider(key="knob_noise_aug_strength").max == 0.3
    at.number_input(key="knob_motion_bucket_id-typed").set_value(600).run()
    at.number_input(key="knob_fps-typed").set_value(40).run()
    assert at.slider(key="knob_motion_bucket_id").value == 600 and at.slider(key="knob_fps").value == 40
    captions = [c.value for c in at.caption]
    assert any("motion_bucket_id 600 is above the trained 0-255" in c for c in captions)
    assert any("fps 40 is fps_id 39, outside the trained fps_id 5-30" in c for c in captions)
    assert any("conditioning fps 40 (Stability's fps_id 39) · playback fps 40" in c for c in captions)
    at.slider(key="knob_noise_aug_strength").set_value(0.05).run()  # the slider feeds the typed value back
    assert at.number_input(key="knob_noise_aug_strength-typed").value == 0.05
    assert not at.error and not button(at, "Generate video").disabled  # a warning never blocks


def compare_motion_0_255():
    """Compare with the image, tiny settings and motion_bucket_id 0 and 255 typed in."""
    at = app()
    small(at, frames=2, steps=1)
    at.switch_page("views/compare.py").run()
    at.file_uploader(key="upload_cmp").set_value(("cat.png", PNG, "image/png")).run()
    at.text_input(key="cmp_values_motion_bucket_id").set_value("0 255").run()
    return at


def test_compare_across_seeds_shows_the_response(with_tiny):
    at = compare_motion_0_255()
    at.number_input(key="cmp_seeds").set_value(2).run()
    button(at, "Run 4 samplings").click().run()
    res = wait(at, "cmp")
    assert len(res["cells"]) == 4 and (res["path"] / "metrics.csv").is_file()
    assert any("Response to Motion bucket" in m.value for m in at.markdown)
    assert any("spread over 2 seeds" in c.value for c in at.caption)
    from svd_core.sweep import response_table

    table = response_table(res["path"])  # a chart per metric: mean, min and max over the seeds, per knob value
    want = sorted(sorted(v for r in table if r["metric"] == m for v in (r["mean"], r["min"], r["max"]))
                  for m in {r["metric"] for r in table})
    assert len(want) >= 3 and all(len(values) == 2 * 3 for values in want)
    assert sorted(sorted(values) for values in charts(at)["value"]) == [pytest.approx(v) for v in want]
    assert any(b.label == "metrics.csv" for b in at.get("download_button"))


def test_history_loads_a_dropped_mp4(with_tiny, tiny_sampler, input_png):
    path = _saved_run(tiny_sampler, input_png, motion_bucket_id=77, seed=5)
    at = app("views/history.py")
    at.file_uploader(key="upload_video").set_value(("clip.mp4", (path / "video.mp4").read_bytes(),
                                                    "video/mp4")).run()
    assert at.session_state["knob_motion_bucket_id"] == 77 and at.session_state["knob_seed"] == 5
    assert at.session_state["image"].data == PNG  # the run here with the same input: its original image
    assert any("settings and image of clip.mp4 loaded" in s.value for s in at.success)
    at.file_uploader(key="upload_video").set_value(("x.mp4", b"not a video", "video/mp4")).run()
    assert not at.exception and any("x.mp4" in e.value for e in at.error)


def test_history_summaries_and_a_dropped_grid(with_tiny, tiny_sampler, input_png, capsys):
    """A card says what a run is: a comparison what it varied, a run of several videos their seeds. A
    comparison's grid.mp4 dropped on History loads its first cell and names the comparison."""
    from svd_core import grid_cells, run_sweep

    base = tiny_sampler.default_params(width=64, height=64, num_frames=2, num_inference_steps=1)
    sweep = run_sweep(tiny_sampler, input_png, grid_cells(base, {"motion_bucket_id": [32, 255]}))
    _saved_run(tiny_sampler, input_png, num_videos=2, seed=9)
    at = app("views/history.py")
    captions = [c.value for c in at.caption]
    assert any("varies Motion bucket: 32, 255" in c and "motion bucket 32" not in c for c in captions)
    assert any(c.startswith("2 videos, seeds 9-10 ·") for c in captions)
    at.file_uploader(key="upload_video").set_value(("grid.mp4", (sweep.path / "grid.mp4").read_bytes(),
                                                    "video/mp4")).run()
    assert not at.error and at.session_state["knob_motion_bucket_id"] == 32
    assert any(f"grid of comparison {sweep.path.name} (listed below), which varied Motion bucket" in m.value
               for m in at.success)
    from svd_core.__main__ import main

    assert main(["sample", "--from", str(sweep.path / "grid.mp4"), str(input_png)]) == 2  # the CLI says what it is
    assert f"the grid of comparison {sweep.path.name}: rerun it with `sweep`" in capsys.readouterr().err


@pytest.mark.usefixtures("fake_hub")
def test_first_run_download_through_the_hub_stand_in(dirs):
    """No model: the first-run screen downloads one (from the local stand-in for the hub) with progress; the
    token is not kept in the session; the model is then offered."""
    ck, _ = dirs
    at = app()
    assert at.title[0].value == "Welcome to SVD Studio"
    at.text_input(key="first_token").set_value(GOOD_TOKEN).run()
    button(at, "Download").click().run()
    assert at.session_state["first_token"] == ""  # handed to the download, not kept
    job = slot(at, "download").job
    wait_for(at, lambda: job.finished)
    assert job.status == "done", job.error
    assert (ck / "svd_xt.safetensors").is_file() and not list(ck.glob("*.incomplete"))
    at.run()
    assert at.title[0].value == "Generate" and not at.exception  # the new model is offered at once
    assert at.sidebar.selectbox(key="model_ckpt").value == str(ck / "svd_xt.safetensors")
    assert all(GOOD_TOKEN.encode() not in f.read_bytes() for f in ck.iterdir() if f.is_file())


def test_compare_two_knobs_is_a_grid_with_a_heat_map(with_tiny):
    at = compare_motion_0_255()
    at.text_input(key="cmp_values_motion_bucket_id").set_value("32 255").run()  # "255" < "32" as text
    at.selectbox(key="cmp_knob2").set_value("noise_aug_strength").run()
    at.text_input(key="cmp_values2_noise_aug_strength").set_value("0, 0.1, 0.3").run()
    button(at, "Run 6 samplings").click().run()
    res = wait(at, "cmp")
    assert len(res["cells"]) == 6
    assert any("Response to Motion bucket and Noise augmentation" in m.value for m in at.markdown)
    specs = [json.loads(el.proto.spec) for el in at.get("vega_lite_chart")]
    maps = [sp for sp in specs if sp.get("mark") == "rect"]
    assert maps and all(sp["encoding"]["x"]["sort"] == ["32", "255"] for sp in maps)  # the grid's order
    assert all([float(v) for v in sp["encoding"]["y"]["sort"]] == [0, 0.1, 0.3] for sp in maps)
    assert maps[0]["encoding"]["x"]["title"] == "Motion bucket"
    rec = json.loads((res["path"] / "run.json").read_text())
    assert rec["varied"] == ["motion_bucket_id", "noise_aug_strength"]


@pytest.fixture(scope="module")
def tiny_sv3d(tmp_path_factory):
    from svd_core import make_tiny

    folder = tmp_path_factory.mktemp("sv3d")
    return {f: make_tiny(folder / f"tiny_{f}.safetensors", family=f) for f in ("sv3d_u", "sv3d_p")}


def test_sv3d_camera_section_generate_and_compare(dirs, tiny_sv3d):
    """An SV3D_p checkpoint shows the Camera section (no fps / motion sliders), its path reaches the run's
    record, and Compare varies the elevation; an SV3D_u one says it has no camera input."""
    import json

    from svd_core.camera import camera_path

    ck, _ = dirs
    (ck / "sv3d_p.safetensors").symlink_to(tiny_sv3d["sv3d_p"])
    at = app()
    assert not at.get("slider") or not any(s.key == "knob_motion_bucket_id" for s in at.slider)
    assert any(h.value == "Camera" for h in at.subheader) and at.image  # the 3D plot
    at.file_uploader(key="upload_gen").set_value(("cat.png", PNG, "image/png")).run()
    small(at, frames=6, steps=1)
    at.number_input(key="cam_elevation").set_value(25.0).run()
    at.selectbox(key="cam_path").set_value("dynamic").run()
    at.number_input(key="cam_seed").set_value(3).run()
    elevations, azimuths = camera_path("dynamic", 6, 25.0, 3)
    assert at.session_state["knob_azimuths_deg"] == list(azimuths)
    button(at, "Generate video").click().run()
    res = wait(at, "gen")
    record = json.loads((res["path"] / "run.json").read_text())
    assert record["effective"]["camera"] == {"elevations_deg": list(elevations), "azimuths_deg": list(azimuths)}
    caption = next(c.value for c in at.caption if c.value.startswith("seed "))
    assert "camera: elevation" in caption and "fps_id" not in caption
    import re

    assert not re.search(r"\d\.\d\d", caption.split("camera: ")[1].split(" · ")[0])  # angles to a tenth
    assert any("SV3D has no fps input" in c.value and "conditioning time base" not in c.value for c in at.caption)

    at.switch_page("views/compare.py").run()
    assert not at.exception and at.selectbox(key="cmp_knob").value == "elevations_deg"
    assert "Motion bucket" not in at.selectbox(key="cmp_knob").options and "Elevation" in at.selectbox(
        key="cmp_knob").options
    at.file_uploader(key="upload_cmp").set_value(("cat.png", PNG, "image/png")).run()
    at.text_input(key="cmp_values_elevations_deg").set_value("0, 40").run()
    button(at, "Run 2 samplings").click().run()
    res = wait(at, "cmp")
    assert [c[2].elevations_deg for c in res["cells"]] == [(0.0,), (40.0,)]
    assert all(c[2].azimuths_deg == tuple(azimuths) for c in res["cells"])  # the same path, other elevations

    at.switch_page("views/history.py").run()  # "use these settings" brings the per-frame path back
    summaries = [c.value for c in at.caption]  # SV3D's cards: the camera, no motion or fps
    assert any("camera: elevation 40.0°" in c for c in summaries) and not any("motion bucket" in c for c in summaries)
    assert any("varies Elevation: 0, 40" in c for c in summaries)
    gen_run = next(b for b in at.button if b.key == f"use_{res['cells'][1][1].name}")
    gen_run.click().run()
    at.switch_page("views/generate.py").run()
    assert not at.exception
    assert at.selectbox(key="cam_path").value == "custom"  # the recorded per-frame camera, not a path
    assert at.session_state["knob_elevations_deg"] == [40.0] * 6
    assert at.session_state["knob_azimuths_deg"] == list(azimuths)


def test_sv3d_u_has_no_camera_input(dirs, tiny_sv3d):
    ck, _ = dirs
    (ck / "sv3d_u.safetensors").symlink_to(tiny_sv3d["sv3d_u"])
    at = app()
    assert any("no camera input" in c.value for c in at.caption)
    assert not any(k.key == "cam_elevation" for k in at.number_input)
    assert at.radio(key="knob_resize_mode").value == "pad"  # SV3D's default: the whole object, on white
    at.file_uploader(key="upload_gen").set_value(("cat.png", PNG, "image/png")).run()
    small(at, frames=4, steps=1)
    button(at, "Generate video").click().run()
    res = wait(at, "gen")
    assert (res["path"] / "video.mp4").is_file() and "camera" not in res["result"].effective
    caption = next(c.value for c in at.caption if c.value.startswith("seed "))
    assert "orbit (no camera input)" in caption


def _image_captions(node) -> list[str]:
    return [img.caption for img in node.proto.imgs]


def _walk(node):
    yield node
    for c in getattr(node, "children", {}).values():
        yield from _walk(c)


def test_history_shows_the_denoising_record_with_a_step_slider(with_tiny, tiny_sampler, input_png, monkeypatch):
    import svd_core
    from svd_core import save_run

    params = tiny_sampler.default_params(width=64, height=64, num_frames=3, num_inference_steps=3,
                                         decode_chunk_size=3)
    path = save_run(tiny_sampler.generate(input_png, params, trajectory=True), tiny_sampler.info,
                    source=("photo.png", PNG))
    plain = save_run(tiny_sampler.generate(input_png, params.replace(seed=5)), tiny_sampler.info)
    read = []
    real_read_video = svd_core.read_video
    monkeypatch.setattr(svd_core, "read_video", lambda p, *a, **k: (read.append(Path(p).name),
                                                                      real_read_video(p, *a, **k))[1])
    at = app("views/history.py")
    at.run()  # a rerun: still nothing decoded while the record is not asked for
    assert read == [] and not at.slider
    assert [t.key for t in at.toggle] == [f"traj-{path.name}"]  # only the run that kept its record
    at.toggle(key=f"traj-{path.name}").set_value(True).run()
    assert read == ["denoising.mp4"]
    assert [s.key for s in at.slider] == [f"step-{path.name}"]
    step = at.slider(key=f"step-{path.name}")
    assert step.value == 3 and step.max == 3

    def captions():
        return [c for n in _walk(at._tree) if getattr(n, "type", "") == "image" for c in _image_captions(n)
                if "sigma" in c]
    sigmas = json.loads((path / "denoising.json").read_text())["steps"]
    assert captions() == [f"step 3/3 · sigma {sigmas[2]['sigma']:.4g} · estimate moved "
                          f"{sum(sigmas[2]['estimate_change']) / 3:.3g} (RMS, mean over frames)"]
    step.set_value(1).run()
    assert captions() == [f"step 1/3 · sigma {sigmas[0]['sigma']:.4g}"]
    assert not at.exception
    # its settings bring the record's checkbox along; a run without one clears it
    next(b for b in at.button if b.key == f"use_{path.name}").click().run()
    assert at.session_state["save_trajectory"] is True
    at.switch_page("views/generate.py").run()
    assert at.checkbox(key="save_trajectory").value is True
    at.switch_page("views/history.py").run()
    next(b for b in at.button if b.key == f"use_{plain.name}").click().run()
    assert at.session_state["save_trajectory"] is False


def test_generate_live_preview_and_record(with_tiny, monkeypatch):
    """A watched run keeps its latest live preview in memory and the page shows it; the record's checkbox saves
    denoising.mp4; the preview goes with the run's end."""
    monkeypatch.setattr("svd_core.preview.PREVIEW_EVERY_S", 0.0)  # a preview each step, however quick the steps

    at = app()
    at.file_uploader(key="upload_gen").set_value(("cat.png", PNG, "image/png")).run()
    small(at, frames=4, steps=200)
    button(at, "Generate video").click().run()
    j = job(at, "gen")
    assert j.watch
    seen = []
    deadline = time.time() + 120
    while len(seen) < 2 and not j.finished and time.time() < deadline:
        preview = j.preview
        if preview is not None and not any(preview is p for p in seen):
            seen.append(preview)
        time.sleep(0.01)
    assert len(seen) == 2 and not j.finished  # a new one during the run
    at.run()
    assert any("current estimate of the video" in str(i.proto) for i in at.image)
    assert any("denoising step" in p.proto.text for p in at.get("progress"))
    button(at, "Cancel").click().run()
    wait(at, "gen", "error")
    assert j.preview is None  # gone with the run
    small(at, frames=3, steps=2)
    at.checkbox(key="save_trajectory").check().run()
    button(at, "Generate video").click().run()
    res = wait(at, "gen")
    assert (res["path"] / "denoising.mp4").is_file()
    # a tab that does not watch: the job hands no previews to the core
    at.checkbox(key="live_preview").uncheck().run()
    small(at, frames=3, steps=2)
    button(at, "Generate video").click().run()
    assert not job(at, "gen").watch
    wait(at, "gen")



def test_history_shows_one_step_of_every_cell(with_tiny, tiny_sampler, input_png):
    """A comparison whose cells kept their records: one slider moves every cell to the same step."""
    from svd_core import grid_cells, run_sweep

    base = tiny_sampler.default_params(width=64, height=64, num_frames=2, num_inference_steps=2)
    sweep = run_sweep(tiny_sampler, input_png, grid_cells(base, {"motion_bucket_id": [1, 200]}), trajectory=True)
    at = app("views/history.py")
    assert not at.slider  # the cells' records are decoded only when asked for
    at.toggle(key=f"traj-{sweep.path.name}").set_value(True).run()
    step = at.slider(key=f"steps-{sweep.path.name}")
    assert step.value == 2

    def captions():
        return [c for n in _walk(at._tree) if getattr(n, "type", "") == "image" for c in _image_captions(n)
                if "sigma" in c and "motion_bucket_id" in c]
    assert [c.split(" · ")[:2] for c in captions()] == [["motion_bucket_id=1", "step 2/2"],
                                                         ["motion_bucket_id=200", "step 2/2"]]
    step.set_value(1).run()
    assert [c.split(" · ")[1] for c in captions()] == ["step 1/2", "step 1/2"]
    assert not at.exception
