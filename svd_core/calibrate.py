"""Ask for a motion: which value of a micro-conditioning knob (motion_bucket_id, fps or noise_aug_strength) is
expected to give a target motion score (the SVD paper's units, svd_core.metrics) for one image.

The fit is a pure function of a response table (knob value -> the motion measured on each seed): a monotone
(isotonic) fit of the mean motion against the knob, weighted by the seeds measured, in whichever direction fits
better. It gives no value, and says why, when

* the relation is not monotone: two knob values whose means are in the wrong order by more than Z_REVERSAL
  standard errors (from the spread over seeds; 3 rather than 2, since every pair of values is a chance for noise
  to look like a reversal);
* it is too flat: the fitted motion over the whole range tried changes by no more than Z_FLAT times the spread
  over seeds (one std): the seed moves the motion as much as the knob does;
* the target lies outside the fitted motion of the values tried, or too few values were measured.

Otherwise the fitted curve (linear between the values tried) is inverted at the target; the interval is the
knob values whose fitted motion lies within one seed's spread (std) of the target. Isotonic regression is
written here (pool adjacent violators, a dozen lines): scikit-learn and scipy have it, but neither is a
dependency.

`run_calibration` samples the response with the sweep machinery (`run_sweep`), fits, confirms with one run at the
value found and saves everything as a sweep folder (its runs, grid, metrics.csv, response.png) plus the fit in
its run.json ("calibration") and calibration.png (the fit with the target line).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .params import CALIBRATION_VALUES as COARSE
from .params import RANGES, SamplingParams, format_value

KNOBS = tuple(COARSE)  # the knobs a calibration can find a value of
METRIC = "motion.score"
Z_REVERSAL, Z_FLAT = 3.0, 2.0
MIN_VALUES = 3
VERDICTS = ("ok", "flat", "non_monotone", "out_of_range", "too_few")


# ------------------------------------------------------------------------------------------------------ fit

def isotonic(y, w=None, increasing: bool = True) -> np.ndarray:
    """The weighted least-squares monotone fit of `y` (in the order given): pool adjacent violators."""
    y = np.asarray(y, dtype=float)
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=float)
    if not increasing:
        return -isotonic(-y, w, True)
    blocks: list[list[float]] = []  # [mean, weight, count]
    for yi, wi in zip(y, w):
        blocks.append([yi, wi, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, n2 = blocks.pop()
            m1, w1, n1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return np.concatenate([np.full(n, m) for m, _, n in blocks]) if blocks else np.zeros(0)


@dataclass(frozen=True)
class Fit:
    """The fit of a response table and its answer: `value` (None unless verdict is "ok") and `interval`."""
    knob: str
    target: float
    values: tuple  # knob values measured, ascending
    means: tuple
    stds: tuple  # over seeds, per value (sample std; 0 for one seed)
    counts: tuple  # seeds measured per value
    fitted: tuple  # the monotone fit at `values`
    direction: str | None  # "increasing" or "decreasing"
    spread: float | None  # the pooled std over seeds: what one run's motion varies by
    verdict: str
    message: str
    value: float | int | None = None
    interval: tuple | None = None
    skipped: tuple = ()  # knob values with no measurement

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _crossing(xs, gs, level: float, first: bool) -> float:
    """For ascending gs (piecewise linear in xs): the smallest x with g(x) >= level (`first`) or the largest x
    with g(x) <= level; level within [gs[0], gs[-1]]."""
    xs, gs = list(xs), list(gs)
    if first:
        for i in range(len(xs)):
            if gs[i] >= level:
                if i == 0 or gs[i] == gs[i - 1]:
                    return xs[i]
                t = (level - gs[i - 1]) / (gs[i] - gs[i - 1])
                return xs[i - 1] + t * (xs[i] - xs[i - 1])
        return xs[-1]
    for i in range(len(xs) - 1, -1, -1):
        if gs[i] <= level:
            if i == len(xs) - 1 or gs[i] == gs[i + 1]:
                return xs[i]
            t = (level - gs[i]) / (gs[i + 1] - gs[i])
            return xs[i] + t * (xs[i + 1] - xs[i])
    return xs[0]


def invert(xs, fitted, target: float, increasing: bool) -> float:
    """The knob value where the fitted curve (linear between the points) meets `target` (the middle of a flat
    stretch at that level)."""
    g = list(fitted) if increasing else [-v for v in fitted]
    level = target if increasing else -target
    return (_crossing(xs, g, level, True) + _crossing(xs, g, level, False)) / 2


def _band(xs, fitted, lo: float, hi: float, increasing: bool) -> tuple[float, float]:
    """The knob values whose fitted motion lies in [lo, hi] (clipped to the values tried)."""
    g = list(fitted) if increasing else [-v for v in fitted]
    a, b = (lo, hi) if increasing else (-hi, -lo)
    left = xs[0] if a <= g[0] else _crossing(xs, g, a, True)
    right = xs[-1] if b >= g[-1] else _crossing(xs, g, b, False)
    return left, right


def fit_response(knob: str, target: float, responses: dict) -> Fit:
    """Fit `responses` ({knob value: [motion on each seed, None where not measured]}) and invert it at `target`.
    Pure: see the module's docstring for the rules."""
    whole = isinstance(RANGES[knob][0], int) if knob in RANGES else False
    table = {v: [float(m) for m in ms if m is not None and math.isfinite(m)] for v, ms in responses.items()}
    skipped = tuple(sorted(v for v, ms in table.items() if not ms))
    xs = sorted(v for v, ms in table.items() if ms)
    means = [float(np.mean(table[v])) for v in xs]
    stds = [float(np.std(table[v], ddof=1)) if len(table[v]) > 1 else 0.0 for v in xs]
    counts = [len(table[v]) for v in xs]
    dof = sum(n - 1 for n in counts)
    spread = math.sqrt(sum((n - 1) * s * s for n, s in zip(counts, stds)) / dof) if dof else None

    def done(verdict, message, fitted=(), direction=None, value=None, interval=None) -> Fit:
        return Fit(knob, float(target), tuple(xs), tuple(means), tuple(stds), tuple(counts), tuple(fitted),
                   direction, spread, verdict, message, value, interval, skipped)

    missing = f" ({len(skipped)} value(s) gave no motion score)" if skipped else ""
    if len(xs) < MIN_VALUES:
        return done("too_few", f"no value: motion was measured at {len(xs)} value(s) of {knob}{missing}; a fit needs "
                               f"at least {MIN_VALUES}")
    if spread is None:
        return done("too_few", f"no value: every value of {knob} ran on one seed, so the spread over seeds is "
                               "unknown: use at least 2 seeds")
    w = np.asarray(counts, dtype=float)
    fits = {d: isotonic(means, w, d == "increasing") for d in ("increasing", "decreasing")}
    sse = {d: float(np.sum(w * (np.asarray(means) - f) ** 2)) for d, f in fits.items()}
    direction = "increasing" if sse["increasing"] <= sse["decreasing"] else "decreasing"
    fitted = [float(v) for v in fits[direction]]
    increasing = direction == "increasing"
    where = f"values {format_value(xs[0], 3)}-{format_value(xs[-1], 3)}, {min(counts)} seed(s) each"

    # a reversal: i before j with the means in the wrong order by more than Z_REVERSAL standard errors
    worst, pair = 0.0, None
    for i in range(len(xs)):
        for j in range(i + 1, len(xs)):
            drop = (means[i] - means[j]) if increasing else (means[j] - means[i])
            se = spread * math.sqrt(1 / counts[i] + 1 / counts[j])
            if drop > Z_REVERSAL * se and drop - Z_REVERSAL * se > worst:
                worst, pair = drop - Z_REVERSAL * se, (i, j)
    if pair is not None:
        i, j = pair
        return done("non_monotone",
                    f"no value: motion is not monotone in {knob} ({where}): it {'falls' if increasing else 'rises'} "
                    f"from {means[i]:.3g} at {format_value(xs[i], 3)} to {means[j]:.3g} at "
                    f"{format_value(xs[j], 3)}, more than the spread over seeds explains (std {spread:.2g})",
                    fitted, direction)
    rise = abs(fitted[-1] - fitted[0])
    if rise <= Z_FLAT * spread:
        return done("flat", f"no value: motion hardly follows {knob} ({where}): the fitted motion changes by "
                            f"{rise:.2g} over the whole range, no more than {Z_FLAT:g} x the spread over seeds (std "
                            f"{spread:.2g}): the seed moves it as much as the knob does", fitted, direction)
    lo_m, hi_m = min(fitted), max(fitted)
    if not lo_m <= target <= hi_m:
        return done("out_of_range", f"no value: target motion {target:g} is outside what {knob} "
                                    f"{format_value(xs[0], 3)}-{format_value(xs[-1], 3)} gives (fitted {lo_m:.3g} to "
                                    f"{hi_m:.3g})",
                    fitted, direction)
    x = invert(xs, fitted, target, increasing)
    a, b = _band(xs, fitted, target - spread, target + spread, increasing)
    if whole:
        x, a, b = int(round(x)), int(math.floor(a)), int(math.ceil(b))
    else:
        x, a, b = round(float(x), 4), round(float(a), 4), round(float(b), 4)
    return done("ok", f"{knob} {format_value(x, 3)} is expected to give motion {target:g} ({direction} fit {where}); "
                      f"{knob} {format_value(a, 3)} to {format_value(b, 3)} give {target:g} ± {spread:.2g} (one "
                      "seed's spread)",
                fitted, direction, x, (a, b))


