"""The GPU path's settings, on the tiny model on the CPU: torch.compile, metrics after the queue, the guidance
halves apart (low), the memory estimate and auto's choice, fused QKV, the attention setting, pinned offload."""

import contextlib
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from svd_core import pipeline
from svd_core.compute import ComputeOptions, PinnedOffload, attention_context
from svd_core.memory import CONTEXT_BYTES, GB, HEADROOM, choose, estimate, run_estimates, unet_activations

from .helpers import SMALL, cli

# -------------------------------------------------------------------------------------- metrics after the queue

def test_next_run_samples_while_the_first_runs_metrics_run(tiny_sampler, input_png, monkeypatch):
    """The first run's motion metrics wait until the second run has made a denoising step: possible only when
    the first run released the queue before measuring."""
    import svd_core.session as session_module

    real = session_module.measure_frames
    second_stepped, first_measuring = threading.Event(), threading.Event()
    waited = []

    def measure(*args, **kwargs):
        if not first_measuring.is_set():
            first_measuring.set()
            waited.append(second_stepped.wait(60))
        return real(*args, **kwargs)

    monkeypatch.setattr(session_module, "measure_frames", measure)
    params = tiny_sampler.default_params(**SMALL)
    results = {}
    first = threading.Thread(target=lambda: results.update(first=tiny_sampler.generate(input_png, params)))
    first.start()
    assert first_measuring.wait(120)
    second = tiny_sampler.generate(input_png, params.replace(seed=5), on_step=lambda i, n: second_stepped.set())
    first.join(120)
    assert waited == [True]
    for r in (results["first"], second):
        assert "error" not in r.metrics and len(r.metrics["likeness"]["per_frame"]) == 4


def test_likeness_resize_on_the_frames_tensor_equals_the_pipelines_image_encoding(tiny_sampler, input_png):
    from svd_core.metrics import Likeness

    pipe = tiny_sampler.pipe
    img = np.asarray(Image.open(input_png).convert("RGB"))
    frames = np.stack([img, img[::-1], 255 - img])
    got = Likeness(pipe).embed(frames)
    with torch.inference_mode():
        want = torch.cat([torch.nn.functional.normalize(
            pipe._encode_image(Image.fromarray(f), torch.device("cpu"), 1, False)[:, 0].float(), dim=-1)
            for f in frames])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------- the guidance halves apart

def test_split_guidance_runs_two_unet_calls_equal_to_one(tiny_sampler, input_png):
    pipe = tiny_sampler.pipe
    params = tiny_sampler.default_params(**SMALL)
    image = tiny_sampler.prepare(input_png, params).image
    rows = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, a: rows.append(a[0].shape[0]))
    try:
        outs = {}
        for split in (False, True):
            rows.clear()
            outs[split] = pipeline.run(pipe, image, params, decode_chunk_size=4, split_guidance=split,
                                       generator=torch.Generator("cpu").manual_seed(params.seed))
            outs[split, "rows"] = list(rows)
    finally:
        hook.remove()
    assert outs[False, "rows"] == [2, 2] and outs[True, "rows"] == [1, 1, 1, 1]
    assert outs[True].model_calls == outs[False].model_calls == 2
    # batch-size-dependent kernels round differently; the first latents are ~700 in size
    torch.testing.assert_close(outs[True].latents, outs[False].latents, rtol=1e-3, atol=5e-4)


# ------------------------------------------------------------------------------------------------ memory

def _full_size_modules():
    from bench.common import real_layout
    from svd_core.convert import infer_architecture
    from svd_core.loader import empty_modules

    return empty_modules(infer_architecture(dict(real_layout("video")), None))


