"""AppTest of Generate (app/views/generate.py) and the knob widgets it draws (app/controls.py), on the tiny model."""

import json
import time

import pytest
from streamlit.testing.v1.errors import AppTestError

from svd_core import read_video, timings_line
from svd_core.runs import list_runs

from .apptest import (
    PNG,
    app,
    button,
    charts,
    job,
    result,
    slot,
    small,
    wait,
    wait_for,
)
from .test_hub import GOOD_TOKEN, fake_hub  # noqa: F401  (the hub stand-in fixture)

pytestmark = pytest.mark.usefixtures("fresh_server")  # a fresh model server per test


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
    assert set(res) == {"path", "record"}  # no frames kept in the session: the downloads read the run's mp4
    assert read_video(res["path"] / "video.mp4")[0].shape == (3, 64, 64, 3)
    assert at.get("video")
    metrics = res["record"].metrics  # each per-frame metric of the run is charted, frame by frame
    drawn = charts(at)
    for key, field in (("motion", "flow (px)"), ("flicker", "flicker"), ("likeness", "likeness")):
        assert drawn[field] == [pytest.approx(metrics[key]["per_frame"])], key
    captions = " ".join(c.value for c in at.caption)  # each number with its own name and unit
    assert f"Flow: **{metrics['motion']['flow_px_per_frame']:.3g}** px/frame" in captions
    assert "Motion score (SVD paper units)" in captions or metrics["motion"]["score"] is None
    caption = next(c.value for c in at.caption if c.value.startswith("seed "))
    assert "decode chunk 3" in caption and "guidance 1→2.5" in caption and "fps_id 6" in caption
    assert timings_line(res["record"]) in caption and " s (encode " in caption and "on cpu" in caption
    assert (res["path"] / "input_original.png").read_bytes() == PNG  # the upload as given
    at.slider(key="knob_motion_bucket_id").set_value(40).run()  # any widget change keeps the result
    assert at.get("video") and result(at, "gen")["path"] == res["path"]
    labels = [b.label for b in at.get("download_button")]
    assert labels[:4] == ["mp4", "GIF", "frames (zip)", "run.json"]


def test_the_gif_and_zip_downloads_are_made_from_the_run_mp4(with_tiny, tiny_sampler, input_png):
    import io
    import zipfile

    from app.widgets.result import export_video

    from .apptest import saved_run

    path = saved_run(tiny_sampler, input_png)
    gif = export_video(path / "video.mp4", "gif", 7)
    assert gif.startswith(b"GIF8") and read_video(gif)[0].shape == (3, 64, 64, 3)
    with zipfile.ZipFile(io.BytesIO(export_video(path / "video.mp4", "zip", 7))) as z:
        assert len([n for n in z.namelist() if n.endswith(".png")]) == 3
    assert export_video(path / "gone.mp4", "gif", 7) == b""  # deleted meanwhile: an empty download, no traceback


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
    r = res["record"]
    assert r.params.num_videos == 2 and (res["path"] / "video-1.mp4").is_file()
    assert any(c.value == f"seed {r.params.seed + 1}" for c in at.caption)  # side by side, each with its seed
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


@pytest.mark.slow
def test_generate_live_preview_and_record(with_tiny, monkeypatch):
    """A watched run keeps its latest live preview in memory and the page shows it; the record's checkbox saves
    denoising.mp4; the preview goes with the run's end."""
    monkeypatch.setattr("app.jobs.PREVIEW_EVERY_S", 0.0)  # a preview each step, however quick the steps

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


def test_a_warning_sits_under_its_knob(with_tiny, reference_checkpoints):
    """Each training-range warning is drawn under the knob it is about (Variant.warnings names it): a size's in
    Advanced, the motion bucket's beside its slider."""
    ck, _ = with_tiny
    (ck / "svd_xt.safetensors").symlink_to(reference_checkpoints["A"])  # tiny weights, released name
    at = app()
    at.number_input(key="knob_width").set_value(512).run()
    at.number_input(key="knob_motion_bucket_id-typed").set_value(600).run()
    advanced = [c.value for c in next(e for e in at.expander if e.label == "Advanced").caption]
    assert sum("512x576 is not a trained size" in c for c in advanced) == 1
    assert not any("motion_bucket_id 600" in c for c in advanced)
    assert sum("motion_bucket_id 600 is above the trained 0-255" in c.value for c in at.caption) == 1