# ------------------------------------------------------------------------------------------------------ plot

def calibration_png(fit: Fit, per_seed: dict | None = None, confirm: tuple | None = None, title: str = "") -> bytes:
    """The measured motion (each seed a dot, mean ± std), the monotone fit, the target line, and the value found
    with its interval and the confirming run (a star)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for x, ms in (per_seed or {}).items():
        ys = [m for m in ms if m is not None]
        ax.plot([x] * len(ys), ys, ".", color="k", alpha=0.4)
    if fit.values:
        ax.errorbar(fit.values, fit.means, yerr=fit.stds, marker="o", capsize=3, ls="none", label="mean ± std")
    if fit.fitted:
        ax.plot(fit.values, fit.fitted, "-", color="C1", label=f"monotone fit ({fit.direction})")
    ax.axhline(fit.target, color="C3", ls="--", label=f"target {fit.target:g}")
    if fit.value is not None:
        ax.axvspan(*fit.interval, color="C2", alpha=0.15, label="interval")
        ax.axvline(fit.value, color="C2", label=f"{fit.knob} {format_value(fit.value, 3)}")
    if confirm is not None and confirm[1] is not None:
        ax.plot([confirm[0]], [confirm[1]], "*", ms=14, color="C2", mec="k", label=f"confirm: {confirm[1]:.3g}")
    ax.set_xlabel(fit.knob)
    ax.set_ylabel("motion score (paper units)")
    verdict = "found" if fit.verdict == "ok" else fit.verdict.replace("_", "-")
    ax.set_title((title + "\n" if title else "") + f"calibration: {verdict}", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


# -------------------------------------------------------------------------------------------------- sampling

@dataclass
class Calibration:
    """What `run_calibration` did: the fit, the saved sweep folder, the confirming run (None without a value)."""
    fit: Fit
    path: Path
    run_paths: tuple
    steps: int  # steps of the sampled cells
    full_steps: int  # the settings' steps (the confirming run's)
    confirm_path: Path | None = None
    confirm_motion: float | None = None

    @property
    def reduced(self) -> bool:
        return self.steps != self.full_steps

    def summary(self) -> str:
        return summarize(self.fit, self.steps, self.full_steps, self.confirm_motion)


def summarize(fit: Fit, steps: int, full_steps: int, confirm_motion: float | None) -> str:
    """The result in a few plain lines (the CLI prints them, the app and run.json show them)."""
    lines = [fit.message]
    if steps != full_steps:
        lines.append(f"sampled at {steps} steps instead of {full_steps}, as asked: the fit is of those runs"
                     + ("; the confirming run uses the full steps" if fit.value is not None else ""))
    if fit.value is not None:
        got = "no motion score" if confirm_motion is None else f"motion {confirm_motion:.3g}"
        lines.append(f"confirming run at {fit.knob} {format_value(fit.value, 3)} ({full_steps} steps): {got} "
                     f"(target {fit.target:g})")
    return "\n".join(lines)


def calibration_cells(base: SamplingParams, knob: str, values, seeds: list[int], steps: int | None = None,
                      variant=None):
    """The coarse grid: every value on every seed, at `steps` when given (else the settings' steps). `variant`:
    the model's, which must read `knob`."""
    from .sweep import grid_cells

    if knob not in KNOBS:
        raise ValueError(f"calibrate knob must be one of {', '.join(KNOBS)}, got {knob!r}")
    if variant is not None and knob in variant.unused_knobs:
        raise ValueError(f"{variant.name} has no input for {knob}: nothing to calibrate")
    if steps is not None and steps < 1:
        raise ValueError(f"calibrate samples at 1 step or more, got {steps}")
    if base.num_videos != 1:  # only the first video would be measured
        raise ValueError(f"calibrate runs one video per cell: set num_videos to 1, got {base.num_videos}")
    if len(seeds) < 2:
        raise ValueError("calibrate needs at least 2 seeds: the spread over seeds decides what the fit can tell")
    if len(set(values)) < MIN_VALUES:
        raise ValueError(f"calibrate needs at least {MIN_VALUES} different values of {knob}, got {len(set(values))}")
    b = base if steps is None else base.replace(num_inference_steps=steps)
    return grid_cells(b, {knob: sorted(set(values))}, seeds=seeds)


def run_calibration(sampler, image, base: SamplingParams, knob: str, target: float, values=None,
                    seeds: list[int] | None = None, steps: int | None = None,
                    on_progress: Callable[[int, int, int, int], None] | None = None,
                    should_stop: Callable[[], bool] | None = None, out_dir=None,
                    remove_bg: bool = False) -> Calibration:
    """Sample `values` of `knob` (default COARSE) on `seeds` (default 3 from base.seed) at `steps` (default the
    settings'), fit, confirm one run at the value found (base's seed and steps), save as a sweep folder.
    on_progress(cell, cells, step, steps): the confirming run is the last cell. `remove_bg`: the image's
    background is removed first, and recorded."""
    from .errors import Cancelled
    from .metrics import scalar_metrics
    from .sweep import run_sweep, save_sweep

    variant = sampler.info.variant
    seeds = list(seeds or [base.seed + i for i in range(3)])
    cells = calibration_cells(base, knob, COARSE[knob] if values is None else values, seeds, steps, variant)
    total = len(cells) + 1

    def progress(idx, n, i, s):
        if on_progress is not None:
            on_progress(idx, total, i, s)
    sweep = run_sweep(sampler, image, cells, on_progress=progress, should_stop=should_stop,
                      out_dir=out_dir, save=False, remove_bg=remove_bg)
    per_seed: dict = {}
    for (_, r), coords in zip(sweep.cells, sweep.coords):
        per_seed.setdefault(coords[knob], []).append(scalar_metrics(r.metrics or {}).get(METRIC))
    fit = fit_response(knob, target, per_seed)
    confirm, confirm_motion = [], None
    if fit.value is not None:
        if should_stop is not None and should_stop():
            raise Cancelled("calibration cancelled: nothing was written")
        confirmed = base.replace(**{knob: fit.value})
        result = sampler.generate(sampler.prepare(image, confirmed, remove_bg), confirmed,
                                  on_step=lambda i, s: progress(len(cells), total, i, s), should_stop=should_stop)
        confirm_motion = scalar_metrics(result.metrics or {}).get(METRIC)
        confirm = [(f"confirm {knob}={format_value(fit.value, 3)}", result)]
    steps_run = cells[0][1].num_inference_steps
    title = sampler.info.name + (" (untrained demo model: meaningless)" if variant.untrained else "")
    calibration = {**fit.to_dict(), "metric": METRIC, "seeds": seeds, "steps": steps_run,
                   "full_steps": base.num_inference_steps,
                   "confirm": ({"label": confirm[0][0], "seed": base.seed, "motion": confirm_motion}
                               if confirm else None),
                   "summary": summarize(fit, steps_run, base.num_inference_steps, confirm_motion)}
    png = calibration_png(fit, per_seed, (fit.value, confirm_motion) if confirm else None, title)
    saved = save_sweep(sweep.cells, sweep.grid, sampler.info, out_dir, coords=sweep.coords, should_stop=should_stop,
                       processes=sweep.processes, calibration=calibration, extra_files={"calibration.png": png},
                       extra_runs=confirm)
    n = len(sweep.cells)
    return Calibration(fit, saved.path, tuple(saved.run_paths[:n]), steps_run, base.num_inference_steps,
                       saved.run_paths[n] if confirm else None, confirm_motion)
