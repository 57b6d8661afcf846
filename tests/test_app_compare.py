"""AppTest of Compare (app/views/compare.py): knobs over values, A vs B, the response to a knob."""

import json

import pytest

from .apptest import (
    PNG,
    app,
    button,
    charts,
    goto,
    slot,
    small,
    wait,
)

pytestmark = pytest.mark.usefixtures("fresh_server")  # a fresh model server per test


def compare_motion_0_255():
    """Compare with the image, tiny settings and motion_bucket_id 0 and 255 typed in."""
    at = app()
    small(at, frames=2, steps=1)
    goto(at, "compare").run()
    at.file_uploader(key="upload_cmp").set_value(("cat.png", PNG, "image/png")).run()
    at.text_input(key="cmp_values_motion_bucket_id").set_value("0 255").run()
    return at


@pytest.mark.slow
def test_compare_two_cells(with_tiny):
    at = app("compare")
    assert button(at, "Run").disabled  # no image yet
    at.file_uploader(key="upload_cmp").set_value(("cat.png", PNG, "image/png")).run()
    goto(at, "generate").run()
    small(at, frames=3, steps=1)
    goto(at, "compare").run()
    at.text_input(key="cmp_values_motion_bucket_id").set_value("0 255").run()  # spaces work too
    run = button(at, "Run 2 samplings")
    assert not run.disabled
    run.click().run()
    res = wait(at, "cmp")
    assert len(res["runs"]) == 2 and (res["path"] / "grid.mp4").is_file()
    assert [r.record.label for r in res["runs"]] == ["motion_bucket_id=0", "motion_bucket_id=255"]
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
    assert [r.record.label for r in res["runs"]] == ["A: noise_aug_strength=0.02", "B: noise_aug_strength=0.5"]
    a, b = (r.params for r in res["runs"])
    assert b.noise_aug_strength == 0.5 and a.seed == b.seed and a.motion_bucket_id == b.motion_bucket_id


def test_compare_remembers_and_speaks_the_ui(with_tiny):
    at = app("compare")
    at.selectbox(key="cmp_knob").set_value("fps").run()
    at.text_input(key="cmp_values_fps").set_value("3 7 15").run()
    assert not at.error
    at.text_input(key="cmp_values_fps").set_value("3, x").run()
    assert [e.value for e in at.error] == ["'x' is not a number: type values for fps separated by commas or spaces"]
    at.text_input(key="cmp_values_fps").set_value("3, 7, 15").run()
    goto(at, "generate").run()
    goto(at, "history").run()
    goto(at, "compare").run()
    assert at.selectbox(key="cmp_knob").value == "fps"
    assert at.text_input(key="cmp_values_fps").value == "3, 7, 15"
    # presets valid for the loaded model: the demo has 6 frames
    at.selectbox(key="cmp_knob").set_value("decode_chunk_size").run()
    assert at.text_input(key="cmp_values_decode_chunk_size").value == "1, 3, 6" and not at.error


@pytest.mark.slow
def test_compare_across_seeds_shows_the_response(with_tiny):
    at = compare_motion_0_255()
    at.number_input(key="cmp_seeds").set_value(2).run()
    button(at, "Run 4 samplings").click().run()
    res = wait(at, "cmp")
    assert len(res["runs"]) == 4 and (res["path"] / "metrics.csv").is_file()
    assert any("Response to Motion bucket" in m.value for m in at.markdown)
    assert any("spread over 2 seeds" in c.value for c in at.caption)
    from svd_core.sweep import response_table

    table = response_table(res["path"])  # a chart per metric: mean, min and max over the seeds, per knob value
    want = sorted(sorted(v for r in table if r["metric"] == m for v in (r["mean"], r["min"], r["max"]))
                  for m in {r["metric"] for r in table})
    assert len(want) >= 3 and all(len(values) == 2 * 3 for values in want)
    assert sorted(sorted(values) for values in charts(at)["value"]) == [pytest.approx(v) for v in want]
    assert any(b.label == "metrics.csv" for b in at.get("download_button"))


@pytest.mark.slow
def test_compare_two_knobs_is_a_grid_with_a_heat_map(with_tiny):
    at = compare_motion_0_255()
    at.text_input(key="cmp_values_motion_bucket_id").set_value("32 255").run()  # "255" < "32" as text
    at.selectbox(key="cmp_knob2").set_value("noise_aug_strength").run()
    at.text_input(key="cmp_values2_noise_aug_strength").set_value("0, 0.1, 0.3").run()
    button(at, "Run 6 samplings").click().run()
    res = wait(at, "cmp")
    assert len(res["runs"]) == 6
    assert any("Response to Motion bucket and Noise augmentation" in m.value for m in at.markdown)
    specs = [json.loads(el.proto.spec) for el in at.get("vega_lite_chart")]
    maps = [sp for sp in specs if sp.get("mark") == "rect"]
    assert maps and all(sp["encoding"]["x"]["sort"] == ["32", "255"] for sp in maps)  # the grid's order
    assert all([float(v) for v in sp["encoding"]["y"]["sort"]] == [0, 0.1, 0.3] for sp in maps)
    assert maps[0]["encoding"]["x"]["title"] == "Motion bucket"
    rec = json.loads((res["path"] / "run.json").read_text())
    assert rec["varied"] == ["motion_bucket_id", "noise_aug_strength"]
