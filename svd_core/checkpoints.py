"""What a checkpoint is: file checks, layout and variant detection, the variant registry, the `checkpoints/` listing.

Everything here reads file headers only (safetensors header, key names, shapes): never tensor data, never pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
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
    repo_id: str = ""  # Hugging Face Hub repository of the release ("" for the tiny demo)
    filename: str = ""  # the release's file in that repository
    min_side: int = 256  # smallest output side in pixels worth sampling
    family: str = "svd"  # "svd", or "sv3d_u" / "sv3d_p" (Stability's SV3D: orbit views, camera conditioning)

    @property
    def is_sv3d(self) -> bool:
        return self.family != "svd"

    @property
    def untrained(self) -> bool:
        """The tiny demo models: random weights, so their videos are noise and their metrics meaningless."""
        return self.name.startswith("tiny")

    def warnings(self, params) -> list[tuple[str, str]]:
        """(knob, line) for every setting of `params` outside what this model was trained on (never blocking)."""
        from .conditioning import knob_warnings

        return knob_warnings(params, self)

    @property
    def unused_knobs(self) -> tuple[str, ...]:
        """SamplingParams fields this model has no input for (they are ignored, and recorded as such)."""
        camera = ("elevations_deg", "azimuths_deg")
        return {"svd": camera, "sv3d_u": ("fps", "motion_bucket_id", *camera),
                "sv3d_p": ("fps", "motion_bucket_id")}[self.family]

    @property
    def num_frames(self) -> int:
        return self.defaults["num_frames"]

    @property
    def url(self) -> str:
        """The release's model page (where its licence is accepted)."""
        return f"https://huggingface.co/{self.repo_id}" if self.repo_id else ""


_SVD_REPO = "stabilityai/stable-video-diffusion-img2vid"
_XT_REPO = "stabilityai/stable-video-diffusion-img2vid-xt"
_XT11_REPO = "stabilityai/stable-video-diffusion-img2vid-xt-1-1"
_SVD = dict(num_frames=14, num_inference_steps=25, min_guidance_scale=1.0, max_guidance_scale=2.5)
_XT = dict(num_frames=25, num_inference_steps=30, min_guidance_scale=1.5, max_guidance_scale=3.0)
# Stability's SV3D scripts (simple_video_sample.py, the demo): 21 frames at 576x576, 50 steps, the triangle guider
# 1.0 -> 2.5, cond_aug 1e-5, decode 14 frames at a time. "pad" on white: SV3D wants the whole object on white.
_SV3D_REPO = "stabilityai/sv3d"
_SV3D = dict(num_frames=21, num_inference_steps=50, width=576, height=576, guider="triangle", min_guidance_scale=1.0,
             max_guidance_scale=2.5, noise_aug_strength=1e-5, decode_chunk_size=14, resize_mode="pad")
