"""Shared widgets: the sidebar (the server's model and queue), the knobs (-> SamplingParams) and the image."""

from __future__ import annotations

import dataclasses
import random
import time

import streamlit as st

from app import camera, charts, guidance, state
from app.download import download_panel
from app.resources import checkpoints, get_server, make_demo_model
from app.server import Busy
from svd_core import (
    MEMORY_MODES,
    ModelSpec,
    SamplingParams,
    SVDError,
    available_devices,
    background_removal_available,
    default_checkpoint,
    guidance_scales,
)
from svd_core.params import CHOICES, LABELS, RANGES, describe_fps, help_text, knobs_read

# ------------------------------------------------------------------------------------------------- model

def _size(info) -> str:
    return f"{info.size_gb:.2f} GB" if info.size_gb >= 0.1 else f"{info.size_bytes / 1e6:.0f} MB"


def _choose(field: str) -> None:
    """on_change of the sidebar's model widget of `field` (a ModelSpec field): ask the server for its model with
    that one field changed, so a sidebar drawn before another tab's change keeps the rest of it; refused while
    runs are active."""
    server = get_server()
    widgets = ModelSpec(*state.model_widgets())
    choice = dataclasses.replace(server.choice or widgets, **{field: getattr(widgets, field)})
    try:
        server.select(choice, by=state.session_id())
    except Busy as e:
        state.refuse_model(str(e))


def _retry_load() -> None:
    """Select the server's model again: that clears its load error, so the page's rerun loads it again."""
    server = get_server()
    if server.choice is not None:
        server.select(server.choice, by=state.session_id())


def sidebar() -> None:
    found = checkpoints()
    server = get_server()
    with st.sidebar:
        st.markdown("### Model")
        if not found:
            st.caption("No checkpoint yet: see Generate or Setup.")
            return
        by_path = {str(c.path): c for c in found}
        if server.choice is None or server.choice.checkpoint not in by_path:
            first = ModelSpec(str(default_checkpoint(found).path))
            try:
                server.select(first, by=DEFAULT_BY)
            except Busy:
                pass
        state.set_page_model(server.choice)
        model_panel(by_path)


DEFAULT_BY = "the server (default)"
SIDEBAR_POLL_S = 2.0  # the sidebar's pace following the server's model and queue (other tabs' runs)


def who(by: str) -> str:
    """A session in words: this tab, another tab, or the server."""
    return "this tab" if by == state.session_id() else by if by == DEFAULT_BY else "another tab"


def model_panel(by_path: dict) -> None:
    """The server's model and queue, kept current: a fragment rerun every SIDEBAR_POLL_S, so that following the
    server reruns the sidebar only; a model changed meanwhile (here or in another tab) reruns the page too."""
    server = get_server()

    @st.fragment(run_every=SIDEBAR_POLL_S)
    def panel():
        if server.choice != state.page_model():  # the page's knobs and sampler belong to the model
            st.rerun(scope="app")
        jobs = server.jobs()
        choice = server.choice
        if choice.checkpoint not in by_path:  # its file went away while runs still use it
            st.warning(f"{choice.name} is no longer in checkpoints/; it stays loaded until its runs finish.",
                       icon=":material/warning:")
            queue_panel(jobs)
            return
        # the widgets show the server's model, whoever chose it
        state.show_model(choice)
        st.selectbox("Checkpoint", list(by_path), key=state.MODEL_CHECKPOINT, on_change=_choose, args=("checkpoint",),
                     format_func=lambda p: by_path[p].repo_id.split("/")[-1] if by_path[p].repo_id
                     else by_path[p].path.stem,  # short enough for the sidebar
                     help="One model for every open tab: it can change while no run is queued or running.")
        refused = state.take_model_refusal()
        if refused:
            st.warning(refused, icon=":material/block:")
        info = by_path[choice.checkpoint]
        st.caption(f"{info.variant.title} · {info.label} · {_size(info)} · {info.dtype}")
        if info.variant.name.startswith("tiny"):
            st.warning("Demo model with random weights: it produces noise. Put svd_xt.safetensors in "
                       "checkpoints/ for real videos.", icon=":material/science:")
        devices = available_devices()
        if devices == ["cpu"]:
            st.caption("Device: CPU (no GPU found). Memory modes apply to GPUs only.")
        else:
            st.selectbox("Device", ["", *devices], key=state.MODEL_DEVICE, on_change=_choose, args=("device",),
                         format_func=lambda d: d or f"best ({devices[0]})", help="CUDA GPU, Apple MPS or CPU (slow)")
            st.selectbox("Memory mode", MEMORY_MODES, key=state.MODEL_MEMORY_MODE, on_change=_choose,
                         args=("memory_mode",),
                         help="fast: all on the GPU · balanced: model CPU offload · low: offload + chunked UNet + "
                              "decode chunks of 2 (< 8 GB for SVD-XT) · auto: by free GPU memory")
            st.checkbox("Compile (torch.compile)", key=state.MODEL_COMPILE, on_change=_choose, args=("compile",),
                        help="Compiles the UNet and VAE decoder: the first run with a new size, frame count or "
                             "guider compiles (minutes), later runs are faster.")
        st.caption(f"Chosen by {who(server.changed_by)} at "
                   f"{time.strftime('%H:%M', time.localtime(server.changed_at))} · "
                   f"{'loaded' if server.loaded else 'loads on first use'}")
        queue_panel(jobs)

    panel()


