"""SamplingParams: every knob of one run, with diffusers' argument names, validated in one place."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from .checkpoints import Variant, get_variant

RESIZE_MODES = ("crop", "pad", "stretch")

# field -> (min, max, help). The single source for validation, CLI help and the app's sliders.
RANGES: dict[str, tuple[float, float, str]] = {
    "num_frames": (2, 64, "frames to generate; SVD was trained on 14, SVD-XT on 25"),
    "num_inference_steps": (1, 200, "denoising steps; more is slower and smoother"),
    "min_guidance_scale": (0.0, 20.0, "classifier-free guidance on the first frame (linear guider), at the "
                                        "triangle's troughs, or where the trapezoid's ramps start"),
    "max_guidance_scale": (0.0, 20.0, "guidance on the last frame (linear guider), at the triangle's peaks, where "
                                        "the trapezoid's ramps end, or on every frame (vanilla)"),
    "fps": (1, 240, "the frame rate the model is told to produce: lower means larger changes between frames"),
    "motion_bucket_id": (0, 1023, "how much motion to ask for: higher moves more"),
    "noise_aug_strength": (0.0, 10.0, "noise added to the conditioning image: more gives more motion and less "
                                     "likeness to the image"),
    "decode_chunk_size": (1, 64, "frames decoded at once (at most all of them): lower saves memory; it also "
                                 "changes the result, since the temporal decoder mixes frames within a chunk"),
    "seed": (0, 2**53 - 1, "random seed: the same seed and settings give the same video"),  # JS-safe
    "width": (64, 2048, "output width in pixels"),
    "height": (64, 2048, "output height in pixels"),
    "output_fps": (1, 60, "frame rate of the exported video (default: the conditioning fps)"),
    # Stability's sampling panel (sgm's sampler, discretization and guider arguments)
    "sigma_min": (0.0001, 100.0, "EDM discretization: the last (smallest) noise level"),
    "sigma_max": (0.01, 10000.0, "EDM discretization: the first (largest) noise level"),
    "rho": (0.5, 30.0, "EDM discretization: how steps crowd towards sigma_min (higher crowds more)"),
    "s_churn": (0.0, 100.0, "Euler/Heun: noise re-added each step (0 = deterministic)"),
    "s_tmin": (0.0, 10000.0, "Euler/Heun: churn only at noise levels from s_tmin ..."),
    "s_tmax": (0.0, 10000.0, "Euler/Heun: ... up to s_tmax"),
    "s_noise": (0.0, 2.0, "scale of the noise re-added by churn or by the ancestral samplers"),
    "eta": (0.0, 2.0, "ancestral samplers: share of each step's noise drawn afresh (0 = deterministic)"),
    "lms_order": (1, 4, "linear multistep: how many past steps each step uses"),
    "num_videos": (1, 16, "videos per run, with seeds seed, seed+1, ...: each one reproducible alone"),
    "edge_perc": (0.0, 0.5, "trapezoid guider: share of the frames at each end, int(frames x edge_perc), whose "
                            "scale rises from min to max (falls at the end); the frames between get 1"),
}

# SV3D_p's camera, one value per frame (field -> (min, max, help)): lists, so not in RANGES' sliders.
ANGLES: dict[str, tuple[float, float, str]] = {
    "elevations_deg": (-90.0, 90.0, "SV3D_p camera elevation in degrees (polar = 90 - elevation): one value for "
                                    "every frame, or one per frame"),
    "azimuths_deg": (-360.0, 360.0, "SV3D_p camera azimuth in degrees, one per frame (unset: Stability's orbit, "
                                    "the last frame at 0, the input view)"),
}

# The guiders' lists (field -> (min, max, help)): a list each, so not in RANGES' sliders either.
GUIDER_LISTS: dict[str, tuple[float, float, str]] = {
    "period": (0.01, 100.0, "triangle guider: the wave's period(s) in clip lengths (1: min at both ends, max "
                            "mid-clip); several are fused by period_fusing"),
    "guidance_scales": (0.0, 20.0, "custom guider: one guidance scale per frame"),
}
MAX_PERIODS = 8
# field -> the app's label: one word for each knob on every page (Generate, Compare, History, charts). The API
# name (the field, diffusers' argument) goes in the help text (`help_text`); the CLI speaks in flags (--field-name).
LABELS: dict[str, str] = {
    "num_frames": "Frames", "num_inference_steps": "Steps", "min_guidance_scale": "Min guidance",
    "max_guidance_scale": "Max guidance", "fps": "Conditioning fps", "motion_bucket_id": "Motion bucket",
    "noise_aug_strength": "Noise augmentation", "decode_chunk_size": "Decode chunk size", "seed": "Seed",
    "width": "Width", "height": "Height", "output_fps": "Playback fps", "resize_mode": "Resize mode",
    "sampler": "Sampler", "discretization": "Discretization", "guider": "Guider",
    "sigma_min": "Smallest noise level", "sigma_max": "Largest noise level", "rho": "Step crowding (rho)",
    "s_churn": "Churn", "s_tmin": "Churn from noise level", "s_tmax": "Churn up to noise level",
    "s_noise": "Churn noise scale", "eta": "Fresh noise share (eta)", "lms_order": "Multistep order",
    "num_videos": "Videos per run", "elevations_deg": "Elevation", "azimuths_deg": "Azimuth",
    "edge_perc": "Ramp share (edge_perc)", "period": "Triangle period", "period_fusing": "Period fusing",
    "guidance_scales": "Guidance per frame",
}
# the measurements, as run.json / metrics.csv name them -> the app's label with its unit
METRIC_LABELS: dict[str, str] = {
    "motion.score": "Motion score (SVD paper units)", "motion.flow_px_per_frame": "Flow (px/frame)",
    "flicker.mean": "Flicker", "likeness.mean": "Likeness (CLIP cosine)",
}


def label(name: str) -> str:
    """The app's word for a knob or a measurement (the name itself when it has none)."""
    return LABELS.get(name) or METRIC_LABELS.get(name) or name


