"""A run's result on a page: its video, measurements, downloads and denoising record."""

from __future__ import annotations

import html
from pathlib import Path

import streamlit as st

from app import charts, state
from svd_core import SVDError, decode_image, export_frames, read_video
from svd_core.params import label


def gone(path: Path) -> bool:
    """A result whose run folder was deleted (in History, maybe in another tab): say so instead of failing."""
    if Path(path).is_dir():
        return False
    st.info(f"Run {Path(path).name} was deleted (in History): its video and files are gone.",
            icon=":material/delete:")
    return True


def show_video(path, caption: str | None = None, frame_width: int | None = None) -> None:
    """A preview: a looping, muted video that plays by itself; shown at its own width, between 480 and 960 px."""
    width = max(480, min(960, frame_width)) if frame_width else "stretch"
    if not Path(path).is_file():
        st.caption(f"{Path(path).parent.name}: video deleted")
        return
    st.video(str(path), loop=True, autoplay=True, muted=True, width=width)
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
def _trajectory(_run, folder: str, name: str, mtime: float):
    """(frames of the denoising record `name`, its per-step statistics) of one run; cached per file version."""
    frames, _ = read_video(Path(folder) / name)
    return frames, _run.trajectory_stats(name)


def trajectory(run):
    """(frames, per-step statistics) of a run's denoising record (RunInfo), or None when it kept none; ValueError,
    one line, when its files are unreadable."""
    names = (run.record.trajectory or {}).get("videos") or []
    path = run.file(names[0]) if names else None  # a regular file in the run's folder, or None
    if path is None:
        return None
    try:
        return _trajectory(run, str(run.path), path.name, path.stat().st_mtime)
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
        step = 1 if len(frames) < 2 else st.slider("Denoising step", 1, len(frames), len(frames),
                                                   key=state.step_slider_key(key))
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
    step = 1 if longest < 2 else st.slider("Denoising step of every cell", 1, longest, longest,
                                           key=state.step_slider_key(key, many=True))
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
    for col, m, metric in ((cols[1], flicker, "flicker"), (cols[2], likeness, "likeness")):
        name = f"{metric}.mean"
        with col:
            if m:
                st.caption(f"{label(name)}: **{m['mean']:.3g}**" if m.get("mean") is not None else label(name))
                if m.get("per_frame"):
                    charts.per_frame(metric, m["per_frame"])
    if tb:
        base = (f"a {tb.get('fps', 0):g} fps time base (SV3D has no fps input: the run's fps setting only sets "
                "this time base)" if sv3d else f"the {tb.get('kind', '?')} time base ({tb.get('fps', 0):g} fps)")
        st.caption(f"Motion score in the SVD paper's units (Farneback flow at 2 fps, 16 px short side) on {base}; "
                   "flow: the mean optical flow between consecutive frames. See docs/metrics.md.")


def export_video(video: Path, fmt: str, fps: int) -> bytes:
    """A run's video file as a GIF or frames zip (`fmt`), decoded from the file when the download is clicked (so
    no session keeps a video's frames in memory); b"" when the file is gone or unreadable."""
    try:
        frames, _ = read_video(video)
    except (SVDError, OSError):
        return b""
    return export_frames(frames, fmt, fps)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def downloads(path, fps: int, key: str, video: int = 0) -> None:
    """mp4 and run.json from the run folder; GIF and frames zip made from the mp4 when clicked. `video`: which of
    a run's videos (num_videos) the mp4, GIF and zip are; run.json describes them all."""
    tail = f"-{video}" if video else ""
    mp4 = path / f"video{tail}.mp4"
    cols = st.columns(4)
    cols[0].download_button("mp4", _read(mp4), file_name=f"{path.name}{tail}.mp4",
                            mime="video/mp4", key=f"{key}-mp4{tail}", width="stretch")
    cols[1].download_button("GIF", lambda: export_video(mp4, "gif", fps), file_name=f"{path.name}{tail}.gif",
                            mime="image/gif", key=f"{key}-gif{tail}", width="stretch")
    cols[2].download_button("frames (zip)", lambda: export_video(mp4, "zip", fps), file_name=f"{path.name}{tail}.zip",
                            mime="application/zip", key=f"{key}-zip{tail}", width="stretch")
    cols[3].download_button("run.json", _read(path / "run.json"), file_name=f"{path.name}.json",
                            mime="application/json", key=f"{key}-json", width="stretch")
