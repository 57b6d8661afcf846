"""Sampler: one loaded pipeline, one run at a time, seeded per call, cancellable, with memory modes.

Progress and cancellation cross in as plain callables; nothing here renders anything.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .checkpoints import CheckpointInfo, file_sha256, inspect_checkpoint
from .errors import Cancelled, OutOfMemory
from .images import ImageSpec, PreparedImage, prepare_image
from .loader import load_pipeline, resolve_device_dtype
from .metrics import measure_result
from .params import SamplingParams
from .training import training_warnings

MEMORY_MODES = ("auto", "fast", "balanced", "low")
_LOWER = {"fast": "balanced", "balanced": "low"}
LOW_DECODE_CHUNK = 2
GiB = 1 << 30


def resolve_memory_mode(mode: str, device: torch.device) -> str:
    """auto -> fast/balanced/low by free accelerator memory. On the CPU every mode is `fast` (nothing to offload)."""
    if mode not in MEMORY_MODES:
        raise ValueError(f"unknown memory mode {mode!r}; valid: {', '.join(MEMORY_MODES)}")
    if device.type != "cuda":
        return "fast"
    if mode != "auto":
        return mode
    free, _ = torch.cuda.mem_get_info(device)
    return "fast" if free >= 24 * GiB else "balanced" if free >= 12 * GiB else "low"


def set_unet_chunking(unet, enabled: bool) -> None:
    """Feed-forward chunking over frames (diffusers' enable_forward_chunking; there is no disable, so both
    directions go through each block's set_chunk_feed_forward)."""
    if enabled:
        unet.enable_forward_chunking(chunk_size=1, dim=1)
        return
    for m in unet.modules():
        if hasattr(m, "set_chunk_feed_forward"):
            m.set_chunk_feed_forward(chunk_size=None, dim=0)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


class _Stop(Exception):
    """Raised inside the pipeline's step callback to stop a run between steps."""


class RunQueue:
    """A FIFO lock that tells waiters their place: `on_wait(position)` while they wait (1 = next), then
    `on_wait(0)` when their turn comes."""

    def __init__(self):
        self._cond = threading.Condition()
        self._waiting: deque[object] = deque()
        self._busy = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._waiting) + int(self._busy)

    def acquire(self, on_wait=None, should_stop=None, poll: float = 0.2) -> None:
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
            try:
                while self._busy or self._waiting[0] is not ticket:
                    if on_wait is not None:
                        on_wait(list(self._waiting).index(ticket) + int(self._busy))
                    if should_stop is not None and should_stop():
                        raise Cancelled("cancelled while waiting in the queue")
                    self._cond.wait(poll)
            except BaseException:
                self._waiting.remove(ticket)
                self._cond.notify_all()
                raise
            self._waiting.popleft()
            self._busy = True
        if on_wait is not None:
            on_wait(0)

    def release(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()


def to_uint8(frames) -> np.ndarray:
    """diffusers' float frames in [0, 1] -> uint8 (F, H, W, 3)."""
    return np.clip(np.asarray(frames) * 255.0 + 0.5, 0, 255).astype(np.uint8)


class StageClock:
    """Wall time of one pipeline call by stage: image encode (start -> first UNet call), denoise (-> the last
    step's end, marked by `step_end()` from the step callback), decode (-> return). Synchronises CUDA at each
    mark, so GPU work is counted where it happens."""

    def __init__(self, pipe, device: torch.device):
        self.pipe, self.device, self.marks = pipe, device, {}

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _first_unet_call(self, module, args) -> None:  # a pre-hook must return None: a value replaces the inputs
        self.marks.setdefault("denoise_start", self._now())

    def step_end(self) -> None:
        self.marks["denoise_end"] = self._now()

    def __enter__(self):
        self._hook = self.pipe.unet.register_forward_pre_hook(self._first_unet_call)
        self.marks["start"] = self._now()
        return self

    def __exit__(self, *exc):
        self._hook.remove()
        self.marks["end"] = self._now()

    def timings(self) -> dict[str, float]:
        m = self.marks
        d0, d1 = m.get("denoise_start", m["start"]), m.get("denoise_end", m["end"])
        return {"image_encode": d0 - m["start"], "denoise": d1 - d0, "decode": m["end"] - d1,
                "total": m["end"] - m["start"]}


@dataclass
class SampleResult:
    frames: np.ndarray  # uint8 (F, H, W, 3)
    params: SamplingParams
    image: PreparedImage
    timings: dict[str, float]
    memory_mode: str
    device: str
    dtype: str
    notes: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)  # svd_core.metrics.measure_result: motion, flicker, likeness