def help_text(name: str, extra: str = "") -> str:
    """A knob's help in the app: what it does (RANGES / CHOICES / ANGLES / GUIDER_LISTS), `extra`, then its API
    name."""
    text = (RANGES.get(name) or ANGLES.get(name) or GUIDER_LISTS.get(name)
            or (0, 0, CHOICES.get(name, ("", ""))[1]))[2]
    text = text[:1].upper() + text[1:] + ("." if text and not text.endswith(".") else "")
    return " ".join(t for t in (text, extra, f"API name: `{name}`.") if t)


SAMPLERS = ("euler", "heun", "euler_ancestral", "dpmpp_2s_ancestral", "dpmpp_2m", "lms")
DISCRETIZATIONS = ("edm", "legacy_ddpm")
GUIDERS = ("linear", "triangle", "vanilla", "identity", "trapezoid", "custom")
PERIOD_FUSINGS = ("max", "mean", "multiply")

# field -> (valid values, help): the string knobs, for validation, CLI choices and the app's selectors.
CHOICES: dict[str, tuple[tuple[str, ...], str]] = {
    "sampler": (SAMPLERS, "euler: Euler (EDM) · heun: 2nd order, ~2 model calls a step · euler_ancestral: "
                          "Euler with fresh noise each step · dpmpp_2s_ancestral: DPM++ 2S ancestral, ~2 calls a "
                          "step · dpmpp_2m: DPM++ 2M · lms: linear multistep"),
    "discretization": (DISCRETIZATIONS, "noise levels: edm (sigma_min, sigma_max, rho) or legacy_ddpm (Stable "
                                        "Diffusion's 1000-step schedule)"),
    "guider": (GUIDERS, "classifier-free guidance across frames: linear (min on the first frame, max on the last), "
                        "triangle (min at both ends, max mid-clip; other periods and their fusing: period, "
                        "period_fusing), vanilla (max everywhere), identity (none: half the UNet work), trapezoid "
                        "(ramps min to max over edge_perc of the frames at each end, 1 between), custom (any "
                        "per-frame list: guidance_scales)"),
    "period_fusing": (PERIOD_FUSINGS, "triangle guider with several periods: how their waves combine (max, mean "
                                      "or product)"),
    "resize_mode": (RESIZE_MODES, "how the image meets the output aspect"),
}

