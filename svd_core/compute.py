"""How the loaded modules compute, a server setting like the memory mode: torch.compile of the UNet and the VAE
decoder, fused QKV projections, the SDPA backend, and pinned host memory for offloaded weights.

Every option leaves the pipeline's modules in place (`module.compile()` compiles a module's call, so `isinstance`
checks, signatures and the CPU-offload hooks keep working). `effective()` says what a run really used, for
run.json; an option that cannot apply on this device is recorded as off and said in a note, never dropped silently.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

ATTENTION_BACKENDS = ("default", "cudnn")


@dataclass(frozen=True)
class ComputeOptions:
    """compile: False, True (inductor) or the name of a torch.compile backend. fuse_qkv: the UNet's
    attention projections fused (one matmul for q, k, v; k, v for cross-attention). attention:
    "default" (SDPA picks its kernel) or "cudnn" (cuDNN attention first, CUDA only). pin_memory: offloaded
    weights (balanced, low) stay in page-locked host memory, so their copies to the GPU run at full bus speed."""
    compile: bool | str = False
    fuse_qkv: bool = False
    attention: str = "default"
    pin_memory: bool = True

    def __post_init__(self):
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {self.attention!r}; valid: {', '.join(ATTENTION_BACKENDS)}")
        if self.attention == "cudnn" and not _sdpa_priority_supported():
            raise ValueError(f"cuDNN attention needs a torch whose sdpa_kernel takes set_priority (this is torch "
                             f"{torch.__version__}): upgrade torch or use the default attention")
        if not isinstance(self.compile, (bool, str)) or self.compile == "":
            raise ValueError(f"compile must be true, false or a torch.compile backend name, got {self.compile!r}")

    @property
    def compile_backend(self) -> str | None:
        if self.compile is False:
            return None
        return "inductor" if self.compile is True else self.compile

    def effective(self, device: torch.device) -> dict:
        """What runs on `device` use (run.json's effective settings)."""
        return {"compile": self.compile_backend, "fuse_qkv": self.fuse_qkv,
                "attention": self.attention if device.type == "cuda" else "default",
                "pin_memory": self.pin_memory and device.type == "cuda"}

    def notes(self, device: torch.device) -> list[str]:
        if self.attention == "cudnn" and device.type != "cuda":
            return [f"cuDNN attention needs a CUDA device: SDPA's default kernels ran on {device.type}"]
        return []


def prepare_modules(pipe, options: ComputeOptions) -> None:
    """Apply the options that change modules, once after loading: fuse QKV, then mark the UNet and the VAE
    decoder for compilation (the code is compiled by the first run with each new input shape)."""
    if options.fuse_qkv:
        fuse_qkv(pipe.unet)
    backend = options.compile_backend
    if backend is not None:
        pipe.unet.compile(backend=backend)
        pipe.vae.decoder.compile(backend=backend)


def fuse_qkv(unet) -> None:
    """Every attention of the UNet computes q, k, v (self-attention) or k, v (cross-attention) with one matmul
    (diffusers' `Attention.fuse_projections` and `FusedAttnProcessor2_0`; the UNet's own
    `fuse_qkv_projections()` skips this Attention class). The separate projections the fused processor does
    not use are deleted, so the weights are held once."""
    from diffusers.models.attention_processor import Attention, FusedAttnProcessor2_0

    for m in [m for m in unet.modules() if isinstance(m, Attention)]:
        m.fuse_projections(fuse=True)
        m.set_processor(FusedAttnProcessor2_0())
        del m.to_k, m.to_v
        if not m.is_cross_attention:  # cross-attention still computes q alone
            del m.to_q


def _sdpa_priority_supported() -> bool:
    import inspect

    from torch.nn.attention import sdpa_kernel

    return "set_priority" in inspect.signature(sdpa_kernel).parameters


def attention_context(options: ComputeOptions, device: torch.device):
    """The run's SDPA kernel choice: cuDNN attention first on CUDA (the others stay as fallbacks for shapes it
    does not take); SDPA's own choice otherwise."""
    if options.attention != "cudnn" or device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
             SDPBackend.MATH]
    return sdpa_kernel(order, set_priority=True)


