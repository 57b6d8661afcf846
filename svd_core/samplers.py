"""Stability's sampling panel: discretizations (the noise levels), guiders (classifier-free guidance across
frames) and samplers (one step function each), written after sgm's `sampling.py`, `discretizer.py` and
`guiders.py` so that a seed gives Stability's video.

Everything works in sgm's float32 arithmetic on the video's latents x (F, 4, h, w), in the EDM formulation: a
sampler step gets `denoise(x, sigma) -> denoised` (the guided D(x; sigma)) and the schedule `sigmas` (float32,
with the trailing 0). Random draws go through `noise(x)` (the run's torch.Generator), in sgm's order:

* euler / heun: one draw per step before its model call, only when churn is on for that step;
* euler_ancestral / dpmpp_2s_ancestral: one draw per step after its model call(s), on every step (the last
  step's is discarded, as in sgm);
* dpmpp_2m, lms: none.

diffusers' schedulers are not used, though two of them do sgm's arithmetic: EDMDPMSolverMultistepScheduler
(sigma_data 1, v_prediction) matches dpmpp_2m and EDMEulerScheduler matches euler without churn (within 5e-7
and 3e-6 relative, replayed on one denoiser). But they step from the UNet's raw output with their own step
counter, and EDMDPMSolverMultistepScheduler builds only the EDM schedule (no legacy_ddpm); the others differ
from sgm: their Euler churn evaluates the model at sigma instead of sgm's sigma_hat, Heun has no churn,
EulerAncestral has no eta or s_noise, LMSDiscreteScheduler takes no EDM sigmas, and there is no DPM++ 2S
ancestral. One small
step function per sampler over one guided denoiser keeps all six the same shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .params import KNOBS_OF, SamplingParams

# ------------------------------------------------------------------------------------------- discretizations

LEGACY_DDPM = {"linear_start": 0.00085, "linear_end": 0.012, "num_timesteps": 1000}  # SD's linear betas


def edm_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """Karras et al.'s schedule (sgm EDMDiscretization), float32, descending, trailing 0: (n + 1,)."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def legacy_ddpm_sigmas(n: int, linear_start: float = 0.00085, linear_end: float = 0.012,
                       num_timesteps: int = 1000) -> torch.Tensor:
    """Stable Diffusion's DDPM schedule sampled at n roughly equal steps (sgm LegacyDDPMDiscretization)."""
    betas = (torch.linspace(linear_start**0.5, linear_end**0.5, num_timesteps, dtype=torch.float64) ** 2).numpy()
    alphas_cumprod = np.cumprod(1.0 - betas, axis=0)
    if n > num_timesteps:
        raise ValueError(f"legacy_ddpm has {num_timesteps} steps at most, got {n}")
    if n < num_timesteps:
        steps = np.linspace(num_timesteps - 1, 0, n, endpoint=False).astype(int)[::-1]
        alphas_cumprod = alphas_cumprod[steps]
    sigmas = torch.tensor((1 - alphas_cumprod) / alphas_cumprod, dtype=torch.float32) ** 0.5
    return torch.cat([torch.flip(sigmas, (0,)), sigmas.new_zeros(1)])


def discretize(params: SamplingParams) -> torch.Tensor:
    """The run's noise levels: float32 (num_inference_steps + 1,), ending in 0."""
    n = params.num_inference_steps
    if params.discretization == "edm":
        return edm_sigmas(n, params.sigma_min, params.sigma_max, params.rho)
    return legacy_ddpm_sigmas(n, **LEGACY_DDPM)


# -------------------------------------------------------------------------------------------------- guiders

def triangle_wave(values: torch.Tensor, period: float) -> torch.Tensor:
    """sgm TrianglePredictionGuider.triangle_wave: 0 at multiples of `period`, 1 half-way between."""
    return 2 * (values / period - torch.floor(values / period + 0.5)).abs()


