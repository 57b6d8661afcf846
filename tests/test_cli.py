"""python -m svd_core: sample end to end, one-line errors, what it says to a newcomer, the sampling panel's flags."""

import json
from pathlib import Path

import pytest

from svd_core.runs import list_runs

from .helpers import cli


@pytest.mark.slow
def test_cli_end_to_end(tiny_checkpoint, input_png, tmp_path):
    out = tmp_path / "out"
    r = cli("sample", str(input_png), "-c", str(tiny_checkpoint), "--out", str(out), "--width", "64",
            "--height", "64", "--num-frames", "3", "--num-inference-steps", "2", "--format", "mp4,gif")
    assert r.returncode == 0, r.stderr
    run = Path(r.stdout.split()[0])
    assert (run / "video.mp4").is_file() and (run / "video.gif").is_file()
    rec = json.loads((run / "run.json").read_text())
    assert rec["params"]["decode_chunk_size"] == 6 and rec["effective"]["decode_chunk_size"] == 3  # 3 frames
    r = cli("sweep", str(input_png), "-c", str(tiny_checkpoint), "--out", str(out), "--width", "64",
            "--height", "64", "--num-frames", "3", "--num-inference-steps", "1", "--vary", "motion_bucket_id=0,255")
    assert r.returncode == 0, r.stderr
    assert (Path(r.stdout.split()[0]) / "grid.mp4").is_file()
    assert len(list_runs(out)) == 4  # 1 sample + 2 cells + the sweep
    ckdir = tmp_path / "ck"
    ckdir.mkdir()
    (ckdir / "svd_xt.safetensors").symlink_to(tiny_checkpoint)
    r = cli("list", str(ckdir))
    assert r.returncode == 0 and "svd_xt.safetensors" in r.stdout and "tiny" in r.stdout


@pytest.mark.parametrize("args, match", [
    (["--motion-bucket-id", "1024"], "motion_bucket_id must be between 0 and 1023"),
    (["--num-frames", "1"], "num_frames must be between 2 and 64"),
    (["--format", "avi"], "unknown format"),
])
def test_cli_bad_params_one_line(tiny_checkpoint, input_png, args, match):
    r = cli("sample", str(input_png), "-c", str(tiny_checkpoint), *args)
    assert r.returncode == 2 and match in r.stderr and "Traceback" not in r.stderr


def test_cli_bad_image_and_no_checkpoint(tiny_checkpoint, tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"nope")
    r = cli("sample", str(bad), "-c", str(tiny_checkpoint))
    assert r.returncode == 2 and "not a readable image" in r.stderr and "Traceback" not in r.stderr
    r = cli("sample", str(bad), env={"SVD_CHECKPOINT_DIR": str(tmp_path)})
    assert r.returncode == 2 and "no checkpoint in checkpoints/" in r.stderr


@pytest.mark.slow
def test_cli_speaks_to_a_newcomer(tiny_checkpoint, input_png, tmp_path):
    """A command's own usage for its unknown flag, the default checkpoint named, no memory mode on the CPU, a
    headed list that says the Hugging Face cache is empty, and a one-value sweep told to give two values."""
    r = cli("sample", str(input_png), "--bogus")
    assert r.returncode == 2 and "usage: python -m svd_core sample" in r.stderr and "--bogus" in r.stderr
    ck, cache = tmp_path / "ck", tmp_path / "hf"
    ck.mkdir()
    cache.mkdir()
    (ck / "tiny.safetensors").symlink_to(tiny_checkpoint)
    env = {"SVD_CHECKPOINT_DIR": str(ck), "HF_HUB_CACHE": str(cache)}
    r = cli("sample", str(input_png), "--out", str(tmp_path / "out"), "--width", "64", "--height", "64",
            "--num-frames", "3", "--num-inference-steps", "1", env=env)
    assert r.returncode == 0, r.stderr
    assert "note: checkpoint tiny.safetensors" in r.stderr and "-c" in r.stderr
    assert " s (encode " in r.stdout and " · on cpu" in r.stdout and "mode on cpu" not in r.stdout
    assert r.stdout.count("fps_id") == 1  # one fps wording: the summary line's
    r = cli("list", env=env)
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and lines[0].split()[:2] == ["model", "variant"] and lines[1].startswith("tiny")
    assert f"Hugging Face cache ({cache}): no SVD pipeline" in r.stdout
    r = cli("sweep", str(input_png), "--vary", "motion_bucket_id=1", env=env)
    assert r.returncode == 2 and "give at least two values" in r.stderr and "Traceback" not in r.stderr



@pytest.mark.slow
def test_cli_flags(tiny_checkpoint, input_png, tmp_path):
    r = cli("sample", str(input_png), "-c", str(tiny_checkpoint), "--out", str(tmp_path), "--width", "64",
            "--height", "64", "--num-frames", "3", "--num-inference-steps", "2", "--sampler", "heun",
            "--guider", "triangle", "--discretization", "legacy_ddpm", "--s-churn", "0.5", "--eta", "0.5",
            "--num-videos", "2", "--seed", "7")
    assert r.returncode == 0, r.stderr
    run = list_runs(tmp_path)[0]
    p = run.params
    assert (p.sampler, p.guider, p.discretization, p.s_churn, p.eta, p.num_videos, p.seed) == (
        "heun", "triangle", "legacy_ddpm", 0.5, 0.5, 2, 7)
    assert run.file("video.mp4").is_file() and run.file("video-1.mp4").is_file()
    assert "ignored by heun / legacy_ddpm / triangle: eta" in r.stderr
    r = cli("sample", str(input_png), "-c", str(tiny_checkpoint), "--sampler", "ddim")
    assert r.returncode == 2 and "invalid choice: 'ddim'" in r.stderr and "dpmpp_2m" in r.stderr
    r = cli("sample", str(input_png), "-c", str(tiny_checkpoint), "--sigma-min", "5", "--sigma-max", "1")
    assert r.returncode == 2 and "sigma_min (5) must be below sigma_max (1)" in r.stderr
    assert "Traceback" not in r.stderr
