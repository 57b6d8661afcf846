"""Live previews and the denoising record: the latent-to-RGB map is the published one, every sampler hands its
estimate over once per step, the record lands in the run folder and --from redoes it."""

import csv
import io
import json

import numpy as np
import pytest
import torch

from svd_core import load_run, save_run
from svd_core import pipeline as svd_pipeline
from svd_core.preview import Trajectory, frame_grid, latent_rgb, preview_image
from svd_core.samplers import discretize, list_samplers
from svd_core.video import read_video

from .helpers import cli

# ComfyUI, comfy/latent_formats.py, class SD15: latent_rgb_factors (rows: latent channels 0-3; columns: R, G, B)
COMFY_SD15 = [[0.3512, 0.2297, 0.3227],
              [0.3250, 0.4974, 0.2350],
              [-0.2829, 0.1762, 0.2721],
              [-0.2120, -0.2616, -0.7177]]

SMALL = dict(width=64, height=64, num_frames=4, num_inference_steps=3, decode_chunk_size=4)


@pytest.fixture(scope="module")
def base(tiny_sampler):
    return tiny_sampler.default_params(**SMALL)


def test_latent_rgb_is_the_published_map():
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(3, 4, 5, 6, generator=g) * 1.5
    got = latent_rgb(latents)
    assert got.shape == (3, 5, 6, 3) and got.dtype == np.uint8
    lat = latents.numpy().astype(np.float64)
    for f, y, x in [(0, 0, 0), (1, 2, 3), (2, 4, 5), (1, 4, 0)]:
        pixel = [sum(lat[f, c, y, x] * COMFY_SD15[c][k] for c in range(4)) for k in range(3)]
        want = [min(255, max(0, round((v + 1) / 2 * 255))) for v in pixel]
        assert np.abs(got[f, y, x].astype(int) - want).max() <= 1, (f, y, x, got[f, y, x], want)
    # the whole array, by the same formula in numpy
    rgb = np.einsum("fchw,cr->fhwr", lat, np.array(COMFY_SD15))
    want = np.clip(np.round((rgb + 1) / 2 * 255), 0, 255)
    assert np.abs(got.astype(int) - want).max() <= 1


def test_frame_grid_reading_order():
    frames = np.stack([np.full((2, 3, 3), i * 10, np.uint8) for i in range(14)])
    grid = frame_grid(frames)
    assert grid.shape == (4, 21, 3)  # 14 frames: 7 across, 2 down
    assert grid[0, 3, 0] == 10 and grid[2, 0, 0] == 70 and grid[3, 20, 0] == 130
    assert preview_image(torch.zeros(25, 4, 2, 2)).shape == (8, 14, 3)  # 25 frames: 7 x 4


@pytest.mark.parametrize("sampler", [s.name for s in list_samplers()])
def test_on_preview_once_per_step_with_the_estimate(tiny_sampler, base, input_png, monkeypatch, sampler):
    """The model's outputs are recorded as they leave the guided denoiser (a spy around the real one): each
    preview gets the last of them, after its step; two-call samplers hand over their second call's."""
    real = svd_pipeline.make_denoiser
    outputs = []

    def spying(*args, **kw):
        denoise = real(*args, **kw)

        def recorded(x, sigma):
            out = denoise(x, sigma)
            outputs.append(out)
            return out
        return recorded
    monkeypatch.setattr(svd_pipeline, "make_denoiser", spying)
    params = base.replace(sampler=sampler, s_churn=0.5)
    seen = []

    def on_preview(i, n, sigma, denoised, latents):
        seen.append((i, n, sigma, denoised, latents.clone(), len(outputs)))
    result = tiny_sampler.generate(input_png, params, on_preview=on_preview)
    n = params.num_inference_steps
    assert [s[:2] for s in seen] == [(i, n) for i in range(1, n + 1)]
    assert [s[2] for s in seen] == pytest.approx(discretize(params)[:-1].tolist())
    calls_after = [s[5] for s in seen]
    assert calls_after == sorted(set(calls_after)) and calls_after[-1] == len(outputs)  # each after its own step
    for _, _, _, denoised, latents, calls in seen:
        assert denoised is outputs[calls - 1]  # the step's latest estimate
        assert denoised.shape == latents.shape == (4, 4, 8, 8)
    if sampler in ("heun", "dpmpp_2s_ancestral"):
        assert seen[0][5] == 2  # two model calls on the first step: the preview came after the second
    assert len(outputs) == result.model_calls
    assert torch.equal(seen[-1][4], result.latents[0])  # the latents after the last step are the result's
    if sampler != "lms":  # the step to sigma 0 lands on the estimate (lms mixes in earlier steps)
        torch.testing.assert_close(seen[-1][3], result.latents[0], rtol=1e-5, atol=1e-5)


def test_previews_off_cost_no_wrapping(tiny_sampler, base, input_png, monkeypatch):
    """Without on_preview the sampler's denoiser is the pipeline's own (nothing runs per step for previews)."""
    from svd_core import samplers

    def fail(*a, **k):
        raise AssertionError("keep_last used without previews")
    monkeypatch.setattr(samplers, "keep_last", fail)
    tiny_sampler.generate(input_png, base)