# The knobs each choice reads; every other knob of this table is ignored by that choice.
KNOBS_OF: dict[str, dict[str, tuple[str, ...]]] = {
    "sampler": {
        "euler": ("s_churn", "s_tmin", "s_tmax", "s_noise"),
        "heun": ("s_churn", "s_tmin", "s_tmax", "s_noise"),
        "euler_ancestral": ("eta", "s_noise"),
        "dpmpp_2s_ancestral": ("eta", "s_noise"),
        "dpmpp_2m": (),
        "lms": ("lms_order",),
    },
    "discretization": {"edm": ("sigma_min", "sigma_max", "rho"), "legacy_ddpm": ()},
    "guider": {
        "linear": ("min_guidance_scale", "max_guidance_scale"),
        "triangle": ("min_guidance_scale", "max_guidance_scale", "period", "period_fusing"),
        "vanilla": ("max_guidance_scale",),
        "identity": (),
        "trapezoid": ("min_guidance_scale", "max_guidance_scale", "edge_perc"),
        "custom": ("guidance_scales",),
    },
}
# The knobs a calibration ("find the bucket") can find a value of, with the coarse values it samples by default:
# inside what SVD was trained on (svd_core.conditioning): buckets to 255, fps_id 5-30, noise aug around 0.02-0.135
CALIBRATION_VALUES = {"motion_bucket_id": (0, 64, 127, 191, 255), "fps": (6, 10, 15, 20, 30),
                      "noise_aug_strength": (0.0, 0.02, 0.05, 0.1, 0.2)}