_TINY_SV3D = dict(_SV3D, num_frames=6, num_inference_steps=4, width=128, height=128, decode_chunk_size=6)
_REGISTRY = {
    v.name: v
    for v in (
        Variant("svd", "SVD (14 frames)", "video", _SVD, repo_id=_SVD_REPO, filename="svd.safetensors"),
        Variant("svd_image_decoder", "SVD, per-frame decoder (14 frames)", "image", _SVD,
                repo_id=_SVD_REPO, filename="svd_image_decoder.safetensors"),
        Variant("svd_xt", "SVD-XT (25 frames)", "video", _XT, repo_id=_XT_REPO, filename="svd_xt.safetensors"),
        Variant("svd_xt_image_decoder", "SVD-XT, per-frame decoder (25 frames)", "image", _XT,
                repo_id=_XT_REPO, filename="svd_xt_image_decoder.safetensors"),
        Variant("svd_xt_1_1", "SVD-XT 1.1 (25 frames, trained at conditioning fps 7 = Stability's fps_id 6, "
                "motion 127)", "video", dict(_XT, fps=7, motion_bucket_id=127), fixed_conditioning=True,
                repo_id=_XT11_REPO, filename="svd_xt_1_1.safetensors"),
        Variant("tiny", "Tiny demo model (random weights: produces noise)", "video",
                dict(num_frames=6, num_inference_steps=4, width=128, height=128, decode_chunk_size=6), min_side=32),
        Variant("tiny_image_decoder", "Tiny demo model, per-frame decoder (random weights)", "image",
                dict(num_frames=6, num_inference_steps=4, width=128, height=128, decode_chunk_size=6), min_side=32),
        Variant("sv3d_u", "SV3D_u (orbit around an object, 21 frames at 576x576)", "image", _SV3D,
                repo_id=_SV3D_REPO, filename="sv3d_u.safetensors", family="sv3d_u"),
        Variant("sv3d_p", "SV3D_p (orbit along a camera path you set, 21 frames at 576x576)", "image", _SV3D,
                repo_id=_SV3D_REPO, filename="sv3d_p.safetensors", family="sv3d_p"),
        Variant("tiny_sv3d_u", "Tiny SV3D_u demo model (random weights)", "image", _TINY_SV3D, min_side=32,
                family="sv3d_u"),
        Variant("tiny_sv3d_p", "Tiny SV3D_p demo model (random weights)", "image", _TINY_SV3D, min_side=32,
                family="sv3d_p"),
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
    repo_id: str = ""  # set for a pipeline found in the Hugging Face cache

    @property
    def label(self) -> str:
        """What a picker shows: the file name, or the repo id for a Hugging Face cache entry."""
        return f"{self.repo_id} (Hugging Face cache)" if self.repo_id else self.path.name

    @property
    def name(self) -> str:
        """The file or folder name; for a Hugging Face cache snapshot its repo id (the folder is a commit hash)."""
        return self.repo_id or self.path.name

    @property
    def size_gb(self) -> float:
        return self.size_bytes / 1e9


# ------------------------------------------------------------------------------------------- header reading

MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header
# bits per element of each dtype safetensors defines
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
              "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
              "F64": 64, "I64": 64, "U64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file, checked as safetensors checks it (`header_problem`); a pickle or
    zip (torch.save), a truncated file or garbage is refused in one line naming the file. Only a regular file
    is opened (a FIFO would block the reader)."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path.name} is a pickle checkpoint ({path.suffix}), which can run code when loaded and "
                              "is never opened here: use the .safetensors release of the same model")
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"{path.name} is not a regular file (a pipe, device or socket): put the "
                                  ".safetensors file itself in its place")
        size = st.st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            fits = 2 <= n <= min(size - 8, MAX_HEADER_BYTES)
            raw = f.read(n) if fits else b""
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    header = None
    if fits:
        try:
            header = json.loads(raw.decode("utf-8"))  # strict UTF-8, no BOM: as safetensors reads it
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
    if header is None:  # not a safetensors header: say what it is instead
        if _looks_pickled(head):
            raise CheckpointError(f"{path.name} is a pickle/zip (torch.save) file, never opened here: use the "
                                  ".safetensors release of the same model")
        if len(head) < 8:
            raise CheckpointError(f"{path.name} is not a safetensors file (only {size} bytes): re-download it")
        if not fits:
            raise CheckpointError(f"{path.name} is not a safetensors file (bad header length): "
                                  "expected a .safetensors checkpoint")
        raise CheckpointError(f"{path.name} is not a safetensors file (unreadable header): expected a .safetensors "
                              "checkpoint")
    problem = header_problem(header, size - 8 - n)
    if problem:
        raise CheckpointError(f"{path.name} {problem}")
    return header


def _looks_pickled(head: bytes) -> bool:
    """A zip archive (torch.save's format) or a pickle stream (PROTO opcode 0x80, protocol 2 to 5). Asked only
    of a file whose header is not a safetensors header: 0x80 is also the first byte of a valid file whose header
    length is 128 mod 256."""
    return head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))


U64 = 2**64  # safetensors reads sizes, offsets and their products as 64-bit unsigned integers
I64 = 2**63  # torch's sizes are signed 64-bit


def _is_int(v, below: int = U64) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < below


