"""Generate: upload an image, set the micro-conditioning, sample, watch, download."""

import streamlit as st

from controls import S, image_uploader, knob_widgets, prepare, require_sampler
from results import downloads, run_button, show_video, start_job
from svd_core import SVDError, save_run

sampler = require_sampler()
st.title("Generate")
left, right = st.columns([1, 1], gap="large")
with right:
    st.subheader("Micro-conditioning")
    params = knob_widgets(sampler.image_spec.multiple)
with left:
    data = image_uploader("gen_upload")
    prepared = None
    if data is not None and params is not None:
        try:
            prepared = prepare(sampler, data, params)
            st.image(prepared.image, caption=f"As sampled: {prepared.size[0]}x{prepared.size[1]} "
                                             f"({params.resize_mode}) from {prepared.original_size[0]}x"
                                             f"{prepared.original_size[1]}")
            for note in prepared.notes:
                st.caption(f":material/info: {note}")
        except (SVDError, ValueError) as e:
            st.error(str(e), icon=":material/broken_image:")


def start(sampler, prepared, params):
    if prepared is None or params is None:  # the gate: no image, no run
        return

    def work(job):
        result = sampler.generate(prepared, params, on_step=job.on_step, should_stop=job.should_stop,
                                  on_queue=job.on_queue)
        return {"path": save_run(result, sampler.info), "result": result}
    start_job("gen", "generate", work)


hint = ("Upload an image to enable sampling." if data is None else
        "Fix the settings above." if params is None else
        "Upload another image: this one cannot be used (see above)." if prepared is None else None)
run_button("gen", "Generate video", hint, start, (sampler, prepared, params))

res = S.get("gen_result")
if res:
    st.divider()
    st.subheader("Result")
    r = res["result"]
    p, t = r.params, r.timings
    show_video(res["path"] / "video.mp4", frame_width=p.width)
    st.caption(f"seed {p.seed} · motion {p.motion_bucket_id} · fps {p.fps} · noise aug {p.noise_aug_strength:g} · "
               f"{p.num_frames} frames · {p.num_inference_steps} steps · {t['total']:.1f} s "
               f"(encode {t['image_encode']:.1f}, denoise {t['denoise']:.1f}, decode {t['decode']:.1f}) · "
               f"{r.memory_mode} on {r.device} · saved to outputs/{res['path'].name}")
    for note in r.notes:
        st.caption(f":material/info: {note}")
    downloads(res["path"], r.frames, p.video_fps, "gen")
