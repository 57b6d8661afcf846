"""Sampler: one loaded pipeline, one run at a time, seeded per call, cancellable, with memory modes.

Progress and cancellation cross in as plain callables; nothing here renders anything.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from . import memory, pipeline
from .checkpoints import CheckpointInfo, file_sha256, inspect_checkpoint
from .compute import CompileWatch, ComputeOptions, PinnedOffload, attention_context, pinning_fits, prepare_modules
from .conditioning import training_warnings
from .errors import Cancelled, NotFinite, OutOfMemory
from .images import ImageSpec, PreparedImage, prepare_image
from .loader import load_pipeline, resolve_device_dtype
from .memory import MEMORY_MODES
from .metrics import Likeness, measure_frames
from .params import SamplingParams
from .record import ModelSpec, RunRecord, record_of

_LOWER = {"fast": "balanced", "balanced": "low"}
TINY_MIN_SIDE = 32


def resolve_memory_mode(mode: str, device: torch.device, estimates_for_chunk=None, decode_chunk: int = 14) -> str:
    """auto -> the first of fast/balanced/low whose estimated peak (svd_core.memory, `estimates_for_chunk`)
    fits the device's free memory. On the CPU every mode is `fast` (nothing to offload)."""
    if mode not in MEMORY_MODES:
        raise ValueError(f"unknown memory mode {mode!r}; valid: {', '.join(MEMORY_MODES)}")
    if device.type != "cuda":
        return "fast"
    if mode != "auto":
        return mode
    return memory.choose(estimates_for_chunk, decode_chunk, memory.device_budget(device)).mode


def apply_memory_mode(pipe, mode: str, device: torch.device, pin_memory: bool = True,
                      pinned: PinnedOffload | None = None) -> PinnedOffload | None:
    """Put `pipe` in memory mode `mode` on `device`: fast holds every module there; balanced and low move each
    model to the device only while it runs (diffusers' model CPU offload), from pinned host copies when
    `pin_memory` and they fit, and low chunks the UNet's feed-forward. `pinned`: what the last call returned.
    Off CUDA every module stays on `device`."""
    if device.type != "cuda":
        pipe.to(device)
        return pinned
    pipe.remove_all_hooks()
    set_unet_chunking(pipe.unet, mode == "low")
    if mode == "fast":
        if pinned is not None:
            pinned.remove()
        pipe.to(device)
        return None
    pipe.to("cpu")
    if pin_memory and pinned is None and pinning_fits(pipe):
        pinned = PinnedOffload(pipe)
    pipe.enable_model_cpu_offload(device=device)
    return pinned


def set_unet_chunking(unet, enabled: bool) -> None:
    """UNet feed-forward chunking, diffusers' recipe for SVD (`unet.enable_forward_chunking()`): the spatial
    blocks' feed-forward runs one frame at a time (dim 0, the batch-of-frames), the temporal blocks' one frame
    position at a time (diffusers fixes their dim). There is no disable in diffusers, so switching it off goes
    through each block's set_chunk_feed_forward."""
    if enabled:
        unet.enable_forward_chunking()
        return
    for m in unet.modules():
        if hasattr(m, "set_chunk_feed_forward"):
            m.set_chunk_feed_forward(chunk_size=None)


def unet_chunking(unet) -> bool:
    return any(getattr(m, "_chunk_size", None) for m in unet.modules())


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


def to_uint8(frames) -> np.ndarray:
    """diffusers' float frames in [0, 1] -> uint8 (F, H, W, 3)."""
    return np.clip(np.asarray(frames) * 255.0 + 0.5, 0, 255).astype(np.uint8)


@dataclass
class SampleResult:
    frames: np.ndarray  # uint8 (F, H, W, 3)
    params: SamplingParams
    image: PreparedImage
    timings: dict[str, float]
    notes: list[str] = field(default_factory=list)
    effective: dict = field(default_factory=dict)  # what the run really used: memory mode, device, dtype, ...
    # num_videos: every video (seeds seed, seed+1, ...; videos[0] is `frames`), its final latents (float32
    # (F, 4, h, w), scaled space), and the UNet calls of the whole run
    videos: list[np.ndarray] = field(default_factory=list)
    latents: list[torch.Tensor] = field(default_factory=list)
    model_calls: int = 0
    metrics: dict = field(default_factory=dict)  # svd_core.metrics.measure_frames: motion, flicker, likeness
    trajectories: list = field(default_factory=list)  # generate(trajectory=True): a preview.Trajectory per video
    video_metrics: list[dict] = field(default_factory=list)  # num_videos: each video's metrics ([0] is `metrics`)
    model: ModelSpec = ModelSpec("")  # the model it ran on, as asked for
    remove_bg: bool = False  # the input's background was removed

    @property
    def memory_mode(self) -> str:
        return self.effective["memory_mode"]

    @property
    def device(self) -> str:
        return self.effective["device"]

    @property
    def dtype(self) -> str:
        return self.effective["dtype"]

    def record(self, checkpoint: CheckpointInfo, files=(), formats=("mp4",), input_name: str | None = None,
               **fields) -> RunRecord:
        """This run's record (svd_core.record.record_of): what runs.py writes as run.json."""
        return record_of(self, checkpoint, files, formats, input_name, **fields)