def header_problem(header, data_bytes: int) -> str:
    """What makes `header` not a safetensors header for `data_bytes` bytes of tensor data, by safetensors' own
    rules ('' when it is one): an object of name -> {dtype, shape, data_offsets} plus an optional __metadata__ of
    strings; the tensors' byte ranges in order, back to back, each dtype x shape long, covering the data."""
    bad = "has a malformed safetensors header ({}): the file is damaged or not a checkpoint; download it again"
    if not isinstance(header, dict):
        return bad.format(f"a JSON {type(header).__name__}, not an object of tensors")
    meta = {} if header.get("__metadata__") is None else header["__metadata__"]  # null: no metadata
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        return bad.format("__metadata__ is not a map of strings")
    ranges = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            return bad.format(f"tensor {name} is a {type(info).__name__}")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPE_BITS:
            return bad.format(f"tensor {name} has dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_int(d, I64) for d in shape):
            return bad.format(f"tensor {name} has shape {shape!r}, not a list of sizes")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
                and offsets[0] <= offsets[1]):
            return bad.format(f"tensor {name} has data_offsets {offsets!r}, not [begin, end]")
        count = 1
        for d in shape:
            count *= d
            if count >= U64:
                return bad.format(f"tensor {name} has shape {shape!r}, over 2**64 elements")
        if count * DTYPE_BITS[dtype] != (offsets[1] - offsets[0]) * 8:
            return bad.format(f"tensor {name}: {dtype} {shape} does not fill its {offsets[1] - offsets[0]} bytes")
        ranges.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(ranges):
        if begin != end:
            return bad.format(f"tensor {name} starts at byte {begin}, not {end}")
        end = stop
    if end > data_bytes:
        return (f"is truncated ({_size(data_bytes)} of {_size(end)} of tensor data): the download did not finish; "
                "download it again")
    if end < data_bytes:
        return bad.format(f"{data_bytes - end} bytes after the last tensor")
    return ""


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def shapes_of(header: dict) -> dict[str, list[int]]:
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


# label_emb's input width (the added conditioning vector) names the model: 768 SVD [fps | motion | cond_aug],
# 256 sv3d_u [cond_aug], 1280 sv3d_p [cond_aug | polar | azimuth]; tiny sizes 48 / 16 / 80.
SV3D_ADM = {256: "sv3d_u", 1280: "sv3d_p", 16: "sv3d_u", 80: "sv3d_p"}
SV3D_COND_VAE = "conditioner.embedders.1.encoder."


def detect_layout(keys, name: str = "this file") -> str:
    """'video' or 'image' decoder layout of an SVD or SV3D sgm checkpoint; a clear error naming `name` for any
    other model."""
    keys = set(keys)
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        raise CheckpointError(f"{name} is a Stable Diffusion 1.x checkpoint, not Stable Video Diffusion: "
                              + DOWNLOAD_HINT)
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        raise CheckpointError(f"{name} is a Stable Diffusion 2.x checkpoint, not Stable Video Diffusion: "
                              + DOWNLOAD_HINT)
    if any(k.startswith(("conditioner.embedders.0.transformer.", "conditioner.embedders.1.model.")) for k in keys):
        raise CheckpointError(f"{name} is a Stable Diffusion XL checkpoint, not Stable Video Diffusion: "
                              + DOWNLOAD_HINT)
    if any(k.startswith(("down_blocks.", "encoder.down_blocks.", "vision_model.")) for k in keys):
        raise CheckpointError(f"{name} is one diffusers-format component, not a single-file SVD checkpoint: pass "
                              "the diffusers folder (with model_index.json) or an sgm .safetensors file")
    needed = (UNET + "input_blocks.0.0.weight", CLIP_VISUAL + "proj", FIRST_STAGE + "decoder.conv_in.weight",
              UNET + "input_blocks.1.0.time_stack.in_layers.0.weight", UNET + "label_emb.0.0.weight")
    missing = [k for k in needed if k not in keys]
    if missing:
        raise CheckpointError(f"{name} is not a Stable Video Diffusion checkpoint (no {missing[0]}): "
                              + DOWNLOAD_HINT)
    if FIRST_STAGE + "decoder.conv_out.time_mix_conv.weight" in keys:
        return "video"
    if FIRST_STAGE + "post_quant_conv.weight" in keys or _is_sv3d_layout(keys):
        return "image"  # SV3D decodes with a plain 2D decoder and no post_quant_conv
    raise CheckpointError(f"{name} is an SVD checkpoint without a recognisable first-stage decoder (neither the "
                          "temporal decoder nor post_quant_conv): the file is incomplete; download it again")


def _is_sv3d_layout(keys) -> bool:
    """SV3D's layout: the conditioning VAE under conditioner.embedders.1 (SVD: .3, after the fps and motion
    embedders SV3D does not have)."""
    return any(k.startswith(SV3D_COND_VAE) for k in keys) and not any(
        k.startswith("conditioner.embedders.3.") for k in keys)