CHURN_KNOBS = ("s_tmin", "s_tmax", "s_noise")  # Euler/Heun read these only when s_churn > 0


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
    sampler: str = "euler"
    discretization: str = "edm"
    sigma_min: float = 0.002
    sigma_max: float = 700.0
    rho: float = 7.0
    guider: str = "linear"
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = 999.0
    s_noise: float = 1.0
    eta: float = 1.0
    lms_order: int = 4
    num_videos: int = 1
    elevations_deg: tuple[float, ...] | None = None  # sv3d_p only; a number means the same on every frame
    azimuths_deg: tuple[float, ...] | None = None  # sv3d_p only
    edge_perc: float = 0.1  # trapezoid guider (sgm's default)
    period: tuple[float, ...] = (1.0,)  # triangle guider; a number means one period
    period_fusing: str = "max"  # triangle guider (sgm's default)
    guidance_scales: tuple[float, ...] | None = None  # custom guider: one per frame

    def __post_init__(self):
        for name, (lo, hi, _) in RANGES.items():
            value = getattr(self, name)
            if name == "output_fps" and value is None:
                continue
            integer = isinstance(lo, int)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    isinstance(value, float) and not math.isfinite(value)) or (
                    integer and value != int(value)):
                kind = "an integer" if integer else "a number"
                raise ValueError(f"{name} must be {kind} between {lo} and {hi}, got {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")
            object.__setattr__(self, name, int(value) if integer else float(value))
        for name, (valid, _) in CHOICES.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {', '.join(valid)}, got {getattr(self, name)!r}")
        if self.seed + self.num_videos - 1 > RANGES["seed"][1]:
            raise ValueError(f"seed + num_videos - 1 must be at most {RANGES['seed'][1]}, got "
                             f"{self.seed + self.num_videos - 1}")
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min:g}) must be below sigma_max ({self.sigma_max:g})")
        if self.s_tmin > self.s_tmax:
            raise ValueError(f"s_tmin ({self.s_tmin:g}) must not exceed s_tmax ({self.s_tmax:g})")
        f = self.num_frames
        lists = {"elevations_deg": ((1, f), f"one value or one per frame ({f})"),  # name -> (counts, what)
                 "azimuths_deg": ((f,), f"one value per frame ({f})"),
                 "period": (range(1, MAX_PERIODS + 1), f"1 to {MAX_PERIODS} periods"),
                 "guidance_scales": ((f,), f"one scale per frame ({f})")}
        for name, (counts, what) in lists.items():
            if getattr(self, name) is not None or name == "period":
                bounds = (ANGLES.get(name) or GUIDER_LISTS[name])[:2]
                object.__setattr__(self, name, self._float_list(name, bounds, counts, what))
        if self.guider == "custom" and self.guidance_scales is None:
            raise ValueError(f"the custom guider needs guidance_scales: one scale per frame ({self.num_frames})")

    def _float_list(self, name: str, bounds: tuple[float, float], counts, what: str) -> tuple[float, ...]:
        """Field `name` as a tuple of floats: a number or a list of numbers (a string or a bool is neither),
        len(...) in `counts` (`what` says how many), each within `bounds`."""
        value = getattr(self, name)
        try:
            items = [value] if isinstance(value, (int, float)) else list(value)
            if isinstance(value, (str, bytes)) or any(isinstance(v, (bool, str, bytes)) for v in items):
                raise TypeError
            values = tuple(float(v) for v in items)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond any float
            raise ValueError(f"{name} must be a list of numbers, got {value!r}") from None
        if len(values) not in counts:
            raise ValueError(f"{name}: {what}, got {len(values)}")
        lo, hi = bounds
        bad = [v for v in values if not lo <= v <= hi]
        if bad:
            raise ValueError(f"{name} must be between {lo:g} and {hi:g}, got {bad[0]:g}")
        return values

    @property
    def decode_chunk(self) -> int:
        """Frames per decoder call: decode_chunk_size, or every frame when it is larger than the clip (as in
        Stability's scripts and diffusers, which decode min(chunk, frames) at once)."""
        return min(self.decode_chunk_size, self.num_frames)

    @property
    def video_fps(self) -> int:
        return self.output_fps or self.fps

    def applicable(self) -> tuple[str, ...]:
        """knobs_read of this run's sampler, discretization, guider and churn."""
        return knobs_read(self.sampler, self.discretization, self.guider, self.s_churn)

    def inapplicable(self) -> list[str]:
        """The knobs set away from their defaults that this combination ignores (for run.json), e.g.
        ['eta'] for euler with eta=0.5, or ['s_noise'] for euler with s_noise=0.9 but no churn."""
        used = set(self.applicable())
        if len(self.period) == 1:  # one wave: nothing to fuse
            used.discard("period_fusing")
        knobs = {k for table in KNOBS_OF.values() for names in table.values() for k in names}
        defaults = SamplingParams.__dataclass_fields__
        return [k for k in field_names() if k in knobs and k not in used and getattr(self, k) != defaults[k].default]

    def replace(self, **changes) -> SamplingParams:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        for name in (*ANGLES, *GUIDER_LISTS):  # JSON lists
            data[name] = None if data[name] is None else list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> SamplingParams:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return cls(**data)

    @classmethod
    def for_variant(cls, variant: Variant | str, **overrides) -> SamplingParams:
        """Stability's defaults for a checkpoint variant, then `overrides`."""
        v = get_variant(variant) if isinstance(variant, str) else variant
        return cls.from_dict({**v.defaults, **overrides})


