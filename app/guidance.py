"""The guiders' own knobs in the sampling panel: the triangle's period(s) and their fusing, and the custom
guider's per-frame table (edit a cell; the panel's plot shows the curve). Writes the SamplingParams fields
period / period_fusing / guidance_scales through their knob keys, as app/camera.py does for SV3D's angles."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import state
from svd_core import CHOICES
from svd_core.params import GUIDER_LISTS
from svd_core.sweep import parse_values

S = st.session_state


def _fmt(values) -> str:
    return ", ".join(f"{v:g}" for v in values)


def reset(params) -> None:
    """The widgets from params (state.set_params): the period text and a fresh per-frame table."""
    S["gd_period"] = _fmt(params.period)
    S["gd_custom"] = None if params.guidance_scales is None else [float(v) for v in params.guidance_scales]
    S["gd_ver"] = S.get("gd_ver", 0) + 1


def _edited(current) -> None:
    """on_change of the per-frame table: its edits become the custom curve."""
    edits = (S.get(f"gd_table_{S.get('gd_ver', 0)}") or {}).get("edited_rows") or {}
    values = list(current)
    for row, changes in edits.items():
        if changes.get("scale") is not None:
            values[int(row)] = float(changes["scale"])
    S["gd_custom"] = values
    S["gd_ver"] = S.get("gd_ver", 0) + 1


def _start_custom() -> None:
    S["gd_custom"] = None
    S["gd_ver"] = S.get("gd_ver", 0) + 1


def guider_knobs(guider: str) -> None:
    """The knobs of `guider` that are lists or choices (the number knobs are the panel's own)."""
    period_key, scales_key = state.knob_key("period"), state.knob_key("guidance_scales")
    if guider == "triangle":
        if "gd_period" not in S:
            current = S.get(period_key)
            S["gd_period"] = _fmt(current) if isinstance(current, (list, tuple)) else str(current or 1)
        c1, c2 = st.columns(2)
        with c1:
            text = st.text_input("Period(s)", key="gd_period", persist_state="session",
                                 help=GUIDER_LISTS["period"][2][0].upper() + GUIDER_LISTS["period"][2][1:] + ".")
        try:
            S[period_key] = parse_values("period", text)
        except ValueError as e:
            S[period_key] = text  # the run stays blocked until the text reads
            st.error(str(e), icon=":material/warning:")
        if isinstance(S[period_key], list) and len(S[period_key]) > 1:
            with c2:
                st.selectbox("Period fusing", CHOICES["period_fusing"][0], key=state.knob_key("period_fusing"),
                             persist_state="session", help=CHOICES["period_fusing"][1][0].upper()
                             + CHOICES["period_fusing"][1][1:] + ".")
    elif isinstance(S.get(period_key), str):  # text that never read: kept for the triangle, unread by this guider
        S[period_key] = [1.0]
    frames = int(S.get(state.knob_key("num_frames")) or 2)
    if guider != "custom":
        S[scales_key] = None
        return
    values = S.get("gd_custom")
    if values is None or len(values) != frames:  # a new table: the linear guider's curve, to edit
        if values is not None:
            st.caption(f"The frame count changed ({len(values)} → {frames}): the table starts again from the "
                       "linear curve.")
        lo, hi = (float(S.get(state.knob_key(k), d)) for k, d in (("min_guidance_scale", 1.0),
                                                                   ("max_guidance_scale", 2.5)))
        values = [round(float(v), 4) for v in np.linspace(lo, hi, frames)]
        S["gd_custom"] = values
    lo, hi, _ = GUIDER_LISTS["guidance_scales"]
    with st.expander("Guidance per frame (edit a cell)", expanded=True):
        st.data_editor({"scale": list(values)}, key=f"gd_table_{S.get('gd_ver', 0)}", num_rows="fixed",
                       width="stretch", on_change=_edited, args=(tuple(values),),
                       column_config={"scale": st.column_config.NumberColumn(min_value=lo, max_value=hi,
                                                                             step=0.05)})
        st.button("Start again from the linear curve", on_click=_start_custom, key="gd_restart")
    S[scales_key] = list(values)
