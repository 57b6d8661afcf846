"""The per-frame guiders beyond the fixture sets: sgm's TrapezoidPredictionGuider (edge_perc), the
TrianglePredictionGuider's period / period_fusing, and the custom per-frame list. Each schedule is written here
again from sgm's definitions (sgm/modules/diffusionmodules/guiders.py) in plain Python floats, and checked on
small cases computed by hand."""

import json
import math

import numpy as np
import pytest

from svd_core import SamplingParams, grid_cells
from svd_core.params import knobs_read
from svd_core.runs import list_runs
from svd_core.samplers import guidance_scale, guidance_scales, list_guiders
from svd_core.sweep import parse_vary

from .helpers import cli


def sgm_linspace(lo: float, hi: float, n: int) -> list[float]:
    """torch.linspace's values: n points from lo to hi; one point is lo."""
    return [lo] if n == 1 else [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def sgm_trapezoid(f: int, edge_perc: float, lo: float, hi: float) -> list[float]:
    """TrapezoidPredictionGuider.__init__: int(f * edge_perc) frames from min to max, ones, the rise reversed."""
    n = int(f * edge_perc)
    rise = sgm_linspace(lo, hi, n)
    return rise + [1.0] * (f - 2 * n) + rise[::-1]


def sgm_triangle(f: int, periods, fusing: str, lo: float, hi: float) -> list[float]:
    """TrianglePredictionGuider.__init__: a triangle wave per period over linspace(0, 1, f), fused, then scaled."""
    values = sgm_linspace(0.0, 1.0, f)
    waves = [[2 * abs(v / p - math.floor(v / p + 0.5)) for v in values] for p in periods]
    if fusing == "mean":
        fused = [sum(w) / len(periods) for w in zip(*waves)]
    elif fusing == "multiply":
        fused = [math.prod(w) for w in zip(*waves)]
    else:
        fused = [max(w) for w in zip(*waves)]
    return [x * (hi - lo) + lo for x in fused]


def scales(**kw) -> list[float]:
    return guidance_scales(SamplingParams(**kw)).tolist()


# ------------------------------------------------------------------------------------------------- trapezoid

@pytest.mark.parametrize("f, edge_perc, lo, hi, by_hand", [
    # int(14 * 0.1) = 1: a one-point ramp is min alone, so SVD's 1 -> 2.5 gives ones everywhere
    (14, 0.1, 1.0, 2.5, [1.0] * 14),
    (14, 0.1, 2.0, 3.0, [2.0] + [1.0] * 12 + [2.0]),
    # int(10 * 0.3) = 3 (10 * 0.3 is 3.0000000000000004 in floats)
    (10, 0.3, 2.0, 3.0, [2.0, 2.5, 3.0, 1.0, 1.0, 1.0, 1.0, 3.0, 2.5, 2.0]),
    (7, 0.5, 1.0, 3.0, [1.0, 2.0, 3.0, 1.0, 3.0, 2.0, 1.0]),
    (5, 0.0, 1.0, 3.0, [1.0] * 5),
])
def test_trapezoid_is_sgms_schedule(f, edge_perc, lo, hi, by_hand):
    got = scales(guider="trapezoid", num_frames=f, edge_perc=edge_perc, min_guidance_scale=lo,
                 max_guidance_scale=hi)
    assert got == pytest.approx(by_hand, abs=1e-6)
    assert got == pytest.approx(sgm_trapezoid(f, edge_perc, lo, hi), abs=1e-6)


@pytest.mark.parametrize("f", [2, 3, 14, 21, 25, 64])
@pytest.mark.parametrize("edge_perc", [0.05, 0.1, 0.25, 0.37, 0.5])
def test_trapezoid_matches_the_formula(f, edge_perc):
    got = scales(guider="trapezoid", num_frames=f, edge_perc=edge_perc, min_guidance_scale=1.5,
                 max_guidance_scale=4.0)
    assert len(got) == f
    assert got == pytest.approx(sgm_trapezoid(f, edge_perc, 1.5, 4.0), abs=1e-6)


# -------------------------------------------------------------------------------------------------- triangle

# 5 frames sit at 0, 1/4, 1/2, 3/4, 1: period 2 is half a wave (a ramp 0 -> 1), period 0.5 two waves (0 1 0 1 0)
@pytest.mark.parametrize("periods, fusing, by_hand", [
    ((1.0,), "max", [1.0, 2.0, 3.0, 2.0, 1.0]),
    ((2.0,), "max", [1.0, 1.5, 2.0, 2.5, 3.0]),
    ((0.5,), "max", [1.0, 3.0, 1.0, 3.0, 1.0]),
    ((2.0,), "mean", [1.0, 1.5, 2.0, 2.5, 3.0]),  # one period: fusing changes nothing
    ((2.0, 0.5), "max", [1.0, 3.0, 2.0, 3.0, 3.0]),  # max(0 .25 .5 .75 1, 0 1 0 1 0)
    ((2.0, 0.5), "mean", [1.0, 2.25, 1.5, 2.75, 2.0]),  # mean: 0 .625 .25 .875 .5
    ((2.0, 0.5), "multiply", [1.0, 1.5, 1.0, 2.5, 1.0]),  # product: 0 .25 0 .75 0
])
def test_triangle_period_and_fusing_by_hand(periods, fusing, by_hand):
    got = scales(guider="triangle", num_frames=5, period=periods, period_fusing=fusing, min_guidance_scale=1.0,
                 max_guidance_scale=3.0)
    assert got == pytest.approx(by_hand, abs=1e-6)
    assert got == pytest.approx(sgm_triangle(5, periods, fusing, 1.0, 3.0), abs=1e-6)


@pytest.mark.parametrize("fusing", ["max", "mean", "multiply"])
@pytest.mark.parametrize("periods", [(2.0,), (0.3,), (1.0, 0.25), (0.7, 1.3, 2.0)])
@pytest.mark.parametrize("f", [2, 14, 21, 25])
def test_triangle_matches_the_formula(f, periods, fusing):
    got = scales(guider="triangle", num_frames=f, period=periods, period_fusing=fusing, min_guidance_scale=1.0,
                 max_guidance_scale=2.5)
    assert got == pytest.approx(sgm_triangle(f, periods, fusing, 1.0, 2.5), abs=1e-6)


def test_defaults_are_sgms():
    p = SamplingParams()
    assert (p.edge_perc, p.period, p.period_fusing, p.guidance_scales) == (0.1, (1.0,), "max", None)
    # the default triangle (period 1) is the fixtures' schedule: min at both ends, max mid-clip
    assert scales(guider="triangle", num_frames=3) == pytest.approx([1.0, 2.5, 1.0])


# ----------------------------------------------------------------------------------------------------- custom

def test_custom_is_the_list_given():
    want = [1.0, 1.5, 2.25, 0.0, 7.0]
    assert scales(guider="custom", num_frames=5, guidance_scales=want) == want
    assert guidance_scale(SamplingParams(guider="custom", num_frames=2, guidance_scales=[1, 2])).dtype.is_floating_point


@pytest.mark.parametrize("changes, match", [
    (dict(guider="custom"), r"the custom guider needs guidance_scales: one scale per frame \(14\)"),
    (dict(guider="custom", guidance_scales=[1, 2]), r"guidance_scales: one scale per frame \(14\), got 2"),
    (dict(num_frames=3, guidance_scales=[1, 2, 30]), "guidance_scales must be between 0 and 20, got 30"),
    (dict(num_frames=3, guidance_scales="abc"), "guidance_scales must be a list of numbers"),
    (dict(num_frames=3, guidance_scales="123"), "guidance_scales must be a list of numbers"),  # not 1, 2, 3
    (dict(guider="triangle", period="999"), "period must be a list of numbers"),  # not 9, 9, 9
    (dict(period=[True, 0.5]), "period must be a list of numbers"),  # not (0.5,)
    (dict(period=True), "period must be a list of numbers"),
    (dict(num_frames=2, elevations_deg="12"), "elevations_deg must be a list of numbers"),  # the same check
    (dict(edge_perc=0.6), "edge_perc must be between 0.0 and 0.5, got 0.6"),
    (dict(period=0.0), "period must be between 0.01 and 100, got 0"),
    (dict(period=[]), "period: 1 to 8 periods, got 0"),
    (dict(period_fusing="sum"), "period_fusing must be one of max, mean, multiply"),
    (dict(guider="ramp"), "guider must be one of linear, triangle, vanilla, identity, trapezoid, custom"),
])
def test_guider_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**changes)