def compile_seconds() -> float:
    """Seconds torch.compile has spent compiling in this process so far (0 without it)."""
    try:
        from torch._dynamo.utils import compilation_time_metrics
    except ImportError:
        return 0.0
    return float(sum(compilation_time_metrics.get("_compile.compile_inner", [])))  # the outermost compile step


class CompileWatch:
    """Around a run with compile on: when the run's shapes are new to the compiled modules, its "denoising"
    phase is announced as "compiling" (the first UNet call compiles); afterwards, a note says how long
    compiling took."""

    def __init__(self, options: ComputeOptions, seen: set, key: tuple, on_phase=None):
        self.active = options.compile_backend is not None
        self.new = self.active and key not in seen
        self.seen, self.key, self._on_phase = seen, key, on_phase
        self.seconds = 0.0

    def on_phase(self, name: str) -> None:
        if self._on_phase is not None:
            self._on_phase("compiling" if self.new and name == "denoising" else name)

    def __enter__(self):
        self._c0 = compile_seconds()
        return self

    def __exit__(self, exc_type, *exc):
        if self.active and exc_type is None:
            self.seconds = compile_seconds() - self._c0
            self.seen.add(self.key)

    def note(self) -> str | None:
        if not self.active or self.seconds < 0.05:
            return None
        return (f"torch.compile compiled the UNet and VAE decoder for this run's shapes in {self.seconds:.1f} s "
                "(counted in its denoise and decode times); later runs with these shapes reuse it")


class PinnedOffload:
    """Model CPU offload (diffusers' `enable_model_cpu_offload`) over page-locked host copies of the weights.

    The weights never change, so offloading a module needs no copy: its parameters and buffers are pointed back
    at their pinned host copies and the GPU copies are freed; loading copies them from pinned memory (full bus
    speed, where ordinary pageable memory goes through a staging buffer). Installed on the pipeline instance,
    because diffusers calls `enable_model_cpu_offload` again after every run (`maybe_free_model_hooks`)."""

    def __init__(self, pipe, pin: bool = True):
        self.pipe = pipe
        self.modules = [m for m in (getattr(pipe, n, None) for n in pipe.model_cpu_offload_seq.split("->"))
                        if isinstance(m, torch.nn.Module)]
        self.slots = {id(m): _host_slots(m, pin) for m in self.modules}
        for m in self.modules:
            self.offload(m)
        self._enable = type(pipe).enable_model_cpu_offload.__get__(pipe)
        pipe.enable_model_cpu_offload = self.enable

    def offload(self, module):
        for owner, kind, key, host in self.slots.get(id(module), ()):
            if kind == "parameter":
                owner._parameters[key].data = host
            else:
                owner._buffers[key] = host
        return module

    def enable(self, *args, **kwargs):
        for m in self.modules:
            self.offload(m)  # diffusers' own `.to("cpu")` then finds everything on the host: no copy
        self._enable(*args, **kwargs)
        for user_hook in self.pipe._all_hooks:  # UserCpuOffloadHook.offload() calls hook.init_hook(model)
            user_hook.hook.init_hook = self.offload

    def remove(self) -> None:
        self.pipe.__dict__.pop("enable_model_cpu_offload", None)


def _host_slots(module: torch.nn.Module, pin: bool = True) -> list[tuple]:
    """(owner, "parameter" | "buffer", name, host tensor) for every parameter and buffer of `module`, moved to
    the host and, with `pin`, into page-locked memory."""
    slots = []
    for owner in module.modules():
        for kind, table in (("parameter", owner._parameters), ("buffer", owner._buffers)):
            for key, t in table.items():
                if t is None:
                    continue
                host = t.data.to("cpu")
                if pin and not host.is_pinned():
                    host = host.pin_memory()
                slots.append((owner, kind, key, host))
    return slots


def pinning_fits(pipe, share: float = 0.5) -> bool:
    """Page-locked memory cannot be swapped out: pin the offloaded weights only while they take at most `share`
    of the host's physical memory, and only where there is a CUDA device to copy them to."""
    if not torch.cuda.is_available():
        return False
    import os

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return False
    weights = sum(t.numel() * t.element_size() for m in pipe.components.values() if isinstance(m, torch.nn.Module)
                  for t in [*m.parameters(), *m.buffers()])
    return weights <= share * total
