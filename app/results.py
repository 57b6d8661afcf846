"""Background jobs on a page: their progress panel, and the results they leave in session state."""

from __future__ import annotations

import hashlib
import html
import os
import secrets
from pathlib import Path

import streamlit as st

from app import charts, state
from app.jobs import Job
from app.resources import get_server
from svd_core import SVDError, export_frames
from svd_core.images import decode_image
from svd_core.params import label

# Progress without reruns: a job publishes its progress as a small JSON file in app/static/jobs/ (served by
# Streamlit's static file serving), which the page's progress bar (an st.components.v2 component, a few lines of
# JavaScript) fetches every PROGRESS_MS (PROGRESS_SLOW_MS while the job's estimate says more than PROGRESS_SOON_S
# are left, PROGRESS_QUEUED_MS while queued); when the job has finished it triggers one rerun that shows the result.
# Each fetch costs a software-rendering browser ~11 ms of CPU (~4 ms of it drawing the new text) and the server
# ~4 ms, all taken from a run on a shared CPU: fetching fast only near the end keeps the result's latency.
# No script runs while a job runs, so a watching tab costs the sampler almost nothing. (A fragment polling once a
# second cost ~0.1 s of browser CPU per poll and slowed a 6 s run on 2 cores by ~1 s: docs/benchmarks.md.)
# Without static serving, the fallback is that fragment: every POLL_S while running, POLL_QUEUED_S while queued.
PROGRESS_MS, PROGRESS_SLOW_MS, PROGRESS_QUEUED_MS = 500, 1000, 2000  # near the end; before; queued (its place)
PROGRESS_SOON_S = 2.0
POLL_S, POLL_QUEUED_S = 1.0, 3.0
STATIC = Path(__file__).resolve().parent / "static"
JOBS_DIR = STATIC / "jobs"
PREVIEWS_DIR = STATIC / "previews"  # a running job's live previews (Job.on_preview), while a page watches

_PROGRESS_JS = """
export default function(component) {
  const { data, setTriggerValue, parentElement } = component;
  let root = parentElement.querySelector('.job');
  if (!root) {
    root = document.createElement('div');
    root.className = 'job';
    root.innerHTML = '<div class="text"></div><div class="track"><div class="fill"></div></div>' +
      '<img class="preview" hidden alt="The current estimate of the video">';
    // a progress bar to assistive technology and browser automation, as st.progress is
    root.setAttribute('role', 'progressbar');
    root.setAttribute('aria-label', data.label);
    root.setAttribute('aria-valuemin', '0');
    root.setAttribute('aria-valuemax', '100');
    root.setAttribute('aria-valuenow', '0');
    parentElement.appendChild(root);
  }
  const fill = root.querySelector('.fill'), text = root.querySelector('.text');
  const preview = root.querySelector('.preview');
  let stopped = false, wanted = null;
  // a new live preview is loaded aside and shown once whole (a deleted one never shows as a broken image)
  const show = (name) => {
    wanted = name;
    const next = new Image();
    next.onload = () => { if (!stopped && wanted === name) { preview.src = next.src; preview.hidden = false; } };
    next.src = data.previews + name;
  };
  const tick = async () => {
    if (stopped) return;
    try {
      const r = await fetch(data.url + '?t=' + Date.now(), {cache: 'no-store'});
      // no file (removed a while after the job ended, server.PROGRESS_KEEP_S, or not there yet): ask the page,
      // whose rerun shows how the job ended or keeps this bar, which goes on polling
      if (r.status === 404) { setTriggerValue('finished', 'gone'); setTimeout(tick, data.queued_ms); return; }
      if (r.ok) {
        const s = await r.json();
        // the page is touched only when something changed: an unchanged poll draws no frame
        const width = (100 * s.fraction).toFixed(1) + '%';
        if (fill.style.width !== width) {
          fill.style.width = width;
          root.setAttribute('aria-valuenow', String(Math.round(100 * s.fraction)));
        }
        if (text.textContent !== s.text) { text.textContent = s.text; root.setAttribute('aria-valuetext', s.text); }
        if (s.preview && s.preview !== wanted) show(s.preview);
        if (s.finished) { stopped = true; setTriggerValue('finished', s.status); return; }
        if (s.status === 'queued') { setTimeout(tick, data.queued_ms); return; }
        if (s.left_s != null && s.left_s > data.soon_s) { setTimeout(tick, data.slow_ms); return; }
      }
    } catch (e) {}
    setTimeout(tick, data.every_ms);
  };
  tick();
  return () => { stopped = true; };
}
"""
# No CSS transition on the bar: animating its width repaints the page for most of every update (software
# rendering: a watching headless Chromium then used 1.6-1.9 s of CPU in a 6 s run instead of ~0.2 s).
_PROGRESS_CSS = """
.text { font-size: 0.875rem; margin-bottom: 0.4rem; color: var(--st-text-color, inherit); }
.track { height: 0.5rem; border-radius: 0.25rem; background: var(--st-secondary-background-color, #f0f2f6); }
.fill { height: 0.5rem; border-radius: 0.25rem; width: 0; background: var(--st-primary-color, #5b5bd6); }
.preview { display: block; margin-top: 0.5rem; width: 100%; max-width: 640px; image-rendering: pixelated; }
.preview[hidden] { display: none; }
"""
_progress_bar = st.components.v2.component("svd_job_progress", js=_PROGRESS_JS, css=_PROGRESS_CSS)


