"""Everything one browser session keeps, in one place: named accessors over `st.session_state`. No other module of
the app touches `st.session_state` (tests/test_app_state.py checks it); widget keys are named here, and the
widgets are made with them.

- Knob values live in one store: the widgets' own keys (`knob_<field>`). The widgets are made with
  `persist_state="session"`, so Streamlit keeps their values on runs where they are not drawn (another page,
  a fragment's own rerun). Compare's (`cmp_*`), the camera's (`cam_*`) and the guiders' (`gd_*`) widgets too.
- A page's background work is a `Slot` (job, result, error), one per page that runs things.
- The model itself is not here: it belongs to the server (server.py), shared by every session; `page_model()` is
  the model this run of the page was drawn for.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import streamlit as st

from svd_core import SamplingParams
from svd_core.params import field_names


def _store():
    return st.session_state


# ------------------------------------------------------------------------------- widget values by their key
# Widgets are made with the keys named below (constants and key functions); their values are read and written
# here by those keys.

def get(key: str, default=None):
    return _store().get(key, default)


def put(key: str, value) -> None:
    _store()[key] = value


def has(key: str) -> bool:
    return key in _store()


def setdefault(key: str, value):
    """The widget's value, `value` first when it has none (set before the widget is drawn)."""
    return _store().setdefault(key, value)


def pop(key: str, default=None):
    return _store().pop(key, default)


# ------------------------------------------------------------------------------------------ background work

@dataclass
class Slot:
    """A page's background work: the running job, the last result, the last error or notice."""

    job: object | None = None
    result: dict | None = None
    error: tuple[str, str] | None = None  # (kind "info"|"error", text)
    notices: list[str] = field(default_factory=list)  # shown once above the result


def slot(name: str) -> Slot:
    return _store().setdefault(f"slot_{name}", Slot())


def session_id() -> str:
    """A short id for this browser session, to tell its runs from others' in the shared queue."""
    return _store().setdefault("sid", secrets.token_hex(2))


# ------------------------------------------------------------------------------------------------ the model

MODEL_CHECKPOINT = "model_ckpt"  # the sidebar's widgets: they show the server's model
MODEL_DEVICE = "model_device"
MODEL_MEMORY_MODE = "model_memory_mode"
MODEL_COMPILE = "model_compile"


def model_widgets() -> tuple[str, str, str, bool]:
    """(checkpoint, device, memory mode, compile) as the sidebar's widgets show them."""
    s = _store()
    return s[MODEL_CHECKPOINT], s.get(MODEL_DEVICE, ""), s.get(MODEL_MEMORY_MODE, "auto"), s.get(MODEL_COMPILE, False)


def show_model(choice) -> None:
    """The sidebar's widgets show `choice` (a ModelSpec), whoever chose it."""
    s = _store()
    s[MODEL_CHECKPOINT], s[MODEL_DEVICE] = choice.checkpoint, choice.device
    s[MODEL_MEMORY_MODE], s[MODEL_COMPILE] = choice.memory_mode, choice.compile


def page_model():
    """The model (ModelSpec) this run of the page is drawn for: its jobs are submitted for it."""
    return _store().get("page_model")


def set_page_model(choice) -> None:
    _store()["page_model"] = choice


def refuse_model(reason: str) -> None:
    """The server refused a model change (runs active): said once in the sidebar."""
    _store()["model_refused"] = reason


def take_model_refusal() -> str | None:
    return _store().pop("model_refused", None)


# ------------------------------------------------------------------------------------------------ the knobs

KNOB = "knob_"  # widget keys of the SamplingParams fields: knob_<field>


def knob_key(name: str) -> str:
    return KNOB + name


def typed_key(key: str) -> str:
    """The typed value beside a slider of key `key` (controls.ranged)."""
    return f"{key}-typed"


def knob(name: str, default=None):
    return _store().get(knob_key(name), default)


def set_knob(name: str, value) -> None:
    _store()[knob_key(name)] = value


def set_params(params: SamplingParams, made_for: str | None) -> None:
    """Write every knob (before the widgets are drawn, or from a callback); controls.load_settings also redraws
    the camera's and guiders' own widgets from them. `made_for`: the checkpoint these values belong to, so a
    change of model is noticed."""
    for name, value in params.to_dict().items():
        set_knob(name, 0 if name == "output_fps" and value is None else value)  # 0: the conditioning fps
    _store()["knobs_for"] = made_for


def knobs_for() -> str | None:
    return _store().get("knobs_for")


def knob_values() -> dict:
    s = _store()
    return {name: s[knob_key(name)] for name in field_names() if knob_key(name) in s}


def params() -> SamplingParams:
    """The session's settings as SamplingParams; ValueError says what is wrong."""
    values = knob_values()
    if values.get("output_fps") == 0:
        values["output_fps"] = None
    return SamplingParams.from_dict(values)


@dataclass(frozen=True)
class EditedTable:
    """A per-frame table the user edits (st.data_editor) beside its values: the widget's key takes a new version
    when the values are replaced from outside, so the widget starts afresh from them."""

    name: str

    def key(self) -> str:
        return f"{self.name}_table_{_store().get(self.name + '_ver', 0)}"

    def renew(self) -> None:
        _store()[self.name + "_ver"] = _store().get(self.name + "_ver", 0) + 1

    def edits(self) -> dict:
        """The widget's edited rows ({row: {column: value}})."""
        return (_store().get(self.key()) or {}).get("edited_rows") or {}

    def values(self):
        """The values being edited, or None."""
        return _store().get(self.name + "_custom")

    def set_values(self, values) -> None:
        _store()[self.name + "_custom"] = values


