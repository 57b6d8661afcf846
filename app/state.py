"""Everything one browser session keeps, in one place: named accessors over `st.session_state`.

- Knob values live in one store: the widgets' own keys (`knob_<field>`). The widgets are made with
  `persist_state="session"`, so Streamlit keeps their values on runs where they are not drawn (another page,
  a fragment's own rerun). Compare's (`cmp_*`) and the camera's (`cam_*`) widgets too. (The earlier idiom,
  rewriting every key at the start of each full run, lost them after a fragment rerun.)
- A page's background work is a `Slot` (job, result, error), one per page that runs things.
- The model itself is not here: it belongs to the server (server.py), shared by every session.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import streamlit as st

from svd_core import SamplingParams
from svd_core.params import field_names

S = st.session_state
KNOB = "knob_"  # widget keys of the SamplingParams fields: knob_<field>


@dataclass
class Slot:
    """A page's background work: the running job, the last result, the last error or notice."""

    job: object | None = None
    result: dict | None = None
    error: tuple[str, str] | None = None  # (kind "info"|"error", text)
    notices: list[str] = field(default_factory=list)  # shown once above the result


def slot(name: str) -> Slot:
    key = f"slot_{name}"
    if key not in S:
        S[key] = Slot()
    return S[key]


def session_id() -> str:
    """A short id for this browser session, to tell its runs from others' in the shared queue."""
    if "sid" not in S:
        S["sid"] = secrets.token_hex(2)
    return S["sid"]


# ----------------------------------------------------------------------------------------------- knobs

def knob_key(name: str) -> str:
    return KNOB + name


def set_params(params: SamplingParams, made_for: str | None) -> None:
    """Write every knob (before the widgets are drawn, or from a callback). `made_for`: the checkpoint these
    values belong to, so a change of model is noticed."""
    for name, value in params.to_dict().items():
        S[knob_key(name)] = 0 if name == "output_fps" and value is None else value  # 0: the conditioning fps
    S["knobs_for"] = made_for
    set_camera(params)
    from app.guidance import reset

    reset(params)


def set_camera(params: SamplingParams) -> None:
    """The Camera section's widgets from params (SV3D_p): explicit azimuths become the custom per-frame path; one
    elevation with the default orbit stays the orbit."""
    from svd_core.camera import DEFAULT_ELEVATION, resolve

    S["cam_ver"] = S.get("cam_ver", 0) + 1  # a fresh per-frame table
    elevations = params.elevations_deg
    S["cam_elevation"] = float(elevations[0]) if elevations else DEFAULT_ELEVATION
    if params.azimuths_deg is None:
        S["cam_path"] = "orbit"
        return
    S["cam_custom"] = tuple(list(v) for v in resolve(params.num_frames, elevations, params.azimuths_deg))
    S["cam_path"] = "custom"


def knobs_for() -> str | None:
    return S.get("knobs_for")


def knob_values() -> dict:
    return {name: S[knob_key(name)] for name in field_names() if knob_key(name) in S}


def params() -> SamplingParams:
    """The session's settings as SamplingParams; ValueError says what is wrong."""
    values = knob_values()
    if values.get("output_fps") == 0:
        values["output_fps"] = None
    return SamplingParams.from_dict(values)


# ------------------------------------------------------------------------------------------ run options

TRAJECTORY = "save_trajectory"  # Generate's "Save the denoising record" checkbox (a run's save_trajectory)
LIVE_PREVIEW = "live_preview"  # Generate's "Live preview" checkbox


def save_trajectory() -> bool:
    return bool(S.get(TRAJECTORY, False))


def set_save_trajectory(on: bool) -> None:
    S[TRAJECTORY] = bool(on)


def live_preview() -> bool:
    return bool(S.get(LIVE_PREVIEW, True))


# ----------------------------------------------------------------------------------------------- image

@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes


def image() -> Upload | None:
    return S.get("image")


def set_image(upload: Upload) -> None:
    S["image"] = upload


# ----------------------------------------------------------------------------------------------- notices

def notify(page: str, text: str) -> None:
    """A one-line note shown once at the top of `page` (e.g. settings loaded from History)."""
    S.setdefault("notices", {}).setdefault(page, []).append(text)


def take_notices(page: str) -> list[str]:
    return S.get("notices", {}).pop(page, [])