# The video guard starts the pages' result videos (previews: muted, looping) itself, and on a CPU server holds
# them paused while any run is queued or running: a looping result video costs a software-rendering browser
# ~0.2 s of CPU a second (headless Chromium, 128x128 demo video; 0.04 s paused), CPU the sampler shares when
# browser and server share the machine (docs/benchmarks.md). Streamlit's own autoplay is off where the guard
# runs: it autoplays a video element only on its first render, so a result drawn in a fragment rerun often stayed
# paused at 0:00, and a result drawn during another tab's run played on until it was paused.
# The server writes SERVER_STATUS when its runs change (server.ModelServer.publish); the guard fetches it when a
# video appears (a new preview starts at once, or is held before it ever plays), every GUARD_MS while the page has
# a video, and never otherwise. While it holds some it fetches again GUARD_EARLY_S before the running job's
# estimated end (SERVER_STATUS's busy_for_s), at most GUARD_HELD_MAX_MS later (a run can be cancelled) and every
# GUARD_PAUSED_MS near the end or without an estimate: held videos play within about that of the server's last
# run, and a tab that holds videos through a run fetches a few times instead of twice a second. Only previews it
# started are paused again: a video the user plays, or paused, is left as it is.
# Streamlit serves every static file with "Access-Control-Allow-Origin: *" whatever server.enableCORS says, so
# any web page the user visits could read a file here it can name: each server's status file has an unguessable
# name, as every job's progress file has (start_job).
SERVER_STATUS = JOBS_DIR / f"server-{secrets.token_hex(16)}.json"
GUARD_MS, GUARD_PAUSED_MS, GUARD_HELD_MAX_MS, GUARD_EARLY_S = 2000, 500, 3000, 1.0
PREVIEW_KEY = "svd-preview"  # show_video's container key prefix: what the guard takes for a preview
_GUARD_JS = """
export default function(component) {
  const { data, parentElement } = component;
  let note = parentElement.querySelector('.guard');
  if (!note) {
    note = document.createElement('div');
    note.className = 'guard';
    note.textContent = data.note;
    parentElement.appendChild(note);
  }
  // A preview's state, kept on the element (a guard mounted again takes over): none yet (new), 'started' (by
  // the guard), 'held' (paused by the guard: data-svd-guard too, for tests and a guard mounted again), 'user'
  // (played by the user while held: the guard leaves it alone from then on).
  const held = new Set(document.querySelectorAll('video[data-svd-guard]'));
  const start = (v) => { v.__svd = 'started'; delete v.dataset.svdGuard; v.play().catch(() => {}); };
  const hold = (v) => {
    v.pause();
    v.__svd = 'held';
    v.dataset.svdGuard = '1';
    held.add(v);
    if (!v.__svdListens) {
      v.__svdListens = true;
      v.addEventListener('play', () => {
        if (v.__svd === 'held') { v.__svd = 'user'; delete v.dataset.svdGuard; held.delete(v); }
      });
    }
  };
  let stopped = false, busy = false, again = false, timer = null;
  const tick = async () => {
    if (stopped) return;
    if (busy) { again = true; return; }  // a check is under way: one more right after it
    busy = true;
    clearTimeout(timer);
    for (const v of held) if (!v.isConnected) held.delete(v);  // gone with its page: nothing to hold or note
    const videos = [...document.querySelectorAll(data.previews)];
    let s = null;
    if (videos.length || held.size) {
      try {
        const r = await fetch(data.url + '?t=' + Date.now(), {cache: 'no-store', signal: AbortSignal.timeout(5000)});
        s = r.ok ? await r.json() : null;
      } catch (e) {}
      if (stopped) { busy = false; return; }  // unmounted meanwhile: a guard mounted again does the work
      if (s && s.active > 0 && s.device === 'cpu') {
        for (const v of videos) {
          // new previews never start; those it started are paused; the user's own plays and pauses stand
          if (v.__svd === undefined || (v.__svd === 'started' && !v.paused)) hold(v);
        }
      } else {  // idle, a GPU server, or no answer: previews play
        for (const v of held) if (v.isConnected && v.__svd === 'held') start(v);
        held.clear();
        for (const v of videos) if (v.__svd === undefined) start(v);
      }
    }
    note.style.display = held.size ? 'block' : 'none';
    busy = false;
    if (again) { again = false; tick(); return; }
    // held: ask again shortly before the running job's estimated end (the server cannot be idle sooner)
    const soon = s && s.busy_for_s != null ? 1000 * (s.busy_for_s - data.early_s) : 0;
    const wait = held.size ? Math.min(data.held_max_ms, Math.max(data.paused_ms, soon)) : data.every_ms;
    if (!stopped) timer = setTimeout(tick, wait);
  };
  // a video that appears (a result, a page switch) is checked at once, not at the next poll
  const seen = new MutationObserver((records) => {
    for (const r of records) for (const n of r.addedNodes)
      if (n.nodeType === 1 && (n.tagName === 'VIDEO' || n.querySelector('video'))) { tick(); return; }
  });
  seen.observe(document.body, {childList: true, subtree: true});
  tick();
  return () => { stopped = true; clearTimeout(timer); seen.disconnect(); };
}
"""
_GUARD_CSS = ".guard { display: none; font-size: 0.8rem; color: var(--st-text-color, inherit); opacity: 0.7; }"
_video_guard = st.components.v2.component("svd_video_guard", js=_GUARD_JS, css=_GUARD_CSS)


