"""History: the runs in outputs/, newest first; reuse a run's settings and image, or delete it."""

import streamlit as st

from controls import S, reset_knobs
from resources import checkpoints
from svd_core import delete_run, list_runs

PAGE = 12

st.title("History")
runs = list_runs()
if not runs:
    st.info("No runs yet: they appear here as soon as Generate or Compare finishes.", icon=":material/history:")
    st.stop()


def use_settings(run):
    """Load the run's parameters, image and (when it is still here) checkpoint into Generate."""
    same_file = [c for c in checkpoints() if c.name == run.record.get("checkpoint", {}).get("file")]
    if same_file:
        S["ckpt"] = str(same_file[0].path)
    reset_knobs(run.params)
    S["knobs_for"] = S.get("ckpt")  # these settings, not the checkpoint's defaults
    S["image"] = {"name": f"{run.id}/input.png", "bytes": run.file("input.png").read_bytes()}
    S["history_notice"] = run.id


def remove(run):
    delete_run(run.path)
    S.pop(f"confirm_{run.id}", None)


notice = S.pop("history_notice", None)
if notice:
    st.success(f"Settings and image of {notice} loaded.", icon=":material/check_circle:")
    st.page_link("views/generate.py", label="Open Generate to reproduce it", icon=":material/movie:")

shown = S.setdefault("history_shown", PAGE)
st.caption(f"{len(runs)} runs in outputs/")
for run in runs[:shown]:
    rec = run.record
    p = rec["params"]
    with st.container(border=True):
        c1, c2, c3 = st.columns([1, 3, 1], vertical_alignment="center")
        with c1:
            if run.file("poster.png").is_file():
                st.image(str(run.file("poster.png")), width="stretch")
        with c2:
            kind = "Comparison" if run.kind == "sweep" else ("Cell of a comparison" if "sweep" in rec else "Run")
            label = f" · {rec['label']}" if "label" in rec else ""
            st.markdown(f"**{kind}{label}** · `{run.id}` · {rec.get('checkpoint', {}).get('file', '?')}")
            st.caption(f"seed {p['seed']} · motion {p['motion_bucket_id']} · fps {p['fps']} · noise aug "
                       f"{p['noise_aug_strength']} · {p['num_frames']} frames · {p['num_inference_steps']} steps · "
                       f"{p['width']}x{p['height']} · {rec.get('created', '')[:16].replace('T', ' ')} UTC")
            if run.kind == "sweep":
                st.caption("Cells: " + " | ".join(c["label"] for c in rec.get("cells", [])))
            with st.expander("Play"):
                video = run.file("grid.mp4" if run.kind == "sweep" else "video.mp4")
                if video.is_file():
                    st.video(str(video), loop=True, muted=True)
        with c3:
            st.button("Use these settings", key=f"use_{run.id}", on_click=use_settings, args=(run,),
                      width="stretch")
            with st.popover("Delete", width="stretch"):
                st.write(f"Delete `{run.id}` and its files for good?")
                st.button("Yes, delete", key=f"del_{run.id}", type="primary", on_click=remove, args=(run,))
if len(runs) > shown:
    if st.button(f"Show {min(PAGE, len(runs) - shown)} more"):
        S["history_shown"] = shown + PAGE
        st.rerun()