@pytest.mark.parametrize("changes, ignored", [
    (dict(guider="linear", edge_perc=0.2), ["edge_perc"]),
    (dict(guider="triangle", period_fusing="mean"), ["period_fusing"]),  # one period: nothing to fuse
    (dict(guider="triangle", period=(0.5, 1.0), period_fusing="mean"), []),
    (dict(guider="trapezoid", period=2.0, edge_perc=0.3), ["period"]),
    (dict(guider="custom", num_frames=3, guidance_scales=[1, 2, 3], max_guidance_scale=3.0), ["max_guidance_scale"]),
    (dict(guider="linear", num_frames=3, guidance_scales=[1, 2, 3]), ["guidance_scales"]),
])
def test_inapplicable_guider_knobs_are_named(changes, ignored):
    assert SamplingParams(**changes).inapplicable() == ignored


def test_listing_and_knobs():
    guiders = list_guiders()
    assert guiders["trapezoid"] == ("min_guidance_scale", "max_guidance_scale", "edge_perc")
    assert guiders["custom"] == ("guidance_scales",)
    assert knobs_read("euler", "edm", "custom")[-1:] == ("guidance_scales",)  # without a list at hand
    with pytest.raises(ValueError, match="guider must be one of linear"):
        knobs_read("euler", "edm", "ramp")