def video_guard() -> None:
    """Mount the video guard (see SERVER_STATUS above) where it is called; its note shows while it holds videos
    paused. Nothing without static serving (previews then autoplay as Streamlit's videos do)."""
    if static_progress():
        _video_guard(data={"url": f"app/static/jobs/{SERVER_STATUS.name}", "every_ms": GUARD_MS,
                           "paused_ms": GUARD_PAUSED_MS, "held_max_ms": GUARD_HELD_MAX_MS, "early_s": GUARD_EARLY_S,
                           "previews": f"[class*='st-key-{PREVIEW_KEY}-'] video",
                           "note": "Videos paused while the server samples on the CPU (they would slow it down); "
                                   "they play again when it is done, or press play."},
                     key="video-guard")


def static_progress() -> bool:
    """Whether pages can fetch job progress as files (server.enableStaticServing, a writable app/static/jobs)."""
    if not st.get_option("server.enableStaticServing"):
        return False
    try:
        JOBS_DIR.mkdir(parents=True, exist_ok=True)
        return os.access(JOBS_DIR, os.W_OK)
    except OSError:
        return False


def clean_progress_files() -> None:
    """Progress files of jobs of an earlier server process (called once at start)."""
    for f in JOBS_DIR.glob("*.json*") if JOBS_DIR.is_dir() else []:
        f.unlink(missing_ok=True)
    for pattern in ("*.png", ".*.tmp"):  # previews, and temporaries of writes a kill cut short
        for f in PREVIEWS_DIR.glob(pattern) if PREVIEWS_DIR.is_dir() else []:
            f.unlink(missing_ok=True)


