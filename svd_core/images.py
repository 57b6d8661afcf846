"""Conditioning image preparation: decode safely, orient, convert to RGB, resize to a size the model takes.

`prepare_image` is cheap and deterministic, so the app previews exactly what the sampler will see.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .params import RESIZE_MODES

# The only decoders a user's image reaches (Pillow's format names): each decodes in-process. Pillow would otherwise
# pick a decoder from the content, whatever the name, and some (EPS) run an external program on it.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
MAX_PIXELS = 50_000_000  # larger images are refused before decoding (decompression bombs)
MIN_INPUT_SIDE = 16


@dataclass(frozen=True)
class ImageSpec:
    """What a model needs of its input size: sides a multiple of `multiple` and at least `min_side`."""

    multiple: int = 64
    min_side: int = 256
    pad_color: tuple[int, int, int] = (0, 0, 0)  # "pad" fills with this: SV3D wants its object on white


@dataclass(frozen=True)
class PreparedImage:
    image: Image.Image  # RGB, exactly width x height
    original_size: tuple[int, int]
    notes: tuple[str, ...] = field(default_factory=tuple)
    background_removed: bool = False  # prepare_image(remove_bg=True)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def snap_size(width: int, height: int, spec: ImageSpec) -> tuple[int, int]:
    """Round each side down to the model's multiple (at least one multiple)."""
    return tuple(max(spec.multiple, s // spec.multiple * spec.multiple) for s in (width, height))


def decode_image(source) -> Image.Image:
    """Decode `source` (path, bytes or file-like) with the studio's decoders only (IMAGE_FORMATS: anything else
    is refused before any decoder runs) and the pixel limit; ImageError naming the file for anything unusable."""
    name = Path(source).name if isinstance(source, (str, Path)) else "the image"
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    elif isinstance(source, (str, Path)) and not Path(source).is_file():
        raise ImageError(f"image {source} does not exist: pass a png, jpg or webp file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source, formats=IMAGE_FORMATS)
            if img.width * img.height > MAX_PIXELS:
                raise ImageError(f"{name} is {img.width}x{img.height} ({img.width * img.height / 1e6:.0f} MP), "
                                 f"over the {MAX_PIXELS / 1e6:.0f} MP limit: downscale it first")
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name} has too many pixels (over the {MAX_PIXELS / 1e6:.0f} MP limit; possibly a "
                         "decompression bomb): downscale it first") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not a readable image (the studio reads JPEG, PNG, WebP, BMP, GIF and TIFF "
                         "only): use a png, jpg or webp") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{name} is broken or truncated ({e}): re-export it as png or jpg") from None
    return img


def open_image(source) -> tuple[Image.Image, list[str]]:
    """Decode `source` (path, bytes, file-like or PIL image) to one RGB frame; ImageError for anything unusable."""
    notes: list[str] = []
    img = source if isinstance(source, Image.Image) else decode_image(source)
    n = getattr(img, "n_frames", 1)
    if n > 1:
        img.seek(0)
        notes.append(f"animated image: using its first frame of {n}")
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF must not lose the image
        notes.append("could not read EXIF orientation; using the image as stored")
    if min(img.size) < MIN_INPUT_SIDE:
        raise ImageError(f"image is {img.width}x{img.height}, too small to condition on: use one at least "
                         f"{MIN_INPUT_SIDE} px on each side (ideally 1024x576)")
    return to_rgb(img), notes


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode to RGB: transparency on white, 16-bit and float scaled to 8-bit, CMYK/palette/grey converted."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = (0.0, 65535.0) if img.mode.startswith("I;16") or a.max() > 255 else (0.0, 255.0)
        if img.mode == "F":
            lo, hi = float(a.min()), float(a.max()) or 1.0
        a = np.clip((a - lo) / max(hi - lo, 1e-12) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(a, "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def fit_to(img: Image.Image, width: int, height: int, mode: str, pad_color=(0, 0, 0)) -> Image.Image:
    if mode == "crop":
        return ImageOps.fit(img, (width, height), Image.Resampling.LANCZOS)
    if mode == "pad":
        return ImageOps.pad(img, (width, height), Image.Resampling.LANCZOS, color=tuple(pad_color))
    if mode == "stretch":
        return img.resize((width, height), Image.Resampling.LANCZOS)
    raise ValueError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")


REMBG_MODEL = "u2net"


def _rembg_model_file() -> Path:
    import os

    return Path(os.environ.get("U2NET_HOME") or Path.home() / ".u2net") / f"{REMBG_MODEL}.onnx"


def background_removal_available() -> bool:
    """True when `rembg` is installed AND its model's weights are already on disk: removing a background never
    downloads anything (rembg would fetch ~170 MB on first use)."""
    import importlib.util

    return importlib.util.find_spec("rembg") is not None and _rembg_model_file().is_file()


def remove_background(img: Image.Image) -> Image.Image:
    """The object on white, its background removed with rembg (optional; see background_removal_available)."""
    if not background_removal_available():
        raise ImageError(f"background removal needs the optional `rembg` package and its {REMBG_MODEL} weights in "
                         f"{_rembg_model_file().parent}: install rembg and fetch them once, or give an image with "
                         "transparency (it goes on white)")
    from rembg import new_session, remove

    cut = remove(img.convert("RGB"), session=new_session(REMBG_MODEL))
    return to_rgb(cut)


def prepare_image(source, width: int, height: int, resize_mode: str = "crop", spec: ImageSpec = ImageSpec(),
                  remove_bg: bool = False) -> PreparedImage:
    """The RGB image the sampler conditions on, at the model-compatible size nearest below width x height.
    `remove_bg`: cut the object out onto white first (rembg, optional)."""
    img, notes = open_image(source)
    if remove_bg:
        img = remove_background(img)
        notes.append(f"background removed with rembg ({REMBG_MODEL}); the object is on white")
    w, h = snap_size(width, height, spec)
    if (w, h) != (width, height):
        notes.append(f"size {width}x{height} snapped to {w}x{h} (sides must be multiples of {spec.multiple})")
    if min(w, h) < spec.min_side:
        raise ImageError(f"output size {w}x{h} is below this model's minimum side of {spec.min_side} px: "
                         "raise width/height")
    scale = max(w / img.width, h / img.height) if resize_mode != "pad" else min(w / img.width, h / img.height)
    if scale > 1.0:
        notes.append(f"the {img.width}x{img.height} image is upscaled {scale:.1f}x to {w}x{h}: expect softness")
    return PreparedImage(fit_to(img, w, h, resize_mode, spec.pad_color), (img.width, img.height), tuple(notes),
                         bool(remove_bg))


def image_sha256(image) -> str:
    """sha256 of an image's pixels (PIL or array) with its shape: the same sampled image, the same hash."""
    a = np.ascontiguousarray(np.asarray(image))
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()
