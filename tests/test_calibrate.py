"""Ask for a motion: the monotone fit and its inversion on synthetic response tables with a known inverse
(increasing, decreasing, flat, non-monotone, noisy over seeds), and `calibrate` end to end on the tiny model,
which must say plainly that its relation gives no value."""

import json
from pathlib import Path

import numpy as np
import pytest

from svd_core import SamplingParams, get_variant
from svd_core import calibrate as cal
from svd_core.calibrate import calibration_cells, fit_response, invert, isotonic
from svd_core.runs import list_runs

from .helpers import cli

SEEDS = (-0.05, 0.0, 0.05)  # three seeds around each mean: sample std 0.05
NO_VALUE = set(cal.VERDICTS) - {"ok"}  # the random demo model's relation gives one of these, which one by chance


def table(motion, values, offsets=SEEDS) -> dict:
    return {v: [motion(v) + d for d in offsets] for v in values}


def test_isotonic_pools_adjacent_violators():
    assert isotonic([1, 3, 2, 4]).tolist() == [1, 2.5, 2.5, 4]
    assert isotonic([1, 3, 2, 4], [1, 3, 1, 1]).tolist() == [1, 2.75, 2.75, 4]  # weighted by the seeds
    assert isotonic([3, 1, 2], increasing=False).tolist() == [3, 1.5, 1.5]
    assert isotonic([5, 4, 3, 2, 1]).tolist() == [3] * 5
    assert isotonic([1, 2, 3]).tolist() == [1, 2, 3]


def test_increasing_linear_inverts_to_the_known_bucket():
    # motion = 1 + bucket / 50: motion 3 at bucket 100; one seed's spread (std 0.05) is 2.5 buckets either side
    fit = fit_response("motion_bucket_id", 3.0, table(lambda b: 1 + b / 50, (0, 64, 127, 191, 255)))
    assert fit.verdict == "ok" and fit.direction == "increasing"
    assert fit.value == 100 and isinstance(fit.value, int)
    assert fit.spread == pytest.approx(0.05)
    assert fit.interval == (97, 103)  # 97.5 .. 102.5, widened to whole buckets
    assert "motion_bucket_id 100 is expected to give motion 3" in fit.message


def test_decreasing_inverts_too():
    # noise aug: motion = 5 - 20 x, motion 3 at 0.1; the interval is 0.1 -+ 0.05 / 20
    fit = fit_response("noise_aug_strength", 3.0, table(lambda x: 5 - 20 * x, (0.0, 0.05, 0.1, 0.15, 0.2)))
    assert fit.verdict == "ok" and fit.direction == "decreasing"
    assert fit.value == pytest.approx(0.1)
    assert fit.interval == pytest.approx((0.0975, 0.1025))


def test_between_the_values_tried_the_fit_is_linear():
    # means 0, 10, 12 at 0, 100, 200: motion 11 lies half-way along the second segment
    fit = fit_response("motion_bucket_id", 11.0, table({0: 0, 100: 10, 200: 12}.get, (0, 100, 200)))
    assert fit.value == 150
    assert invert([0, 100, 200], [0, 10, 12], 5.0, True) == 50
    assert invert([0, 100, 200, 300], [0, 2, 2, 4], 2.0, True) == 150  # a flat stretch: its middle


def test_noisy_monotone_relation_pools_a_small_reversal():
    # means 1, 2.05, 1.95, 4, 5 with a seed std of 0.3: the dip of 0.1 is within the spread
    means = {0: 1.0, 64: 2.05, 127: 1.95, 191: 4.0, 255: 5.0}
    fit = fit_response("motion_bucket_id", 3.0, table(means.get, means, (-0.3, 0.0, 0.3)))
    assert fit.verdict == "ok"
    assert fit.fitted == pytest.approx((1.0, 2.0, 2.0, 4.0, 5.0))
    assert fit.value == 159  # half-way from 127 (2) to 191 (4)