def queue_panel(active) -> None:
    """The shared queue: each run, whose it is in words, running or queued."""
    if not active:
        st.caption("Queue (every tab shares it): empty")
        return
    lines = []
    for i, j in enumerate(active):
        what = "running" if j.status == "running" else f"queued ({i} ahead)"
        kind = j.kind.capitalize() + (f" ({j.label})" if j.label else "")
        lines.append(f"- {kind} · {who(j.owner)}: {what}")
    st.markdown("**Queue** (every tab shares it)\n" + "\n".join(lines))


def current_checkpoint():
    server = get_server()
    if server.choice is None:
        return None
    return {str(c.path): c for c in checkpoints()}.get(server.choice.checkpoint)


def require_sampler():
    """The page's sampler. Without a checkpoint: the first-run screen; if it cannot load: the reason. Either
    way the page stops there. A model changed by another session resets this session's knobs, visibly."""
    info = current_checkpoint()
    if info is None:
        first_run_screen()
        st.stop()
    server = get_server()
    try:
        if server.loaded:
            sampler = server.sampler()
        else:
            with st.spinner(f"Loading {info.name}… (a 9.56 GB checkpoint takes a minute)"):
                sampler = server.sampler()
    except SVDError as e:  # one line, whatever went wrong (the traceback is in the server's log)
        st.error(f"Cannot load {info.name}: {e}", icon=":material/error:")
        st.button("Try loading again", on_click=_retry_load)
        st.stop()
    sync_knobs(info)
    return sampler


def sync_knobs(info) -> None:
    """Knobs belong to a checkpoint: a new model (chosen here or in another tab) brings its defaults, said."""
    made_for = state.knobs_for()
    if made_for == str(info.path):
        return
    load_settings(SamplingParams.for_variant(info.variant), str(info.path))
    if made_for is not None:
        state.notify("generate", f"The model is now {info.name}: settings reset to its defaults.")


def load_settings(params: SamplingParams, made_for: str | None) -> None:
    """Every knob from `params` (before the widgets are drawn, or from a callback), the camera's and guiders'
    own widgets with them. `made_for`: the checkpoint these values belong to, so a change of model is noticed."""
    state.set_params(params, made_for)
    camera.reset(params)
    guidance.reset(params)


