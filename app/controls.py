"""Shared widgets: the sidebar model picker, the knobs (-> SamplingParams) and the image store. Values live in
st.session_state so nothing is lost on a rerun or a page switch."""

from __future__ import annotations

import random

import streamlit as st

from resources import checkpoints, device_choices, get_sampler, make_demo_model
from svd_core import (
    MEMORY_MODES,
    RANGES,
    RESIZE_MODES,
    ImageSpec,
    SamplingParams,
    SVDError,
    prepare_image,
)
from svd_core.checkpoints import default_checkpoint

S = st.session_state
KNOB = "knob_"  # widget keys: knob_<param name>


# ------------------------------------------------------------------------------------------------- model

def sidebar() -> None:
    found = checkpoints()
    with st.sidebar:
        st.markdown("### Model")
        if not found:
            st.caption("No checkpoint yet: see Generate or Setup.")
            return
        by_path = {str(c.path): c for c in found}
        if S.get("ckpt") not in by_path:
            S["ckpt"] = str(default_checkpoint(found).path)
        busy = any(S.get(f"{slot}_job") is not None for slot in ("gen", "cmp"))  # keep the model while it runs
        st.selectbox("Checkpoint", list(by_path), key="ckpt", disabled=busy,
                     format_func=lambda p: f"{by_path[p].name} · {by_path[p].variant.name} · "
                                           f"{by_path[p].size_gb:.2f} GB")
        info = by_path[S["ckpt"]]
        st.caption(info.variant.title)
        if info.variant.name.startswith("tiny"):
            st.warning("Demo model with random weights: it produces noise. Put svd_xt.safetensors in "
                       "checkpoints/ for real videos.", icon=":material/science:")
        devices = device_choices()
        st.selectbox("Device", devices, key="device", help="CUDA GPU, Apple MPS or CPU (slow)", disabled=busy)
        st.selectbox("Memory mode", MEMORY_MODES, key="memory_mode", disabled=busy,
                     help="fast: all on the GPU · balanced: model CPU offload · low: offload + chunked UNet + "
                          "small decode chunks (< 8 GB for SVD-XT) · auto: by free GPU memory")
        if S.get("knobs_for") != S["ckpt"]:  # a new checkpoint: its variant's defaults
            reset_knobs(SamplingParams.for_variant(info.variant))
            S["knobs_for"] = S["ckpt"]


def current_checkpoint():
    found = {str(c.path): c for c in checkpoints()}
    return found.get(S.get("ckpt"))


def load_sampler():
    """The shared sampler for the sidebar's choices, or None after showing why not."""
    info = current_checkpoint()
    if info is None:
        return None
    try:
        return get_sampler(str(info.path), info.path.stat().st_mtime, S.get("device", ""), "",
                           S.get("memory_mode", "auto"))
    except (SVDError, ValueError) as e:
        st.error(f"Cannot load {info.name}: {e}", icon=":material/error:")
        return None


def require_sampler():
    """The page's sampler. Without a checkpoint: the first-run screen; if it cannot load: the reason. Either
    way the page stops there."""
    if current_checkpoint() is None:
        first_run_screen()
        st.stop()
    sampler = load_sampler()
    if sampler is None:
        st.stop()
    return sampler


def first_run_screen() -> None:
    st.title("Welcome to SVD Studio")
    st.markdown(
        "No checkpoint found in `checkpoints/`. To make real videos:\n\n"
        "1. Accept the licence of [stabilityai/stable-video-diffusion-img2vid-xt]"
        "(https://huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt) on Hugging Face.\n"
        "2. Download **`svd_xt.safetensors`** (9.56 GB) and put it in the project's `checkpoints/` folder.\n"
        "3. Optionally add `svd.safetensors`, `svd_image_decoder.safetensors`, `svd_xt_image_decoder.safetensors` "
        "and `svd_xt_1_1.safetensors` (from the img2vid, img2vid-xt and img2vid-xt-1-1 repositories); keep the "
        "file names, they select each variant's defaults.\n"
        "4. Reload this page.")
    st.info("No download yet? Try every page with a tiny **random-weight demo model**: it makes noise, not "
            "video, but everything else works. It takes a second to create.", icon=":material/science:")
    if st.button("Create the demo model", type="primary"):
        make_demo_model()
        st.rerun()


# ------------------------------------------------------------------------------------------------- knobs

def reset_knobs(params: SamplingParams) -> None:
    S["knobs"] = params.to_dict()
    for name in params.to_dict():
        S.pop(KNOB + name, None)


def knobs() -> dict:
    if "knobs" not in S:
        info = current_checkpoint()
        S["knobs"] = (SamplingParams.for_variant(info.variant) if info else SamplingParams()).to_dict()
    return S["knobs"]