def test_flat_over_seeds_gives_no_value():
    rng = np.random.default_rng(0)
    responses = {v: list(3 + rng.normal(0, 0.5, 4)) for v in (0, 64, 127, 191, 255)}
    fit = fit_response("motion_bucket_id", 3.0, responses)
    assert fit.verdict == "flat" and fit.value is None and fit.interval is None
    assert fit.message.startswith("no value: motion hardly follows motion_bucket_id")
    # a real trend, but smaller than the seed's own spread: flat as well
    noisy = table(lambda b: 1 + b / 255, (0, 64, 127, 191, 255), (-1.0, 0.0, 1.0))
    assert fit_response("motion_bucket_id", 1.5, noisy).verdict == "flat"


def test_non_monotone_gives_no_value():
    hump = {0: 1.0, 64: 3.0, 127: 5.0, 191: 3.0, 255: 1.0}
    fit = fit_response("motion_bucket_id", 2.0, table(hump.get, hump))
    assert fit.verdict == "non_monotone" and fit.value is None
    assert "not monotone in motion_bucket_id" in fit.message and "5 at 127 to 1 at 255" in fit.message


def test_target_outside_the_range_and_too_few():
    fit = fit_response("fps", 9.0, table(lambda f: f / 10, (6, 10, 15, 20, 30)))
    assert fit.verdict == "out_of_range" and fit.value is None and "outside" in fit.message
    one_seed = {v: [v / 100] for v in (0, 64, 127)}
    assert fit_response("motion_bucket_id", 0.5, one_seed).verdict == "too_few"
    unmeasured = {0: [1.0, 1.1], 64: [None, None], 127: [None]}  # clips too short for the 2 fps score
    fit = fit_response("motion_bucket_id", 1.0, unmeasured)
    assert fit.verdict == "too_few" and fit.skipped == (64, 127) and "2 value(s) gave no motion score" in fit.message