# ------------------------------------------------------------------------------------ the camera (SV3D_p)
# Written by app/camera.py only.

CAMERA_ELEVATION = "cam_elevation"
CAMERA_PATH = "cam_path"
CAMERA_SEED = "cam_seed"
CAMERA_TABLE = EditedTable("cam")  # the custom path: (elevations, azimuths)


# ---------------------------------------------------------------------------------------- the guiders' lists
# Written by app/guidance.py only.

GUIDER_PERIOD = "gd_period"  # the triangle's period(s), as typed
GUIDER_RESTART = "gd_restart"
GUIDER_TABLE = EditedTable("gd")  # the custom guider's per-frame scales


# ------------------------------------------------------------------------------------ widgets of a result
# Keys of the stateful widgets that show a result. (Buttons and download buttons take keys made where they are
# drawn: element ids, never read back.)

GENERATE_VIDEO = "gen_video"  # which of a run's videos (num_videos) the measurements and downloads are of
COMPARE_STEPS = "cmp-traj"  # Compare's "Denoising, step by step"


def run_widget_key(widget: str, run_id: str) -> str:
    """The key of a History card's widget for the run `run_id`: "card", "traj" (its denoising record's toggle),
    "use" (Use these settings), "delcells" and "del" (Delete)."""
    return f"traj-{run_id}" if widget == "traj" else f"{widget}_{run_id}"


def step_slider_key(view: str, many: bool = False) -> str:
    """The step slider of a denoising-record view (`view`: its run or comparison); `many`: one over every cell."""
    return f"{'steps' if many else 'step'}-{view}"


# ------------------------------------------------------------------------------------------- run options

TRAJECTORY = "save_trajectory"  # Generate's "Save the denoising record" checkbox (a run's save_trajectory)
LIVE_PREVIEW = "live_preview"  # Generate's "Live preview" checkbox
REMOVE_BG = "remove_bg"  # Generate's "Remove the background" checkbox (SV3D; a run's remove_bg)


def save_trajectory() -> bool:
    return bool(_store().get(TRAJECTORY, False))


def set_save_trajectory(on: bool) -> None:
    _store()[TRAJECTORY] = bool(on)


def live_preview() -> bool:
    return bool(_store().get(LIVE_PREVIEW, True))


def remove_bg() -> bool:
    return bool(_store().get(REMOVE_BG, False))


def set_remove_bg(on: bool) -> None:
    _store()[REMOVE_BG] = bool(on)


# ----------------------------------------------------------------------------------------------- the image

UPLOAD_GENERATE = "upload_gen"  # the uploaders of the conditioning image
UPLOAD_COMPARE = "upload_cmp"
UPLOAD_VIDEO = "upload_video"  # History's "Load the settings of a video"

@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes


def image() -> Upload | None:
    return _store().get("image")


def set_image(upload: Upload) -> None:
    _store()["image"] = upload


# ----------------------------------------------------------------------------------------------- Compare

COMPARE_MODE = "cmp_mode"
COMPARE_KNOB = "cmp_knob"
COMPARE_KNOB2 = "cmp_knob2"
COMPARE_SEEDS = "cmp_seeds"
COMPARE_TRAJECTORY = "cmp_trajectory"  # "Save each cell's denoising record"
CALIBRATE_KNOB = "cmp_cal_knob"
CALIBRATE_TARGET = "cmp_cal_target"
CALIBRATE_SEEDS = "cmp_cal_seeds"
CALIBRATE_FEWER = "cmp_cal_fewer"
CALIBRATE_STEPS = "cmp_cal_steps"


def compare_values_key(knob: str, second: bool = False) -> str:
    """The typed values of `knob` (the first or the second knob of a comparison)."""
    return f"cmp_values{'2' if second else ''}_{knob}"


def calibrate_values_key(knob: str) -> str:
    return f"cmp_cal_values_{knob}"


def ab_key(side: str, name: str) -> str:
    """Settings A vs B: side "A" or "B"'s value of `name`."""
    return f"cmp_{side}_{name}"


# ----------------------------------------------------------------------------------------------- History

HISTORY_PAGE = 12  # cards shown at first, and more at each "Show more"


def history_shown() -> int:
    return _store().setdefault("history_shown", HISTORY_PAGE)


def show_more_history() -> None:
    _store()["history_shown"] = history_shown() + HISTORY_PAGE


def video_loaded(file_id: str) -> bool:
    """Whether the dropped video `file_id` was loaded already (it stays in its uploader across reruns)."""
    return _store().get("video_loaded") == file_id


def set_video_loaded(file_id: str) -> None:
    _store()["video_loaded"] = file_id


def open_generate_next() -> None:
    """Ask the next run of History to open Generate (from a callback, which cannot switch pages)."""
    _store()["history_open_generate"] = True


def take_open_generate() -> bool:
    return bool(_store().pop("history_open_generate", False))


# -------------------------------------------------------------------------------------------- Downloads

def download_key(panel: str, widget: str) -> str:
    """The key of a download panel's widget ("variant", "token", "go"); `panel`: where it is drawn."""
    return f"{panel}_{widget}"


def take_token(key: str) -> str | None:
    """The token typed in the field `key`, emptied: it is handed to the download, never kept in the session."""
    token = _store().get(key) or None
    _store()[key] = ""
    return token


# ----------------------------------------------------------------------------------------------- notices

def notify(page: str, text: str) -> None:
    """A one-line note shown once at the top of `page` (e.g. settings loaded from History)."""
    _store().setdefault("notices", {}).setdefault(page, []).append(text)


def take_notices(page: str) -> list[str]:
    return _store().get("notices", {}).pop(page, [])
