"""What a checkpoint is: file checks, layout and variant detection, the variant registry, the `checkpoints/` listing.

Everything here reads file headers only (safetensors header, key names, shapes): never tensor data, never pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .convert import CLIP_VISUAL, FIRST_STAGE, UNET
from .errors import CheckpointError

ROOT = Path(__file__).resolve().parent.parent


def checkpoint_dir() -> Path:
    """checkpoints/ beside the package, or $SVD_CHECKPOINT_DIR."""
    return Path(os.environ.get("SVD_CHECKPOINT_DIR") or ROOT / "checkpoints")
DOWNLOAD_HINT = "get svd_xt.safetensors from https://huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt " \
                "and put it in checkpoints/ (see checkpoints/README.md)"
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"}
META_VARIANT = "svd_studio.variant"


@dataclass(frozen=True)
class Variant:
    """One released checkpoint (or the tiny demo) and the sampling defaults Stability's scripts use for it."""

    name: str
    title: str
    decoder: str  # "video" (temporal VAE decoder) or "image" (per-frame decoder)
    defaults: dict = field(default_factory=dict)  # SamplingParams overrides
    fixed_conditioning: bool = False  # trained at one fps / motion_bucket_id only (SVD-XT 1.1)
    url: str = ""
    min_side: int = 256  # smallest output side in pixels worth sampling

    @property
    def num_frames(self) -> int:
        return self.defaults["num_frames"]


_HF = "https://huggingface.co/stabilityai/"
_SVD = dict(num_frames=14, num_inference_steps=25, min_guidance_scale=1.0, max_guidance_scale=2.5)
_XT = dict(num_frames=25, num_inference_steps=30, min_guidance_scale=1.5, max_guidance_scale=3.0)
_REGISTRY = {
    v.name: v
    for v in (
        Variant("svd", "SVD (14 frames)", "video", _SVD, url=_HF + "stable-video-diffusion-img2vid"),
        Variant("svd_image_decoder", "SVD, per-frame decoder (14 frames)", "image", _SVD,
                url=_HF + "stable-video-diffusion-img2vid"),
        Variant("svd_xt", "SVD-XT (25 frames)", "video", _XT, url=_HF + "stable-video-diffusion-img2vid-xt"),
        Variant("svd_xt_image_decoder", "SVD-XT, per-frame decoder (25 frames)", "image", _XT,
                url=_HF + "stable-video-diffusion-img2vid-xt"),
        Variant("svd_xt_1_1", "SVD-XT 1.1 (25 frames, fixed fps 6 / motion 127)", "video",
                dict(_XT, fps=7, motion_bucket_id=127), fixed_conditioning=True,
                url=_HF + "stable-video-diffusion-img2vid-xt-1-1"),
        Variant("tiny", "Tiny demo model (random weights: produces noise)", "video",
                dict(num_frames=6, num_inference_steps=4, width=128, height=128, decode_chunk_size=6), min_side=32),
        Variant("tiny_image_decoder", "Tiny demo model, per-frame decoder (random weights)", "image",
                dict(num_frames=6, num_inference_steps=4, width=128, height=128, decode_chunk_size=6), min_side=32),
    )
}


def list_variants() -> list[str]:
    return list(_REGISTRY)


def get_variant(name: str) -> Variant:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; valid variants: {', '.join(_REGISTRY)}") from None


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    variant: Variant
    size_bytes: int
    dtype: str  # dtype of the weights in the file ("float32", "float16", ...)
    diffusers_folder: bool = False

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def size_gb(self) -> float:
        return self.size_bytes / 1e9


# ------------------------------------------------------------------------------------------- header reading

def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file, after checks that catch pickles, truncation and garbage."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path.name} is a pickle checkpoint ({path.suffix}), which can run code when loaded and "
                              "is never opened here: use the .safetensors release of the same model")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if head[:2] == b"PK" or head[:1] == b"\x80":
                raise CheckpointError(f"{path.name} is a pickle/zip (torch.save) file, never opened here: use the "
                                      ".safetensors release of the same model")
            if len(head) < 8:
                raise CheckpointError(f"{path.name} is not a safetensors file (only {size} bytes): re-download it")
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > min(size - 8, 200_000_000):
                raise CheckpointError(f"{path.name} is not a safetensors file (bad header length): "
                                      "expected a .safetensors checkpoint")
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path.name} is not a safetensors file (unreadable header): expected a .safetensors "
                              "checkpoint") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise CheckpointError(f"{path.name} is truncated ({_size(size)} of {_size(8 + n + end)}): the download "
                              "did not finish; download it again")
    return header


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def shapes_of(header: dict) -> dict[str, list[int]]:
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def detect_layout(keys) -> str:
    """'video' or 'image' decoder layout of an SVD sgm checkpoint; a clear error for any other model."""
    keys = set(keys)
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        raise CheckpointError("this is a Stable Diffusion 1.x checkpoint, not Stable Video Diffusion: " + DOWNLOAD_HINT)
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        raise CheckpointError("this is a Stable Diffusion 2.x checkpoint, not Stable Video Diffusion: " + DOWNLOAD_HINT)
    if any(k.startswith(("conditioner.embedders.0.transformer.", "conditioner.embedders.1.model.")) for k in keys):
        raise CheckpointError("this is a Stable Diffusion XL checkpoint, not Stable Video Diffusion: " + DOWNLOAD_HINT)
    if any(k.startswith(("down_blocks.", "encoder.down_blocks.", "vision_model.")) for k in keys):
        raise CheckpointError("this is one diffusers-format component, not a single-file SVD checkpoint: pass the "
                              "diffusers folder (with model_index.json) or an sgm .safetensors file")
    needed = (UNET + "input_blocks.0.0.weight", CLIP_VISUAL + "proj", FIRST_STAGE + "decoder.conv_in.weight",
              UNET + "input_blocks.1.0.time_stack.in_layers.0.weight")
    missing = [k for k in needed if k not in keys]
    if missing:
        raise CheckpointError(f"not a Stable Video Diffusion checkpoint (no {missing[0]}): " + DOWNLOAD_HINT)
    if FIRST_STAGE + "decoder.conv_out.time_mix_conv.weight" in keys:
        return "video"
    if FIRST_STAGE + "post_quant_conv.weight" in keys:
        return "image"
    raise CheckpointError("SVD checkpoint without a recognisable first-stage decoder (neither the temporal "
                          "decoder nor post_quant_conv): the file is incomplete; download it again")