def start_job(slot_name: str, kind: str, work, label: str = "", frame_megapixels: float = 0.0,
              watch: bool = False) -> None:
    """Run `work(job)` in the background on the server's queue; its result lands in the page's slot (see
    consume_job). A second click while a job of this slot is active starts nothing. `watch`: the page shows the
    live preview (job.on_preview writes it; `work` hands it to the core when job.preview_dir is set)."""
    slot = state.slot(slot_name)
    if slot.job is not None and not slot.job.finished:
        return
    server = get_server()
    rate = server.decode_seconds_per_megapixel_frame
    job = Job(kind, work, owner=state.session_id(), label=label,
              decode_estimate=rate * frame_megapixels if rate and frame_megapixels else None)
    if static_progress():
        job.progress_file = JOBS_DIR / f"{secrets.token_hex(16)}.json"
        if watch:
            try:
                PREVIEWS_DIR.mkdir(exist_ok=True)
                job.preview_dir = PREVIEWS_DIR
            except OSError:
                pass
        job.publish()
    slot.job, slot.error = job, None
    server.submit(job)


@st.fragment
def run_section(slot_name: str, label: str, hint: str | None, on_click, args, show_result) -> None:
    """A page's gated run button (disabled, with the hint, until the page can run or while its job runs), its
    job's progress, the last error and the page's result (`show_result()`), as one fragment: the click and the
    job's end rerun this part of the page only. A full rerun re-renders every widget of the page: ~0.4 s of a
    software-rendering browser's main thread, taken from the sampler (another tab's run) when browser and
    server share a CPU. A fragment rerun reuses the arguments of the page's last full run, which are what its
    widgets show; the sidebar keeps what it showed then (its queue line says when that was). Without static
    serving the fallback poll reruns the whole page when the job ends."""
    consume_job(slot_name)  # the job's end reran this fragment only: its result moves to the slot here
    job = state.slot(slot_name).job
    st.button(label, type="primary", disabled=job is not None or hint is not None, help=hint, on_click=on_click,
              args=args)
    if hint:
        st.caption(hint)
    if job is not None:
        job_panel(job)
    show_error(slot_name)
    show_result()


def job_panel(job: Job) -> None:
    """Progress of a running job with a Cancel button. The bar fetches the job's progress file (no reruns) and
    reruns the run fragment once when the job has finished; without static serving a fragment polls the job
    instead."""
    if job.progress_file is not None:
        _progress_bar(data={"url": f"app/static/jobs/{job.progress_file.name}", "every_ms": PROGRESS_MS,
                            "slow_ms": PROGRESS_SLOW_MS, "soon_s": PROGRESS_SOON_S, "queued_ms": PROGRESS_QUEUED_MS,
                            "previews": f"app/static/{PREVIEWS_DIR.name}/",
                            "label": f"{job.kind.capitalize()} progress"},
                      key=f"progress-{job.progress_file.stem}", on_finished_change=lambda: None)
        st.button("Cancel", key=f"cancel-{id(job)}", on_click=job.cancel, disabled=job.cancel_event.is_set())
        return
    queued = job.status == "queued"

    @st.fragment(run_every=POLL_QUEUED_S if queued else POLL_S)
    def panel():
        if job.finished or (queued and job.status != "queued"):  # done, or its turn came: poll faster
            st.rerun()
        if job.status == "queued":
            st.info(job.progress_text(), icon=":material/hourglass_top:")
        st.progress(job.fraction, text=job.progress_text() if job.status != "queued" else "")
        st.button("Cancel", key=f"cancel-{id(job)}", on_click=job.cancel, disabled=job.cancel_event.is_set())

    panel()


def record_decode_rate(job: Job, result) -> None:
    """After a run: how long its decode took per megapixel-frame, for the next runs' estimates."""
    f, h, w = result.frames.shape[:3]
    videos = max(1, len(result.videos))  # timings add up over num_videos
    if result.timings.get("decode"):
        job.decode_rate = result.timings["decode"] / (videos * f * h * w / 1e6)


def gone(path: Path) -> bool:
    """A result whose run folder was deleted (in History, maybe in another tab): say so instead of failing."""
    if Path(path).is_dir():
        return False
    st.info(f"Run {Path(path).name} was deleted (in History): its video and files are gone.",
            icon=":material/delete:")
    return True