def test_trajectory_saved_readable_and_recorded(tiny_sampler, base, input_png, tmp_path):
    params = base.replace(num_videos=2)
    result = tiny_sampler.generate(input_png, params, trajectory=True)
    path = save_run(result, tiny_sampler.info, tmp_path)
    run = load_run(path)
    rec = run.record.to_json()
    assert rec["save_trajectory"] is True
    assert rec["trajectory"]["videos"] == ["denoising.mp4", "denoising-1.mp4"]
    for name in ["denoising.mp4", "denoising.json", "denoising.csv", "denoising-1.mp4"]:
        assert name in rec["files"] and run.file(name).is_file()
    frames, fps = read_video(run.file("denoising.mp4"))
    assert len(frames) == params.num_inference_steps and fps == rec["trajectory"]["fps"]
    assert frames.shape[2] >= 320  # scaled up for its label
    # each step's frame shows that step's estimate: they differ, and the last is the result's
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1
    stats = json.loads(run.file("denoising.json").read_text())
    steps = stats["steps"]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert [r["sigma"] for r in steps] == pytest.approx(discretize(params)[:-1].tolist())
    assert steps[0]["estimate_change"] is None and len(steps[1]["estimate_change"]) == params.num_frames
    assert all(len(r["latent_mean"]) == len(r["latent_std"]) == params.num_frames for r in steps)
    last = result.latents[0]
    assert steps[-1]["latent_mean"] == pytest.approx(last.mean(dim=(1, 2, 3)).tolist(), rel=1e-5, abs=1e-6)
    assert steps[-1]["latent_std"] == pytest.approx(last.std(dim=(1, 2, 3)).tolist(), rel=1e-5)
    rows = list(csv.DictReader(io.StringIO(run.file("denoising.csv").read_text())))
    assert len(rows) == params.num_inference_steps * params.num_frames
    assert float(rows[-1]["latent_std"]) == pytest.approx(steps[-1]["latent_std"][-1], rel=1e-4)
    assert rows[0]["estimate_change"] == "" and float(rows[-1]["estimate_change"]) > 0


def test_run_without_trajectory_records_it_off(tiny_sampler, base, input_png, tmp_path):
    path = save_run(tiny_sampler.generate(input_png, base), tiny_sampler.info, tmp_path)
    rec = load_run(path).record.to_json()
    assert rec["save_trajectory"] is False and "trajectory" not in rec
    assert not list(path.glob("denoising*"))


@pytest.mark.slow
def test_cli_preview_file_and_trajectory_redone_by_from(tiny_checkpoint, input_png, tmp_path):
    from PIL import Image

    def sample(*args):
        r = cli("sample", *args, "-c", tiny_checkpoint, "--out", tmp_path / "out")
        assert r.returncode == 0, r.stderr
        return load_run(r.stdout.split()[0])

    preview = tmp_path / "preview.png"
    run = sample(str(input_png), "--width", "64", "--height", "64", "--num-frames", "3", "--num-inference-steps",
                 "2", "--preview", str(preview), "--save-trajectory")
    with Image.open(preview) as img:  # the last step's estimate, at latent resolution: 3 frames across
        assert img.size == (3 * 8, 8)
        assert np.asarray(img.convert("RGB")).std() > 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert run.record.request.save_trajectory and run.file("denoising.mp4").is_file()
    again = sample("--from", str(run.path / "run.json"))  # redone as recorded
    assert again.record.request.save_trajectory and again.file("denoising.mp4").is_file()
    off = sample("--from", str(run.path / "run.json"), "--no-save-trajectory")
    assert not off.record.request.save_trajectory and off.file("denoising.mp4") is None


def test_a_failed_preview_write_leaves_no_temporary(tmp_path):
    from svd_core.preview import write_atomically

    (tmp_path / "job-1.png").mkdir()  # the rename onto it fails
    with pytest.raises(OSError):
        write_atomically(tmp_path / "job-1.png", b"png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job-1.png"]


def test_previews_come_at_the_writers_pace():
    """The first step's preview is taken, then none until `every_s` has passed since the last one taken: a quick
    step skips the map and the copy, a slow one (a GPU's) gets its preview."""
    from svd_core.preview import BackgroundWriter

    now = [100.0]
    writer = BackgroundWriter(lambda image: None, every_s=0.5, clock=lambda: now[0])
    taken = []
    for t in (100.0, 100.1, 100.49, 100.5, 100.7, 101.2, 103.0, 103.0):
        now[0] = t
        taken.append(writer.due())
    writer.close()
    assert taken == [True, False, False, True, False, True, True, False]


def test_a_trajectory_step_copies_to_the_host_once_for_its_statistics(monkeypatch):
    """Per step on the user's GPU: the statistics cross in one copy, the preview grid in one more, and the map to
    RGB reuses its factors."""
    traj = Trajectory()
    gen = torch.Generator().manual_seed(0)
    steps = [(torch.randn(4, 4, 8, 8, generator=gen), torch.randn(4, 4, 8, 8, generator=gen)) for _ in range(3)]
    traj(1, 3, 2.0, *steps[0])  # the first step builds the factors on this device
    calls = []
    for name in ("tolist", "cpu", "item"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _n=name, _f=real, **k: calls.append(_n) or _f(
            self, *a, **k))
    real_tensor = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: calls.append("tensor") or real_tensor(*a, **k))
    traj(2, 3, 1.0, *steps[1])
    traj(3, 3, 0.5, *steps[2])
    assert sorted(calls) == ["cpu", "cpu", "tolist", "tolist"]
    assert len(traj) == 3 and traj.rows[2]["estimate_change"] == pytest.approx(
        (steps[2][0] - steps[1][0]).pow(2).mean(dim=(1, 2, 3)).sqrt().tolist(), rel=1e-6)
