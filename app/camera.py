"""The Camera section for SV3D checkpoints (instead of the micro-conditioning sliders): elevation, path, the
per-frame table, and a 3D plot of the path as Stability's demo draws it. Writes the SamplingParams fields
elevations_deg / azimuths_deg; the angles come from svd_core.camera."""

from __future__ import annotations

import io

import streamlit as st

from app import state
from svd_core import list_camera_paths
from svd_core.camera import DEFAULT_ELEVATION, camera_path, get_camera_path, positions, resolve
from svd_core.params import ANGLES, help_text

CUSTOM = "custom"  # the per-frame table was edited


def _path_title(name: str) -> str:
    return "Custom (edited per frame)" if name == CUSTOM else get_camera_path(name).title


def reset(params) -> None:
    """The Camera section's widgets from params (SV3D_p; controls.load_settings): explicit azimuths become the custom
    per-frame path; one elevation with the default orbit stays the orbit."""
    state.CAMERA_TABLE.renew()
    elevations = params.elevations_deg
    state.put(state.CAMERA_ELEVATION, float(elevations[0]) if elevations else DEFAULT_ELEVATION)
    if params.azimuths_deg is None:
        state.put(state.CAMERA_PATH, "orbit")
        return
    state.CAMERA_TABLE.set_values(tuple(list(v) for v in resolve(params.num_frames, elevations, params.azimuths_deg)))
    state.put(state.CAMERA_PATH, CUSTOM)


def _reset_table(leave_custom: bool = True) -> None:
    """on_change of elevation, path and seed: a fresh per-frame table (its edits belonged to the old path)."""
    state.CAMERA_TABLE.renew()
    if leave_custom and state.get(state.CAMERA_PATH) == CUSTOM:
        state.put(state.CAMERA_PATH, "orbit")


def _edited(elevations, azimuths) -> None:
    """on_change of the per-frame table: its edits become the custom path."""
    edits = state.CAMERA_TABLE.edits()
    columns = {"elevation": list(elevations), "azimuth": list(azimuths)}
    for row, changes in edits.items():
        for col, value in changes.items():
            if col in columns and value is not None:
                columns[col][int(row)] = float(value)
    state.CAMERA_TABLE.set_values((columns["elevation"], columns["azimuth"]))
    state.put(state.CAMERA_PATH, CUSTOM)
    _reset_table(leave_custom=False)


def camera_section(variant, num_frames: int) -> None:
    """sv3d_p: the camera widgets, written to the knobs elevations_deg / azimuths_deg. sv3d_u: it orbits on its
    own (no camera input); its implicit orbit is drawn for orientation."""
    st.subheader("Camera")
    if variant.family == "sv3d_u":
        st.caption("SV3D_u orbits the object on its own at a fixed elevation: it has no camera input. "
                   "Choose an sv3d_p checkpoint to set the path.")
        plot(*camera_path("orbit_demo", num_frames, 0.0), caption="its orbit (no camera input; for orientation)")
        state.set_knob("elevations_deg", None)
        state.set_knob("azimuths_deg", None)
        return
    state.setdefault(state.CAMERA_ELEVATION, DEFAULT_ELEVATION)
    state.setdefault(state.CAMERA_PATH, "orbit")
    state.setdefault(state.CAMERA_SEED, 0)
    lo, hi, _ = ANGLES["elevations_deg"]
    c1, c2 = st.columns([1, 2])
    with c1:
        elevation = st.number_input("Elevation (degrees)", min_value=lo, max_value=hi, step=5.0,
                                    key=state.CAMERA_ELEVATION, persist_state="session", on_change=_reset_table,
                                    help=help_text("elevations_deg"))
    with c2:
        options = [*list_camera_paths(), *([CUSTOM] if state.get(state.CAMERA_PATH) == CUSTOM else [])]
        path = st.selectbox("Path", options, key=state.CAMERA_PATH, persist_state="session", format_func=_path_title,
                            on_change=_reset_table,
                            help=" · ".join(f"{p}: {get_camera_path(p).help}" for p in list_camera_paths()))
    if path == "dynamic":
        st.number_input("Path seed", min_value=0, max_value=2**31 - 1, step=1, key=state.CAMERA_SEED,
                        persist_state="session", on_change=_reset_table,
                        help="The dynamic path is random; its seed makes it repeatable.")
    try:
        if path == CUSTOM:
            elevations, azimuths = _from_table(num_frames)
        else:
            elevations, azimuths = camera_path(path, num_frames, elevation, state.get(state.CAMERA_SEED))
    except ValueError as e:
        st.error(str(e), icon=":material/warning:")
        elevations, azimuths = resolve(num_frames, (elevation,))
    with st.expander("Per frame (edit a cell to set your own path)"):
        st.data_editor({"elevation": list(elevations), "azimuth": list(azimuths)},
                       key=state.CAMERA_TABLE.key(), num_rows="fixed", width="stretch",
                       on_change=_edited, args=(tuple(elevations), tuple(azimuths)),
                       column_config={"elevation": st.column_config.NumberColumn(min_value=lo, max_value=hi),
                                      "azimuth": st.column_config.NumberColumn(min_value=ANGLES["azimuths_deg"][0],
                                                                               max_value=ANGLES["azimuths_deg"][1])})
        st.caption("The last frame is the input view in Stability's script (azimuth 0); the demo's orbit ends at "
                   "360. The model's own frames are shown: Stability's script pastes the input image over the last "
                   "one, we do not.")
    state.set_knob("elevations_deg", [float(e) for e in elevations])
    state.set_knob("azimuths_deg", [float(a) for a in azimuths])
    plot(elevations, azimuths)


def _from_table(num_frames: int):
    elevations, azimuths = state.CAMERA_TABLE.values() or resolve(num_frames)
    if len(elevations) != num_frames:  # the frame count changed: the custom path no longer fits
        raise ValueError(f"the edited path has {len(elevations)} frames, the run {num_frames}: choose a path again")
    return elevations, azimuths


def plot(elevations, azimuths, caption: str = "camera path: dots are frames, circled the first and last (the "
                                               "input view)") -> None:
    st.image(_figure(tuple(elevations), tuple(azimuths)), caption=caption, width=320)


@st.cache_data(max_entries=32, show_spinner=False)
def _figure(elevations: tuple, azimuths: tuple) -> bytes:
    """A 3D plot of the path on the unit sphere like Stability's demo (plot_3D): frames as dots from cool to
    warm, joined in order, the first and last circled; the object at the centre. matplotlib is imported here,
    on the first SV3D_p plot: a heavy import that the other variants never need."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xyz = positions(elevations, azimuths)
    fig = plt.figure(figsize=(3.2, 3.2))
    ax = fig.add_subplot(projection="3d")
    n = len(xyz)
    colours = plt.get_cmap("cool")([i / max(1, n - 1) for i in range(n)])
    ax.plot(xyz[:, 0], xyz[:, 1], xyz[:, 2], color="0.6", lw=1)
    ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], c=colours, s=30, depthshade=False)
    for i in (0, n - 1):
        ax.scatter(*xyz[i], s=90, facecolors="none", edgecolors="k")
    ax.scatter(0, 0, 0, marker="*", s=80, color="k")
    ax.set(xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1), xticks=[], yticks=[], zticks=[])
    ax.view_init(elev=30, azim=-20)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
