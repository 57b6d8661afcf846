"""AppTest of History (app/views/history.py): the cards, reusing a run's settings, deleting, dropped videos."""

import json
from pathlib import Path

import pytest

from svd_core.runs import list_runs

from .apptest import (
    PNG,
    app,
    button,
    goto,
    result,
    saved_run,
    slot,
)

pytestmark = pytest.mark.usefixtures("fresh_server")  # a fresh model server per test


def _image_captions(node) -> list[str]:
    return [img.caption for img in node.proto.imgs]


def _walk(node):
    yield node
    for c in getattr(node, "children", {}).values():
        yield from _walk(c)


def test_history_reload_and_delete(with_tiny, tiny_sampler, input_png):
    path = saved_run(tiny_sampler, input_png, motion_bucket_id=42, seed=7)
    at = app()
    slot(at, "gen").result = {"path": path}  # an older result on Generate
    goto(at, "history").run()
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
    goto(at, "history").run()
    button(at, "Yes, delete").click().run()
    assert not path.exists() and list_runs() == []
    assert any("No runs yet" in i.value for i in at.info)


@pytest.mark.slow
def test_history_groups_a_comparison_and_deletes_it_with_its_cells(with_tiny, tiny_sampler, input_png):
    from svd_core import grid_cells, run_sweep

    base = tiny_sampler.default_params(width=64, height=64, num_frames=2, num_inference_steps=1)
    sweep = run_sweep(tiny_sampler, input_png, grid_cells(base, {"motion_bucket_id": [1, 2, 3]}))
    at = app("history")
    assert sum("Comparison" in m.value for m in at.markdown) == 1
    assert len([b for b in at.button if b.label == "Use these settings"]) == 4  # the comparison + its 3 cells
    assert any(c.value.startswith("1 entry in outputs/ (4 run folders") for c in at.caption)
    at.checkbox(key=f"delcells_{sweep.path.name}").uncheck().run()
    button(at, "Yes, delete").click().run()
    assert not sweep.path.exists() and all(p.exists() for p in sweep.run_paths)  # kept on request
    sweep = run_sweep(tiny_sampler, input_png, grid_cells(base, {"seed": [1, 2]}))
    at.run()
    next(b for b in at.button if b.key == f"del_{sweep.path.name}").click().run()
    assert not sweep.path.exists() and not any(p.exists() for p in sweep.run_paths)


def test_delete_while_shown_elsewhere(with_tiny, tiny_sampler, input_png):
    """Tab A shows a run in Generate and Compare; tab B deletes it in History: A shows a note, no exception."""
    from svd_core import grid_cells, load_run, run_sweep

    path = saved_run(tiny_sampler, input_png)
    base = tiny_sampler.default_params(width=64, height=64, num_frames=2, num_inference_steps=1)
    sweep = run_sweep(tiny_sampler, input_png, grid_cells(base, {"seed": [1, 2]}))
    a = app()
    slot(a, "gen").result = {"path": path}
    slot(a, "cmp").result = {"path": sweep.path, "runs": [load_run(p) for p in sweep.run_paths]}
    b = app("history")
    stale = app("history")  # a third tab whose History still lists the run
    for key in (f"del_{path.name}", f"del_{sweep.path.name}"):
        next(x for x in b.button if x.key == key).click().run()
    assert not path.exists() and not sweep.path.exists()
    a.run()
    assert not a.exception and any(f"Run {path.name} was deleted" in i.value for i in a.info)
    goto(a, "compare").run()
    assert not a.exception and any(f"Run {sweep.path.name} was deleted" in i.value for i in a.info)
    next(x for x in stale.button if x.key == f"use_{path.name}").click().run()
    assert not stale.exception and any("was deleted" in i.value for i in stale.info)


def test_history_loads_a_dropped_mp4(with_tiny, tiny_sampler, input_png):
    path = saved_run(tiny_sampler, input_png, motion_bucket_id=77, seed=5)
    at = app("history")
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
    saved_run(tiny_sampler, input_png, num_videos=2, seed=9)
    at = app("history")
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