def show_video(path, caption: str | None = None, frame_width: int | None = None) -> None:
    """A preview: a looping, muted video that plays by itself (started by the video guard where it runs); shown
    at its own width, between 480 and 960 px."""
    width = max(480, min(960, frame_width)) if frame_width else "stretch"
    if not Path(path).is_file():
        st.caption(f"{Path(path).parent.name}: video deleted")
        return
    with st.container(key=f"{PREVIEW_KEY}-{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"):
        st.video(str(path), loop=True, autoplay=not static_progress(), muted=True, width=width)
    if caption:
        st.caption(html.escape(caption))


def picture(path, **kwargs) -> bool:
    """Show the image file at `path` decoded by the studio's own decoders (st.image on a path would let Pillow
    pick any, Ghostscript included); False, showing nothing, when there is none or it is not a readable image."""
    if path is None:
        return False
    try:
        image = _decoded(str(path), Path(path).stat().st_mtime)
    except (SVDError, OSError):
        return False
    st.image(image, **kwargs)
    return True


@st.cache_data(max_entries=64, show_spinner=False)
def _decoded(path: str, mtime: float):
    """A page's posters and plots decoded once, not at every rerun (a changed file has a new mtime)."""
    return decode_image(path)


@st.cache_data(max_entries=16, show_spinner=False)
def _trajectory(folder: str, name: str, mtime: float):
    """(frames of denoising.mp4, its per-step statistics) of one run folder; cached per file version."""
    import json

    from svd_core import read_video
    from svd_core.runs import validate_trajectory_stats

    stats = Path(folder) / name.replace(".mp4", ".json")
    steps = []
    if stats.is_file() and not stats.is_symlink():
        try:
            steps = validate_trajectory_stats(json.loads(stats.read_text()), f"{Path(folder).name}/{stats.name}")
        except json.JSONDecodeError as e:
            raise ValueError(f"{Path(folder).name}/{stats.name} is not JSON ({e})") from None
    frames, _ = read_video(Path(folder) / name)
    return frames, steps


def trajectory(run):
    """(frames, per-step statistics) of a run's denoising record (RunInfo), or None when it kept none; ValueError,
    one line, when its files are unreadable."""
    names = (run.record.get("trajectory") or {}).get("videos") or []
    path = run.file(names[0]) if names else None  # a regular file in the run's folder, or None
    if path is None:
        return None
    try:
        return _trajectory(str(run.path), path.name, path.stat().st_mtime)
    except (SVDError, ValueError, OSError) as e:
        raise ValueError(str(e)) from None


def _unreadable(run, error: ValueError) -> None:
    st.caption(f":material/error: `{run.id}`: unreadable denoising record ({error})")


def _step_caption(stats: list, step: int) -> str:
    if step > len(stats):
        return f"step {step}"
    r = stats[step - 1]
    change = r.get("estimate_change")
    moved = f" · estimate moved {sum(change) / len(change):.3g} (RMS, mean over frames)" if change else ""
    return f"step {r['step']}/{r['steps']} · sigma {r['sigma']:.4g}{moved}"


def trajectory_view(run, key: str) -> None:
    """A run's video beside its denoising record, with a step slider (the record only when it kept one)."""
    video = run.file("video.mp4")
    try:
        record = trajectory(run)
    except ValueError as e:
        _unreadable(run, e)
        record = None
    if record is None:
        if video is not None:
            st.video(str(video), loop=True, muted=True)
        return
    frames, stats = record
    left, right = st.columns(2)
    with left:
        if video is not None:
            st.video(str(video), loop=True, muted=True)
    with right:
        step = st.slider("Denoising step", 1, len(frames), len(frames), key=f"step-{key}") if len(frames) > 1 else 1
        st.image(frames[step - 1], caption=_step_caption(stats, step), width="stretch")


def trajectory_steps(runs: list, labels: list[str], key: str) -> None:
    """The same step of every run's denoising record side by side, one step slider over them all (a run with
    fewer steps shows its last)."""
    records = []
    for r in runs:
        try:
            records.append(trajectory(r))
        except ValueError as e:
            _unreadable(r, e)
            records.append(None)
    shown = [(label, rec) for label, rec in zip(labels, records) if rec is not None]
    if not shown:
        return
    longest = max(len(rec[0]) for _, rec in shown)
    step = st.slider("Denoising step of every cell", 1, longest, longest, key=f"steps-{key}") if longest > 1 else 1
    cols = st.columns(min(3, len(shown)))
    for i, (cell, (frames, stats)) in enumerate(shown):
        at = min(step, len(frames))
        with cols[i % len(cols)]:
            st.image(frames[at - 1], caption=f"{cell} · {_step_caption(stats, at)}", width="stretch")


