"""Compare: one image, one seed, a knob over 2-6 values (or settings A vs B), run one after another and shown
side by side in one synchronised, labelled grid video."""

import streamlit as st

from controls import S, image_uploader, knobs, prepare, require_sampler
from results import run_button, show_video, start_job
from svd_core import RANGES, SamplingParams, SVDError, grid_cells, parse_vary, run_sweep

KNOBS = {
    "motion_bucket_id": "32, 127, 255",
    "fps": "3, 7, 15",
    "noise_aug_strength": "0.0, 0.1, 0.3",
    "decode_chunk_size": "1, 4, 14",
    "num_inference_steps": "10, 25, 40",
    "max_guidance_scale": "1.0, 2.5, 4.0",
    "seed": "1, 2, 3",
}
# A vs B: everything but the image, the seed and the video's size (name -> slider step; ranges from RANGES)
AB_KNOBS = {"motion_bucket_id": 1, "fps": 1, "noise_aug_strength": 0.01, "num_inference_steps": 1,
            "min_guidance_scale": 0.1, "max_guidance_scale": 0.1, "decode_chunk_size": 1}

sampler = require_sampler()

st.title("Compare")
try:
    base = SamplingParams.from_dict(knobs())
except ValueError as e:
    st.error(f"Fix the settings on Generate first: {e}")
    st.stop()
st.caption(f"Everything not varied comes from Generate's settings: seed {base.seed}, {base.num_frames} frames, "
           f"{base.num_inference_steps} steps, {base.width}x{base.height}, motion {base.motion_bucket_id}, "
           f"fps {base.fps}, noise aug {base.noise_aug_strength:g}.")

left, right = st.columns([1, 2], gap="large")
with left:
    data = image_uploader("cmp_upload")
    if data is not None:
        try:
            st.image(prepare(sampler, data, base).image, caption="As sampled")
        except (SVDError, ValueError) as e:
            st.error(str(e), icon=":material/broken_image:")
            data = None
with right:
    mode = st.radio("What to compare", ["One knob over values", "Settings A vs B"], horizontal=True,
                    key="cmp_mode")
    cells, problem = None, None
    if mode == "One knob over values":
        knob = st.selectbox("Knob", list(KNOBS), key="cmp_knob")
        text = st.text_input("Values (2 to 6, comma-separated)", value=KNOBS[knob], key=f"cmp_values_{knob}")
        try:
            cells = grid_cells(base, dict([parse_vary(f"{knob}={text}")]), max_cells=6)
        except ValueError as e:
            problem = str(e)
    else:
        cols = st.columns(2)
        sets = []
        for col, tag in zip(cols, "AB"):
            with col:
                st.markdown(f"**{tag}**")
                changes = {}
                for name, step in AB_KNOBS.items():
                    key = f"cmp_{tag}_{name}"
                    lo, hi, help_ = RANGES[name]
                    hi = base.num_frames if name == "decode_chunk_size" else hi  # a chunk cannot exceed the frames
                    if key not in S or S[key] > hi:  # A starts as Generate's settings, B with more motion
                        bump = 60 if tag == "B" and name == "motion_bucket_id" else 0
                        S[key] = min(hi, getattr(base, name) + bump)
                    changes[name] = st.slider(name, lo, hi, step=step, key=key, help=help_.capitalize())
                sets.append(changes)
        try:
            differ = [k for k in AB_KNOBS if sets[0][k] != sets[1][k]] or ["motion_bucket_id"]
            cells = [(f"{tag}: " + " ".join(f"{k}={ch[k]:g}" for k in differ), base.replace(**ch))
                     for tag, ch in zip("AB", sets)]
        except ValueError as e:
            problem = str(e)
    if problem:
        st.error(problem, icon=":material/warning:")


def start(sampler, image, cells):
    if image is None or not cells:  # the gate: no image, no run
        return

    def work(job):
        def progress(idx, n, i, steps):
            job.on_cell(idx, n, i, steps, cells[idx][0])
        res = run_sweep(sampler, image, cells, on_progress=progress, should_stop=job.should_stop,
                        on_queue=job.on_queue)
        return {"path": res.path, "cells": [(label, p, r.params) for (label, r), p in zip(res.cells, res.run_paths)]}
    start_job("cmp", "compare", work)


hint = ("Upload an image to enable comparing." if data is None else
        "Fix the values above." if not cells else None)
run_button("cmp", f"Run {len(cells)} samplings" if cells else "Run", hint, start, (sampler, data, cells))

res = S.get("cmp_result")
if res:
    st.divider()
    st.subheader("Side by side")
    st.caption("One video, all cells in sync, labelled with their values.")
    grid_width = sum(params.width for _, _, params in res["cells"][:3]) + 8
    show_video(res["path"] / "grid.mp4", frame_width=grid_width)
    c = st.columns(3)
    c[0].download_button("Grid video (mp4)", (res["path"] / "grid.mp4").read_bytes(),
                         file_name=f"{res['path'].name}.mp4", mime="video/mp4", key="cmp-grid-dl")
    c[1].download_button("Contact sheet (png)", (res["path"] / "contact_sheet.png").read_bytes(),
                         file_name=f"{res['path'].name}.png", mime="image/png", key="cmp-sheet-dl")
    with st.expander("Each run on its own"):
        cols = st.columns(min(3, len(res["cells"])))
        for i, (label, path, params) in enumerate(res["cells"]):
            with cols[i % len(cols)]:
                show_video(path / "video.mp4", label, frame_width=params.width)