def guidance_scale(params: SamplingParams) -> torch.Tensor | None:
    """Per-frame CFG scale, float32 (F,), as sgm's guiders build it; None for identity (no CFG)."""
    f, lo, hi = params.num_frames, params.min_guidance_scale, params.max_guidance_scale
    if params.guider == "linear":  # LinearPredictionGuider
        return torch.linspace(lo, hi, f)
    if params.guider == "triangle":  # TrianglePredictionGuider: one wave per period on 0..1, fused
        values = torch.linspace(0, 1, f)
        waves = [triangle_wave(values, p) for p in params.period]
        if params.period_fusing == "mean":
            wave = sum(waves) / len(waves)
        elif params.period_fusing == "multiply":
            wave = torch.prod(torch.stack(waves), dim=0)
        else:
            wave = torch.max(torch.stack(waves), dim=0).values
        return wave * (hi - lo) + lo
    if params.guider == "trapezoid":  # TrapezoidPredictionGuider: ramps at both ends, ones between (sgm's 1.0)
        edge = int(f * params.edge_perc)
        rise = torch.linspace(lo, hi, edge)
        return torch.cat([rise, torch.ones(f - 2 * edge), torch.flip(rise, [0])])
    if params.guider == "custom":
        return torch.tensor(params.guidance_scales, dtype=torch.float32)
    if params.guider == "vanilla":
        return torch.full((f,), hi)
    return None


def guidance_scales(params: SamplingParams) -> np.ndarray:
    """Per-frame guidance scale for a plot, (F,) float: identity shows 1 everywhere (the conditional prediction
    alone, which is what a scale of 1 gives)."""
    scale = guidance_scale(params)
    return np.ones(params.num_frames, np.float32) if scale is None else scale.numpy()