def show_metrics(metrics: dict, untrained: bool, sv3d: bool = False, whose: str = "") -> None:
    """A run's measurements, each number with its own name and unit (svd_core's METRIC_LABELS), and a small
    per-frame chart per metric. `whose`: which video they are of, when a run has several."""
    if not metrics:
        return
    if "error" in metrics:
        st.caption(f":material/info: not measured: {metrics['error']}")
        return
    st.markdown(f"**Measured{f' ({whose})' if whose else ''}**"
                + (" · :orange[demo model with random weights: these numbers are meaningless]" if untrained else ""))
    tb = metrics.get("time_base", {})
    motion, flicker, likeness = (metrics.get(k) or {} for k in ("motion", "flicker", "likeness"))
    cols = st.columns(3)
    with cols[0]:
        if motion:
            if motion.get("score") is not None:
                st.caption(f"{label('motion.score')}: **{motion['score']:.3g}**")
            st.caption(f"Flow: **{motion['flow_px_per_frame']:.3g}** px/frame")
            if motion.get("per_frame"):
                charts.per_frame("flow (px)", motion["per_frame"])
    for col, m, name in ((cols[1], flicker, "flicker.mean"), (cols[2], likeness, "likeness.mean")):
        with col:
            if m:
                st.caption(f"{label(name)}: **{m['mean']:.3g}**" if m.get("mean") is not None else label(name))
                if m.get("per_frame"):
                    charts.per_frame(label(name).split(" (")[0].lower(), m["per_frame"])
    if tb:
        base = (f"a {tb.get('fps', 0):g} fps time base (SV3D has no fps input: the run's fps setting only sets "
                "this time base)" if sv3d else f"the {tb.get('kind', '?')} time base ({tb.get('fps', 0):g} fps)")
        st.caption(f"Motion score in the SVD paper's units (Farneback flow at 2 fps, 16 px short side) on {base}; "
                   "flow: the mean optical flow between consecutive frames. See docs/metrics.md.")


def _exporter(frames, fmt: str, fps: int):
    return lambda: export_frames(frames, fmt, fps)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def downloads(path, frames, fps: int, key: str, video: int = 0) -> None:
    """mp4 and run.json from the run folder; GIF and frames zip made from the frames when clicked. `video`:
    which of a run's videos (num_videos) the mp4, GIF and zip are; run.json describes them all."""
    tail = f"-{video}" if video else ""
    cols = st.columns(4)
    cols[0].download_button("mp4", _read(path / f"video{tail}.mp4"), file_name=f"{path.name}{tail}.mp4",
                            mime="video/mp4", key=f"{key}-mp4{tail}", width="stretch")
    cols[1].download_button("GIF", _exporter(frames, "gif", fps), file_name=f"{path.name}{tail}.gif",
                            mime="image/gif", key=f"{key}-gif{tail}", width="stretch")
    cols[2].download_button("frames (zip)", _exporter(frames, "zip", fps), file_name=f"{path.name}{tail}.zip",
                            mime="application/zip", key=f"{key}-zip{tail}", width="stretch")
    cols[3].download_button("run.json", _read(path / "run.json"), file_name=f"{path.name}.json",
                            mime="application/json", key=f"{key}-json", width="stretch")


def consume_job(slot_name: str) -> None:
    """Move a finished job's result (or error) into the page's slot, where the page renders it from."""
    slot = state.slot(slot_name)
    job: Job | None = slot.job
    if job is None or not job.finished:
        return
    job.done_event.wait(5)  # its thread is writing the last files: delete the progress file after that write
    slot.job = None
    if job.progress_file is not None:
        job.progress_file.unlink(missing_ok=True)
    if job.status == "done":
        slot.result = job.result
        slot.error = None
    elif job.status == "cancelled":
        slot.error = ("info", "Cancelled: nothing was saved.")
    else:
        slot.error = ("error", job.error)


def show_error(slot_name: str) -> None:
    err = state.slot(slot_name).error
    if err:
        if err[0] == "info":
            st.info(err[1], icon=":material/info:")
        else:
            st.error(err[1], icon=":material/error:")