class Sampler:
    """Keeps one loaded pipeline. `generate` is safe to call from several threads: runs queue up, one at a time."""

    def __init__(self, checkpoint, *, device=None, dtype=None, memory_mode: str = "auto"):
        self.info: CheckpointInfo = inspect_checkpoint(checkpoint)
        # run.json records the checkpoint's sha256: hash a 9.56 GB file while the model loads and samples
        threading.Thread(target=file_sha256, args=(self.info.path,), name="sha256", daemon=True).start()
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        self.memory_mode = resolve_memory_mode(memory_mode, self.device)
        load_device = self.device if self.memory_mode == "fast" else torch.device("cpu")
        self.pipe = load_pipeline(self.info.path, device=load_device, dtype=self.dtype)
        self._apply_memory_mode(self.memory_mode)
        self.queue = RunQueue()
        unet_levels = len(self.pipe.unet.config.block_out_channels)
        self.image_spec = ImageSpec(multiple=self.pipe.vae_scale_factor * 2 ** (unet_levels - 1),
                                    min_side=self.info.variant.min_side)

    def default_params(self, **overrides) -> SamplingParams:
        return SamplingParams.for_variant(self.info.variant, **overrides)

    def prepare(self, image, params: SamplingParams) -> PreparedImage:
        return prepare_image(image, params.width, params.height, params.resize_mode, self.image_spec)

    # ------------------------------------------------------------------------------------------ memory modes

    def _apply_memory_mode(self, mode: str) -> None:
        pipe = self.pipe
        if self.device.type != "cuda":
            pipe.to(self.device)
            return
        pipe.remove_all_hooks()
        set_unet_chunking(pipe.unet, mode == "low")
        if mode == "fast":
            pipe.to(self.device)
            return
        pipe.to("cpu")
        pipe.enable_model_cpu_offload(device=self.device)

    def _free_accelerator(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        elif self.device.type == "mps":
            torch.mps.empty_cache()

    # ---------------------------------------------------------------------------------------------- running

    def generate(self, image, params: SamplingParams, on_step: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 on_queue: Callable[[int], None] | None = None) -> SampleResult:
        """Sample one video. `image`: a path, bytes, PIL image or PreparedImage. Raises Cancelled when
        `should_stop()` turns true (checked between steps); nothing is returned or written then."""
        prepared = image if isinstance(image, PreparedImage) else self.prepare(image, params)
        if prepared.size != (params.width, params.height):
            params = params.replace(width=prepared.size[0], height=prepared.size[1])
        notes = list(prepared.notes) + training_warnings(params, self.info.variant)
        self.queue.acquire(on_queue, should_stop)
        try:
            frames, timings = self._run_with_fallback(prepared, params, on_step, should_stop, notes)
            metrics = self._measure(frames, params, prepared, timings)
        finally:
            self.queue.release()
        return SampleResult(frames, params, prepared, timings, self.memory_mode, str(self.device),
                            str(self.dtype).replace("torch.", ""), notes, metrics)

    def _measure(self, frames, params, prepared, timings) -> dict:
        """Metrics while the run still holds the queue (the image encoder may sit on the accelerator). A failed
        measurement is recorded, never fails the run."""
        t0 = time.perf_counter()
        try:
            metrics = measure_result(self.pipe, frames, params, prepared.image)
        except Exception as e:  # noqa: BLE001 - the video is good; say why it has no metrics
            metrics = {"error": f"{type(e).__name__}: {e}"}
        timings["measure"] = time.perf_counter() - t0
        return metrics

    def _run_with_fallback(self, prepared, params, on_step, should_stop, notes: list[str]):
        """Out of memory: free the accelerator, move one mode down (fast -> balanced -> low), retry once."""
        for attempt in (1, 2):
            try:
                return self._run(prepared, params, on_step, should_stop)
            except Exception as e:
                if not _is_oom(e):
                    raise
                self._free_accelerator()
                lower = _LOWER.get(self.memory_mode)
                if attempt == 2 or lower is None:
                    raise OutOfMemory(f"out of memory in '{self.memory_mode}' mode{' too' if attempt == 2 else ''}:"
                                      " lower the resolution, num_frames or decode_chunk_size") from None
                notes.append(f"out of memory in '{self.memory_mode}' mode; retried in '{lower}' mode")
                self.memory_mode = lower
                self._apply_memory_mode(lower)

    def _run(self, prepared: PreparedImage, params: SamplingParams, on_step, should_stop):
        n = params.num_inference_steps
        if should_stop is not None and should_stop():
            raise Cancelled("run cancelled before it started")
        clock = StageClock(self.pipe, self.device)

        def step_end(pipe, i, t, kwargs):
            clock.step_end()
            if on_step is not None:
                on_step(i + 1, n)
            if should_stop is not None and should_stop() and i + 1 < n:
                raise _Stop
            return kwargs

        decode_chunk = params.decode_chunk_size
        if self.memory_mode == "low":
            decode_chunk = min(decode_chunk, LOW_DECODE_CHUNK)
        try:
            with clock, torch.inference_mode():
                out = self.pipe(
                    prepared.image, height=params.height, width=params.width, num_frames=params.num_frames,
                    num_inference_steps=n, min_guidance_scale=params.min_guidance_scale,
                    max_guidance_scale=params.max_guidance_scale, fps=params.fps,
                    motion_bucket_id=params.motion_bucket_id, noise_aug_strength=params.noise_aug_strength,
                    decode_chunk_size=decode_chunk, generator=torch.Generator("cpu").manual_seed(params.seed),
                    output_type="np", callback_on_step_end=step_end)
        except _Stop:
            raise Cancelled("run cancelled") from None
        finally:
            self.pipe.maybe_free_model_hooks()
        return to_uint8(out.frames[0]), clock.timings()