def detect_family(shapes: dict, name: str = "this file") -> str:
    """'svd', 'sv3d_u' or 'sv3d_p' from the key layout and label_emb's input width; the file name decides only
    where the width is not one of the known ones."""
    if not _is_sv3d_layout(shapes):
        return "svd"
    width = (shapes.get(UNET + "label_emb.0.0.weight") or [0, 0])[-1]
    if width in SV3D_ADM:
        return SV3D_ADM[width]
    stem = Path(name).stem.lower()
    for family in ("sv3d_u", "sv3d_p"):
        if family in stem:
            return family
    raise CheckpointError(f"{name} has SV3D's layout but a conditioning vector of width {width} (sv3d_u has 256, "
                          "sv3d_p 1280): use Stability's sv3d_u.safetensors or sv3d_p.safetensors")


def _variant_for(path: Path, layout: str, meta: dict, unet_channels: int, family: str = "svd") -> Variant:
    """The file's own metadata, else its released file name, else the architecture's size decides (a name that
    contradicts the file's decoder or family is not believed)."""
    tiny = unet_channels < 320
    v = _REGISTRY.get(meta.get(META_VARIANT) or path.stem.lower().replace("-", "_"))
    if v is not None and v.decoder == layout and v.family == family:
        return v
    if family != "svd":
        return _REGISTRY[f"tiny_{family}" if tiny else family]
    if tiny:
        return _REGISTRY["tiny" if layout == "video" else "tiny_image_decoder"]
    return _REGISTRY["svd" if layout == "video" else "svd_image_decoder"]


def _read_json(path: Path, folder: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{folder} lacks {path.relative_to(folder)}: the diffusers folder is incomplete; "
                              "download it again") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is unreadable: the diffusers folder is damaged; download it again") from None


def _weights_in(folder: Path, component: str, variant: str | None) -> bool:
    stem = "model" if component == "image_encoder" else "diffusion_pytorch_model"
    name = f"{stem}.{variant}.safetensors" if variant else f"{stem}.safetensors"
    return (folder / component / name).is_file()  # a cache snapshot's symlink counts only if its blob is there


COMPONENTS = ("unet", "vae", "image_encoder")


def diffusers_weights_variant(folder, dtype=None) -> str | None:
    """Which weights of a diffusers folder to load: 'fp16' (diffusers' fp16 variant files, half the read) when
    every component has them, unless float32 was asked for and the full-precision files are all there; None
    for the full-precision files."""
    folder = Path(folder)
    fp16 = all(_weights_in(folder, c, "fp16") for c in COMPONENTS)
    full = all(_weights_in(folder, c, None) for c in COMPONENTS)
    wants_float32 = str(dtype).replace("torch.", "") == "float32"
    return "fp16" if fp16 and not (full and wants_float32) else None


def _inspect_folder(path: Path, repo_id: str = "") -> CheckpointInfo:
    """A diffusers StableVideoDiffusionPipeline folder: the variant comes from its configs (the UNet's
    num_frames and width, the VAE's class), never from the folder's name."""
    index = path / "model_index.json"
    if not index.is_file():
        raise CheckpointError(f"{path} is a folder without model_index.json: pass a .safetensors file or a "
                              "diffusers pipeline folder")
    cls = _read_json(index, path).get("_class_name")
    if cls != "StableVideoDiffusionPipeline":
        raise CheckpointError(f"{path} holds a {cls}, not a StableVideoDiffusionPipeline")
    repo_id = repo_id or _cache_repo_id(path)
    unet = _read_json(path / "unet" / "config.json", path)
    vae = _read_json(path / "vae" / "config.json", path)
    decoder = "image" if vae.get("_class_name") == "AutoencoderKL" else "video"
    if (unet.get("block_out_channels") or [320])[0] < 320:
        name = "tiny" if decoder == "video" else "tiny_image_decoder"
    else:
        name = "svd_xt" if unet.get("num_frames", 25) >= 25 else "svd"
        if decoder == "image":
            name += "_image_decoder"
        elif name == "svd_xt" and repo_id == _XT11_REPO:  # 1.1 has the same configs as 1.0: only its repo says
            name = "svd_xt_1_1"
    weights = diffusers_weights_variant(path)
    if weights is None and not all(_weights_in(path, c, None) for c in COMPONENTS):
        raise CheckpointError(f"{path} lacks the weights of a component (unet, vae or image_encoder "
                              "*.safetensors): the diffusers folder is incomplete; download it again")
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    dtype = "float16" if weights == "fp16" else "float32"
    return CheckpointInfo(path, _REGISTRY[name], size, dtype, diffusers_folder=True, repo_id=repo_id)


