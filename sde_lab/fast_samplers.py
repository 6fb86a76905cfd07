r"""Fast samplers for any affine SDE: Heun with churn, DPM-Solver(-1/2/3), DPM-Solver++(2M), adaptive SDE.

**The σ-form.** Every SDE here has the Gaussian kernel ``N(α(t) x_0, σ(t)² I)``. In the scaled state
``x̂ = x / α(t)`` with noise level ``σ̃(t) = σ(t) / α(t)`` (``sde.sigma_tilde``, inverse
``sde.t_from_sigma_tilde``) the probability-flow ODE (Song et al. 2021, eq. (13)) of *any* of them becomes
the variance-exploding ODE of Karras et al. (2022, eq. (1) with ``s ≡ 1``):

    dx̂/dσ̃ = (x̂ − D(x̂; σ̃)) / σ̃ = −σ(t) ∇ log p_t(x) = ε̂(x, t),
    D(x̂; σ̃) = (x + σ² ∇ log p_t(x)) / α          (Tweedie's denoiser, in scaled coordinates).

Derivation: ``g² = dσ²/dt − 2aσ² = α² dσ̃²/dt`` and ``dα/dt = aα``; inserting ``x = α x̂`` into
``dx/dt = a x − ½ g² s`` leaves ``α dx̂/dt = −½ g² s = −α² σ̃ (dσ̃/dt) s``, i.e.
``dx̂/dσ̃ = −α σ̃ s = −σ s`` (checked against ``sde.probability_flow_drift`` in the tests). With the half log-SNR
``λ = log α − log σ = −log σ̃`` the same ODE integrates exactly in its linear part,

    x_t = (α_t/α_s) x_s − α_t ∫_{λ_s}^{λ_t} e^{−λ} ε̂ dλ          (Lu et al. 2022a, eq. (3.4)),

which DPM-Solver expands in ``λ``. Nothing here looks at the SDE's class: ``α, σ`` come from
``sde.marginal``, ``λ`` from ``sde.log_snr``, and the inverse maps from the SDE's own closed forms, so VE
(``α ≡ 1``), VP and sub-VP (``α² + σ² ≠ 1``) all go through the same code.

**Step counts.** ``heun``: ``steps`` is the number of steps, NFE ``= 2·steps − 1`` (Karras et al.
2022, Algorithm 2, last step Euler). ``dpm_solver`` / ``dpm_solver_pp``: ``steps`` is the ODE's NFE budget
and is met exactly (+1 for ``denoise``) (DPM-Solver-k takes ``steps // k`` steps of order k plus one step of order
``steps % k`` if that is not zero). ``adaptive``: the error controller chooses the steps; ``steps`` is
unused.

All solvers integrate in float64 (house rule for ODEs; EDM does the same) and return float64 samples,
like :func:`~sde_lab.sampling.ode_sample`; the score is evaluated in ``score_dtype`` (default: a module's
parameter dtype, else float64). Each starts from ``x_init`` (shape ``shape``) or a prior sample, counts
score calls exactly with :class:`~sde_lab.sampling.CountingScore`, and with ``denoise=True`` (the
default, as for every sampler of :func:`~sde_lab.sampling.sample`) ends with Tweedie's
``E[x_0 | x_eps]`` — for Heun that *is* its final Euler step to ``σ̃ = 0``; the others spend one more NFE.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

from .sampling import (
    CountingScore,
    SampleResult,
    ScoreFn,
    _check_finite,
    _check_shape,
    _device,
    _initial_state,
    _score_dtype,
    denoise_step,
)
from .sde import SAMPLING_EPS, SDE
from .utils import append_dims, randn_like

__all__ = [
    "DenoiserFn",
    "scaled_denoiser",
    "sigma_form_ode",
    "noise_prediction",
    "data_prediction",
    "sigma_tilde_grid",
    "log_snr_time_grid",
    "dpm_solver_orders",
    "heun_sample",
    "dpm_solver_sample",
    "dpm_solver_pp_sample",
    "adaptive_sample",
    "HEUN_SCHEDULES",
    "DPM_SPACINGS",
]

DenoiserFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

HEUN_SCHEDULES = ("karras", "uniform_t", "log_sigma")
DPM_SPACINGS = ("logsnr", "time")
ERROR_NORMS = ("per_sample", "batch_max", "batch_rms")


# --- the change of variables -------------------------------------------------------------------------
def scaled_denoiser(sde: SDE, score_fn: ScoreFn) -> DenoiserFn:
    r"""``D(x̂; σ̃) = x̂ + α σ̃² s(α x̂, t(σ̃))``: the data prediction in the scaled state ``x̂ = x/α``.

    ``σ̃`` has shape ``(B,)``; ``t = sde.t_from_sigma_tilde(σ̃)``. Equal to Tweedie's
    ``E[x_0 | x_t] = (x + σ² ∇ log p_t(x)) / α`` (Karras et al. 2022, eq. (3) in σ-form).
    """

    def denoise(x_hat: torch.Tensor, sigma_tilde: torch.Tensor) -> torch.Tensor:
        t = sde.t_from_sigma_tilde(sigma_tilde).clamp(0.0, sde.T)
        alpha = append_dims(sde.marginal(t)[0], x_hat.ndim)
        st = append_dims(sigma_tilde, x_hat.ndim)
        return x_hat + alpha * st**2 * score_fn(alpha * x_hat, t)

    return denoise


def sigma_form_ode(sde: SDE, score_fn: ScoreFn) -> DenoiserFn:
    r"""Right-hand side of the probability-flow ODE in σ-form, ``dx̂/dσ̃ = (x̂ − D(x̂; σ̃)) / σ̃``."""
    denoise = scaled_denoiser(sde, score_fn)

    def rhs(x_hat: torch.Tensor, sigma_tilde: torch.Tensor) -> torch.Tensor:
        return (x_hat - denoise(x_hat, sigma_tilde)) / append_dims(sigma_tilde, x_hat.ndim)

    return rhs


def noise_prediction(sde: SDE, score_fn: ScoreFn) -> ScoreFn:
    """``ε̂(x, t) = −σ(t) s(x, t)``, the noise a DPM-Solver step expands (Lu et al. 2022a, §2)."""

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -append_dims(sde.marginal(t)[1], x.ndim) * score_fn(x, t)

    return eps_fn


def data_prediction(sde: SDE, score_fn: ScoreFn) -> ScoreFn:
    """``x̂_θ(x, t) = (x + σ² s(x, t)) / α`` = ``(x − σ ε̂) / α`` (Lu et al. 2022b, eq. (8))."""

    def x0_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = (append_dims(v, x.ndim) for v in sde.marginal(t))
        return (x + sigma**2 * score_fn(x, t)) / alpha

    return x0_fn


# --- grids ---------------------------------------------------------------------------------------
def _check_common(sde: SDE, steps, eps: float, name: str) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"{name}: steps must be a positive integer, got {steps!r}")
    if not (isinstance(eps, (int, float)) and 0 < eps < sde.T):
        raise ValueError(f"{name}: eps must lie in (0, T={sde.T}), got {eps!r}")


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(map(str, choices))}")


def sigma_tilde_grid(
    sde: SDE,
    n: int,
    eps: float = SAMPLING_EPS,
    *,
    schedule: str = "karras",
    rho: float = 7.0,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> torch.Tensor:
    r"""``n`` noise levels from ``σ̃_max = σ̃(T)`` down to ``σ̃_min = σ̃(eps)`` (both included).

    ``karras``: ``σ̃_i = (σ̃_max^{1/ρ} + i/(n−1) (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ`` (Karras et al. 2022,
    eq. (5)); ``uniform_t``: ``σ̃(t_i)`` with ``t`` uniform in ``[eps, T]``; ``log_sigma``: uniform in
    ``log σ̃``. ``n = 1`` gives ``[σ̃_max]``.
    """
    _choice("schedule", schedule, HEUN_SCHEDULES)
    if not (isinstance(rho, (int, float)) and rho > 0):
        raise ValueError(f"rho must be a positive number, got {rho!r}")
    ends = torch.tensor([sde.T, eps], dtype=torch.float64)
    s_max, s_min = sde.sigma_tilde(ends).tolist()
    u = torch.linspace(0.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    if schedule == "karras":
        grid = (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    elif schedule == "uniform_t":
        grid = sde.sigma_tilde(sde.T + u * (eps - sde.T))
    else:
        grid = torch.exp(math.log(s_max) + u * (math.log(s_min) - math.log(s_max)))
    grid[0] = s_max
    if n > 1:
        grid[-1] = s_min
    return grid.to(dtype=dtype, device=device)


def log_snr_time_grid(
    sde: SDE, n_steps: int, eps: float = SAMPLING_EPS, *, spacing: str = "logsnr", dtype=torch.float64, device=None
) -> torch.Tensor:
    r"""``n_steps + 1`` times from ``T`` to ``eps``: uniform in ``λ = log α − log σ`` (``logsnr``) or in ``t``.

    Lu et al. (2022a, §3.3) recommend uniform-λ steps; uniform-t is their "time_uniform" alternative.
    """
    _choice("spacing", spacing, DPM_SPACINGS)
    u = torch.linspace(0.0, 1.0, n_steps + 1, dtype=torch.float64)
    if spacing == "logsnr":
        lam_T, lam_eps = sde.log_snr(torch.tensor([sde.T, eps], dtype=torch.float64)).tolist()
        t = sde.t_from_log_snr(lam_T + u * (lam_eps - lam_T))
    else:
        t = sde.T + u * (eps - sde.T)
    t[0], t[-1] = sde.T, eps
    return t.to(dtype=dtype, device=device)


def _setup(sde: SDE, score_fn: ScoreFn, shape, generator, device, x_init, score_dtype):
    """``(counter, score, x_T)``: the counted score evaluated in ``score_dtype`` and returned in float64."""
    shape = _check_shape(shape)
    device = _device(device, generator)
    counter = CountingScore(score_fn)
    sd = _score_dtype(score_fn, score_dtype)

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return counter(x.to(sd), t.to(sd)).to(torch.float64)

    return counter, score, _initial_state(sde, shape, generator, device, torch.float64, x_init)


def _full(t: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)


# --- Heun (EDM) -----------------------------------------------------------------------------------
def heun_sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    *,
    steps: int = 18,
    eps: float = SAMPLING_EPS,
    generator: torch.Generator | None = None,
    device=None,
    schedule: str = "karras",
    rho: float = 7.0,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    denoise: bool = True,
    x_init: torch.Tensor | None = None,
    score_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> SampleResult:
    r"""Heun's 2nd-order sampler with optional stochastic churn (Karras et al. 2022, Algorithm 2), any SDE.

    Integrates ``dx̂/dσ̃ = (x̂ − D(x̂; σ̃))/σ̃`` (module docstring) from ``σ̃(T)`` in ``steps`` steps.
    With ``γ_i = min(S_churn/steps, √2 − 1)`` for ``σ̃_i ∈ [S_tmin, S_tmax]`` (in σ̃ units), each step first
    raises the noise to ``σ̂ = σ̃_i (1 + γ_i)`` — clipped to ``σ̃(T)``, where the SDE ends — by adding
    ``sqrt(σ̂² − σ̃_i²) S_noise z``; ``s_churn = 0`` is the deterministic probability-flow sampler.

    Every step but the last is a Heun step, the last an Euler step: NFE ``= 2·steps − 1``.

    * ``denoise=True`` (EDM): ``steps`` levels from ``σ̃(T)`` to ``σ̃(eps)`` (``schedule``, ``rho``; see
      :func:`sigma_tilde_grid`) and a last Euler step to ``σ̃ = 0``, whose result is the denoiser
      ``D(x̂; σ̃(eps))`` = Tweedie's ``E[x_0 | x_eps]``.
    * ``denoise=False``: ``steps + 1`` levels ending at ``σ̃(eps)``; returns the probability-flow ODE state
      ``x = α(eps) x̂`` at ``t = eps``.
    """
    _check_common(sde, steps, eps, "heun")
    _choice("schedule", schedule, HEUN_SCHEDULES)
    for name, v in (("s_churn", s_churn), ("s_tmin", s_tmin), ("s_tmax", s_tmax), ("s_noise", s_noise)):
        if not (isinstance(v, (int, float)) and v >= 0):  # NaN fails v >= 0
            raise ValueError(f"heun: {name} must be a non-negative number, got {v!r}")
    counter, score, x = _setup(sde, score_fn, shape, generator, device, x_init, score_dtype)
    denoiser = scaled_denoiser(sde, score)
    if denoise:
        sig = sigma_tilde_grid(sde, steps, eps, schedule=schedule, rho=rho)
        sig = torch.cat([sig, sig.new_zeros(1)])
    else:
        sig = sigma_tilde_grid(sde, steps + 1, eps, schedule=schedule, rho=rho)
    levels = sig.tolist()
    alpha_T, alpha_eps = sde.marginal(torch.tensor([sde.T, eps], dtype=torch.float64))[0].tolist()
    x = x / alpha_T
    gamma_max = min(s_churn / steps, math.sqrt(2.0) - 1.0)
    for i in _progress(range(steps), progress, "heun"):
        s_cur, s_next = levels[i], levels[i + 1]
        gamma = gamma_max if s_tmin <= s_cur <= s_tmax else 0.0
        s_hat = min(s_cur * (1.0 + gamma), levels[0])
        if s_hat > s_cur:
            x = x + math.sqrt(s_hat**2 - s_cur**2) * s_noise * randn_like(x, generator)
        d = (x - denoiser(x, _full(s_hat, x))) / s_hat
        x_next = x + (s_next - s_hat) * d
        if i < steps - 1:  # Heun's correction (trapezoid) on every step but the last
            d_next = (x_next - denoiser(x_next, _full(s_next, x))) / s_next
            x_next = x + (s_next - s_hat) * 0.5 * (d + d_next)
        x = x_next
    if not denoise:
        x = alpha_eps * x
    _check_finite(x, f"heun_sample(steps={steps}, schedule={schedule}, s_churn={s_churn})")
    return SampleResult(x, counter.nfe, {"solver": "heun", "steps": steps, "sigma_tilde": sig, "schedule": schedule,
                                         "rho": rho, "s_churn": s_churn})


# --- DPM-Solver (noise prediction, single-step) ----------------------------------------------------
class _Coefs:
    """``α, σ, λ`` of the SDE at scalar times, as Python floats (float64)."""

    def __init__(self, sde: SDE):
        self.sde = sde

    def __call__(self, t: float) -> tuple[float, float, float]:
        tt = torch.tensor([t], dtype=torch.float64)
        alpha, sigma = self.sde.marginal(tt)
        return alpha.item(), sigma.item(), self.sde.log_snr(tt).item()

    def t_of(self, lam: float) -> float:
        """``t_λ(λ)``, the inverse of the half log-SNR, clipped to ``[0, T]`` against round-off."""
        return min(max(self.sde.t_from_log_snr(torch.tensor([lam], dtype=torch.float64)).item(), 0.0), self.sde.T)


def dpm_solver_orders(steps: int, order: int) -> list[int]:
    """Step orders for an NFE budget ``steps``: ``steps // order`` steps of ``order``, then one of ``steps % order``."""
    orders = [order] * (steps // order)
    if steps % order:
        orders.append(steps % order)
    return orders


def _dpm_step(coef: _Coefs, eps_fn: ScoreFn, x: torch.Tensor, s: float, t: float, order: int) -> torch.Tensor:
    r"""One DPM-Solver-``order`` step from ``s`` to ``t`` (Lu et al. 2022a: eq. (3.7); Algorithm 1 with
    ``r₁ = ½``; Algorithm 2 / DPM-Solver-3 with ``r₁ = ⅓, r₂ = ⅔``). ``order`` score evaluations."""
    a_s, _, lam_s = coef(s)
    a_t, sg_t, lam_t = coef(t)
    h = lam_t - lam_s
    e_s = eps_fn(x, _full(s, x))
    if order == 1:  # x_t = (α_t/α_s) x_s − σ_t (e^h − 1) ε̂: the DDIM step
        return (a_t / a_s) * x - sg_t * math.expm1(h) * e_s
    if order == 2:
        r1 = 0.5
        u_t = coef.t_of(lam_s + r1 * h)
        a_u, sg_u, _ = coef(u_t)
        u = (a_u / a_s) * x - sg_u * math.expm1(r1 * h) * e_s
        e_u = eps_fn(u, _full(u_t, x))
        return (a_t / a_s) * x - sg_t * math.expm1(h) * e_s - sg_t / (2 * r1) * math.expm1(h) * (e_u - e_s)
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    u1_t, u2_t = coef.t_of(lam_s + r1 * h), coef.t_of(lam_s + r2 * h)
    a_1, sg_1, _ = coef(u1_t)
    a_2, sg_2, _ = coef(u2_t)
    u1 = (a_1 / a_s) * x - sg_1 * math.expm1(r1 * h) * e_s
    D1 = eps_fn(u1, _full(u1_t, x)) - e_s
    phi_r2 = math.expm1(r2 * h) / (r2 * h) - 1.0
    u2 = (a_2 / a_s) * x - sg_2 * math.expm1(r2 * h) * e_s - sg_2 * (r2 / r1) * phi_r2 * D1
    D2 = eps_fn(u2, _full(u2_t, x)) - e_s
    phi = math.expm1(h) / h - 1.0
    return (a_t / a_s) * x - sg_t * math.expm1(h) * e_s - (sg_t / r2) * phi * D2


def dpm_solver_sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    *,
    steps: int = 20,
    eps: float = SAMPLING_EPS,
    generator: torch.Generator | None = None,
    device=None,
    order: int = 3,
    spacing: str = "logsnr",
    denoise: bool = True,
    x_init: torch.Tensor | None = None,
    score_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> SampleResult:
    r"""Single-step DPM-Solver-1/2/3 on the probability-flow ODE of any affine SDE (Lu et al. 2022a).

    Expands ``x_t = (α_t/α_s) x_s − α_t ∫_{λ_s}^{λ_t} e^{−λ} ε̂ dλ``, ``ε̂ = −σ s``, to ``order`` in
    ``h = λ_t − λ_s``; DPM-Solver-1 is DDIM, ``x_t = (α_t/α_s) x_s − σ_t (e^h − 1) ε̂(x_s, s)``.

    ``steps`` is the ODE's NFE budget, met exactly (:func:`dpm_solver_orders`): ``steps // order``
    steps of ``order`` and one of order ``steps % order`` if nonzero, on a grid from ``T`` to ``eps``
    uniform in ``λ`` (``spacing="logsnr"``, Lu et al.'s choice) or in ``t`` (``"time"``). NFE
    ``= steps + denoise``.
    """
    _check_common(sde, steps, eps, "dpm_solver")
    if order not in (1, 2, 3) or isinstance(order, bool):
        raise ValueError(f"dpm_solver: unknown order {order!r}; valid choices: 1, 2, 3")
    _choice("spacing", spacing, DPM_SPACINGS)
    counter, score, x = _setup(sde, score_fn, shape, generator, device, x_init, score_dtype)
    orders = dpm_solver_orders(steps, order)
    times = log_snr_time_grid(sde, len(orders), eps, spacing=spacing).tolist()
    eps_fn, coef = noise_prediction(sde, score), _Coefs(sde)
    for k in _progress(range(len(orders)), progress, f"dpm_solver-{order}"):
        x = _dpm_step(coef, eps_fn, x, times[k], times[k + 1], orders[k])
    if denoise:
        x = denoise_step(sde, score, x, _full(eps, x))
    _check_finite(x, f"dpm_solver_sample(order={order}, steps={steps}, spacing={spacing})")
    return SampleResult(x, counter.nfe, {"solver": "dpm_solver", "order": order, "orders": orders, "times": times,
                                         "spacing": spacing})


def dpm_solver_pp_sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    *,
    steps: int = 20,
    eps: float = SAMPLING_EPS,
    generator: torch.Generator | None = None,
    device=None,
    spacing: str = "logsnr",
    denoise: bool = True,
    x_init: torch.Tensor | None = None,
    score_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> SampleResult:
    r"""Multistep DPM-Solver++(2M) with data prediction ``x̂_θ = (x + σ² s)/α`` (Lu et al. 2022b, Algorithm 2).

    ``x_1 = (σ_1/σ_0) x_0 − α_1 (e^{−h_1} − 1) x̂_θ(x_0, t_0)``; for ``i ≥ 2``, with ``r_i = h_{i−1}/h_i``,
    ``D_i = (1 + 1/(2r_i)) x̂_θ(x_{i−1}, t_{i−1}) − 1/(2r_i) x̂_θ(x_{i−2}, t_{i−2})`` and
    ``x_i = (σ_i/σ_{i−1}) x_{i−1} − α_i (e^{−h_i} − 1) D_i``. One score evaluation per step on a grid
    uniform in ``λ`` or ``t`` (``spacing``): NFE ``= steps + denoise``.
    """
    _check_common(sde, steps, eps, "dpm_solver_pp")
    _choice("spacing", spacing, DPM_SPACINGS)
    counter, score, x = _setup(sde, score_fn, shape, generator, device, x_init, score_dtype)
    times = log_snr_time_grid(sde, steps, eps, spacing=spacing).tolist()
    x0_fn, coef = data_prediction(sde, score), _Coefs(sde)
    prev_x0, prev_h = None, None
    for i in _progress(range(steps), progress, "dpm_solver++(2M)"):
        s, t = times[i], times[i + 1]
        _, sg_s, lam_s = coef(s)
        a_t, sg_t, lam_t = coef(t)
        h = lam_t - lam_s
        x0 = x0_fn(x, _full(s, x))
        if prev_x0 is None:  # first step: DPM-Solver++1 (= DDIM)
            D = x0
        else:
            r = prev_h / h
            D = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev_x0
        x = (sg_t / sg_s) * x - a_t * math.expm1(-h) * D
        prev_x0, prev_h = x0, h
    if denoise:
        x = denoise_step(sde, score, x, _full(eps, x))
    _check_finite(x, f"dpm_solver_pp_sample(steps={steps}, spacing={spacing})")
    return SampleResult(x, counter.nfe, {"solver": "dpm_solver_pp", "times": times, "spacing": spacing})


# --- adaptive reverse-SDE solver ("Gotta Go Fast") --------------------------------------------------
def adaptive_sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    *,
    steps: int | None = None,
    eps: float = SAMPLING_EPS,
    generator: torch.Generator | None = None,
    device=None,
    abs_tol: float = 0.0078,
    rel_tol: float = 0.05,
    h_init: float = 0.01,
    safety: float = 0.9,
    exponent: float = 0.9,
    extrapolate: bool = True,
    error_norm: str = "batch_max",
    max_iters: int = 100_000,
    denoise: bool = True,
    x_init: torch.Tensor | None = None,
    score_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> SampleResult:
    r"""Adaptive-step reverse-SDE solver (Jolicoeur-Martineau et al. 2021, "Gotta Go Fast", Algorithm 1).

    With the reverse drift ``F(x, t) = f(x, t) − g(t)² s(x, t)`` and one draw ``z`` per attempted step
    from ``t`` to ``t − h``:

        x'  = x − h F(x, t)      + √h g(t) z                    (Euler–Maruyama)
        x̃   = x − h F(x', t − h) + √h g(t − h) z
        x'' = ½ (x' + x̃)                                         (improved Euler, same z)
        δ   = max(ε_abs, ε_rel max(|x'|, |x'_prev|)),   E₂ = ‖(x' − x'') / δ‖₂ / √n

    (``n`` = data dimension). Accept if ``E₂ ≤ 1``: ``x ← x''`` (``extrapolate``, the paper's default) or
    ``x'``, ``t ← t − h``, ``x'_prev ← x'``. Always ``h ← min(t − eps, θ h E₂^{−r})`` (``safety`` θ = 0.9,
    ``exponent`` r = 0.9, ``h_init`` = 0.01). The defaults ε_abs = 0.0078, ε_rel = 0.05 are the paper's
    for data in [−1, 1].

    ``error_norm="batch_max"`` (default) steps the batch together, controlled by the largest ``E₂``;
    ``"batch_rms"`` steps it together controlled by the RMS of the per-sample ``E₂`` — the worst of a large
    batch of low-dimensional samples is far above its typical error, so ``batch_max`` takes ever smaller
    steps as the batch grows (on 2000 2-D points ``batch_rms`` needs 2–4× fewer NFE at the same SW2);
    ``"per_sample"`` gives every sample its own ``t`` and ``h`` (the score sees per-sample times, only
    unfinished samples are evaluated). Accepting or rejecting a step by its own noise draw biases the
    per-sample solution when ``n`` is small — the error estimate of a 2-D sample is itself very noisy —
    so ``per_sample`` is for high-dimensional data (images), where ``E₂`` concentrates. ``steps`` is unused (the controller chooses the steps) and ``max_iters`` bounds the
    attempts. ``nfe`` counts batched score calls (two per attempt, rejected ones included, plus
    ``denoise``); ``info`` has per-sample ``accepted`` / ``rejected`` counts and ``nfe_per_sample``.
    """
    if steps is not None and not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"adaptive: steps must be None or a positive integer (it is unused), got {steps!r}")
    if not (isinstance(eps, (int, float)) and 0 < eps < sde.T):
        raise ValueError(f"adaptive: eps must lie in (0, T={sde.T}), got {eps!r}")
    for name, v in (("abs_tol", abs_tol), ("rel_tol", rel_tol)):
        if not (isinstance(v, (int, float)) and v >= 0 and math.isfinite(v)):
            raise ValueError(f"adaptive: {name} must be a non-negative number, got {v!r}")
    if not (abs_tol > 0 or rel_tol > 0):
        raise ValueError("adaptive: at least one of abs_tol, rel_tol must be positive")
    for name, v in (("h_init", h_init), ("safety", safety), ("exponent", exponent)):
        if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
            raise ValueError(f"adaptive: {name} must be a positive number, got {v!r}")
    if not (isinstance(max_iters, int) and max_iters >= 1):
        raise ValueError(f"adaptive: max_iters must be a positive integer, got {max_iters!r}")
    _choice("error_norm", error_norm, ERROR_NORMS)
    counter, score, x = _setup(sde, score_fn, shape, generator, device, x_init, score_dtype)
    B, n = x.shape[0], x[0].numel()
    t = torch.full((B,), float(sde.T), dtype=x.dtype, device=x.device)
    h = torch.full((B,), float(h_init), dtype=x.dtype, device=x.device)
    x_prev = x.clone()
    n_acc = torch.zeros(B, dtype=torch.long, device=x.device)
    n_rej = torch.zeros(B, dtype=torch.long, device=x.device)
    active = torch.ones(B, dtype=torch.bool, device=x.device)
    iters = 0
    bar = tqdm(desc="adaptive (attempts)", leave=False, disable=not progress)
    while bool(active.any()):
        if iters >= max_iters:
            raise RuntimeError(
                f"adaptive: {int(active.sum())} samples unfinished after max_iters={max_iters} attempts; "
                f"loosen abs_tol={abs_tol} / rel_tol={rel_tol} or raise max_iters"
            )
        iters += 1
        idx = active.nonzero().squeeze(1)
        xa, ta, xp = x[idx], t[idx], x_prev[idx]
        ha = torch.minimum(h[idx], ta - eps)
        tn = torch.where(ha >= ta - eps, torch.full_like(ta, eps), ta - ha)  # land exactly on eps
        z = randn_like(xa, generator)
        hd, sqh = append_dims(ha, xa.ndim), append_dims(ha.sqrt(), xa.ndim)
        g_t, g_n = append_dims(sde.diffusion(ta), xa.ndim), append_dims(sde.diffusion(tn), xa.ndim)
        x1 = xa - hd * sde.reverse_drift(xa, ta, score(xa, ta)) + sqh * g_t * z
        x_tilde = xa - hd * sde.reverse_drift(x1, tn, score(x1, tn)) + sqh * g_n * z
        x2 = 0.5 * (x1 + x_tilde)
        delta = torch.clamp(rel_tol * torch.maximum(x1.abs(), xp.abs()), min=abs_tol)
        err = ((x1 - x2) / delta).flatten(1).norm(dim=1) / math.sqrt(n)
        if error_norm == "batch_max":
            err = err.max().expand_as(err)
        elif error_norm == "batch_rms":
            err = err.square().mean().sqrt().expand_as(err)
        acc = err <= 1.0
        n_acc[idx] += acc.long()
        n_rej[idx] += (~acc).long()
        ia = idx[acc]
        x[ia] = (x2 if extrapolate else x1)[acc]
        x_prev[ia] = x1[acc]
        t_new = torch.where(acc, tn, ta)
        t[idx] = t_new
        h[idx] = torch.minimum(t_new - eps, safety * ha * err.clamp_min(1e-12) ** (-exponent))
        active = t > eps
        bar.update(1)
    bar.close()
    per_sample = 2 * (n_acc + n_rej)
    if denoise:
        x = denoise_step(sde, score, x, _full(eps, x))
    _check_finite(x, f"adaptive_sample(abs_tol={abs_tol}, rel_tol={rel_tol})")
    info = {
        "solver": "adaptive",
        "accepted": n_acc.cpu(),
        "rejected": n_rej.cpu(),
        "nfe_per_sample": per_sample.double().mean().item() + int(denoise),
        "attempts": iters,
        "error_norm": error_norm,
    }
    return SampleResult(x, counter.nfe, info)


def _progress(iterable, enabled: bool, desc: str):
    return tqdm(iterable, desc=desc, leave=False, disable=not enabled)