def apply_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x_u + scale * (x_c - x_u) with one scale per frame (rows of the (F, ...) tensors)."""
    return uncond + scale.view(-1, *[1] * (cond.ndim - 1)) * (cond - uncond)


# ------------------------------------------------------------------------------------------------- samplers

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Loop:
    """What a step sees: the guided denoiser, the schedule, the knobs, the noise source, and its own state
    (multistep history)."""
    denoise: Denoise
    sigmas: torch.Tensor  # float32 (S + 1,), trailing 0
    params: SamplingParams
    noise: Callable[[torch.Tensor], torch.Tensor]  # a standard normal tensor shaped like x, from the run's generator
    state: dict = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return len(self.sigmas) - 1


def keep_last(denoise: Denoise, into: list) -> Denoise:
    """`denoise` that also keeps its latest output in into[0]: after a step, the step's final estimate of the clean
    video (the second model call's on two-call steps), for previews."""
    def watched(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        into[0] = denoise(x, sigma)
        return into[0]
    return watched


def _all_zero(sigma: torch.Tensor, rows: int) -> bool:
    """sgm's `torch.sum(sigma) < 1e-14` over the batch's rows (one row per frame)."""
    return float(sigma) * rows < 1e-14


def _to_d(x, sigma, denoised):
    return (x - denoised) / sigma


def _churn(loop: Loop, x: torch.Tensor, i: int):
    """EDM's stochastic churn (sgm EDMSampler): raise the noise level to sigma_hat, adding fresh noise."""
    p, sigma = loop.params, loop.sigmas[i]
    gamma = min(p.s_churn / loop.num_steps, 2**0.5 - 1) if p.s_tmin <= sigma <= p.s_tmax else 0.0
    sigma_hat = sigma * (gamma + 1.0)
    if gamma > 0:
        eps = loop.noise(x) * p.s_noise
        x = x + eps * (sigma_hat**2 - sigma**2) ** 0.5
    return x, sigma_hat


def euler_step(loop: Loop, x: torch.Tensor, i: int) -> torch.Tensor:
    """sgm EulerEDMSampler."""
    x, sigma_hat = _churn(loop, x, i)
    d = _to_d(x, sigma_hat, loop.denoise(x, sigma_hat))
    return x + (loop.sigmas[i + 1] - sigma_hat) * d


def heun_step(loop: Loop, x: torch.Tensor, i: int) -> torch.Tensor:
    """sgm HeunEDMSampler: Euler, then a trapezoid correction with a second model call (none on the step to 0)."""
    x, sigma_hat = _churn(loop, x, i)
    next_sigma = loop.sigmas[i + 1]
    d = _to_d(x, sigma_hat, loop.denoise(x, sigma_hat))
    dt = next_sigma - sigma_hat
    x_euler = x + dt * d
    if _all_zero(next_sigma, x.shape[0]):
        return x_euler
    d_new = _to_d(x_euler, next_sigma, loop.denoise(x_euler, next_sigma))
    return x + (d + d_new) / 2.0 * dt


def ancestral_sigmas(sigma: torch.Tensor, next_sigma: torch.Tensor, eta: float):
    """(sigma_down, sigma_up) of sgm's get_ancestral_step for float32 sigmas. sigma_up is well conditioned: it
    is evaluated in float64 and rounded once (Stability's reference values are the correctly rounded ones; a
    float32 evaluation can land one ulp off). sigma_down = sqrt(next^2 - sigma_up^2) cancels when
    next_sigma << sigma, so it is computed in float32 from the float32 sigma_up, exactly as sgm does: that
    rounding is part of Stability's result."""
    if not eta:
        return next_sigma, torch.zeros_like(next_sigma)
    s, n = sigma.double(), next_sigma.double()
    sigma_up = torch.minimum(n, eta * (n**2 * (s**2 - n**2) / s**2) ** 0.5).float()
    return (next_sigma**2 - sigma_up**2) ** 0.5, sigma_up


def _ancestral_noise(loop: Loop, x, next_sigma, sigma_up):
    """Fresh noise of size sigma_up; drawn on every step (the stream stays sgm's) and dropped on the last."""
    noise = loop.noise(x)
    return x + noise * loop.params.s_noise * sigma_up if next_sigma > 0 else x


def euler_ancestral_step(loop: Loop, x: torch.Tensor, i: int) -> torch.Tensor:
    """sgm EulerAncestralSampler."""
    sigma, next_sigma = loop.sigmas[i], loop.sigmas[i + 1]
    sigma_down, sigma_up = ancestral_sigmas(sigma, next_sigma, loop.params.eta)
    d = _to_d(x, sigma, loop.denoise(x, sigma))
    x = x + (sigma_down - sigma) * d
    return _ancestral_noise(loop, x, next_sigma, sigma_up)


def _neg_log(sigma):
    return sigma.log().neg()


def _sigma(t):
    return t.neg().exp()


def dpmpp_2s_ancestral_step(loop: Loop, x: torch.Tensor, i: int) -> torch.Tensor:
    """sgm DPMPP2SAncestralSampler: DPM-Solver++(2S) to sigma_down (midpoint model call), then fresh noise."""
    sigma, next_sigma = loop.sigmas[i], loop.sigmas[i + 1]
    sigma_down, sigma_up = ancestral_sigmas(sigma, next_sigma, loop.params.eta)
    denoised = loop.denoise(x, sigma)
    if _all_zero(sigma_down, x.shape[0]):  # Euler to 0: saves a model call
        x = x + (sigma_down - sigma) * _to_d(x, sigma, denoised)
    else:
        t, t_next = _neg_log(sigma), _neg_log(sigma_down)
        h = t_next - t
        s = t + 0.5 * h
        x2 = (_sigma(s) / _sigma(t)) * x - (-0.5 * h).expm1() * denoised
        denoised2 = loop.denoise(x2, _sigma(s))
        x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised2
    return _ancestral_noise(loop, x, next_sigma, sigma_up)


def dpmpp_2m_step(loop: Loop, x: torch.Tensor, i: int) -> torch.Tensor:
    """sgm DPMPP2MSampler: DPM-Solver++(2M), second order from the previous step's denoised (first order on the
    first step and on the step to 0)."""
    sigma, next_sigma = loop.sigmas[i], loop.sigmas[i + 1]
    denoised = loop.denoise(x, sigma)
    t, t_next = _neg_log(sigma), _neg_log(next_sigma)
    h = t_next - t
    mult1, mult2 = _sigma(t_next) / _sigma(t), (-h).expm1()
    old = loop.state.get("old_denoised")
    loop.state["old_denoised"] = denoised
    if old is None or _all_zero(next_sigma, x.shape[0]):
        return mult1 * x - mult2 * denoised
    r = (t - _neg_log(loop.sigmas[i - 1])) / h
    denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
    return mult1 * x - mult2 * denoised_d


def lms_coefficient(order: int, sigmas: np.ndarray, i: int, j: int) -> float:
    """Integral over [sigmas[i], sigmas[i+1]] of the j-th Lagrange basis polynomial on sigmas[i], ...,
    sigmas[i-order+1] (sgm's linear_multistep_coeff). sgm integrates it with scipy's quad; a polynomial of
    degree < 4 integrates exactly, so numpy's polynomial class gives the same number without scipy."""
    others = [np.float64(sigmas[i - k]) for k in range(order) if k != j]
    basis = np.polynomial.Polynomial.fromroots(others) if others else np.polynomial.Polynomial([1.0])
    poly = basis / np.prod([np.float64(sigmas[i - j]) - o for o in others])
    antiderivative = poly.integ()
    return float(antiderivative(np.float64(sigmas[i + 1])) - antiderivative(np.float64(sigmas[i])))


def lms_step(loop: Loop, x: torch.Tensor, i: int) -> torch.Tensor:
    """sgm LinearMultistepSampler: Adams-Bashforth in sigma over the last `lms_order` derivatives."""
    sigma = loop.sigmas[i]
    ds = loop.state.setdefault("ds", [])
    ds.append(_to_d(x, sigma, loop.denoise(x, sigma)))
    if len(ds) > loop.params.lms_order:
        ds.pop(0)
    order = min(i + 1, loop.params.lms_order)
    sigmas = loop.sigmas.numpy()
    coeffs = [lms_coefficient(order, sigmas, i, j) for j in range(order)]
    return x + sum(c * d for c, d in zip(coeffs, reversed(ds)))


@dataclass(frozen=True)
class SamplerInfo:
    name: str
    sgm_class: str
    step: Callable[[Loop, torch.Tensor, int], torch.Tensor]
    calls_per_step: int  # model calls on every step but the last (which makes one)
    draws: str  # when it draws noise
    knobs: tuple[str, ...] = ()

    def model_calls(self, steps: int) -> int:
        """Model (UNet) calls of a run of `steps` steps (at most: dpmpp_2s_ancestral skips its midpoint call
        on a step whose float32 sigma_down comes out 0, as sgm does)."""
        return self.calls_per_step * (steps - 1) + 1


def _info(name, sgm_class, step, calls_per_step, draws) -> SamplerInfo:
    return SamplerInfo(name, sgm_class, step, calls_per_step, draws, KNOBS_OF["sampler"][name])


_SAMPLERS = {s.name: s for s in [
    _info("euler", "EulerEDMSampler", euler_step, 1, "with churn: one draw per step, before the call"),
    _info("heun", "HeunEDMSampler", heun_step, 2, "with churn: one draw per step, before the calls"),
    _info("euler_ancestral", "EulerAncestralSampler", euler_ancestral_step, 1, "one draw per step, after the call"),
    _info("dpmpp_2s_ancestral", "DPMPP2SAncestralSampler", dpmpp_2s_ancestral_step, 2,
          "one draw per step, after the calls"),
    _info("dpmpp_2m", "DPMPP2MSampler", dpmpp_2m_step, 1, "none"),
    _info("lms", "LinearMultistepSampler", lms_step, 1, "none"),
]}


def get_sampler(name: str) -> SamplerInfo:
    if name not in _SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(_SAMPLERS)}")
    return _SAMPLERS[name]


def list_samplers() -> list[SamplerInfo]:
    return list(_SAMPLERS.values())


def list_discretizations() -> dict[str, tuple[str, ...]]:
    """name -> the knobs it reads."""
    return dict(KNOBS_OF["discretization"])


def list_guiders() -> dict[str, tuple[str, ...]]:
    """name -> the knobs it reads."""
    return dict(KNOBS_OF["guider"])
