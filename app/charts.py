"""Small charts as Vega-Lite specs written here, drawn by `st.vega_lite_chart`.

Streamlit's `st.line_chart` and `st.bar_chart` build their spec with Altair, which validates it against
Vega-Lite's JSON schema at every rerun of the page, holding the GIL that a sampling thread needs; a spec written
here skips that validation (`python bench/charts.py` measures both). Streamlit's theme
still styles them.
"""

from __future__ import annotations

import streamlit as st


def chart(rows: list[dict], x: str, y: str, *, mark: str = "line", x_type: str = "quantitative",
          color: str | None = None, y_title: str | None = None, height: int = 140, x_title: str | None = None) -> None:
    """One chart of `rows` (dicts): `y` against `x`, one series per value of `color` when given."""
    encoding = {
        "x": {"field": x, "type": x_type, "title": x_title or x},
        "y": {"field": y, "type": "quantitative", "title": y_title},
        "tooltip": [{"field": x, "type": x_type}, {"field": y, "type": "quantitative", "format": ".4g"}],
    }
    if color is not None:
        encoding["color"] = {"field": color, "type": "nominal", "title": None}
        encoding["tooltip"].insert(0, {"field": color, "type": "nominal"})
    if x_type == "ordinal":
        encoding["x"]["sort"] = None  # in the rows' order (knob values as given), not alphabetical
        encoding["x"]["axis"] = {"labelAngle": 0}
    else:
        encoding["x"]["axis"] = {"tickMinStep": 1, "format": "d"}  # frame numbers
    encoding["y"]["axis"] = {"tickCount": 3}
    st.vega_lite_chart(rows, {"mark": {"type": mark}, "encoding": encoding}, width="stretch", height=height)


def per_frame(name: str, values, *, mark: str = "line", y_title: str | None = None, height: int = 140) -> None:
    """A value per frame: frames numbered from 0."""
    chart([{"frame": i, name: float(v)} for i, v in enumerate(values)], "frame", name, mark=mark,
          x_type="ordinal" if mark == "bar" else "quantitative", y_title=y_title, height=height)
