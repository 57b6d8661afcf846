"""AppTests of the guiders' knobs in Generate's sampling panel and of Compare's "Find the bucket", on the tiny
model (no mocks)."""

import json

import pytest

from svd_core.calibrate import VERDICTS

from .apptest import PNG, app, button, charts, goto, small, wait

pytestmark = pytest.mark.usefixtures("fresh_server")  # a fresh model server per test


@pytest.mark.usefixtures("with_tiny")
def test_guider_knobs_plot_and_record_the_curve():
    at = app()
    at.file_uploader(key="upload_gen").set_value(("cat.png", PNG, "image/png")).run()
    small(at, frames=4, steps=1)
    lo, hi = (at.number_input(key=f"knob_{k}_guidance_scale").value for k in ("min", "max"))
    assert lo != hi
    at.selectbox(key="knob_guider").set_value("trapezoid").run()
    at.number_input(key="knob_edge_perc").set_value(0.5).run()
    assert charts(at)["guidance"] == [pytest.approx([lo, hi, hi, lo])]  # int(4 x 0.5) = 2 frames each end

    at.selectbox(key="knob_guider").set_value("triangle").run()
    assert "knob_period_fusing" not in {s.key for s in at.selectbox}  # one period: nothing to fuse
    at.text_input(key="gd_period").set_value("2, 0.5").run()
    at.selectbox(key="knob_period_fusing").set_value("multiply").run()
    # frames at 0, 1/3, 2/3, 1: period 2 gives 0 1/3 2/3 1, period 0.5 gives 0 2/3 2/3 0; their product
    assert charts(at)["guidance"] == [pytest.approx([lo + x * (hi - lo) for x in (0, 2 / 9, 4 / 9, 0)])]
    at.text_input(key="gd_period").set_value("0, 1").run()
    assert any("period goes from 0.01 to 100: 0 is outside" in e.value for e in at.error)
    assert button(at, "Generate video").disabled
    at.text_input(key="gd_period").set_value("999").run()  # refused, and never read as the periods 9, 9, 9
    assert any("999 is outside" in e.value for e in at.error)
    assert button(at, "Generate video").disabled

    at.selectbox(key="knob_guider").set_value("custom").run()  # the unread period text blocks no other guider
    assert not at.error
    at.selectbox(key="knob_guider").set_value("triangle").run()  # ... and is still there, still refused
    assert at.text_input(key="gd_period").value == "999" and any("999 is outside" in e.value for e in at.error)
    at.selectbox(key="knob_guider").set_value("custom").run()
    assert at.session_state["knob_guidance_scales"] == pytest.approx([lo + i * (hi - lo) / 3 for i in range(4)])
    at.session_state["gd_custom"] = [1.0, 3.0, 3.0, 1.0]  # what an edit of the table writes
    at.run()
    assert charts(at)["guidance"] == [pytest.approx([1.0, 3.0, 3.0, 1.0])]
    button(at, "Generate video").click().run()
    res = wait(at, "gen")
    params = json.loads((res["path"] / "run.json").read_text())["params"]
    assert (params["guider"], params["guidance_scales"]) == ("custom", [1.0, 3.0, 3.0, 1.0])