def test_auto_chooses_the_first_mode_and_chunk_that_fit_the_free_memory():
    from svd_core import SamplingParams

    params = SamplingParams.for_variant("svd_xt", num_frames=25, width=1024, height=576, decode_chunk_size=14)
    for_chunk = run_estimates(_full_size_modules(), params, 2)
    order = ["fast", "balanced", "low"]

    def fits(e, budget):
        return e.peak * HEADROOM + CONTEXT_BYTES * HEADROOM <= budget

    seen = set()
    for free_gb in (80, 40, 24, 16, 12, 8, 4):
        budget = int(free_gb * GB)
        plan = choose(for_chunk, 14, budget)
        asked = for_chunk(14)
        earlier = order[:order.index(plan.mode)]
        assert not any(fits(asked[m], budget) for m in earlier), free_gb  # no faster mode fits as asked
        assert plan.fits == fits(plan.estimate, budget), free_gb
        if plan.decode_chunk < asked[plan.mode].decode_chunk:  # lowered: the next chunk up would not fit
            assert not fits(for_chunk(plan.decode_chunk + 1)[plan.mode], budget)
        # a lowered chunk is said by the sampler (test below); the plan says only that nothing fits
        assert (plan.note is None) if plan.fits else ("may run out of memory" in plan.note)
        seen.add((plan.mode, plan.decode_chunk < 14 and plan.mode != "low", plan.fits))
    # an 80 GB card runs fast, a 24 GB one balanced, a 16 GB one balanced with a smaller chunk, 8 GB low
    assert ("fast", False, True) in seen and ("balanced", False, True) in seen
    assert ("balanced", True, True) in seen and ("low", False, True) in seen and ("low", False, False) in seen


@pytest.mark.slow
def test_auto_that_lowers_the_decode_chunk_says_so(tiny_sampler, input_png, monkeypatch):
    """auto given little free memory runs low at chunk 2 and the run's notes say the chunk was lowered and why;
    an out-of-memory fallback from an auto-planned balanced chunk 3 to low names the chunk low used."""
    from svd_core import memory

    params = tiny_sampler.default_params(**SMALL)
    monkeypatch.setattr(tiny_sampler, "memory_setting", "auto")
    monkeypatch.setattr(tiny_sampler, "memory_mode", "fast")
    low = memory.run_estimates(tiny_sampler.pipe.components, params, 4)(2)["low"]  # low at chunk 2 just fits
    monkeypatch.setattr(memory, "device_budget", lambda device: int((low.peak + CONTEXT_BYTES) * HEADROOM) + 1)
    result = tiny_sampler.generate(input_png, params)
    assert result.memory_mode == "low"
    assert "decode_chunk_size lowered from 4 to 2 by auto's memory plan" in " ".join(result.notes)

    real_run, notes = tiny_sampler._run, []

    def oom_once(prepared, p, on_step, should_stop, on_phase, mode, *rest):
        if mode == "balanced":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run(prepared, p, on_step, should_stop, on_phase, mode, *rest)
    monkeypatch.setattr(tiny_sampler, "_run", oom_once)
    monkeypatch.setattr(tiny_sampler, "memory_mode", "balanced")
    prepared = tiny_sampler.prepare(input_png, params)
    *_, effective = tiny_sampler._run_with_fallback(prepared, params, None, None, None, notes, 3, None)
    assert effective["decode_chunk_size"] == 2 and effective["memory_mode"] == "low"
    assert "decode_chunk_size lowered from 4 to 2 by the out-of-memory fallback to 'low' mode" in " ".join(notes)


def test_low_fits_an_8_gb_card_and_the_split_halves_the_unet_activations():
    m = _full_size_modules()
    est = estimate(m, width=1024, height=576, num_frames=25, decode_chunk_size=14)
    assert est["low"].peak * HEADROOM + CONTEXT_BYTES < 8 * GB
    assert est["fast"].peak > est["balanced"].peak > est["low"].peak
    # low's split: the guided run denoises one row at a time, below low at two rows, as an unguided one does
    unguided = estimate(m, width=1024, height=576, num_frames=25, decode_chunk_size=14, guidance=False)["low"]
    two_rows = est["low"].weights["denoise"] + unet_activations(m["unet"].config, 2, 25, 72, 128, True) * 2
    assert est["low"].denoise == unguided.denoise < two_rows