def _widget(name: str, make, label: str, **kw):
    """A keyed widget for one SamplingParams field: range and help from svd_core's RANGES, value seeded from
    S['knobs'] and written back, so it survives page switches."""
    key = KNOB + name
    if key not in S:
        S[key] = knobs()[name]
    lo, hi, help_ = RANGES[name]
    kw = {"min_value": lo, "max_value": hi, "help": help_.capitalize() + ".", **kw}
    knobs()[name] = make(label, key=key, **kw)
    return knobs()[name]


# Advanced: (field, label, step) in two columns
ADVANCED = [
    [("num_frames", "Frames", 1), ("min_guidance_scale", "Min guidance", 0.1), ("width", "Width", None)],
    [("num_inference_steps", "Steps", 1), ("max_guidance_scale", "Max guidance", 0.1), ("height", "Height", None)],
]


def _new_seed() -> None:
    S[KNOB + "seed"] = random.randrange(0, 2**31)


def knob_widgets(multiple: int = 64) -> SamplingParams | None:
    """The micro-conditioning sliders and the Advanced section; returns the params or None (error shown).
    `multiple`: the model's size step, for the width/height inputs."""
    k = knobs()
    info = current_checkpoint()
    if info is not None and info.variant.fixed_conditioning:
        st.caption(f"{info.variant.name} was trained at fps {info.variant.defaults['fps']} and motion bucket "
                   f"{info.variant.defaults['motion_bucket_id']} only.")
    _widget("motion_bucket_id", st.slider, "Motion bucket id")
    _widget("fps", st.slider, "Conditioning fps")
    _widget("noise_aug_strength", st.slider, "Noise augmentation", step=0.01)
    frames = int(S.get(KNOB + "num_frames", k["num_frames"]))
    if S.get(KNOB + "decode_chunk_size", k["decode_chunk_size"]) > frames:
        S[KNOB + "decode_chunk_size"] = frames
    _widget("decode_chunk_size", st.slider, "Decode chunk size", max_value=frames)
    with st.expander("Advanced"):
        for column, fields in zip(st.columns(2), ADVANCED):
            with column:
                for name, label, step in fields:  # sizes step by the model's multiple
                    _widget(name, st.number_input, label, step=step or multiple)
        c3, c4 = st.columns([3, 1], vertical_alignment="bottom")
        with c3:
            _widget("seed", st.number_input, "Seed", step=1)
        with c4:
            st.button("", icon=":material/casino:", help="A new random seed", on_click=_new_seed, width="stretch")
        S.setdefault(KNOB + "resize_mode", k["resize_mode"])
        k["resize_mode"] = st.radio("Resize mode", RESIZE_MODES, horizontal=True, key=KNOB + "resize_mode",
                                    help="crop: fill the frame (default) · pad: fit with black bars · stretch: "
                                         "ignore the aspect")
        if KNOB + "output_fps" not in S:
            S[KNOB + "output_fps"] = k["output_fps"] or 0
        k["output_fps"] = st.number_input("Video fps (0 = the conditioning fps)", min_value=0, max_value=60,
                                          step=1, key=KNOB + "output_fps",
                                          help="Frame rate of the exported video.") or None
        if st.button("Reset to the checkpoint's defaults"):
            reset_knobs(SamplingParams.for_variant(info.variant) if info else SamplingParams())
            st.rerun()
    try:
        return SamplingParams.from_dict(k)
    except ValueError as e:
        st.error(str(e), icon=":material/warning:")
        return None


# ------------------------------------------------------------------------------------------------- image

@st.cache_data(max_entries=16, show_spinner=False)
def _prepare(data: bytes, width: int, height: int, resize_mode: str, multiple: int, min_side: int):
    return prepare_image(data, width, height, resize_mode, ImageSpec(multiple, min_side))


def prepare(sampler, data: bytes, params: SamplingParams):
    """The image as the sampler will see it; cached, so slider moves do not resize a large upload again."""
    spec = sampler.image_spec
    return _prepare(data, params.width, params.height, params.resize_mode, spec.multiple, spec.min_side)


def image_uploader(key: str) -> bytes | None:
    """Upload widget whose image outlives the page: stored in S['image'] = {name, bytes}."""
    up = st.file_uploader("Conditioning image", type=["png", "jpg", "jpeg", "webp"], key=key,
                          help="The first frame of the video. 1024x576 (16:9) suits SVD best.")
    if up is not None:
        data = up.getvalue()
        if S.get("image", {}).get("bytes") != data:
            S["image"] = {"name": up.name, "bytes": data}
    img = S.get("image")
    if up is None and img:
        st.caption(f"Using {img['name']} · upload another to replace it")
    return img["bytes"] if img else None