def test_history_shows_the_denoising_record_with_a_step_slider(with_tiny, tiny_sampler, input_png, monkeypatch):
    from svd_core import save_run

    params = tiny_sampler.default_params(width=64, height=64, num_frames=3, num_inference_steps=3,
                                         decode_chunk_size=3)
    path = save_run(tiny_sampler.generate(input_png, params, trajectory=True), tiny_sampler.info,
                    source=("photo.png", PNG))
    plain = save_run(tiny_sampler.generate(input_png, params.replace(seed=5)), tiny_sampler.info)
    read = []
    from app.widgets import result as result_view

    real_read_video = result_view.read_video
    monkeypatch.setattr(result_view, "read_video", lambda p, *a, **k: (read.append(Path(p).name),
                                                                         real_read_video(p, *a, **k))[1])
    at = app("history")
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
    goto(at, "generate").run()
    assert at.checkbox(key="save_trajectory").value is True
    goto(at, "history").run()
    next(b for b in at.button if b.key == f"use_{plain.name}").click().run()
    assert at.session_state["save_trajectory"] is False


def test_history_shows_one_step_of_every_cell(with_tiny, tiny_sampler, input_png):
    """A comparison whose cells kept their records: one slider moves every cell to the same step."""
    from svd_core import grid_cells, run_sweep

    base = tiny_sampler.default_params(width=64, height=64, num_frames=2, num_inference_steps=2)
    sweep = run_sweep(tiny_sampler, input_png, grid_cells(base, {"motion_bucket_id": [1, 200]}), trajectory=True)
    at = app("history")
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


def test_use_these_settings_restores_background_removal(with_tiny, tiny_sampler, input_png):
    """"Use these settings" loads the run's whole request: its background removal too (and clears it for a run
    made without); where rembg is missing, Generate says so."""
    removed = saved_run(tiny_sampler, input_png, seed=3)
    record = json.loads((removed / "run.json").read_text())
    (removed / "run.json").write_text(json.dumps({**record, "remove_bg": True}))  # as a run with rembg writes it
    plain = saved_run(tiny_sampler, input_png, seed=4)
    at = app("history")
    next(b for b in at.button if b.key == f"use_{removed.name}").click().run()
    assert at.session_state["remove_bg"] is True and at.session_state["knob_seed"] == 3
    from svd_core import background_removal_available

    said = any("removed with rembg, which is not installed here" in i.value for i in at.info)
    assert said != background_removal_available()  # a setting this server cannot apply is said, not dropped
    goto(at, "history").run()
    next(b for b in at.button if b.key == f"use_{plain.name}").click().run()
    assert at.session_state["remove_bg"] is False and at.session_state["knob_seed"] == 4


def test_use_these_settings_changes_only_the_checkpoint(with_tiny, tiny_sampler, input_png):
    """The run's checkpoint is loaded with the server's device, memory mode and compile as they are."""
    from app.resources import get_server
    from svd_core import ModelSpec

    ck, _ = with_tiny
    (ck / "other.safetensors").symlink_to(ck / "tiny.safetensors")
    path = saved_run(tiny_sampler, input_png, seed=5)  # made with tiny.safetensors
    server = get_server()
    server.select(ModelSpec(str(ck / "other.safetensors"), device="cpu", memory_mode="low", compile=True))
    at = app("history")
    next(b for b in at.button if b.key == f"use_{path.name}").click().run()
    assert server.choice == ModelSpec(str(ck / "tiny.safetensors"), device="cpu", memory_mode="low", compile=True)
    assert at.session_state["knob_seed"] == 5


def test_use_these_settings_loads_nothing_while_the_model_cannot_change(with_tiny, tiny_sampler, input_png):
    """Runs active on another model: the run's settings belong to its own model (maybe another variant's), so
    they are not loaded as if made for the current one, and History says why."""
    import threading

    from app.jobs import Job
    from app.resources import get_server
    from svd_core import ModelSpec

    ck, _ = with_tiny
    (ck / "other.safetensors").symlink_to(ck / "tiny.safetensors")
    path = saved_run(tiny_sampler, input_png, seed=5, motion_bucket_id=33)
    server = get_server()
    server.select(ModelSpec(str(ck / "other.safetensors"), device="cpu"))
    at = app("history")
    seed, bucket = at.session_state["knob_seed"], at.session_state["knob_motion_bucket_id"]
    gate = threading.Event()
    busy = Job("generate", lambda job, sampler: gate.wait(30) and {}, model=server.choice)
    server.submit(busy)
    try:
        next(b for b in at.button if b.key == f"use_{path.name}").click().run()
        assert not at.exception and at.title[0].value == "History"
        assert server.choice.name == "other.safetensors"
        assert at.session_state["knob_seed"] == seed and at.session_state["knob_motion_bucket_id"] == bucket
        assert any(f"Run {path.name} was made with tiny.safetensors, which cannot be loaded now" in i.value
                   and "Nothing loaded" in i.value for i in at.info)
    finally:
        gate.set()
        busy.done_event.wait(30)
