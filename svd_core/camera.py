"""SV3D camera paths: one (elevation, azimuth) in degrees per frame, and what sv3d_p is conditioned on.

Two conventions exist in Stability's code and give different videos (the last frame's azimuth row differs):

- `orbit`: their sampling script (scripts/sampling/simple_video_sample.py): one elevation, azimuths evenly spaced
  so that the LAST frame is the input view at azimuth 0 (F=21: 17.1, 34.3, ..., 342.9, 0).
- `orbit_demo`: their Streamlit demo's "same elevation" (scripts/demo/video_sampling.py): azimuths
  linspace(0, 360, F+1)[1:], the last frame at 360 (the same direction as 0, a different input to the model).
- `dynamic`: the demo's "dynamic" loop: the elevation wanders around the one you give (a sum of random sines,
  smoothed), the azimuth advances in random steps through one turn; the last frame is the input view. Seeded here
  (the demo draws it afresh every time); the drawn angles are recorded with the run.

The model sees polar = 90 - elevation and the azimuth, in radians. Stability's script pastes the input image over
the last frame of its output; we keep the model's own frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DYNAMIC_POINTS = 84  # the demo draws its loop on 84 points and keeps every (84 // F)-th


@dataclass(frozen=True)
class CameraPath:
    name: str
    title: str
    help: str


_PATHS = {p.name: p for p in (
    CameraPath("orbit", "Orbit (Stability's sampling script)",
               "one elevation, one turn; the last frame is the input view at azimuth 0"),
    CameraPath("orbit_demo", "Orbit (Stability's demo, 'same elevation')",
               "one elevation, one turn; the last frame at azimuth 360, as the demo sends it"),
    CameraPath("dynamic", "Dynamic (Stability's demo)",
               "the elevation wanders around the one you set, the azimuth turns in uneven steps (seeded)"),
)}


def list_camera_paths() -> list[str]:
    return list(_PATHS)


def get_camera_path(name: str) -> CameraPath:
    try:
        return _PATHS[name]
    except KeyError:
        raise ValueError(f"unknown camera path {name!r}; valid: {', '.join(_PATHS)}") from None


def camera_path(name: str, num_frames: int, elevation: float = 10.0, seed: int = 0
                ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(elevations_deg, azimuths_deg), one value per frame, of the path `name` (see list_camera_paths)."""
    get_camera_path(name)
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if not -90.0 <= elevation <= 90.0:
        raise ValueError(f"elevation must be between -90 and 90 degrees, got {elevation:g}")
    if name == "orbit":
        az = np.linspace(0, 360, num_frames + 1)[1:] % 360
        az = (az - az[-1]) % 360
        return (float(elevation),) * num_frames, tuple(float(a) for a in az)
    if name == "orbit_demo":
        az = np.rad2deg(np.linspace(0, 2 * np.pi, num_frames + 1)[1:])
        return (float(elevation),) * num_frames, tuple(float(a) for a in az)
    return dynamic_loop(num_frames, elevation, seed)


def dynamic_loop(num_frames: int, elevation: float = 10.0, seed: int = 0
                 ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The demo's dynamic loop (sv3d_helpers.gen_dynamic_loop), drawn from NumPy's legacy generator seeded with
    `seed` (np.random.seed(5) before the demo's call = seed 5 here). Needs a frame count that divides 84."""
    if DYNAMIC_POINTS % num_frames:
        good = [n for n in range(2, DYNAMIC_POINTS + 1) if DYNAMIC_POINTS % n == 0]
        raise ValueError(f"the dynamic camera path needs a frame count that divides {DYNAMIC_POINTS} ("
                         f"{', '.join(map(str, good))}), got {num_frames}")
    rng = np.random.RandomState(seed)
    while True:
        azimuths, elevations = _dynamic_cycle(rng, DYNAMIC_POINTS, elevation)
        elevations = _smooth_circular(elevations, 5)
        if np.max(np.abs(elevations)) < 90:
            break
    step = DYNAMIC_POINTS // num_frames
    azimuths, elevations = np.roll(azimuths[::step], -1), np.roll(elevations[::step], -1)  # input view last
    # through radians and back, as the demo hands radians to the model
    return (tuple(float(e) for e in np.rad2deg(np.deg2rad(elevations))),
            tuple(float(a) for a in np.rad2deg(np.deg2rad(azimuths))))


def _dynamic_cycle(rng: np.random.RandomState, length: int, elevation: float) -> tuple[np.ndarray, np.ndarray]:
    """Elevation: `elevation` plus 84 sines of whole periods (1-4 cycles, amplitude 0.5-10 degrees, phase 0 or
    pi). Azimuth: 0 then the running sum of length-1 random steps, scaled to end a little short of 360. The draws
    come in the demo's order, so a seed gives the demo's path."""
    elev = np.ones(length) * elevation
    for _ in range(84):
        frequency = rng.randint(1, 5) * (2 * np.pi / length)
        amplitude = rng.uniform(0.5, 10)
        phase = rng.choice([0, np.pi])
        elev += np.sin(np.linspace(0, frequency * length, length, endpoint=False) + phase) * amplitude
    steps = rng.uniform(0, 2, length - 1)
    scale = (360 - (360 / length) * rng.uniform(0, 2)) / np.sum(steps)
    azim = np.insert(np.cumsum(steps * scale), 0, 0)
    return azim, elev


def _smooth_circular(data: np.ndarray, window: int) -> np.ndarray:
    """Moving average of a closed loop (wraps around at both ends), as the demo smooths its elevations."""
    padded = np.concatenate((data[-window:], data, data[:window]))
    smoothed = np.convolve(padded, np.ones(window) / window, mode="same")
    return smoothed[window:-window]


def model_angles(elevations_deg: Sequence[float], azimuths_deg: Sequence[float]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(polars_rad, azimuths_rad) as float64, what sgm's batch holds: polar = deg2rad(90 - elevation)."""
    return np.deg2rad(90.0 - np.asarray(elevations_deg, dtype=np.float64)), np.deg2rad(
        np.asarray(azimuths_deg, dtype=np.float64))


def positions(elevations_deg: Sequence[float], azimuths_deg: Sequence[float]) -> np.ndarray:
    """(F, 3) camera positions on the unit sphere (x, y, z), z up: for plotting a path."""
    e, a = np.deg2rad(np.asarray(elevations_deg, float)), np.deg2rad(np.asarray(azimuths_deg, float))
    return np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=1)


DEFAULT_ELEVATION = 10.0  # Stability's sampling script's default elevations_deg


def resolve(num_frames: int, elevations_deg=None, azimuths_deg=None
            ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-frame camera of a run from SamplingParams' elevations_deg / azimuths_deg, filled in as
    Stability's sampling script does: no elevation -> 10 degrees, one elevation -> every frame, no azimuths ->
    the `orbit` path (last frame at 0, the input view)."""
    elevations = (DEFAULT_ELEVATION,) if elevations_deg is None else tuple(elevations_deg)
    if len(elevations) == 1:
        elevations = elevations * num_frames
    if azimuths_deg is None:
        azimuths_deg = camera_path("orbit", num_frames, elevations[0])[1]
    return tuple(elevations), tuple(azimuths_deg)