@pytest.mark.slow
@pytest.mark.usefixtures("with_tiny")
def test_find_the_bucket_says_plainly_the_demo_model_gives_none():
    at = app()
    at.number_input(key="knob_num_videos").set_value(2)
    small(at, frames=5, steps=2)  # 5 frames at fps 7: long enough for the 2 fps motion score
    goto(at, "compare").run()
    at.file_uploader(key="upload_cmp").set_value(("cat.png", PNG, "image/png")).run()
    at.radio(key="cmp_mode").set_value("Find the bucket").run()
    assert [e.value for e in at.error] == ["calibrate runs one video per cell: set Videos per run to 1"]
    goto(at, "generate").run()
    at.number_input(key="knob_num_videos").set_value(1).run()
    goto(at, "compare").run()
    at.text_input(key="cmp_cal_values_motion_bucket_id").set_value("0, 127").run()
    assert [e.value for e in at.error] == ["calibrate needs at least 3 different values of motion_bucket_id, got 2"]
    at.text_input(key="cmp_cal_values_motion_bucket_id").set_value("0, 127, 255").run()
    at.number_input(key="cmp_cal_seeds").set_value(2).run()
    at.checkbox(key="cmp_cal_fewer").check().run()
    at.number_input(key="cmp_cal_steps").set_value(1).run()
    button(at, "Run 6 samplings and 1 to confirm").click().run()
    res = wait(at, "cmp", timeout=300)
    assert res["verdict"] in set(VERDICTS) - {"ok"} and res["confirm"] is None  # which one: chance
    assert any(w.value.startswith("no value: ") for w in at.warning)
    assert any(c.value.startswith("sampled at 1 steps instead of 2") for c in at.caption)
    record = json.loads((res["path"] / "run.json").read_text())
    assert record["calibration"]["values"] == [0, 127, 255] and (res["path"] / "calibration.png").is_file()
    goto(at, "history").run()
    assert any(m.value.startswith("**Calibration**") for m in at.markdown)
    assert any(c.value.startswith("no value: ") for c in at.caption)


def test_an_edited_cell_becomes_the_custom_curve():
    """The per-frame table's on_change: Streamlit's edited_rows (row -> {column: value}) onto the shown curve."""
    from streamlit.testing.v1 import AppTest

    def script():
        import streamlit as st

        from app import guidance

        st.session_state["gd_ver"] = 4
        st.session_state["gd_table_4"] = {"edited_rows": {"1": {"scale": 3.0}, "3": {"scale": None}},
                                          "added_rows": [], "deleted_rows": []}
        guidance._edited((1.0, 2.0, 2.5, 1.5))
    at = AppTest.from_function(script).run()
    assert not at.exception
    assert at.session_state["gd_custom"] == [1.0, 3.0, 2.5, 1.5]  # a cleared cell keeps its value
    assert at.session_state["gd_ver"] == 5  # a fresh table shows the new curve


@pytest.mark.slow
@pytest.mark.usefixtures("with_tiny")
def test_find_the_bucket_shows_a_value_and_its_confirming_run(monkeypatch):
    """The page around a fit that found a value (the demo model never gives one: the fit is the tested pure
    function, fed a table with a known answer: bucket 150 for motion 1.5)."""
    from svd_core import calibrate

    real = calibrate.fit_response
    monkeypatch.setattr(calibrate, "fit_response", lambda knob, target, responses: real(
        knob, target, {v: [v / 100 - 0.01, v / 100 + 0.01] for v in responses}))
    at = app()
    small(at, frames=5, steps=1)
    goto(at, "compare").run()
    at.file_uploader(key="upload_cmp").set_value(("cat.png", PNG, "image/png")).run()
    at.radio(key="cmp_mode").set_value("Find the bucket").run()
    at.number_input(key="cmp_cal_target").set_value(1.5).run()
    at.text_input(key="cmp_cal_values_motion_bucket_id").set_value("0, 100, 200").run()
    at.number_input(key="cmp_cal_seeds").set_value(2).run()
    button(at, "Run 6 samplings and 1 to confirm").click().run()
    res = wait(at, "cmp", timeout=300)
    assert res["verdict"] == "ok" and (res["confirm"] / "video.mp4").is_file()
    assert any(s.value.startswith("motion_bucket_id 150 is expected to give motion 1.5") for s in at.success)
    assert any(c.value.startswith("confirming run at motion_bucket_id 150 (1 steps)") for c in at.caption)
    assert any(c.value == "the confirming run" for c in at.caption)
    goto(at, "history").run()
    assert any(m.value.startswith("**Calibration**") for m in at.markdown)
    assert sum(m.value.startswith("**Run**") for m in at.markdown) == 0  # the confirming run is one of its cells
