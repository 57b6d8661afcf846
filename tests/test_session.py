"""The Sampler on the tiny model (CPU): seeded runs, micro-conditioning that reaches the UNet, progress and
cancellation, memory modes and the out-of-memory fallback."""

import dataclasses
import json

import numpy as np
import pytest

from svd_core import Cancelled, save_run

from .helpers import SMALL


def test_same_seed_same_frames_and_timings(tiny_sampler, base, input_png):
    a = tiny_sampler.generate(input_png, base)
    b = tiny_sampler.generate(input_png, base)
    assert a.frames.shape == (4, 64, 64, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames)
    assert set(a.timings) == {"image_encode", "denoise", "decode", "total", "measure"}
    assert all(v >= 0 for v in a.timings.values())
    c = tiny_sampler.generate(input_png, base.replace(seed=24))
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("change", [dict(motion_bucket_id=255), pytest.param(dict(fps=20), marks=pytest.mark.slow),
                                    pytest.param(dict(noise_aug_strength=0.3), marks=pytest.mark.slow)])
def test_micro_conditioning_changes_frames(tiny_sampler, base, input_png, change):
    a = tiny_sampler.generate(input_png, base)
    b = tiny_sampler.generate(input_png, base.replace(**change))
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() > 0


def test_progress_and_cancel(tiny_sampler, base, input_png):
    seen, phases = [], []
    tiny_sampler.generate(input_png, base.replace(num_inference_steps=3), on_step=lambda i, n: seen.append((i, n)),
                          on_phase=phases.append)
    assert seen == [(1, 3), (2, 3), (3, 3)] and phases == ["encoding", "denoising", "decoding"]
    seen.clear()
    with pytest.raises(Cancelled):
        tiny_sampler.generate(input_png, base.replace(num_inference_steps=5),
                              on_step=lambda i, n: seen.append(i), should_stop=lambda: len(seen) >= 2)
    assert seen == [1, 2]
    # the sampler stays usable after a cancel
    assert tiny_sampler.generate(input_png, base).frames.shape[0] == 4


def test_cancel_during_the_last_step_and_the_decode(tiny_sampler, base, input_png):
    decoder_calls = []
    hook = tiny_sampler.pipe.vae.decoder.register_forward_pre_hook(lambda m, a: decoder_calls.append(1))
    try:
        steps = []
        with pytest.raises(Cancelled):  # cancelled while the last step runs: no decode at all
            tiny_sampler.generate(input_png, base, on_step=lambda i, n: steps.append(i),
                                  should_stop=lambda: len(steps) == base.num_inference_steps)
        assert decoder_calls == []
        with pytest.raises(Cancelled):  # cancelled during the decode (one frame per call): it stops there
            tiny_sampler.generate(input_png, base.replace(decode_chunk_size=1),
                                  should_stop=lambda: len(decoder_calls) >= 1)
        assert len(decoder_calls) == 1
    finally:
        hook.remove()


def test_cancel_up_to_the_save(tiny_sampler, base, input_png, tmp_path):
    result = tiny_sampler.generate(input_png, base)
    with pytest.raises(Cancelled, match="nothing was written"):
        save_run(result, tiny_sampler.info, tmp_path, should_stop=lambda: True)
    assert list(tmp_path.iterdir()) == []
    assert save_run(result, tiny_sampler.info, tmp_path, should_stop=lambda: False).is_dir()


def test_fixed_conditioning_note(tiny_sampler, base, input_png, monkeypatch):
    from svd_core import get_variant
    from svd_core.conditioning import training_warnings

    xt11 = get_variant("svd_xt_1_1")
    monkeypatch.setattr(tiny_sampler, "info", dataclasses.replace(tiny_sampler.info, variant=xt11))
    assert not [w for w in training_warnings(base.replace(fps=7, motion_bucket_id=127), xt11) if "trained at" in w]
    result = tiny_sampler.generate(input_png, base.replace(fps=7, motion_bucket_id=40))
    assert any("trained at fps 7 (Stability's fps_id 6) and motion_bucket_id 127 only" in n for n in result.notes)


def test_out_of_memory_retries_once_in_the_next_mode_for_that_run_only(tiny_sampler, base, input_png,
                                                                        monkeypatch, tmp_path):
    import torch

    from svd_core.errors import OutOfMemory

    real_run, calls = tiny_sampler._run, []

    def oom_once(prepared, params, on_step, should_stop, on_phase, mode, *rest):
        calls.append(mode)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run(prepared, params, on_step, should_stop, on_phase, mode, *rest)
    monkeypatch.setattr(tiny_sampler, "_run", oom_once)
    monkeypatch.setattr(tiny_sampler, "memory_mode", "fast")
    result = tiny_sampler.generate(input_png, base)
    assert calls == ["fast", "balanced"] and result.memory_mode == "balanced"
    assert tiny_sampler.memory_mode == "fast"  # the server's mode is not changed for later runs
    assert any("this run was retried in 'balanced' mode" in n for n in result.notes)
    rec = json.loads((save_run(result, tiny_sampler.info, tmp_path) / "run.json").read_text())
    assert rec["effective"]["fallback"] == {"from": "fast", "to": "balanced", "reason": "out of memory"}
    assert rec["memory_mode"] == "balanced" and "memory_mode" not in rec["effective"]  # recorded once

    def always_oom(*a, **k):
        raise RuntimeError("MPS backend out of memory")
    monkeypatch.setattr(tiny_sampler, "_run", always_oom)
    with pytest.raises(OutOfMemory, match="lower the resolution"):
        tiny_sampler.generate(input_png, base)