def test_record_round_trip():
    p = SamplingParams(guider="custom", num_frames=3, guidance_scales=(1, 2.5, 1), period=(0.5, 2),
                       period_fusing="mean", edge_perc=0.25)
    data = json.loads(json.dumps(p.to_dict()))
    assert data["guidance_scales"] == [1.0, 2.5, 1.0] and data["period"] == [0.5, 2.0]
    assert SamplingParams.from_dict(data) == p


def test_compare_varies_guider_curves():
    assert parse_vary("period=0.5, 1 2") == ("period", [0.5, 1.0, 2.0])
    assert parse_vary("edge_perc=0.1,0.3") == ("edge_perc", [0.1, 0.3])
    assert parse_vary("guider=trapezoid,triangle") == ("guider", ["trapezoid", "triangle"])
    with pytest.raises(ValueError, match="edge_perc goes from 0 to 0.5: 0.7 is outside"):
        parse_vary("edge_perc=0.1,0.7")
    cells = grid_cells(SamplingParams(guider="triangle", num_frames=5), {"period": [2.0, 0.5]})
    assert [c[1].period for c in cells] == [(2.0,), (0.5,)]
    assert [guidance_scales(c[1]).tolist() for c in cells] == [[1.0, 1.375, 1.75, 2.125, 2.5],
                                                              [1.0, 2.5, 1.0, 2.5, 1.0]]


# ---------------------------------------------------------------------------------- on the tiny model

SMALL = dict(width=64, height=64, num_frames=3, num_inference_steps=1, decode_chunk_size=3)


def test_the_run_uses_the_per_frame_scales(tiny_sampler, input_png, monkeypatch):
    """Every guided model call gets the custom list, and a list equal to the linear guider's scales gives the
    linear run's frames."""
    from svd_core import samplers

    base = tiny_sampler.default_params(**SMALL, min_guidance_scale=1.0, max_guidance_scale=2.5)
    linear = tiny_sampler.generate(input_png, base).frames
    seen, real = [], samplers.apply_guidance
    monkeypatch.setattr(samplers, "apply_guidance",
                        lambda u, c, scale: seen.append(scale.tolist()) or real(u, c, scale))
    custom = tiny_sampler.generate(input_png, base.replace(guider="custom", guidance_scales=[1.0, 1.75, 2.5])).frames
    assert seen == [[1.0, 1.75, 2.5]] * base.num_inference_steps
    assert np.array_equal(linear, custom)


@pytest.mark.slow
def test_cli_guidance_scales(tiny_checkpoint, input_png, tmp_path):
    common = ["sample", str(input_png), "-c", str(tiny_checkpoint), "--out", str(tmp_path), "--width", "64",
              "--height", "64", "--num-frames", "3", "--num-inference-steps", "1"]
    r = cli(*common, "--guider", "custom", "--guidance-scales", "1,1.5,2")
    assert r.returncode == 0, r.stderr
    record = json.loads(list_runs(tmp_path)[0].file("run.json").read_text())
    assert record["params"]["guider"] == "custom" and record["params"]["guidance_scales"] == [1.0, 1.5, 2.0]
    r = cli(*common, "--guider", "custom", "--guidance-scales", "1,1.5")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: ValueError: guidance_scales: one scale per frame (3), got 2"]
    r = cli(*common, "--guider", "triangle", "--period", "0.5,2", "--period-fusing", "multiply", "--edge-perc",
            "0.2")
    assert r.returncode == 0, r.stderr
    p = list_runs(tmp_path)[0].params
    assert (p.period, p.period_fusing, p.edge_perc) == ((0.5, 2.0), "multiply", 0.2)
    assert "ignored by euler / edm / triangle: edge_perc" in r.stderr


def test_vary_refuses_the_per_frame_list():
    """--vary gives each cell one value: never a valid per-frame list (period, one per cell, is fine)."""
    assert parse_vary("period=0.5,2") == ("period", [0.5, 2.0])
    with pytest.raises(ValueError, match="^--vary cannot take guidance_scales"):
        parse_vary("guidance_scales=1,2")