class Sampler:
    """Keeps one loaded pipeline and runs one video at a time. Not thread-safe by itself: one thread (the
    caller's, or the app's one worker) runs its runs one after another."""

    def __init__(self, checkpoint, *, device=None, dtype=None, memory_mode: str = "auto", compile: bool | str = False,
                 fuse_qkv: bool = False, attention: str = "default", pin_memory: bool = True):
        """compile, fuse_qkv, attention, pin_memory: how the modules compute (svd_core.compute.ComputeOptions)."""
        self.compute = ComputeOptions(compile, fuse_qkv, attention, pin_memory)
        self.device_setting = "" if device is None else str(device)
        self.info: CheckpointInfo = inspect_checkpoint(checkpoint)
        # run.json records the checkpoint's sha256: hash the file (gigabytes) while the model loads and samples
        threading.Thread(target=file_sha256, args=(self.info.path,), name="sha256", daemon=True).start()
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        self.memory_setting = memory_mode  # "auto" plans each run (_auto_plan); memory_mode is the one applied
        defaults = SamplingParams.for_variant(self.info.variant)
        self.memory_mode = resolve_memory_mode(
            memory_mode, self.device,  # the estimate is built only when auto plans on a CUDA device
            lambda chunk: memory.run_estimates(memory.checkpoint_modules(self.info), defaults,
                                               self.dtype.itemsize)(chunk),
            defaults.decode_chunk)
        load_device = self.device if self.memory_mode == "fast" else torch.device("cpu")
        self.pipe = load_pipeline(self.info.path, device=load_device, dtype=self.dtype)
        prepare_modules(self.pipe, self.compute)
        self._compiled_shapes: set = set()
        self._pinned: PinnedOffload | None = None
        self._apply_memory_mode(self.memory_mode)
        channels = self.pipe.unet.config.block_out_channels
        # a small test architecture (also when its file carries a release's name) samples at small sizes
        min_side = self.info.variant.min_side if channels[0] >= 320 else TINY_MIN_SIDE
        self.image_spec = ImageSpec(multiple=self.pipe.vae_scale_factor * 2 ** (len(channels) - 1),
                                    min_side=min_side,
                                    pad_color=(255, 255, 255) if self.info.variant.is_sv3d else (0, 0, 0))

    @classmethod
    def from_spec(cls, spec: ModelSpec, **compute) -> Sampler:
        """The Sampler of `spec`; `compute`: fuse_qkv, attention, pin_memory."""
        return cls(spec.checkpoint, device=spec.device or None, memory_mode=spec.memory_mode,
                   compile=spec.compile, **compute)

    @property
    def spec(self) -> ModelSpec:
        """The model as asked for (the memory mode as set: auto stays auto); its checkpoint is the file's name,
        as a record keeps it (the server's folders stay out of run.json)."""
        return ModelSpec(self.info.path.name, self.device_setting, self.memory_setting, bool(self.compute.compile))

    def default_params(self, **overrides) -> SamplingParams:
        return SamplingParams.for_variant(self.info.variant, **overrides)

    def prepare(self, image, params: SamplingParams, remove_bg: bool = False) -> PreparedImage:
        return prepare_image(image, params.width, params.height, params.resize_mode, self.image_spec, remove_bg)

    # ------------------------------------------------------------------------------------------ memory modes

    def _apply_memory_mode(self, mode: str) -> None:
        self._pinned = apply_memory_mode(self.pipe, mode, self.device, self.compute.pin_memory, self._pinned)

    def _free_accelerator(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        elif self.device.type == "mps":
            torch.mps.empty_cache()

    # ---------------------------------------------------------------------------------------------- running

    def generate(self, image, params: SamplingParams, on_step: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 on_phase: Callable[[str], None] | None = None,
                 on_preview: Callable[..., None] | None = None, trajectory: bool = False) -> SampleResult:
        """Sample one video. `image`: a path, bytes, PIL image or PreparedImage. Raises Cancelled when
        `should_stop()` turns true: it is checked between steps, after the last step and before
        each decoder call; nothing is returned or written then. `on_phase(name)`: "encoding", "denoising",
        "decoding" as each starts. `on_preview(i, n, sigma, denoised, latents)`: after each step of each video,
        its estimate of the clean video (svd_core.preview; None: no previews, no cost). `trajectory`: keep every
        step's preview and statistics (result.trajectories, saved by runs.py as the denoising record)."""
        prepared = image if isinstance(image, PreparedImage) else self.prepare(image, params)
        if prepared.size != (params.width, params.height):
            params = params.replace(width=prepared.size[0], height=prepared.size[1])
        notes = list(prepared.notes) + training_warnings(params, self.info.variant)
        videos, timings, outputs, effective, trajectories = self._run_videos(
            prepared, params, on_step, should_stop, on_phase, notes, on_preview, trajectory)
        likenesses = [self._likeness(v, prepared, timings) for v in videos]  # num_videos: each video's
        video_metrics = [self._measure(v, params.replace(seed=params.seed + k, num_videos=1), likenesses[k], timings)
                         for k, v in enumerate(videos)]
        if should_stop is not None and should_stop():
            raise Cancelled("run cancelled")
        return SampleResult(videos[0], params, prepared, timings, notes, effective, videos,
                            [o.latents for o in outputs], sum(o.model_calls for o in outputs), video_metrics[0],
                            trajectories, video_metrics, self.spec, prepared.background_removed)

    def ignored_knobs(self, params: SamplingParams) -> list[str]:
        """Knobs set away from their defaults that this run does not read: those the sampler, discretization
        and guider ignore, and those this model has no input for (SV3D: fps, motion_bucket_id; SVD and SV3D_u:
        the camera)."""
        defaults = SamplingParams.__dataclass_fields__
        unused = [k for k in self.info.variant.unused_knobs if getattr(params, k) != defaults[k].default]
        return params.inapplicable() + unused

    def _likeness(self, frames, prepared, timings) -> list[float] | Exception:
        """Likeness needs the image encoder on the accelerator, while the run's modules are placed. A failure is
        returned, to be recorded with the metrics."""
        t0 = time.perf_counter()
        try:
            return Likeness(self.pipe)(frames, prepared.image)
        except Exception as e:  # noqa: BLE001 - the video is good; say why it has no metrics
            return e
        finally:
            self.pipe.maybe_free_model_hooks()  # with CPU offload, the encoder goes back to the CPU
            timings["measure"] = timings.get("measure", 0.0) + time.perf_counter() - t0

    def _measure(self, frames, params, likeness, timings) -> dict:
        """Motion and flicker (optical flow on the CPU). A failed measurement is recorded, never fails the run."""
        t0 = time.perf_counter()
        failed = likeness if isinstance(likeness, Exception) else None
        if failed is None:
            try:
                metrics = measure_frames(frames, params.fps, "conditioning", likeness)
            except Exception as e:  # noqa: BLE001 - the video is good; say why it has no metrics
                failed = e
        if failed is not None:
            metrics = {"error": f"{type(failed).__name__}: {failed}"}
        timings["measure"] = timings.get("measure", 0.0) + time.perf_counter() - t0  # added up over videos
        return metrics

    def _run_videos(self, prepared, params, on_step, should_stop, on_phase, notes: list[str], on_preview,
                    trajectory: bool):
        """num_videos: one run per seed (seed, seed+1, ...), each the same as a run of that seed alone. Progress
        counts the steps of all videos; timings add up; an out-of-memory fallback of any video is recorded."""
        from .preview import Trajectory, chain

        videos, outputs, timings, fallback, trajectories = [], [], {}, None, []
        max_chunk = self._auto_plan(params, notes)
        for k in range(params.num_videos):
            one = params.replace(seed=params.seed + k, num_videos=1)
            step = None if on_step is None else (lambda i, n, k=k: on_step(k * n + i, n * params.num_videos))
            if trajectory:
                trajectories.append(Trajectory())
            preview = chain(on_preview, trajectories[-1] if trajectory else None)
            frames, t, out, effective = self._run_with_fallback(prepared, one, step, should_stop, on_phase,
                                                                notes, max_chunk, preview)
            videos.append(frames)
            outputs.append(out)
            timings = {name: timings.get(name, 0.0) + v for name, v in t.items()}
            fallback = fallback or effective["fallback"]
        return videos, timings, outputs, {**effective, "fallback": fallback,
                                          "model_calls": sum(o.model_calls for o in outputs),
                                          "ignored_knobs": self.ignored_knobs(params)}, trajectories

    def estimates(self, params: SamplingParams) -> dict[str, memory.Estimate]:
        """The pre-flight memory estimate of a run of `params` in each mode (svd_core.memory)."""
        return memory.run_estimates(self.pipe.components, params, self.dtype.itemsize)(params.decode_chunk)

    def _auto_plan(self, params: SamplingParams, notes: list[str]) -> int | None:
        """auto on CUDA: the mode (applied now, kept for later runs) and decode chunk whose estimate fits the free
        memory (svd_core.memory.choose). Returns the decode chunk when it is lower than asked, else None."""
        budget = memory.device_budget(self.device) if self.memory_setting == "auto" else None
        if budget is None:
            return None
        plan = memory.choose(memory.run_estimates(self.pipe.components, params, self.dtype.itemsize),
                             params.decode_chunk, budget)
        if plan.mode != self.memory_mode:
            self.memory_mode = plan.mode
            self._apply_memory_mode(plan.mode)
        if plan.note:
            notes.append(plan.note)
        return plan.decode_chunk if plan.decode_chunk < params.decode_chunk else None

    def _run_with_fallback(self, prepared, params, on_step, should_stop, on_phase, notes: list[str],
                           max_chunk: int | None, on_preview):
        """Out of memory: free the accelerator, move one mode down (fast -> balanced -> low) for this run only,
        retry once, and put the server's mode back afterwards."""
        mode, fallback = self.memory_mode, None
        try:
            for attempt in (1, 2):
                try:
                    frames, timings, out, used = self._run(prepared, params, on_step, should_stop, on_phase, mode,
                                                          max_chunk, notes, on_preview)
                    break
                except Exception as e:
                    if not _is_oom(e):
                        raise
                    self._free_accelerator()
                    lower = _LOWER.get(mode)
                    if attempt == 2 or lower is None:
                        raise OutOfMemory(f"out of memory in '{mode}' mode{' too' if attempt == 2 else ''}: lower "
                                          "the resolution, num_frames or decode_chunk_size") from None
                    notes.append(f"out of memory in '{mode}' mode; this run was retried in '{lower}' mode")
                    fallback = {"from": mode, "to": lower, "reason": "out of memory"}
                    mode = lower
                    self._apply_memory_mode(mode)
        finally:
            if mode != self.memory_mode:
                self._apply_memory_mode(self.memory_mode)
        chunk = used["decode_chunk_size"]
        if chunk < params.decode_chunk:
            by_fallback = fallback and chunk < (max_chunk or params.decode_chunk)
            cause = ("the out-of-memory fallback to 'low' mode" if by_fallback
                     else "auto's memory plan (to fit the free memory)" if self.memory_setting == "auto"
                     else f"'{mode}' memory mode")
            note = (f"decode_chunk_size lowered from {params.decode_chunk_size} to {chunk} by {cause}: this changes "
                    "the result (the temporal decoder mixes frames within a chunk)")
            if note not in notes:
                notes.append(note)
        effective = {
            **used,  # decode_chunk_size, unet_ff_chunking
            "memory_mode": mode,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            # what the model is conditioned on: diffusers passes fps - 1 (Stability's); SV3D has no fps input
            "fps_id": None if self.info.variant.is_sv3d else params.fps - 1,
            "fallback": fallback,
            **self.compute.effective(self.device),
        }
        if out.camera is not None:  # what the UNet was given, as the pipeline built it
            effective["camera"] = out.camera
        return frames, timings, out, effective

    def _run(self, prepared: PreparedImage, params: SamplingParams, on_step, should_stop, on_phase, mode: str,
             max_chunk: int | None, notes: list[str], on_preview):
        """One video (seed params.seed) through svd_core.pipeline in memory mode `mode`: (uint8 frames, timings,
        PipelineOutput, what it used)."""
        decode_chunk = min(params.decode_chunk, max_chunk or params.decode_chunk)
        if mode == "low":
            decode_chunk = min(decode_chunk, memory.LOW_DECODE_CHUNK)
        used = {"decode_chunk_size": decode_chunk, "unet_ff_chunking": unet_chunking(self.pipe.unet),
                "split_guidance": mode == "low"}
        rows = 1 if params.guider == "identity" or mode == "low" else 2
        shapes = (params.num_frames, params.width, params.height, decode_chunk, rows)
        with CompileWatch(self.compute, self._compiled_shapes, shapes, on_phase) as watch, \
                attention_context(self.compute, self.device):
            out = pipeline.run(self.pipe, prepared.image, params, decode_chunk_size=decode_chunk,
                               generator=torch.Generator("cpu").manual_seed(params.seed), on_step=on_step,
                               should_stop=should_stop, on_phase=watch.on_phase, split_guidance=mode == "low",
                               on_preview=on_preview)
        for note in self.compute.notes(self.device) + [watch.note()]:
            if note and note not in notes:
                notes.append(note)
        if watch.seconds:
            out.timings["compile"] = watch.seconds
        bad = "latents" if not torch.isfinite(out.latents).all() else "" if np.isfinite(out.frames).all() else "frames"
        if bad:
            raise NotFinite(f"{self.info.name} gave NaN or infinite {bad} (its weights hold them, or the dtype "
                            "overflowed): nothing was saved; try float32 or another checkpoint")
        return to_uint8(out.frames), out.timings, out, used