def _profiled_peak(fn) -> int:
    """Peak of the bytes allocated while `fn` runs, from the profiler's memory records (CPU)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0  # allocations are recorded on the op that makes them, frees as "[memory]" records
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True])
def test_activation_estimate_against_the_profilers_memory_records(tiny_sampler, chunked):
    """The UNet's and the decoder's activation formulas against what one call allocates on the tiny model:
    within a factor of 2 either way."""
    from svd_core.session import set_unet_chunking

    pipe = tiny_sampler.pipe
    unet, vae = pipe.unet, pipe.vae
    rows, frames, h, w = 2, 4, 16, 16
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, frames, unet.config.in_channels, h, w, generator=gen)
    emb = torch.randn(rows, 1, unet.config.cross_attention_dim, generator=gen)
    ids = torch.randn(rows, 3, generator=gen)
    set_unet_chunking(unet, chunked)
    try:
        with torch.inference_mode():
            measured = _profiled_peak(lambda: unet(x, torch.tensor(0.5), encoder_hidden_states=emb,
                                                   added_time_ids=ids, return_dict=False))
    finally:
        set_unet_chunking(unet, False)
    want = unet_activations(unet.config, rows, frames, h, w, chunked) * 4
    assert want / 2 <= measured <= want * 2, (measured, want)
    if not chunked:
        from svd_core.memory import decoder_activations

        z = torch.randn(frames, 4, h, w, generator=gen)
        with torch.inference_mode():
            measured = _profiled_peak(lambda: vae.decode(z, num_frames=frames))
        scale = 2 ** (len(vae.config.block_out_channels) - 1)
        want = decoder_activations(vae.config, frames, h * scale, w * scale) * 4
        assert want / 2 <= measured <= want * 2, (measured, want)


@pytest.mark.slow
def test_estimate_command_prints_the_peak_per_mode(tiny_checkpoint):
    r = cli("estimate", "-c", tiny_checkpoint, "--width", "64", "--height", "64", "--num-frames", "4",
            "--decode-chunk-size", "4")
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line.split() for line in r.stdout.splitlines() if line.strip()}
    assert {"fast", "balanced", "low"} <= set(lines)
    assert float(lines["fast"][1]) >= float(lines["low"][1]) > 0


# ------------------------------------------------------------------------------------ fused QKV, attention

@pytest.mark.slow
def test_fused_qkv_equals_separate_projections_and_cudnn_is_cuda_only(tiny_checkpoint, tiny_sampler, input_png,
                                                                      tmp_path):
    from diffusers.models.attention_processor import FusedAttnProcessor2_0

    from svd_core import Sampler
    from svd_core.runs import save_run

    fused = Sampler(tiny_checkpoint, device="cpu", dtype=torch.float32, fuse_qkv=True, attention="cudnn")
    assert all(isinstance(p, FusedAttnProcessor2_0) for p in fused.pipe.unet.attn_processors.values())
    # the fused weights replace the separate ones: the UNet holds as many parameters as before
    assert sum(p.numel() for p in fused.pipe.unet.parameters()) == \
        sum(p.numel() for p in tiny_sampler.pipe.unet.parameters())
    params = tiny_sampler.default_params(**SMALL)
    got, want = fused.generate(input_png, params), tiny_sampler.generate(input_png, params)
    torch.testing.assert_close(got.latents[0], want.latents[0], rtol=1e-4, atol=1e-4)
    assert np.abs(got.frames.astype(int) - want.frames).max() <= 1
    assert got.effective["fuse_qkv"] is True and want.effective["fuse_qkv"] is False
    assert got.effective["attention"] == "default"  # what ran on the CPU, and the note says why
    assert any("cuDNN attention needs a CUDA device" in n for n in got.notes)
    import json

    rec = json.loads((save_run(got, fused.info, tmp_path) / "run.json").read_text())
    assert rec["effective"]["fuse_qkv"] is True and rec["effective"]["compile"] is None


def test_cudnn_attention_context_puts_cudnn_first_on_cuda_only():
    from torch.nn.attention import SDPBackend

    before = torch._C._get_sdp_priority_order()
    with attention_context(ComputeOptions(attention="cudnn"), torch.device("cuda")):
        assert torch._C._get_sdp_priority_order()[0] == int(SDPBackend.CUDNN_ATTENTION)
    assert torch._C._get_sdp_priority_order() == before
    with attention_context(ComputeOptions(attention="cudnn"), torch.device("cpu")):
        assert torch._C._get_sdp_priority_order() == before
    with pytest.raises(ValueError, match="valid: default, cudnn"):
        ComputeOptions(attention="flash")


def test_cudnn_attention_on_a_torch_without_sdpa_priority_fails_with_one_line(monkeypatch):
    import torch.nn.attention

    def old_sdpa_kernel(backends):  # torch's signature before set_priority
        return contextlib.nullcontext()
    monkeypatch.setattr(torch.nn.attention, "sdpa_kernel", old_sdpa_kernel)
    with pytest.raises(ValueError, match="cuDNN attention needs a torch whose sdpa_kernel takes set_priority"):
        ComputeOptions(attention="cudnn")
    ComputeOptions()  # the default attention needs nothing


def test_pinned_offload_points_offloaded_weights_back_at_their_host_copies(tiny_checkpoint):
    from svd_core.loader import load_pipeline

    pipe = load_pipeline(tiny_checkpoint, device="cpu", dtype=torch.float32)
    offload = PinnedOffload(pipe, pin=False)  # pinning needs CUDA; the bookkeeping is the same
    unet = pipe.unet
    host = {n: p.data_ptr() for n, p in unet.named_parameters()}
    unet.to(torch.float64)  # stands in for the move to the GPU: every parameter gets new storage
    assert not set(host.values()) & {p.data_ptr() for p in unet.parameters()}
    offload.offload(unet)
    assert {n: p.data_ptr() for n, p in unet.named_parameters()} == host
    assert all(b.device.type == "cpu" for b in unet.buffers())
    offload.remove()
    assert "enable_model_cpu_offload" not in pipe.__dict__


# ------------------------------------------------------------------------------------------------ compile

def test_cli_flags_reach_the_sampler_settings():
    from svd_core.__main__ import build_parser

    args = build_parser().parse_args(["sample", "x.png", "--compile", "--fuse-qkv", "--attention", "cudnn",
                                      "--no-pin-memory"])
    assert (args.compile, args.fuse_qkv, args.attention, args.pin_memory) == (True, True, "cudnn", False)
    args = build_parser().parse_args(["sweep", "x.png", "--vary", "seed=1,2"])
    assert (args.compile, args.fuse_qkv, args.attention, args.pin_memory) == (False, False, "default", True)


@pytest.mark.slow
def test_compiled_sampler_equals_eager_for_svd_sv3d_both_batches_and_split_halves(tiny_sampler, input_png,
                                                                                   tmp_path):
    """Compiled in place with torch.compile's "eager" backend (Dynamo's graph capture, the graphs run as
    captured: inductor's code generation takes minutes on the CPU): the modules stay in place (isinstance,
    decode's signature check), the first run says it compiles, the second reuses it."""
    from diffusers import UNetSpatioTemporalConditionModel

    from svd_core import Sampler, make_tiny

    compiled = Sampler(tiny_sampler.info.path, device="cpu", dtype=torch.float32, compile="eager")
    assert isinstance(compiled.pipe.unet, UNetSpatioTemporalConditionModel)
    smallest = dict(num_frames=2, num_inference_steps=2, width=64, height=64, decode_chunk_size=2)
    params = tiny_sampler.default_params(**smallest)
    phases = []
    first = compiled.generate(input_png, params, on_phase=phases.append)
    eager = tiny_sampler.generate(input_png, params)
    assert np.abs(first.frames.astype(int) - eager.frames).max() <= 1
    torch.testing.assert_close(first.latents[0], eager.latents[0], rtol=1e-4, atol=1e-4)
    assert "compiling" in phases and first.effective["compile"] == "eager"
    assert any("torch.compile compiled" in n for n in first.notes) and first.timings["compile"] > 0
    phases.clear()
    again = compiled.generate(input_png, params, on_phase=phases.append)
    assert "compiling" not in phases and not any("torch.compile" in n for n in again.notes)
    np.testing.assert_array_equal(again.frames, first.frames)
    identity = compiled.generate(input_png, params.replace(guider="identity"))  # batch 1
    assert np.abs(identity.frames.astype(int) - tiny_sampler.generate(
        input_png, params.replace(guider="identity")).frames).max() <= 1
    image = compiled.prepare(input_png, params).image
    split = pipeline.run(compiled.pipe, image, params, decode_chunk_size=2, split_guidance=True,
                         generator=torch.Generator("cpu").manual_seed(params.seed))
    torch.testing.assert_close(split.latents, eager.latents[0], rtol=1e-3, atol=5e-4)  # as the split test

    sv3d = Sampler(make_tiny(tmp_path / "sv3d_p.safetensors", family="sv3d_p"), device="cpu",
                   dtype=torch.float32, compile="eager")
    r = sv3d.generate(input_png, sv3d.default_params(**smallest))
    assert r.frames.shape == (2, 64, 64, 3) and r.effective["camera"] is not None


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the pinned path needs CUDA"))])
def test_noise_is_the_cpu_generators_stream_on_every_device(device):
    """The draws (on CUDA: pinned, copied without blocking) are the CPU generator's stream in order."""
    like = torch.zeros(3, 4, 5, 5, device=device)
    gen, plain = torch.Generator("cpu").manual_seed(7), torch.Generator("cpu").manual_seed(7)
    for _ in range(3):
        torch.testing.assert_close(pipeline.draw_noise(like, gen).cpu(), torch.randn(like.shape, generator=plain),
                                   rtol=0, atol=0)
