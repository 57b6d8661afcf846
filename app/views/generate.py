"""Generate: upload an image, set the micro-conditioning, sample, watch, download."""

import streamlit as st

from app import state
from app.controls import (
    background_option,
    image_uploader,
    knob_widgets,
    memory_estimate_caption,
    prepare,
    require_sampler,
)
from app.jobs import record_decode_rate
from app.widgets.progress import run_section, start_job
from app.widgets.result import downloads, gone, show_metrics, show_video
from svd_core import SVDError, get_variant, list_variants, load_run, save_run, summary_line, timings_line


def page() -> None:
    sampler = require_sampler()
    variant = sampler.info.variant
    st.title("Generate")
    for note in state.take_notices("generate"):
        st.info(note, icon=":material/info:")
    left, right = st.columns([1, 1], gap="large")
    with right:
        if not variant.is_sv3d:
            st.subheader("Micro-conditioning")
        params = knob_widgets(sampler.image_spec.multiple)
    with left:
        upload = image_uploader(state.UPLOAD_GENERATE)
        remove_bg = background_option(variant)
        prepared = None
        if upload is not None and params is not None:
            try:
                prepared = prepare(sampler, upload.data, params, remove_bg)
                st.image(prepared.image, caption=f"As sampled: {prepared.size[0]}x{prepared.size[1]} "
                                                 f"({params.resize_mode}) from {prepared.original_size[0]}x"
                                                 f"{prepared.original_size[1]}")
                for note in prepared.notes:
                    st.caption(f":material/info: {note}")
            except (SVDError, ValueError) as e:
                st.error(f"{upload.name}: {e}", icon=":material/broken_image:")
    hint = ("Upload an image to enable sampling." if upload is None else
            "Fix the settings above." if params is None else
            "Upload another image: this one cannot be used (see above)." if prepared is None else None)
    if params is not None:
        st.caption(memory_estimate_caption(sampler, params))
    st.checkbox("Live preview", value=True, key=state.LIVE_PREVIEW, persist_state="session",
                help="Show the model's current estimate of the video after every step while it runs (a cheap "
                     "latent-to-RGB preview at 1/8 of the size).")
    run_section("gen", "Generate video", hint, start, (prepared, params, upload), result)


def start(prepared, params, upload) -> None:
    """The run button's callback: queue the run on the server's worker, which hands it the Sampler."""
    if prepared is None or params is None:  # the gate: no image, no run
        return
    trajectory = state.save_trajectory()

    def work(job, sampler):
        result = sampler.generate(prepared, params, on_step=job.on_step, should_stop=job.should_stop,
                                  on_phase=job.on_phase, on_preview=job.on_preview if job.watch else None,
                                  trajectory=trajectory)
        record_decode_rate(job, result)
        job.on_phase("saving")
        path = save_run(result, sampler.info, source=(upload.name, upload.data), should_stop=job.should_stop)
        return {"path": path, "record": load_run(path).record}
    start_job("gen", "generate", work,
              frame_megapixels=params.num_videos * params.num_frames * params.width * params.height / 1e6,
              watch=state.live_preview())


def result() -> None:
    """The last run of this session: its videos, one summary line, its notes, measurements and downloads."""
    res = state.slot("gen").result
    if not res:
        return
    st.divider()
    st.subheader("Result")
    if gone(res["path"]):
        return
    rec = res["record"]
    p = rec.params
    n = p.num_videos
    if n == 1:
        show_video(res["path"] / "video.mp4", frame_width=p.width)
    else:  # num_videos: side by side, each with its own seed
        for i, col in enumerate(st.columns(min(n, 4))):
            with col:
                for k in range(i, n, min(n, 4)):
                    show_video(res["path"] / (f"video-{k}.mp4" if k else "video.mp4"), f"seed {p.seed + k}")
    chunk = rec.effective.get("decode_chunk_size", p.decode_chunk)
    chunk_text = f"decode chunk {chunk}" + (f" (set {p.decode_chunk_size})" if chunk != p.decode_chunk_size else "")
    st.caption(f"{summary_line(rec)} · {chunk_text} · {timings_line(rec)} · saved to outputs/{res['path'].name}")
    for note in rec.notes:
        st.caption(f":material/info: {note}")
    k, whose = 0, ""
    if n > 1:  # each video its own measurements and downloads
        k = st.segmented_control("Measurements and downloads of", range(n), default=0, key=state.GENERATE_VIDEO,
                                 format_func=lambda i: f"video {i + 1} (seed {p.seed + i})") or 0
        whose = f"video {k + 1}, seed {p.seed + k}"
    variant = get_variant(rec.variant) if rec.variant in list_variants() else None
    metrics = (rec.video_metrics or (rec.metrics,))[k]
    show_metrics(metrics, variant is not None and variant.untrained, rec.is_sv3d, whose)
    downloads(res["path"], p.video_fps, "gen", video=k)
