r"""Fast samplers for any affine path: Heun with churn, DPM-Solver(-1/2/3), DPM-Solver++(2M), adaptive SDE.

**The σ-form.** Every path here has the Gaussian kernel ``N(α(t) x_0, σ(t)² I)``. In the scaled state
``x̂ = x / α(t)`` with noise level ``σ̃(t) = σ(t) / α(t)`` (``path.sigma_tilde``, inverse
``path.t_from_sigma_tilde``) the probability-flow ODE (Song et al. 2021, eq. (13)) of *any* of them becomes
the variance-exploding ODE of Karras et al. (2022, eq. (1) with ``s ≡ 1``):

    dx̂/dσ̃ = (x̂ − D(x̂; σ̃)) / σ̃ = −σ(t) ∇ log p_t(x) = ε̂(x, t),
    D(x̂; σ̃) = E[x_0 | x_t = α x̂]          (the model's ``x0``: Tweedie's denoiser).

Derivation: ``g² = dσ²/dt − 2fσ² = α² dσ̃²/dt`` and ``dα/dt = fα``; inserting ``x = α x̂`` into
``dx/dt = f x − ½ g² s`` leaves ``α dx̂/dt = −½ g² s = −α² σ̃ (dσ̃/dt) s``, i.e.
``dx̂/dσ̃ = −α σ̃ s = −σ s`` (checked against ``path.probability_flow_drift`` in the tests). With the half
log-SNR ``λ = log α − log σ = −log σ̃`` the same ODE integrates exactly in its linear part,

    x_t = (α_t/α_s) x_s − α_t ∫_{λ_s}^{λ_t} e^{−λ} ε̂ dλ          (Lu et al. 2022a, eq. (3.4)),

which DPM-Solver expands in ``λ``. Nothing here looks at the path's class: ``α, σ`` come from
``path.marginal``, ``λ`` from ``path.log_snr``, and the inverse maps from the path's own closed forms (or
its bisection), so VE (``α ≡ 1``), VP, sub-VP and any user path go through the same code.

Every solver here is a frozen dataclass called as ``solver(model, x_T, grid, noise=..., callback=...)``
(:class:`~sde_lab.sampling.Solver`), integrates in float64 (house rule for ODEs; EDM does the same) and
evaluates the model in its own dtype. ``denoise=True`` ends with Tweedie's ``E[x_0 | x_{t_min}]`` — for
Heun that *is* EDM's last Euler step to ``σ̃ = 0``; the others spend one more NFE.

**Step counts of the v1 functions.** ``heun_sample``: ``steps`` levels from ``σ̃(T)`` to ``σ̃(eps)``
(``steps + 1`` with ``denoise=False``), NFE ``= 2·steps − 1`` (``2·steps`` without denoising: every step is
a Heun step, since EDM switches to Euler only at ``σ̃ = 0``). ``dpm_solver_sample`` /
``dpm_solver_pp_sample``: ``steps`` is the ODE's NFE budget and is met exactly, NFE ``= steps + 1`` with
denoising (DPM-Solver-k takes ``steps // k`` steps of order k plus one step of order ``steps % k`` if that
is not zero). ``adaptive_sample``: the error controller chooses the steps; ``steps`` is unused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from .grids import _check_steps, karras_grid, logsnr_grid, uniform_time_grid
from .model import DiffusionModel, ScoreFn, as_model
from .multistep import DPMSolverPP  # re-exported: v1 imported it from here
from .multistep import _choice
from .noise import draw_normal, normal_for
from .sampling import SampleResult, Solver, _check_eps, _device, _full, _in_dtype, _run, prior_state
from .sde import SAMPLING_EPS, SDE
from .utils import append_dims

__all__ = [
    "DenoiserFn",
    "Heun",
    "DPMSolver",
    "DPMSolverPP",
    "AdaptiveSDE",
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
    "ERROR_NORMS",
]

DenoiserFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

HEUN_SCHEDULES = ("karras", "uniform_t", "log_sigma")
DPM_SPACINGS = ("logsnr", "time")
ERROR_NORMS = ("per_sample", "batch_max", "batch_rms")


# --- the change of variables -------------------------------------------------------------------------
def scaled_denoiser(sde: SDE, score_fn) -> DenoiserFn:
    r"""``D(x̂; σ̃) = E[x_0 | x_t = α x̂]`` at ``t = t(σ̃)``: the model's data prediction in the scaled state."""
    model = as_model(sde, score_fn)

    def denoise(x_hat: torch.Tensor, sigma_tilde: torch.Tensor) -> torch.Tensor:
        t = sde.t_from_sigma_tilde(sigma_tilde).clamp(0.0, sde.T)
        alpha = append_dims(sde.marginal(t)[0], x_hat.ndim)
        return model.x0(alpha * x_hat, t)

    return denoise


