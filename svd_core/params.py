"""SamplingParams: every knob of one run, with diffusers' argument names, validated in one place."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .checkpoints import Variant, get_variant

RESIZE_MODES = ("crop", "pad", "stretch")

# field -> (min, max, help). The single source for validation, CLI help and the app's sliders.
RANGES: dict[str, tuple[float, float, str]] = {
    "num_frames": (2, 64, "frames to generate; SVD was trained on 14, SVD-XT on 25"),
    "num_inference_steps": (1, 200, "denoising steps; more is slower and smoother"),
    "min_guidance_scale": (0.0, 20.0, "classifier-free guidance on the first frame"),
    "max_guidance_scale": (0.0, 20.0, "guidance on the last frame (it ramps linearly across frames)"),
    "fps": (1, 240, "the frame rate the model is told to produce: lower means larger changes between frames"),
    "motion_bucket_id": (0, 1023, "how much motion to ask for: higher moves more"),
    "noise_aug_strength": (0.0, 10.0, "noise added to the conditioning image: more gives more motion and less "
                                     "likeness to the image"),
    "decode_chunk_size": (1, 64, "frames decoded at once: lower saves memory; it also changes the result, since "
                                 "the temporal decoder mixes frames within a chunk"),
    "seed": (0, 2**53 - 1, "random seed: the same seed and settings give the same video"),  # JS-safe
    "width": (64, 2048, "output width in pixels"),
    "height": (64, 2048, "output height in pixels"),
    "output_fps": (1, 60, "frame rate of the exported video (default: the conditioning fps)"),
}


@dataclass(frozen=True)
class SamplingParams:
    num_frames: int = 14
    num_inference_steps: int = 25
    min_guidance_scale: float = 1.0
    max_guidance_scale: float = 2.5
    fps: int = 7
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    decode_chunk_size: int = 14
    seed: int = 23
    width: int = 1024
    height: int = 576
    output_fps: int | None = None
    resize_mode: str = "crop"

    def __post_init__(self):
        for name, (lo, hi, _) in RANGES.items():
            value = getattr(self, name)
            if name == "output_fps" and value is None:
                continue
            integer = isinstance(lo, int)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and value != int(value)):
                kind = "an integer" if integer else "a number"
                raise ValueError(f"{name} must be {kind} between {lo} and {hi}, got {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")
            object.__setattr__(self, name, int(value) if integer else float(value))
        if self.decode_chunk_size > self.num_frames:
            raise ValueError(f"decode_chunk_size must be between 1 and num_frames ({self.num_frames}), "
                             f"got {self.decode_chunk_size}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got {self.resize_mode!r}")

    @property
    def video_fps(self) -> int:
        return self.output_fps or self.fps

    def replace(self, **changes) -> SamplingParams:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SamplingParams:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return cls(**data)

    @classmethod
    def for_variant(cls, variant: Variant | str, **overrides) -> SamplingParams:
        """Stability's defaults for a checkpoint variant, then `overrides`. Unless given, decode_chunk_size is
        Stability's 14 capped at num_frames."""
        v = get_variant(variant) if isinstance(variant, str) else variant
        values = {**v.defaults, **overrides}
        if "decode_chunk_size" not in overrides:
            values["decode_chunk_size"] = min(values.get("decode_chunk_size", 14), values.get("num_frames", 14))
        return cls.from_dict(values)


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(SamplingParams)]
