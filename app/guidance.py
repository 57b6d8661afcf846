"""The guiders' own knobs in the sampling panel: the triangle's period(s) and their fusing, and the custom
guider's per-frame table (edit a cell; the panel's plot shows the curve). Writes the SamplingParams fields
period / period_fusing / guidance_scales through their knob keys, as app/camera.py does for SV3D's angles."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import state
from svd_core.params import CHOICES, GUIDER_LISTS, format_value, help_text, parse_values


def _csv(values) -> str:
    return ", ".join(format_value(float(v)) for v in values)


def reset(params) -> None:
    """The widgets from params (controls.load_settings): the period text and a fresh per-frame table."""
    state.put(state.GUIDER_PERIOD, _csv(params.period))
    scales = params.guidance_scales
    state.GUIDER_TABLE.set_values(None if scales is None else [float(v) for v in scales])
    state.GUIDER_TABLE.renew()


def _edited(current) -> None:
    """on_change of the per-frame table: its edits become the custom curve."""
    edits = state.GUIDER_TABLE.edits()
    values = list(current)
    for row, changes in edits.items():
        if changes.get("scale") is not None:
            values[int(row)] = float(changes["scale"])
    state.GUIDER_TABLE.set_values(values)
    state.GUIDER_TABLE.renew()


def _start_custom() -> None:
    state.GUIDER_TABLE.set_values(None)
    state.GUIDER_TABLE.renew()


def guider_knobs(guider: str) -> None:
    """The knobs of `guider` that are lists or choices (the number knobs are the panel's own)."""
    if guider == "triangle":
        if not state.has(state.GUIDER_PERIOD):
            current = state.knob("period")
            state.put(state.GUIDER_PERIOD, _csv(current) if isinstance(current, (list, tuple)) else str(current or 1))
        c1, c2 = st.columns(2)
        with c1:
            text = st.text_input("Period(s)", key=state.GUIDER_PERIOD, persist_state="session",
                                 help=help_text("period"))
        try:
            state.set_knob("period", parse_values("period", text))
        except ValueError as e:
            state.set_knob("period", text)  # the run stays blocked until the text reads
            st.error(str(e), icon=":material/warning:")
        period = state.knob("period")
        if isinstance(period, list) and len(period) > 1:
            with c2:
                st.selectbox("Period fusing", CHOICES["period_fusing"][0], key=state.knob_key("period_fusing"),
                             persist_state="session", help=help_text("period_fusing"))
    elif isinstance(state.knob("period"), str):  # text that never read: kept for the triangle, unread by this guider
        state.set_knob("period", [1.0])
    frames = int(state.knob("num_frames") or 2)
    if guider != "custom":
        state.set_knob("guidance_scales", None)
        return
    values = state.GUIDER_TABLE.values()
    if values is None or len(values) != frames:  # a new table: the linear guider's curve, to edit
        if values is not None:
            st.caption(f"The frame count changed ({len(values)} → {frames}): the table starts again from the "
                       "linear curve.")
        lo, hi = (float(state.knob(k, d)) for k, d in (("min_guidance_scale", 1.0), ("max_guidance_scale", 2.5)))
        values = [round(float(v), 4) for v in np.linspace(lo, hi, frames)]
        state.GUIDER_TABLE.set_values(values)
    lo, hi, _ = GUIDER_LISTS["guidance_scales"]
    with st.expander("Guidance per frame (edit a cell)", expanded=True):
        st.data_editor({"scale": list(values)}, key=state.GUIDER_TABLE.key(), num_rows="fixed",
                       width="stretch", on_change=_edited, args=(tuple(values),),
                       column_config={"scale": st.column_config.NumberColumn(min_value=lo, max_value=hi,
                                                                             step=0.05)})
        st.button("Start again from the linear curve", on_click=_start_custom, key=state.GUIDER_RESTART)
    state.set_knob("guidance_scales", list(values))
