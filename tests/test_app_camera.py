"""AppTest of the Camera section (app/camera.py) for SV3D checkpoints, across Generate, Compare and History."""

import json

import pytest

from .apptest import (
    PNG,
    app,
    button,
    goto,
    small,
    wait,
)

pytestmark = pytest.mark.usefixtures("fresh_server")  # a fresh model server per test


@pytest.fixture(scope="module")
def tiny_sv3d(tmp_path_factory):
    from svd_core import make_tiny

    folder = tmp_path_factory.mktemp("sv3d")
    return {f: make_tiny(folder / f"tiny_{f}.safetensors", family=f) for f in ("sv3d_u", "sv3d_p")}


def test_sv3d_camera_section_generate_and_compare(dirs, tiny_sv3d):
    """An SV3D_p checkpoint shows the Camera section (no fps / motion sliders), its path reaches the run's
    record, and Compare varies the elevation; an SV3D_u one says it has no camera input."""

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

    goto(at, "compare").run()
    assert not at.exception and at.selectbox(key="cmp_knob").value == "elevations_deg"
    assert "Motion bucket" not in at.selectbox(key="cmp_knob").options and "Elevation" in at.selectbox(
        key="cmp_knob").options
    at.file_uploader(key="upload_cmp").set_value(("cat.png", PNG, "image/png")).run()
    at.text_input(key="cmp_values_elevations_deg").set_value("0, 40").run()
    button(at, "Run 2 samplings").click().run()
    res = wait(at, "cmp")
    assert [r.params.elevations_deg for r in res["runs"]] == [(0.0,), (40.0,)]
    assert all(r.params.azimuths_deg == tuple(azimuths) for r in res["runs"])  # the same path, other elevations

    goto(at, "history").run()  # "use these settings" brings the per-frame path back
    summaries = [c.value for c in at.caption]  # SV3D's cards: the camera, no motion or fps
    assert any("camera: elevation 40.0°" in c for c in summaries) and not any("motion bucket" in c for c in summaries)
    assert any("varies Elevation: 0, 40" in c for c in summaries)
    gen_run = next(b for b in at.button if b.key == f"use_{res['runs'][1].id}")
    gen_run.click().run()
    goto(at, "generate").run()
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
    assert (res["path"] / "video.mp4").is_file() and "camera" not in res["record"].effective
    caption = next(c.value for c in at.caption if c.value.startswith("seed "))
    assert "orbit (no camera input)" in caption