def test_low_mode_caps_the_decode_chunk_and_says_so(tiny_sampler, base, input_png, monkeypatch, tmp_path):
    decoded = []
    hook = tiny_sampler.pipe.vae.decoder.register_forward_pre_hook(lambda m, a: decoded.append(a[0].shape[0]))
    monkeypatch.setattr(tiny_sampler, "memory_mode", "low")  # on the CPU, low only changes the decode chunk
    try:
        result = tiny_sampler.generate(input_png, base)  # decode_chunk_size 4
    finally:
        hook.remove()
    assert decoded == [2, 2]  # what the decoder really got
    assert result.effective["decode_chunk_size"] == 2 and result.params.decode_chunk_size == 4
    assert any("decode_chunk_size lowered from 4 to 2" in n for n in result.notes)
    rec = json.loads((save_run(result, tiny_sampler.info, tmp_path) / "run.json").read_text())
    assert rec["effective"]["decode_chunk_size"] == 2 and rec["params"]["decode_chunk_size"] == 4


def test_auto_memory_mode_from_the_estimate(monkeypatch):
    import torch

    from svd_core.memory import estimate
    from svd_core.session import resolve_memory_mode
    from tests.test_gpu_path import _full_size_modules

    m = _full_size_modules()

    def for_chunk(chunk):
        return estimate(m, width=1024, height=576, num_frames=25, decode_chunk_size=chunk)

    GiB = 1 << 30
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    for free, want in [(80 * GiB, "fast"), (24 * GiB, "balanced"), (7.5 * GiB, "low")]:
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None, f=free: (int(f), 80 * GiB))
        assert resolve_memory_mode("auto", cuda, for_chunk, 14) == want, free / GiB
    assert resolve_memory_mode("low", cuda) == "low"
    assert resolve_memory_mode("auto", torch.device("cpu")) == "fast"
    with pytest.raises(ValueError, match="valid: auto, fast, balanced, low"):
        resolve_memory_mode("turbo", cuda)


def test_fps_id_reaches_the_unet(tiny_sampler, base, input_png):
    """diffusers' fps is Stability's fps_id + 1: the UNet must see fps - 1, and run.json says so."""
    seen = []
    hook = tiny_sampler.pipe.unet.register_forward_pre_hook(
        lambda m, a, k: seen.append(k["added_time_ids"][0].tolist()), with_kwargs=True)
    try:
        result = tiny_sampler.generate(input_png, base.replace(fps=9, motion_bucket_id=50, noise_aug_strength=0.1))
    finally:
        hook.remove()
    fps_id, bucket, aug = seen[0]
    assert (fps_id, bucket) == (8, 50) and aug == pytest.approx(0.1)
    assert result.effective["fps_id"] == fps_id


@pytest.mark.slow
def test_unet_forward_chunking_is_diffusers_recipe_and_changes_nothing(tiny_checkpoint, input_png):
    """Chunking only splits the feed-forward's batch: the same frames. In float64, so that the CPU's GEMM
    blocking (a different row count per call) stays far below one level of 8-bit output; in float32 it moves a
    few pixels by one level."""
    import torch

    from svd_core import Sampler
    from svd_core.session import set_unet_chunking

    sampler = Sampler(tiny_checkpoint, device="cpu", dtype=torch.float64)
    base = sampler.default_params(**SMALL)
    unet = sampler.pipe.unet
    blocks = [m for m in unet.modules() if hasattr(m, "set_chunk_feed_forward")]
    rows = []  # batch rows of each spatial block's feed-forward call
    spatial = [m for m in blocks if type(m).__name__ == "BasicTransformerBlock"]
    hooks = [m.ff.register_forward_pre_hook(lambda mod, a: rows.append(a[0].shape[0])) for m in spatial]
    try:
        plain = sampler.generate(input_png, base)
        plain_calls, plain_rows = len(rows), set(rows)
        set_unet_chunking(unet, True)
        assert all(m._chunk_size == 1 for m in blocks)
        rows.clear()
        chunked = sampler.generate(input_png, base)
        assert chunked.effective["unet_ff_chunking"] and not plain.effective["unet_ff_chunking"]
    finally:
        for h in hooks:
            h.remove()
    set_unet_chunking(unet, False)
    assert all(m._chunk_size is None for m in blocks)
    # spatial blocks: one call per frame of the CFG batch (2 x 4 frames, so batch 1); temporal blocks: one per frame
    # position (diffusers fixes their dim). Chunking over tokens instead would multiply calls by the token count.
    assert spatial and plain_rows == {8} and set(rows) == {1} and len(rows) == 8 * plain_calls
    assert np.array_equal(plain.frames, chunked.frames)