def sigma_form_ode(sde: SDE, score_fn) -> DenoiserFn:
    r"""Right-hand side of the probability-flow ODE in σ-form, ``dx̂/dσ̃ = (x̂ − D(x̂; σ̃)) / σ̃``."""
    denoise = scaled_denoiser(sde, score_fn)

    def rhs(x_hat: torch.Tensor, sigma_tilde: torch.Tensor) -> torch.Tensor:
        return (x_hat - denoise(x_hat, sigma_tilde)) / append_dims(sigma_tilde, x_hat.ndim)

    return rhs


def noise_prediction(sde: SDE, score_fn) -> ScoreFn:
    """``ε̂(x, t) = −σ(t) s(x, t)``, the noise a DPM-Solver step expands (Lu et al. 2022a, §2)."""
    return as_model(sde, score_fn).eps


def data_prediction(sde: SDE, score_fn) -> ScoreFn:
    """``x̂_θ(x, t) = (x + σ² s(x, t)) / α`` = ``(x − σ ε̂) / α`` (Lu et al. 2022b, eq. (8))."""
    return as_model(sde, score_fn).x0


# --- grids of the v1 functions ----------------------------------------------------------------------------
def sigma_tilde_grid(sde: SDE, n: int, eps: float = SAMPLING_EPS, *, schedule: str = "karras", rho: float = 7.0,
                     dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    r"""``n`` noise levels from ``σ̃_max = σ̃(T)`` down to ``σ̃_min = σ̃(eps)`` (both included).

    ``karras`` (Karras et al. 2022, eq. (5)), ``uniform_t`` (``σ̃(t_i)``, ``t`` uniform) or ``log_sigma``
    (uniform in ``log σ̃``): the σ̃ values of :func:`_heun_times`. ``n = 1`` gives ``[σ̃_max]``.
    """
    return sde.sigma_tilde(_heun_times(sde, n, eps, schedule, rho)).to(dtype=dtype, device=device)


def _heun_times(sde: SDE, n: int, eps: float, schedule: str, rho: float) -> torch.Tensor:
    _choice("schedule", schedule, HEUN_SCHEDULES)
    if isinstance(rho, bool) or not (isinstance(rho, (int, float)) and rho > 0):
        raise ValueError(f"rho must be a positive number, got {rho!r}")
    _check_steps(n)
    if n == 1:
        return torch.tensor([float(sde.t_max)], dtype=torch.float64)
    if schedule == "karras":
        return karras_grid(sde, n - 1, eps, rho=rho)
    if schedule == "uniform_t":
        return uniform_time_grid(n - 1, eps, sde.t_max)
    return logsnr_grid(sde, n - 1, eps)


def log_snr_time_grid(sde: SDE, n_steps: int, eps: float = SAMPLING_EPS, *, spacing: str = "logsnr",
                      dtype=torch.float64, device=None) -> torch.Tensor:
    r"""``n_steps + 1`` times from ``T`` to ``eps``: uniform in ``λ = log α − log σ`` (``logsnr``) or in ``t``.

    Lu et al. (2022a, §3.3) recommend uniform-λ steps; uniform-t is their "time_uniform" alternative.
    """
    _choice("spacing", spacing, DPM_SPACINGS)
    if spacing == "logsnr":
        return logsnr_grid(sde, n_steps, eps, dtype=dtype, device=device)
    return uniform_time_grid(n_steps, eps, sde.t_max, dtype=dtype, device=device)


# --- Heun (EDM) -----------------------------------------------------------------------------------
def _nonneg(name: str, v) -> None:
    if isinstance(v, bool) or not (isinstance(v, (int, float)) and v >= 0):  # NaN fails v >= 0
        raise ValueError(f"heun: {name} must be a non-negative number, got {v!r}")


@dataclass(frozen=True)
class Heun(Solver):
    r"""Heun's 2nd-order sampler with optional stochastic churn (Karras et al. 2022, Algorithm 2), any path.

    Integrates ``dx̂/dσ̃ = (x̂ − D(x̂; σ̃))/σ̃`` (module docstring) over the σ̃ levels of the time grid; every
    step is a Heun step (trapezoid), EDM's Euler step being the final one to ``σ̃ = 0`` — which is
    ``denoise`` (``D(x̂; σ̃(t_min))`` = Tweedie's ``E[x_0 | x_{t_min}]``). With ``N`` steps in all (the grid's
    intervals plus the denoising step), ``γ_i = min(S_churn/N, √2 − 1)`` for ``σ̃_i ∈ [S_tmin, S_tmax]`` (in
    σ̃ units): each step first raises the noise to ``σ̂ = σ̃_i (1 + γ_i)`` — clipped to ``σ̃(t_0)``, where the
    path starts — by adding ``sqrt(σ̂² − σ̃_i²) S_noise z``; ``s_churn = 0`` is the deterministic
    probability-flow sampler. NFE ``= 2 n + denoise`` on a grid of ``n`` intervals.
    """

    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0
    denoise: bool = True

    state_dtype: ClassVar[torch.dtype] = torch.float64
    default_grid: ClassVar[str] = "karras"

    def __post_init__(self):
        for name in ("s_churn", "s_tmin", "s_tmax", "s_noise"):
            _nonneg(name, getattr(self, name))

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.s_churn > 0

    def nfe(self, grid) -> int:
        return 2 * (len(grid) - 1) + int(self.denoise)

    def _solve(self, model, x, grid, noise, callback):
        path = model.path
        levels = path.sigma_tilde(grid.double()).tolist()
        times = grid.double().tolist()
        alpha = path.marginal(grid.double())[0].tolist()
        n = len(levels) - 1
        if n and not math.isfinite(levels[0]):
            raise ValueError("heun: σ̃ is infinite at the grid's first time (α = 0 there); start the grid at t_max < T")

        def D(xh, s, t):  # the denoiser at σ̃ = s (time t)
            tt = _full(t, xh)
            return model.x0(append_dims(path.marginal(tt)[0], xh.ndim) * xh, tt)

        x = x / alpha[0]
        gamma_max = min(self.s_churn / max(n + int(self.denoise), 1), math.sqrt(2.0) - 1.0)
        for i in range(n):
            s_cur, s_next = levels[i], levels[i + 1]
            gamma = gamma_max if self.s_tmin <= s_cur <= self.s_tmax else 0.0
            s_hat = min(s_cur * (1.0 + gamma), levels[0])
            t_hat = times[i]
            if s_hat > s_cur:
                x = x + math.sqrt(s_hat**2 - s_cur**2) * self.s_noise * draw_normal(noise, x)
                t_hat = float(path.t_from_sigma_tilde(torch.tensor([s_hat], dtype=torch.float64)).clamp(0.0, path.T))
            x0 = D(x, s_hat, t_hat)
            d = (x - x0) / s_hat
            x_next = x + (s_next - s_hat) * d
            if s_next > 0:  # Heun's correction (trapezoid); Euler only where σ̃ reaches 0
                d_next = (x_next - D(x_next, s_next, times[i + 1])) / s_next
                x_next = x + (s_next - s_hat) * 0.5 * (d + d_next)
            x = x_next
            if callback is not None:
                callback(i, grid[i + 1], alpha[i + 1] * x, x0)
        if self.denoise:
            return D(x, levels[-1], times[-1]), {}
        return alpha[-1] * x, {}


# --- DPM-Solver (noise prediction, single-step) ----------------------------------------------------
class _Coefs:
    """``α, σ, λ`` of the path at scalar times, as Python floats (float64)."""

    def __init__(self, path: SDE):
        self.path = path

    def __call__(self, t: float) -> tuple[float, float, float]:
        tt = torch.tensor([t], dtype=torch.float64)
        alpha, sigma = self.path.marginal(tt)
        return alpha.item(), sigma.item(), self.path.log_snr(tt).item()

    def t_of(self, lam: float) -> float:
        """``t_λ(λ)``, the inverse of the half log-SNR, clipped to ``[0, T]`` against round-off."""
        return min(max(self.path.t_from_log_snr(torch.tensor([lam], dtype=torch.float64)).item(), 0.0), self.path.T)


def dpm_solver_orders(steps: int, order: int) -> list[int]:
    """Step orders for an NFE budget ``steps``: ``steps // order`` steps of ``order``, then one of ``steps % order``."""
    orders = [order] * (steps // order)
    if steps % order:
        orders.append(steps % order)
    return orders


def _dpm_step(coef: _Coefs, eps_fn, x: torch.Tensor, s: float, t: float, order: int) -> torch.Tensor:
    r"""One DPM-Solver-``order`` step from ``s`` to ``t`` (Lu et al. 2022a: eq. (3.7); Algorithm 1 with
    ``r₁ = ½``; Algorithm 2 / DPM-Solver-3 with ``r₁ = ⅓, r₂ = ⅔``). ``order`` model evaluations."""
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


def _order(name: str, v, allowed=(1, 2, 3)) -> None:
    if isinstance(v, bool) or v not in allowed:
        raise ValueError(f"{name}: unknown order {v!r}; valid choices: {', '.join(map(str, allowed))}")


@dataclass(frozen=True)
class DPMSolver(Solver):
    r"""Single-step DPM-Solver-1/2/3 on the probability-flow ODE of any affine path (Lu et al. 2022a).

    Expands ``x_t = (α_t/α_s) x_s − α_t ∫_{λ_s}^{λ_t} e^{−λ} ε̂ dλ``, ``ε̂`` the model's noise prediction, to
    ``order`` in ``h = λ_t − λ_s`` on every interval of the grid (the last one to ``last_order`` if given,
    so that an NFE budget is met exactly: :func:`dpm_solver_orders`); DPM-Solver-1 is DDIM,
    ``x_t = (α_t/α_s) x_s − σ_t (e^h − 1) ε̂(x_s, s)``. Lu et al. use grids uniform in ``λ``
    (:func:`~sde_lab.grids.logsnr_grid`). NFE ``= Σ orders + denoise``.
    """

    order: int = 3
    last_order: int | None = None
    denoise: bool = True

    state_dtype: ClassVar[torch.dtype] = torch.float64
    default_grid: ClassVar[str] = "logsnr"

    def __post_init__(self):
        _order("dpm_solver", self.order)
        if self.last_order is not None:
            _order("dpm_solver last_order", self.last_order)

    def orders(self, n_intervals: int) -> list[int]:
        orders = [self.order] * n_intervals
        if n_intervals and self.last_order is not None:
            orders[-1] = self.last_order
        return orders

    def nfe(self, grid) -> int:
        return sum(self.orders(len(grid) - 1)) + int(self.denoise)

    def _solve(self, model, x, grid, noise, callback):
        times = grid.double().tolist()
        orders = self.orders(len(times) - 1)
        coef = _Coefs(model.path)
        for k, order in enumerate(orders):
            x = _dpm_step(coef, model.eps, x, times[k], times[k + 1], order)
            if callback is not None:
                callback(k, grid[k + 1], x, None)
        if self.denoise:
            x = model.x0(x, _full(times[-1], x))
        return x, {"orders": orders, "times": times}


# --- adaptive reverse-SDE solver ("Gotta Go Fast") --------------------------------------------------
@dataclass(frozen=True)
class AdaptiveSDE(Solver):
    r"""Adaptive-step reverse-SDE solver (Jolicoeur-Martineau et al. 2021, "Gotta Go Fast", Algorithm 1).

    With the reverse drift ``F(x, t) = f(x, t) − g(t)² s(x, t)`` and one draw ``z`` per attempted step
    from ``t`` to ``t − h``:

        x'  = x − h F(x, t)      + √h g(t) z                    (Euler–Maruyama)
        x̃   = x − h F(x', t − h) + √h g(t − h) z
        x'' = ½ (x' + x̃)                                         (improved Euler, same z)
        δ   = max(ε_abs, ε_rel max(|x'|, |x'_prev|)),   E₂ = ‖(x' − x'') / δ‖₂ / √n

    (``n`` = data dimension). Accept if ``E₂ ≤ 1``: ``x ← x''`` (``extrapolate``, the paper's default) or
    ``x'``, ``t ← t − h``, ``x'_prev ← x'``. Always ``h ← min(t − t_min, θ h E₂^{−r})`` (``safety`` θ = 0.9,
    ``exponent`` r = 0.9, ``h_init`` = 0.01). The defaults ε_abs = 0.0078, ε_rel = 0.05 are the paper's
    for data in [−1, 1]. The grid gives only the start ``grid[0]`` and end ``grid[-1]``.

    ``error_norm="batch_max"`` (default) steps the batch together, controlled by the largest ``E₂``;
    ``"batch_rms"`` steps it together controlled by the RMS of the per-sample ``E₂`` — the worst of a large
    batch of low-dimensional samples is far above its typical error, so ``batch_max`` takes ever smaller
    steps as the batch grows (on 2000 2-D points ``batch_rms`` needs 2–4× fewer NFE at the same SW2);
    ``"per_sample"`` gives every sample its own ``t`` and ``h`` (the model sees per-sample times, only
    unfinished samples are evaluated). Accepting or rejecting a step by its own noise draw biases the
    per-sample solution when ``n`` is small — the error estimate of a 2-D sample is itself very noisy —
    so ``per_sample`` is for high-dimensional data (images). ``max_iters`` bounds the attempts. ``nfe``
    counts batched model calls (two per attempt, rejected ones included, plus ``denoise``); ``info`` has
    per-sample ``accepted`` / ``rejected`` counts and ``nfe_per_sample``. The callback is called once per
    attempt with the current (largest) time.
    """

    abs_tol: float = 0.0078
    rel_tol: float = 0.05
    h_init: float = 0.01
    safety: float = 0.9
    exponent: float = 0.9
    extrapolate: bool = True
    error_norm: str = "batch_max"
    max_iters: int = 100_000
    denoise: bool = True

    state_dtype: ClassVar[torch.dtype] = torch.float64
    stochastic: ClassVar[bool] = True
    default_grid: ClassVar[str] = "endpoints"

    def __post_init__(self):
        for name in ("abs_tol", "rel_tol"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and v >= 0 and math.isfinite(v)):
                raise ValueError(f"adaptive: {name} must be a non-negative number, got {v!r}")
        if not (self.abs_tol > 0 or self.rel_tol > 0):
            raise ValueError("adaptive: at least one of abs_tol, rel_tol must be positive")
        for name in ("h_init", "safety", "exponent"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise ValueError(f"adaptive: {name} must be a positive number, got {v!r}")
        if isinstance(self.max_iters, bool) or not (isinstance(self.max_iters, int) and self.max_iters >= 1):
            raise ValueError(f"adaptive: max_iters must be a positive integer, got {self.max_iters!r}")
        _choice("error_norm", self.error_norm, ERROR_NORMS)

    def _solve(self, model, x, grid, noise, callback):
        path = model.path
        t_start, eps = float(grid[0]), float(grid[-1])
        B, n = x.shape[0], x[0].numel()
        t = torch.full((B,), t_start, dtype=x.dtype, device=x.device)
        h = torch.full((B,), float(self.h_init), dtype=x.dtype, device=x.device)
        x_prev = x.clone()
        n_acc = torch.zeros(B, dtype=torch.long, device=x.device)
        n_rej = torch.zeros(B, dtype=torch.long, device=x.device)
        active = t > eps
        iters = 0
        while bool(active.any()):
            if iters >= self.max_iters:
                raise RuntimeError(
                    f"adaptive: {int(active.sum())} samples unfinished after max_iters={self.max_iters} attempts; "
                    f"loosen abs_tol={self.abs_tol} / rel_tol={self.rel_tol} or raise max_iters"
                )
            iters += 1
            idx = active.nonzero().squeeze(1)
            xa, ta, xp = x[idx], t[idx], x_prev[idx]
            ha = torch.minimum(h[idx], ta - eps)
            tn = torch.where(ha >= ta - eps, torch.full_like(ta, eps), ta - ha)  # land exactly on eps
            z = normal_for(noise, xa, rows=idx)
            hd, sqh = append_dims(ha, xa.ndim), append_dims(ha.sqrt(), xa.ndim)
            g_t, g_n = append_dims(path.diffusion(ta), xa.ndim), append_dims(path.diffusion(tn), xa.ndim)
            x1 = xa - hd * path.reverse_drift(xa, ta, model.score(xa, ta)) + sqh * g_t * z
            x_tilde = xa - hd * path.reverse_drift(x1, tn, model.score(x1, tn)) + sqh * g_n * z
            x2 = 0.5 * (x1 + x_tilde)
            delta = torch.clamp(self.rel_tol * torch.maximum(x1.abs(), xp.abs()), min=self.abs_tol)
            err = ((x1 - x2) / delta).flatten(1).norm(dim=1) / math.sqrt(n)
            if self.error_norm == "batch_max":
                err = err.max().expand_as(err)
            elif self.error_norm == "batch_rms":
                err = err.square().mean().sqrt().expand_as(err)
            acc = err <= 1.0
            n_acc[idx] += acc.long()
            n_rej[idx] += (~acc).long()
            ia = idx[acc]
            x[ia] = (x2 if self.extrapolate else x1)[acc]
            x_prev[ia] = x1[acc]
            t_new = torch.where(acc, tn, ta)
            t[idx] = t_new
            h[idx] = torch.minimum(t_new - eps, self.safety * ha * err.clamp_min(1e-12) ** (-self.exponent))
            active = t > eps
            if callback is not None:
                callback(iters - 1, t.max(), x, None)
        per_sample = 2 * (n_acc + n_rej)
        if self.denoise:
            x = model.x0(x, _full(eps, x))
        info = {
            "accepted": n_acc.cpu(),
            "rejected": n_rej.cpu(),
            "nfe_per_sample": per_sample.double().mean().item() + int(self.denoise),
            "attempts": iters,
            "error_norm": self.error_norm,
        }
        return x, info


# --- the v1 functions: prior draw + default grid + solver ------------------------------------------
def _start(sde, score_fn, shape, generator, device, x_init, score_dtype):
    model = _in_dtype(as_model(sde, score_fn), score_dtype)
    x = prior_state(sde, shape, generator, device=_device(device, generator), dtype=torch.float64, x_init=x_init)
    return model, x


def _progress(progress, n, desc, callback):
    if not progress:
        return callback
    from .sampling import progress_callback

    return progress_callback(n, desc, callback)


def _finish(solver, model, x, grid, generator, cb, progress) -> SampleResult:
    try:
        return solver(model, x, grid, noise=generator, callback=cb)
    finally:
        if progress:
            cb.close()


def heun_sample(sde: SDE, score_fn, shape, *, steps: int = 18, eps: float = SAMPLING_EPS,
                generator: torch.Generator | None = None, device=None, schedule: str = "karras", rho: float = 7.0,
                s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
                denoise: bool = True, x_init: torch.Tensor | None = None, score_dtype: torch.dtype | None = None,
                progress: bool = False, callback=None, grid=None) -> SampleResult:
    r""":class:`Heun` from a prior draw: ``steps`` levels from ``σ̃(T)`` to ``σ̃(eps)`` (``schedule``, ``rho``;
    see :func:`sigma_tilde_grid`) and the final Euler step to ``σ̃ = 0``; with ``denoise=False``, ``steps + 1``
    levels. NFE ``= 2·steps − 1`` (``2·steps`` without denoising)."""
    _check_steps(steps)
    eps = _check_eps(sde, eps)
    solver = Heun(s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise, denoise=denoise)
    if grid is None:
        grid = _heun_times(sde, steps if denoise else steps + 1, eps, schedule, rho)
    model, x = _start(sde, score_fn, shape, generator, device, x_init, score_dtype)
    return _finish(solver, model, x, grid, generator, _progress(progress, len(grid) - 1, "heun", callback), progress)


def dpm_solver_sample(sde: SDE, score_fn, shape, *, steps: int = 20, eps: float = SAMPLING_EPS,
                      generator: torch.Generator | None = None, device=None, order: int = 3, spacing: str = "logsnr",
                      denoise: bool = True, x_init: torch.Tensor | None = None, score_dtype: torch.dtype | None = None,
                      progress: bool = False, callback=None) -> SampleResult:
    r""":class:`DPMSolver` with the NFE budget ``steps`` met exactly (:func:`dpm_solver_orders`) on a grid
    uniform in ``λ`` (``spacing="logsnr"``, Lu et al.'s choice) or in ``t`` (``"time"``). NFE ``= steps + denoise``."""
    _check_steps(steps)
    eps = _check_eps(sde, eps)
    _order("dpm_solver", order)
    orders = dpm_solver_orders(steps, order)
    solver = DPMSolver(order=order, last_order=orders[-1], denoise=denoise)
    grid = log_snr_time_grid(sde, len(orders), eps, spacing=spacing)
    model, x = _start(sde, score_fn, shape, generator, device, x_init, score_dtype)
    return _finish(solver, model, x, grid, generator, _progress(progress, len(orders), f"dpm_solver-{order}", callback),
                   progress)


def dpm_solver_pp_sample(sde: SDE, score_fn, shape, *, steps: int = 20, eps: float = SAMPLING_EPS,
                         generator: torch.Generator | None = None, device=None, spacing: str = "logsnr",
                         denoise: bool = True, x_init: torch.Tensor | None = None,
                         score_dtype: torch.dtype | None = None, progress: bool = False, callback=None) -> SampleResult:
    r""":class:`DPMSolverPP` on ``steps`` intervals uniform in ``λ`` or ``t`` (``spacing``): NFE ``= steps + denoise``."""
    _check_steps(steps)
    eps = _check_eps(sde, eps)
    grid = log_snr_time_grid(sde, steps, eps, spacing=spacing)
    model, x = _start(sde, score_fn, shape, generator, device, x_init, score_dtype)
    return _finish(DPMSolverPP(denoise=denoise), model, x, grid, generator,
                   _progress(progress, steps, "dpm_solver++(2M)", callback), progress)


def adaptive_sample(sde: SDE, score_fn, shape, *, steps: int | None = None, eps: float = SAMPLING_EPS,
                    generator: torch.Generator | None = None, device=None, abs_tol: float = 0.0078,
                    rel_tol: float = 0.05, h_init: float = 0.01, safety: float = 0.9, exponent: float = 0.9,
                    extrapolate: bool = True, error_norm: str = "batch_max", max_iters: int = 100_000,
                    denoise: bool = True, x_init: torch.Tensor | None = None, score_dtype: torch.dtype | None = None,
                    progress: bool = False, callback=None) -> SampleResult:
    """:class:`AdaptiveSDE` from ``T`` to ``eps`` (``steps`` is unused: the controller chooses the steps)."""
    if steps is not None and (isinstance(steps, bool) or not (isinstance(steps, int) and steps >= 1)):
        raise ValueError(f"adaptive: steps must be None or a positive integer (it is unused), got {steps!r}")
    if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and 0 < eps < sde.T):
        raise ValueError(f"adaptive: eps must lie in (0, T={sde.T}), got {eps!r}")
    solver = AdaptiveSDE(abs_tol=abs_tol, rel_tol=rel_tol, h_init=h_init, safety=safety, exponent=exponent,
                         extrapolate=extrapolate, error_norm=error_norm, max_iters=max_iters, denoise=denoise)
    grid = torch.tensor([float(sde.t_max), float(eps)], dtype=torch.float64)
    model, x = _start(sde, score_fn, shape, generator, device, x_init, score_dtype)
    cb = callback
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="adaptive (attempts)", leave=False)

        def cb(i, t, x_, x0):
            bar.update(1)
            if callback is not None:
                callback(i, t, x_, x0)

        cb.close = bar.close
    return _finish(solver, model, x, grid, generator, cb, progress)