def test_cells_need_seeds_and_values():
    base = SamplingParams(num_inference_steps=25)
    cells = calibration_cells(base, "fps", [15, 6, 10], [1, 2], steps=4)
    assert [(c.coords["fps"], c.coords["seed"]) for c in cells] == [(6, 1), (6, 2), (10, 1), (10, 2), (15, 1),
                                                                    (15, 2)]
    assert {c[1].num_inference_steps for c in cells} == {4}
    with pytest.raises(ValueError, match="at least 2 seeds"):
        calibration_cells(base, "fps", [6, 10, 15], [1])
    with pytest.raises(ValueError, match="at least 3 different values of fps"):
        calibration_cells(base, "fps", [6, 6, 10], [1, 2])
    with pytest.raises(ValueError, match="knob must be one of motion_bucket_id, fps, noise_aug_strength"):
        calibration_cells(base, "seed", [1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="calibrate samples at 1 step or more, got 0"):  # not the full steps
        calibration_cells(base, "fps", [6, 10, 15], [1, 2], steps=0)
    with pytest.raises(ValueError, match="calibrate runs one video per cell: set num_videos to 1, got 2"):
        calibration_cells(base.replace(num_videos=2), "fps", [6, 10, 15], [1, 2])
    with pytest.raises(ValueError, match="sv3d_u has no input for fps: nothing to calibrate"):
        calibration_cells(base, "fps", [6, 10, 15], [1, 2], variant=get_variant("sv3d_u"))
    assert len(calibration_cells(base, "fps", [6, 10, 15], [1, 2], variant=get_variant("svd"))) == 6


# ---------------------------------------------------------------------------------- on the tiny model

SMALL = dict(width=64, height=64, num_frames=5, num_inference_steps=2, decode_chunk_size=5)  # 5 frames at fps 7:
# long enough (0.57 s) for the 2 fps motion score


@pytest.mark.slow
def test_cli_says_the_demo_model_gives_no_value(tiny_checkpoint, input_png, tmp_path):
    r = cli("calibrate", input_png, "-c", tiny_checkpoint, "--out", tmp_path, "--target-motion", "2", "--seeds", "2",
            "--values", "0,127,255", "--steps", "1", *[f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()])
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    folder = Path(out[0])
    assert out[1].startswith("no value: ")
    assert out[2].startswith("sampled at 1 steps instead of 2, as asked")
    assert "confirming run" not in r.stdout and "untrained demo model" in r.stdout  # no value: nothing to confirm
    record = json.loads((folder / "run.json").read_text())
    c = record["calibration"]
    assert record["kind"] == "sweep" and c["verdict"] in NO_VALUE and c["value"] is None
    assert (c["knob"], c["target"], c["values"], c["steps"], c["full_steps"]) == ("motion_bucket_id", 2.0,
                                                                                   [0, 127, 255], 1, 2)
    assert {"calibration.png", "metrics.csv", "response.png", "grid.mp4"} <= set(record["files"])
    assert all((folder / f).is_file() for f in record["files"])
    runs = {r.id for r in list_runs(tmp_path)}
    assert len(record["cells"]) == 6 and {cell["run"] for cell in record["cells"]} <= runs
    r = cli("calibrate", input_png, "-c", tiny_checkpoint, "--out", tmp_path, "--target-motion", "2", "--seeds", "1")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: ValueError: calibrate needs at least 2 seeds: the spread over seeds decides what the fit can tell"]


@pytest.mark.slow
def test_a_value_found_is_confirmed_and_saved(tiny_sampler, input_png, tmp_path, monkeypatch):
    """The sampling, confirming and saving around a fit that found a value (the demo model never gives one:
    the fit is the tested pure function, fed a table with a known answer)."""
    real = cal.fit_response
    monkeypatch.setattr(cal, "fit_response", lambda knob, target, responses: real(
        knob, target, {v: [v / 100 - 0.01, v / 100 + 0.01] for v in responses}))
    base = tiny_sampler.default_params(**SMALL, seed=5)
    steps = []
    res = cal.run_calibration(tiny_sampler, input_png, base, "motion_bucket_id", 1.5, values=[0, 100, 200],
                              seeds=[5, 6], steps=1, on_progress=lambda *a: steps.append(a), out_dir=tmp_path)
    assert res.fit.value == 150 and res.reduced
    assert res.confirm_path is not None and res.confirm_path.parent == tmp_path
    confirm = json.loads((res.confirm_path / "run.json").read_text())
    assert confirm["params"]["motion_bucket_id"] == 150 and confirm["params"]["num_inference_steps"] == 2
    assert confirm["params"]["seed"] == 5 and confirm["sweep"] == res.path.name
    record = json.loads((res.path / "run.json").read_text())
    assert record["calibration"]["confirm"]["motion"] == confirm["metrics"]["motion"]["score"] == res.confirm_motion
    assert record["cells"][-1]["run"] == res.confirm_path.name and len(record["cells"]) == 7
    assert "confirming run at motion_bucket_id 150 (2 steps)" in record["calibration"]["summary"]
    assert steps[-1][:2] == (6, 7) and steps[0][:2] == (0, 7)  # the confirming run is the last of 7 cells
    assert len(list((tmp_path).iterdir())) == 8  # 6 cells, the confirming run, the sweep folder


@pytest.mark.slow
def test_a_failed_cell_keeps_the_finished_ones(tiny_sampler, input_png, tmp_path, monkeypatch):
    from svd_core.errors import SweepFailed

    real, calls = tiny_sampler.generate, []

    def second_fails(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory")
        return real(*a, **k)
    monkeypatch.setattr(tiny_sampler, "generate", second_fails)
    base = tiny_sampler.default_params(**{**SMALL, "num_frames": 2, "decode_chunk_size": 2}, seed=5)
    with pytest.raises(SweepFailed, match=r"1 of 6 cells failed .*The 5 finished cell\(s\) are saved as runs in"):
        cal.run_calibration(tiny_sampler, input_png, base, "motion_bucket_id", 1.5, values=[0, 100, 200],
                            seeds=[5, 6], steps=1, out_dir=tmp_path)
    runs = list_runs(tmp_path)
    assert len(runs) == 5 and all(r.kind == "run" and r.record.sweep_incomplete for r in runs)
