"""Setup: what is installed, which checkpoints are here, where to get the others."""

import platform

import streamlit as st
import torch

from app.controls import first_run_screen
from app.download import download_panel
from app.resources import checkpoint_problems, checkpoints, make_demo_model
from svd_core import available_devices, checkpoint_dir, get_variant, list_variants


def page() -> None:
    st.title("Setup")
    found = checkpoints()
    st.subheader("Checkpoints")
    if found:
        # a list, not a table: it wraps on a narrow screen instead of hiding its right-hand columns
        st.markdown("\n".join(f"- **{c.label}** · {c.variant.name} · {c.size_gb:.2f} GB · {c.dtype} · "
                              f"{c.variant.num_frames} frames" for c in found))
    else:
        first_run_screen()
    st.caption(f"Folder: `{checkpoint_dir()}` (change with the SVD_CHECKPOINT_DIR environment variable)")
    for path, reason in checkpoint_problems():  # listed with the reason, never silently left out
        st.warning(f"`{path.name}` is not offered: {reason}", icon=":material/block:")
    if found:
        st.subheader("Download a release")
        download_panel("setup")
    rows = [get_variant(n) for n in list_variants() if not n.startswith("tiny")]
    st.markdown("\n".join(f"- **{v.name}.safetensors**: {v.title} — [{v.url.split('/')[-1]}]({v.url})" for v in rows))
    if found and not any(c.variant.name.startswith("tiny") for c in found):
        if st.button("Also create the tiny demo model"):
            make_demo_model()
            st.rerun()

    st.subheader("This machine")
    devices = available_devices()
    gpu = torch.cuda.get_device_name(0) if "cuda" in devices else "none"
    mps = "mps" in devices
    st.markdown(f"- Python {platform.python_version()}, torch {torch.__version__}\n- CUDA GPU: {gpu}\n"
                f"- Apple MPS: {mps}")
    st.subheader("Serving")
    port = st.get_option("server.port")
    st.markdown(f"This server listens on port {port} of localhost only. To reach it from another machine, run "
                f"`streamlit run app/main.py --server.address 0.0.0.0` on a trusted network, or tunnel with "
                f"`ssh -L {port}:localhost:{port} host`.")