def knobs_read(sampler: str, discretization: str, guider: str, s_churn: float | None = None) -> tuple[str, ...]:
    """The knobs of KNOBS_OF that this sampler, discretization and guider read. With `s_churn` given, Euler and
    Heun without churn (0) read none of CHURN_KNOBS."""
    chosen = {"sampler": sampler, "discretization": discretization, "guider": guider}
    for table, name in chosen.items():
        if name not in KNOBS_OF[table]:
            raise ValueError(f"{table} must be one of {', '.join(KNOBS_OF[table])}, got {name!r}")
    knobs = tuple(k for table, name in chosen.items() for k in KNOBS_OF[table][name])
    if sampler in ("euler", "heun") and s_churn is not None and not s_churn:
        knobs = tuple(k for k in knobs if k not in CHURN_KNOBS)
    return knobs


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(SamplingParams)]


MAX_SEEDS = 16  # seeds of one comparison


def parse_seeds(spec, seed: int) -> list[int]:
    """'3' -> [seed, seed+1, seed+2]; '1,5,9' -> [1, 5, 9]."""
    text = str(spec).replace(" ", ",")
    parts = [p for p in text.split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"seeds: give a count (3) or a list (1,5,9), got {spec!r}") from None
    if len(values) == 1:
        if not 1 <= values[0] <= MAX_SEEDS:
            raise ValueError(f"seeds: a count from 1 to {MAX_SEEDS}, got {values[0]}")
        values = [seed + i for i in range(values[0])]
    if len(set(values)) != len(values) or len(values) > MAX_SEEDS:
        raise ValueError(f"seeds: up to {MAX_SEEDS} different seeds, got {spec!r}")
    return values


def parse_values(name: str, text: str) -> list:
    """'3, 7 15' -> [3, 7, 15] for the knob `name`: commas and/or spaces; numbers checked against RANGES (the
    camera's against ANGLES, e.g. elevations_deg=0,10,30: one elevation per cell; the guiders' lists against
    GUIDER_LISTS, e.g. period=0.5,1: one period per cell), string knobs against CHOICES. One place for the CLI's
    --vary and the app's Compare."""
    tokens = [t for t in re.split(r"[,\s;]+", text.strip()) if t]
    if name in CHOICES:
        valid = CHOICES[name][0]
        bad = [t for t in tokens if t not in valid]
        if bad:
            raise ValueError(f"unknown {name} {bad[0]!r}; valid: {', '.join(valid)}")
        return tokens
    bounds = RANGES.get(name) or ANGLES.get(name) or GUIDER_LISTS.get(name)
    if bounds is None:
        raise ValueError(f"unknown parameter {name!r}; valid: {', '.join(field_names())}")
    lo, hi, _ = bounds
    whole = isinstance(lo, int)
    out = []
    for token in tokens:
        try:
            value = float(token)
        except ValueError:
            raise ValueError(f"'{token}' is not a number: type values for {name} separated by commas or spaces") \
                from None
        if whole and value != int(value):
            raise ValueError(f"{name} takes whole numbers: '{token}' is not one")
        if not lo <= value <= hi:
            raise ValueError(f"{name} goes from {lo:g} to {hi:g}: {token} is outside")
        out.append(int(value) if whole else value)
    return out


def format_value(v, digits: int = 6) -> str:
    """A knob's value as people read it: floats to `digits` significant digits as %g (0.1, 1e-05), a
    one-value list as its value, the rest as str."""
    if isinstance(v, (list, tuple)) and len(v) == 1:
        v = v[0]
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def fps_vocabulary(params: SamplingParams) -> dict[str, int]:
    """The three numbers called "fps": conditioning fps (diffusers' and ComfyUI's `fps`), fps_id (= fps - 1, what
    the model sees; Stability's scripts' `fps_id`) and the playback rate of the file we write."""
    return {"conditioning_fps": params.fps, "fps_id": params.fps - 1, "playback_fps": params.video_fps}


def describe_fps(params: SamplingParams) -> str:
    """'conditioning fps 7 (Stability's fps_id 6) · playback fps 7'"""
    v = fps_vocabulary(params)
    return (f"conditioning fps {v['conditioning_fps']} (Stability's fps_id {v['fps_id']}) · playback fps "
            f"{v['playback_fps']}")