def first_run_screen() -> None:

    st.title("Welcome to SVD Studio")
    st.markdown("No checkpoint found in `checkpoints/` or in your Hugging Face cache. Download one here (a "
                "Hugging Face account that accepted the model's licence is needed):")
    download_panel("first")
    st.markdown(
        "Or by hand:\n\n"
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

def _widget(name: str, make, label: str | None = None, **kw):
    """A keyed widget for one SamplingParams field (its key is the value's only store); label from svd_core's
    LABELS, range from RANGES, help with the API name."""
    lo, hi, _ = RANGES[name]
    kw = {"min_value": lo, "max_value": hi, "help": help_text(name), **kw}
    return make(label or LABELS[name], key=state.knob_key(name), persist_state="session", **kw)


# The sliders span what the models were trained on (and the usual choices), so that the defaults sit where a
# thumb can move them precisely; the typed value beside each reaches the whole of RANGES (a value typed beyond
# the span widens its slider to hold it). field -> (slider from, slider to, step)
SLIDER_SPANS = {"motion_bucket_id": (0, 255, 1), "fps": (1, 31, 1), "noise_aug_strength": (0.0, 0.3, 0.005),
                "num_inference_steps": (1, 100, 1), "min_guidance_scale": (0.0, 10.0, 0.1),
                "max_guidance_scale": (0.0, 10.0, 0.1), "decode_chunk_size": (1, 32, 1)}


def _typed(typed_key: str, key: str) -> None:
    state.put(key, state.get(typed_key))


def ranged(name: str, key: str, label: str | None = None, help: str | None = None):
    """A slider over SLIDER_SPANS[name] and a typed value beside it over RANGES[name], both for the one store
    at `key` (the slider's own key). Returns the value."""
    lo, hi, _ = RANGES[name]
    span_lo, span_hi, step = SLIDER_SPANS[name]
    cast = int if isinstance(lo, int) else float
    value = state.get(key)
    if value is None:
        value = SamplingParams.__dataclass_fields__[name].default
    label = label or LABELS[name]
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    with c1:
        value = st.slider(label, min(cast(span_lo), value), max(cast(span_hi), value), step=step, key=key,
                          persist_state="session", help=help or help_text(name))
    typed = state.typed_key(key)
    state.put(typed, value)
    with c2:
        st.number_input(f"{label} (typed, {lo:g} to {hi:g})", min_value=lo, max_value=hi, step=step, key=typed,
                        on_change=_typed, args=(typed, key), label_visibility="collapsed",
                        format="%d" if cast is int else "%g",
                        help=f"Type any value from {lo:g} to {hi:g}; the slider covers {span_lo:g} to {span_hi:g}.")
    return value


# Advanced: rows of (field, step) pairs, so that a narrow screen, which stacks columns, keeps each pair together
ADVANCED = [[("num_frames", 1), ("num_inference_steps", 1)], [("min_guidance_scale", 0.1), ("max_guidance_scale", 0.1)],
            [("width", None), ("height", None)]]


def _new_seed() -> None:
    state.set_knob("seed", random.randrange(0, 2**31))


def _reset(info) -> None:
    load_settings(SamplingParams.for_variant(info.variant), str(info.path))


FPS_HELP = ("Three numbers are called fps. Conditioning fps (this knob) is diffusers' and ComfyUI's `fps`; the "
            "model sees fps_id = fps - 1, which Stability's scripts call `fps_id` (their 'fps 6' is this knob at 7); "
            "the playback fps is the exported file's frame rate (Advanced).")


def warning_captions(warnings: list[tuple[str, str]], *knobs: str) -> None:
    """The training-range warnings (Variant.warnings) about one of `knobs` (every one when none is named), as
    captions right under their knob (they never block)."""
    for knob, text in warnings:
        if not knobs or knob in knobs:
            st.caption(f":orange[:material/warning: {text}]")


def _draft() -> SamplingParams | None:
    try:
        return state.params()
    except ValueError:
        return None


def knob_widgets(multiple: int = 64) -> SamplingParams | None:
    """The micro-conditioning sliders, the Advanced section and the sampler panel; returns the params or None
    (error shown). `multiple`: the model's size step, for the width/height inputs."""
    info = current_checkpoint()
    draft = _draft()
    warnings = info.variant.warnings(draft) if info is not None and draft is not None else []
    if info is not None and info.variant.fixed_conditioning:
        st.caption(f"{info.variant.name} was trained at one conditioning only: fps {info.variant.defaults['fps']} "
                   f"(Stability's fps_id {info.variant.defaults['fps'] - 1}) and motion bucket "
                   f"{info.variant.defaults['motion_bucket_id']}.")
    sv3d = info is not None and info.variant.is_sv3d
    if sv3d:  # SV3D has no fps or motion inputs: the camera instead

        camera.camera_section(info.variant, state.knob("num_frames") or info.variant.num_frames)
    else:
        ranged("motion_bucket_id", state.knob_key("motion_bucket_id"))
        warning_captions(warnings, "motion_bucket_id")
        ranged("fps", state.knob_key("fps"), help=help_text("fps", FPS_HELP))
        if draft is not None:
            st.caption(describe_fps(draft))
        warning_captions(warnings, "fps")
    if sv3d:  # Stability's SV3D scripts fix it at 1e-5: a slider's steps would not reach it
        _widget("noise_aug_strength", st.number_input, step=1e-5, format="%.5f")
    else:
        ranged("noise_aug_strength", state.knob_key("noise_aug_strength"))
    warning_captions(warnings, "noise_aug_strength")
    chunk = _widget("decode_chunk_size", st.slider)
    frames = state.knob("num_frames")
    if frames and chunk > frames:
        st.caption(f"Larger than the {frames} frames: all of them are decoded at once (as with {frames}).")
    with st.expander("Advanced"):
        for row in ADVANCED:
            for column, (name, step) in zip(st.columns(2), row):
                with column:  # sizes step by the model's multiple
                    _widget(name, st.number_input, step=step or multiple,
                            **({"format": "%g"} if isinstance(RANGES[name][0], float) else {}))
        warning_captions(warnings, "num_frames", "num_inference_steps", "width", "height")
        c3, c4 = st.columns(2, vertical_alignment="bottom")
        with c3:
            _widget("seed", st.number_input, step=1)
        with c4:
            st.button("Random seed", icon=":material/casino:", help="Draw a new random seed", on_click=_new_seed,
                      width="stretch")
        st.radio(LABELS["resize_mode"], CHOICES["resize_mode"][0], horizontal=True, key=state.knob_key("resize_mode"),
                 persist_state="session",
                 help="crop: fill the frame · pad: fit with bars (white for SV3D, black for SVD) · stretch: ignore "
                      "the aspect. API name: `resize_mode`.")
        st.number_input(f"{LABELS['output_fps']} (0 = the conditioning fps)", min_value=0,
                        max_value=RANGES["output_fps"][1], step=1, key=state.knob_key("output_fps"),
                        persist_state="session", help=help_text("output_fps"))
        sampler_panel()
        st.checkbox("Save the denoising record", key=state.TRAJECTORY, persist_state="session",
                    help="The run folder keeps the model's estimate at every step (denoising.mp4, labelled with "
                         "step and sigma) and per-step statistics of the latents (denoising.json, .csv); History "
                         "shows it with a step slider.")
        if info is not None:
            st.button("Reset to the checkpoint's defaults", on_click=_reset, args=(info,))
    try:
        return state.params()
    except ValueError as e:
        st.error(str(e), icon=":material/warning:")
        return None


PANEL_STEPS = {"sigma_min": 0.001, "sigma_max": 10.0, "rho": 0.5, "s_churn": 0.1, "s_tmin": 0.1, "s_tmax": 1.0,
               "s_noise": 0.01, "eta": 0.05, "lms_order": 1, "edge_perc": 0.05}


def sampler_panel() -> None:
    """Stability's sampling panel: sampler, discretization, guider, and only the knobs that combination reads."""
    st.markdown("**Stability's sampling panel**")
    st.selectbox(LABELS["sampler"], CHOICES["sampler"][0], key=state.knob_key("sampler"), persist_state="session",
                 help=help_text("sampler"))
    for col, name in zip(st.columns(2), ("discretization", "guider")):  # full names: no value is cut
        with col:
            st.selectbox(LABELS[name], CHOICES[name][0], key=state.knob_key(name), persist_state="session",
                         help=help_text(name))
    sampler, disc, guider = (state.knob(n) for n in ("sampler", "discretization", "guider"))
    reads = [k for k in knobs_read(sampler, disc, guider, state.knob("s_churn", 0)) if k in PANEL_STEPS]
    if reads:  # two a row: labels in words fit without breaking; values at the precision they have (%g)
        for i in range(0, len(reads), 2):
            for col, name in zip(st.columns(2), reads[i:i + 2]):
                with col:
                    _widget(name, st.number_input, step=PANEL_STEPS[name],
                            format="%d" if isinstance(RANGES[name][0], int) else "%g")
    elif guider not in ("triangle", "custom"):
        st.caption("This combination has no further knobs.")

    guidance.guider_knobs(guider)
    _widget("num_videos", st.number_input, step=1)
    draft = _draft()  # with the guider's lists just written
    if draft is not None:
        scales = guidance_scales(draft)
        label = "no classifier-free guidance (identity)" if guider == "identity" else f"{guider} guider"
        st.caption(f"Guidance scale per frame: {label}")
        charts.per_frame("guidance", scales.tolist(), mark="bar", y_title="scale")


# ------------------------------------------------------------------------------------------------- image

@st.cache_data(max_entries=16, show_spinner=False)
def _prepare(_sampler, spec, data: bytes, width: int, height: int, resize_mode: str, remove_bg: bool):
    """Cached by the image, the size step (`spec`) and the settings that shape the image, not by the Sampler."""
    sizing = SamplingParams(width=width, height=height, resize_mode=resize_mode)
    return _sampler.prepare(data, sizing, remove_bg)


def prepare(sampler, data: bytes, params: SamplingParams, remove_bg: bool = False):
    """The image as the sampler will see it; cached, so slider moves do not resize a large upload again."""
    return _prepare(sampler, sampler.image_spec, data, params.width, params.height, params.resize_mode, remove_bg)


def background_option(variant) -> bool:
    """SV3D wants one object on white: transparency goes on white; rembg is offered where it and its weights are
    installed (never downloaded). Returns whether to remove the background."""
    if not variant.is_sv3d:
        return False
    if background_removal_available():
        return st.checkbox("Remove the background (rembg)", key=state.REMOVE_BG, persist_state="session",
                           help="SV3D wants one object on a white background.")
    st.caption("SV3D wants one object on white: an image with transparency goes on white. (Background removal "
               "appears here when the optional rembg package and its weights are installed.)")
    return False


def image_uploader(key: str) -> state.Upload | None:
    """Upload widget whose image outlives the page (state.image())."""
    up = st.file_uploader("Conditioning image", type=["png", "jpg", "jpeg", "webp"], key=key,
                          help="The first frame of the video. 1024x576 (16:9) suits SVD best.")
    if up is not None:
        data = up.getvalue()
        current = state.image()
        if current is None or current.data != data:
            state.set_image(state.Upload(up.name, data))
    img = state.image()
    if up is None and img:
        st.caption(f"Using {img.name} · upload another to replace it")
    return img


def memory_estimate_caption(sampler, params: SamplingParams) -> str:
    """The pre-flight memory estimate of a run of `params` (svd_core.memory), one line for the page."""
    est = sampler.estimates(params)
    where = sampler.device.type
    mode = f"{sampler.memory_setting} → {sampler.memory_mode}" if sampler.memory_setting == "auto" else \
        sampler.memory_mode
    parts = " · ".join(f"{m} {e.peak / 1e9:.1f} GB" if e.peak >= 1e8 else f"{m} {e.peak / 1e6:.0f} MB"
                       for m, e in est.items())
    return (f"Memory estimate for these settings (peak allocated on the {where}): {parts} · this server: {mode}"
            + ("" if where == "cuda" else " (memory modes apply to GPUs)"))
