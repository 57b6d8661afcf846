"""What a small chart costs the server: Streamlit's `st.line_chart` / `st.bar_chart` (an Altair spec validated
against Vega-Lite's JSON schema) against the app's own spec (`app/charts.py`, drawn by `st.vega_lite_chart`).

Times building each chart's message in this process (Streamlit's bare mode: no server, the same element code),
14 values per chart as a result's per-frame metrics, the median of --repeat calls after one warm-up call.

    python bench/charts.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def per_call_ms(draw, repeat: int) -> float:
    draw()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        draw()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)  # bare mode warns that there is no session
    import streamlit as st

    from app import charts

    values = [0.1 * i for i in range(14)]
    rows = [
        ("st.line_chart", lambda: st.line_chart({"motion": values}, height=110, x_label="frame", y_label="")),
        ("app.charts.per_frame (line)", lambda: charts.per_frame("motion", values)),
        ("st.bar_chart", lambda: st.bar_chart({"guidance": values}, height=120, x_label="frame", y_label="scale")),
        ("app.charts.per_frame (bar)", lambda: charts.per_frame("guidance", values, mark="bar", y_title="scale")),
    ]
    for name, draw in rows:
        print(f"{name:32s} {per_call_ms(draw, args.repeat):8.2f} ms per chart")
    return 0


if __name__ == "__main__":
    sys.exit(main())