def _variant_for(path: Path, layout: str, meta: dict, unet_channels: int) -> Variant:
    """The file's own metadata, else its released file name, else the architecture's size decides."""
    v = _REGISTRY.get(meta.get(META_VARIANT) or path.stem.lower().replace("-", "_"))
    if v is not None and v.decoder == layout:
        return v
    if unet_channels < 320:
        return _REGISTRY["tiny" if layout == "video" else "tiny_image_decoder"]
    return _REGISTRY["svd" if layout == "video" else "svd_image_decoder"]


def inspect_checkpoint(path) -> CheckpointInfo:
    """Identify a checkpoint from its header (or a diffusers folder from model_index.json). Reads no weights."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist: " + DOWNLOAD_HINT)
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise CheckpointError(f"{path} is a folder without model_index.json: pass a .safetensors file or a "
                                  "diffusers pipeline folder")
        try:
            cls = json.loads(index.read_text()).get("_class_name")
        except (OSError, json.JSONDecodeError):
            raise CheckpointError(f"{index} is unreadable: re-download the diffusers folder") from None
        if cls != "StableVideoDiffusionPipeline":
            raise CheckpointError(f"{path} holds a {cls}, not a StableVideoDiffusionPipeline")
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        decoder = "video"
        vae_cfg = path / "vae" / "config.json"
        if vae_cfg.is_file() and json.loads(vae_cfg.read_text()).get("_class_name") == "AutoencoderKL":
            decoder = "image"
        variant = _variant_for(path, decoder, {}, 320)
        return CheckpointInfo(path, variant, size, "diffusers", diffusers_folder=True)
    header = read_safetensors_header(path)
    shapes = shapes_of(header)
    layout = detect_layout(shapes)
    meta = header.get("__metadata__") or {}
    dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    dtype = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}.get(max(dtypes), max(dtypes))
    channels = shapes[UNET + "input_blocks.0.0.weight"][0]
    return CheckpointInfo(path, _variant_for(path, layout, meta, channels), path.stat().st_size, dtype)


def list_checkpoints(folder=None) -> list[CheckpointInfo]:
    """Every loadable checkpoint in `folder` (default checkpoints/), sorted by name. Files that are not SVD
    checkpoints are skipped; use `inspect_checkpoint` to see why one is."""
    folder = Path(folder or checkpoint_dir())
    found = []
    if not folder.is_dir():
        return found
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not (p.suffix == ".safetensors" or (p / "model_index.json").is_file()):
            continue
        try:
            found.append(inspect_checkpoint(p))
        except CheckpointError:
            continue
    return found


def default_checkpoint(found: list[CheckpointInfo]) -> CheckpointInfo | None:
    """The one to open when nobody chose: SVD-XT if it is there, else the first."""
    return next((c for c in found if c.variant.name == "svd_xt"), found[0] if found else None)


_SHA_CACHE: dict[tuple, str] = {}
_SHA_LOCK = threading.Lock()  # a second caller waits for the hash in progress instead of hashing again


def file_sha256(path) -> str:
    """sha256 of a checkpoint, cached in memory and in a `.sha256` file beside it (keyed by size and mtime)."""
    path = Path(path)
    if path.is_dir():
        return ""
    with _SHA_LOCK:
        return _file_sha256(path)


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _SHA_CACHE:
        return _SHA_CACHE[key]
    side = path.with_name(path.name + ".sha256")
    try:
        digest, size, mtime = side.read_text().split()
        if int(size) == st.st_size and int(mtime) == st.st_mtime_ns:
            _SHA_CACHE[key] = digest
            return digest
    except (OSError, ValueError):
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    digest = h.hexdigest()
    _SHA_CACHE[key] = digest
    try:
        side.write_text(f"{digest} {st.st_size} {st.st_mtime_ns}\n")
    except OSError:
        pass
    return digest