def _cache_repo_id(path: Path) -> str:
    """The repo id of a Hugging Face cache snapshot (<cache>/models--owner--name/snapshots/<commit>), else ''."""
    repo = path.resolve().parent.parent.name
    if path.resolve().parent.name == "snapshots" and repo.startswith("models--"):
        return repo[len("models--"):].replace("--", "/", 1)
    return ""


def inspect_checkpoint(path) -> CheckpointInfo:
    """Identify a checkpoint from its header (or a diffusers folder from its configs). Reads no weights."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist: " + DOWNLOAD_HINT)
    if path.is_dir():
        return _inspect_folder(path)
    header = read_safetensors_header(path)
    shapes = shapes_of(header)
    layout = detect_layout(shapes, path.name)
    family = detect_family(shapes, path.name)
    meta = header.get("__metadata__") or {}
    dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    dtype = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}.get(max(dtypes), max(dtypes))
    channels = shapes[UNET + "input_blocks.0.0.weight"][0]
    return CheckpointInfo(path, _variant_for(path, layout, meta, channels, family), path.stat().st_size, dtype)


def _is_candidate(p: Path) -> bool:
    return p.suffix.lower() == ".safetensors" or p.suffix.lower() in PICKLE_SUFFIXES or (
        p.is_dir() and (p / "model_index.json").is_file())


def scan_checkpoints(folder=None) -> tuple[list[CheckpointInfo], list[tuple[Path, str]]]:
    """(usable checkpoints, problems) in `folder` (default checkpoints/), sorted by name. A problem is a
    checkpoint-like file that cannot be used (truncated, pickle, another model, SV3D...) with the one-line
    reason, or a partial download left for resume."""
    folder = Path(folder or checkpoint_dir())
    usable: list[CheckpointInfo] = []
    problems: list[tuple[Path, str]] = []
    if not folder.is_dir():
        return usable, problems
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            if p.name.endswith(".incomplete"):
                problems.append((p, _partial_reason(p)))
            continue
        if not _is_candidate(p):
            continue
        try:
            usable.append(inspect_checkpoint(p))
        except CheckpointError as e:
            problems.append((p, str(e)))
    return usable, problems


def _partial_reason(p: Path) -> str:
    # hub.py names partial downloads ".<file>.<sha256 prefix>.incomplete"
    target = p.name[1:].rsplit(".", 2)[0]
    variant = Path(target).stem
    return (f"partial download of {target} ({_size(p.stat().st_size)} so far): run `python -m svd_core download "
            f"{variant}` to finish it, or delete {p.name}")


def list_checkpoints(folder=None) -> list[CheckpointInfo]:
    """Every loadable checkpoint in `folder` (default checkpoints/), sorted by name; `scan_checkpoints` also
    says why the others cannot be used."""
    return scan_checkpoints(folder)[0]


def scan_hf_cache(cache_dir=None) -> tuple[list[CheckpointInfo], list[tuple[Path, str]]]:
    """SVD diffusers pipelines already in the Hugging Face cache (`huggingface_hub.scan_cache_dir`; default the
    user's cache, HF_HUB_CACHE / HF_HOME), newest revision of each repo: (usable, problems). Loaded offline with
    `load_pipeline(info.path)`, the fp16 variant when it is there."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir(cache_dir)
    except (CacheNotFound, OSError):
        return [], []
    usable, problems = [], []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        rev = max(repo.revisions, key=lambda r: r.last_modified)
        snapshot = Path(rev.snapshot_path)
        index = snapshot / "model_index.json"
        if not index.is_file():
            continue
        try:
            if json.loads(index.read_text()).get("_class_name") != "StableVideoDiffusionPipeline":
                continue
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        try:
            usable.append(_inspect_folder(snapshot, repo_id=repo.repo_id))
        except CheckpointError as e:
            problems.append((snapshot, f"{repo.repo_id} in the Hugging Face cache: {e}"))
    return usable, problems


def find_models(folder=None, *, hf_cache=True, cache_dir=None
                ) -> tuple[list[CheckpointInfo], list[tuple[Path, str]]]:
    """Everything the picker can offer: the checkpoint folder's files and folders, then the SVD diffusers
    pipelines of the Hugging Face cache; with the problems of both."""
    usable, problems = scan_checkpoints(folder)
    if hf_cache:
        more, bad = scan_hf_cache(cache_dir)
        usable += more
        problems += bad
    return usable, problems


def resolve_checkpoint(arg=None, *, folder=None, cache_dir=None) -> Path:
    """What `--checkpoint` names: a path as it is; else the repo id of an SVD pipeline in the Hugging Face cache
    (e.g. stabilityai/stable-video-diffusion-img2vid-xt) -> its snapshot folder; None -> the default of the
    checkpoint folder, else of the cache. Raises CheckpointError when nothing matches."""
    repo_like = arg is not None and re.fullmatch(r"[\w.-]+/[\w.-]+", str(arg)) and Path(str(arg)).suffix.lower() \
        not in PICKLE_SUFFIXES | {".safetensors"}
    if arg is not None and (Path(arg).exists() or not repo_like):
        return Path(arg)
    cached = scan_hf_cache(cache_dir)[0]
    if arg is not None:
        match = next((c for c in cached if c.repo_id == str(arg)), None)
        if match is None:
            raise CheckpointError(f"{arg} is neither a file nor an SVD pipeline in the Hugging Face cache: "
                                  + DOWNLOAD_HINT)
        return match.path
    found = default_checkpoint(list_checkpoints(folder)) or default_checkpoint(cached)
    if found is None:
        raise CheckpointError("no checkpoint in checkpoints/ or the Hugging Face cache: " + DOWNLOAD_HINT
                              + ", or run `python -m svd_core download svd_xt`, or make the demo model with "
                              "`python -m svd_core make-tiny checkpoints/tiny.safetensors`")
    return found.path


def default_checkpoint(found: list[CheckpointInfo]) -> CheckpointInfo | None:
    """The one to open when nobody chose: SVD-XT if it is there, else the first."""
    return next((c for c in found if c.variant.name == "svd_xt"), found[0] if found else None)


_SHA_CACHE: dict[tuple, str] = {}
_SHA_LOCK = threading.Lock()  # a second caller waits for the hash in progress instead of hashing again


def cache_dir() -> Path:
    """The studio's own cache folder: $SVD_STUDIO_CACHE, else $XDG_CACHE_HOME/svd-studio, else
    ~/.cache/svd-studio. Nothing is ever written beside a checkpoint (its folder may be shared or read-only)."""
    if os.environ.get("SVD_STUDIO_CACHE"):
        return Path(os.environ["SVD_STUDIO_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "svd-studio"


def file_sha256(path) -> str:
    """sha256 of a checkpoint, cached in memory and in the studio's cache folder (`cache_dir`), keyed by the
    file's absolute path, size and mtime."""
    path = Path(path)
    if path.is_dir():
        return ""
    with _SHA_LOCK:
        return _file_sha256(path)


def _file_sha256(path: Path) -> str:
    st = path.stat()
    where = str(path.resolve())
    key = (where, st.st_size, st.st_mtime_ns)
    if key in _SHA_CACHE:
        return _SHA_CACHE[key]
    try:
        cached = json.loads(_sha_entry(where).read_text())
        if [cached["path"], cached["size"], cached["mtime_ns"]] == list(key) and re.fullmatch(
                r"[0-9a-f]{64}", cached["sha256"]):
            _SHA_CACHE[key] = cached["sha256"]
            return cached["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    digest = h.hexdigest()
    remember_sha256(path, digest, st)
    return digest


def _sha_entry(where: str) -> Path:
    return cache_dir() / "sha256" / (hashlib.sha256(where.encode()).hexdigest()[:32] + ".json")


def remember_sha256(path, digest: str, st=None) -> None:
    """Put a known sha256 of `path` (e.g. checked while downloading) in the cache `file_sha256` reads. A cache
    that cannot be written only costs a later process a rehash."""
    path = Path(path)
    st = st or path.stat()
    where = str(path.resolve())
    _SHA_CACHE[(where, st.st_size, st.st_mtime_ns)] = digest
    entry = _sha_entry(where)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"path": where, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                   "sha256": digest}))
        os.replace(tmp, entry)
    except OSError:
        pass
