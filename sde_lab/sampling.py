"""Sampling entry point, results, time grids and the NFE counter shared by every solver.

Every solver is a function with the same signature,

    solver(sde, score_fn, shape, *, steps, eps, generator, device, **options) -> SampleResult

registered by name in :data:`sde_lab.registry.SOLVERS`; :func:`sample` resolves the name and forwards
the options that solver accepts. The solvers here:

* :func:`pc_sample` — predictor–corrector sampling (Song et al. 2021, Algorithm 1), any predictor
  (:mod:`sde_lab.predictors`) × any corrector (:mod:`sde_lab.correctors`);
* :func:`ald_sample` — annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1);
* :func:`ode_sample` / :func:`ode_encode` — the probability-flow ODE (Song et al. 2021, eq. (13)) through
  ``scipy.integrate.solve_ivp`` in float64, latent → data and data → latent;
* :func:`sdeint_sample` — the reverse SDE (eq. (6)) through ``torchsde.sdeint``.

Each returns the exact number of score evaluations (it wraps the score in :class:`CountingScore`) and
ends, optionally, with the Tweedie denoising step :func:`denoise_step`. Non-finite samples raise
:class:`FloatingPointError` after the loop (one check, no per-step host synchronisation).
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from .correctors import AnnealedLangevin, Corrector, Langevin
from .predictors import Predictor, ReverseDiffusion
from .score import ScoreFn
from .sde import SAMPLING_EPS, SDE
from .utils import append_dims

__all__ = [
    "SampleResult",
    "CountingScore",
    "ScoreFn",
    "uniform_time_grid",
    "denoise_step",
    "pc_sample",
    "ald_sample",
    "geometric_noise_grid",
    "ode_sample",
    "ode_encode",
    "sdeint_sample",
    "sample",
]



@dataclass
class SampleResult:
    """Samples of shape ``shape``, the exact number of score evaluations, and solver details."""

    samples: torch.Tensor
    nfe: int
    info: dict[str, Any] = field(default_factory=dict)


class CountingScore:
    """Wraps a score function and counts its calls (one call = one batched score evaluation)."""

    def __init__(self, score_fn: ScoreFn):
        self.score_fn = score_fn
        self.nfe = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.score_fn(x, t)


def uniform_time_grid(steps: int, eps: float = SAMPLING_EPS, T: float = 1.0, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """``steps + 1`` times from ``T`` down to ``eps`` (uniform in t): ``steps`` intervals."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not (isinstance(eps, (int, float)) and 0 < eps < T):
        raise ValueError(f"eps must lie in (0, T={T}), got {eps!r}")
    return torch.linspace(T, eps, steps + 1, device=device, dtype=dtype)


# --- shared pieces ----------------------------------------------------------------------------------


def _check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, tuple) or len(shape) < 2 or not all(isinstance(n, int) and n > 0 for n in shape):
        raise ValueError(
            f"shape must be a tuple of positive ints with the batch size first and at least one data "
            f"dimension, e.g. (1000, 2) or (16, 3, 32, 32); got {shape!r}"
        )
    return shape


def _check_eps(sde: SDE, eps: float) -> float:
    if not (isinstance(eps, (int, float)) and 0 < eps < sde.T):
        raise ValueError(f"eps must lie in (0, T={sde.T}), got {eps!r}")
    return float(eps)


def _device(device, generator: torch.Generator | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return generator.device if generator is not None else torch.device("cpu")


def _check_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    """One host sync at the end of a solver: refuse to return NaN/inf as samples."""
    if not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x.flatten(1))).any(1).sum())
        raise FloatingPointError(
            f"{what} produced non-finite samples ({n_bad} of {x.shape[0]} contain NaN/inf); the score function "
            "returned non-finite values or the step is unstable — try more steps, a smaller snr, or a larger eps"
        )
    return x


def _initial_state(sde, shape, generator, device, dtype, x_init, name="x_init"):
    if x_init is None:
        return sde.prior_sample(shape, generator, device=device, dtype=dtype)
    x = torch.as_tensor(x_init)
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    return x.to(device=device, dtype=dtype if dtype is not None else x.dtype)


def denoise_step(sde: SDE, score_fn: ScoreFn, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    r"""Tweedie denoising at time ``t`` (Efron 2011; Song et al. 2021, Appendix G):

        E[x_0 | x_t] = (x_t + σ(t)² ∇log p_t(x_t)) / α(t),

    exact for the kernel ``N(α x_0, σ² I)`` of every SDE here. One score evaluation.
    """
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    alpha, sigma = (append_dims(v, x.ndim) for v in sde.marginal(t))
    return (x + sigma**2 * score_fn(x, t)) / alpha


# --- predictor–corrector ------------------------------------------------------------------------


def _pc_loop(sde, score, x, grid, predictor, corrector, generator, progress, desc):
    """Corrector at ``t_i`` then predictor ``t_i -> t_{i+1}`` over ``grid``; no host synchronisation."""
    B = x.shape[0]
    for i in _progress(range(len(grid) - 1), progress, desc):
        t, t_next = grid[i].expand(B), grid[i + 1].expand(B)
        x, _ = corrector.step(sde, score, x, t, t_next, generator)
        x, _ = predictor.step(sde, score, x, t, t_next, generator)
    return x


def pc_sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    *,
    predictor: Predictor = ReverseDiffusion(),
    corrector: Corrector = Langevin(),
    steps: int = 1000,
    eps: float = SAMPLING_EPS,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    device=None,
    progress: bool = False,
    x_init: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> SampleResult:
    r"""Predictor–corrector sampling (Song et al. 2021, Algorithm 1) on a uniform grid ``T = t_0 > … > t_N = eps``.

    For each interval ``(t_i, t_{i+1})``: the corrector at ``t_i`` (its ``α_i`` from the interval), then the
    predictor from ``t_i`` to ``t_{i+1}`` — the order of the reference implementation. Starts from
    ``x_init`` or a prior sample; ends with :func:`denoise_step` at ``eps`` if ``denoise``. NFE is
    ``steps · (predictor.nfe_per_step + corrector.nfe_per_step) + denoise``, counted, not assumed.
    """
    shape = _check_shape(shape)
    eps = _check_eps(sde, eps)
    if not all(callable(getattr(o, "step", None)) and hasattr(o, "nfe_per_step") for o in (predictor, corrector)):
        raise ValueError(
            f"predictor and corrector must be objects with .step and .nfe_per_step (see sde_lab.predictors, "
            f"sde_lab.correctors; names resolve via sde_lab.sample), got {predictor!r} and {corrector!r}"
        )
    device = _device(device, generator)
    score = CountingScore(score_fn)
    x = _initial_state(sde, shape, generator, device, dtype, x_init)
    grid = uniform_time_grid(steps, eps, sde.T, device=device, dtype=x.dtype)
    x = _pc_loop(sde, score, x, grid, predictor, corrector, generator, progress, "pc sampling")
    B = shape[0]
    if denoise:
        x = denoise_step(sde, score, x, grid[-1].expand(B))
    _check_finite(x, f"pc_sample({type(predictor).__name__}, {type(corrector).__name__}, steps={steps})")
    return SampleResult(x, score.nfe, {"solver": "pc", "predictor": predictor, "corrector": corrector, "steps": steps})


def geometric_noise_grid(sde: SDE, steps: int, eps: float = SAMPLING_EPS, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """``steps + 1`` times from ``T`` to ``eps`` whose noise levels ``σ̃(t) = σ(t)/α(t)`` form a geometric
    sequence (uniform in log-SNR), the noise schedule of Song & Ermon 2019; for VE it is the uniform grid."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    eps = _check_eps(sde, eps)
    ends = torch.tensor([sde.T, eps], dtype=torch.float64, device=device)
    log_hi, log_lo = torch.log(sde.sigma_tilde(ends)).tolist()
    levels = torch.exp(torch.linspace(log_hi, log_lo, steps + 1, dtype=torch.float64, device=device))
    grid = sde.t_from_sigma_tilde(levels).clamp(eps, sde.T)
    grid[0], grid[-1] = sde.T, eps  # exact end points
    return grid.to(dtype)


class _KeepScaledState(Predictor):
    r"""Move between noise levels keeping ``x / α(t)`` fixed: ``x_next = x / a``, ``(a, _) = sde.transition(t_next, t)``.

    Every linear SDE is a VE SDE in the scaled state ``x / α`` (Karras et al. 2022, eq. (4)); annealed
    Langevin dynamics holds that state between levels, as Song & Ermon 2019 do for VE (``a = 1``).
    """

    nfe_per_step = 0

    def step(self, sde, score_fn, x, t, t_next, generator=None):
        a, _ = sde.transition(t_next, t)
        x_next = x / append_dims(a, x.ndim)
        return x_next, x_next


def ald_sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    *,
    steps: int = 1000,
    eps: float = SAMPLING_EPS,
    snr: float = 0.35,
    n_corrector_steps: int = 1,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    device=None,
    progress: bool = False,
    x_init: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> SampleResult:
    r"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1): ``n_corrector_steps`` Langevin steps
    :class:`~sde_lab.correctors.AnnealedLangevin` (step ``∝ σ(t)²``) at each of ``steps`` noise levels, no
    score-based predictor. As in the paper the levels are geometric (:func:`geometric_noise_grid`, uniform in
    log-SNR; for VE the uniform-``t`` grid) and the scaled state ``x / α(t)`` is held fixed between levels
    (:class:`_KeepScaledState`; the identity for VE), so VP and sub-VP anneal exactly like VE.
    The default ``snr = 0.35`` (step ``0.245 σ²``) is within 1.5x the SW2 noise floor on the oracle targets at
    500 and 1000 levels for VE, VP and sub-VP, averaged over 5 seeds (0.88–1.42;
    ``experiments/solver_bench.py --only ald --seeds 5``; single seeds spread by ±0.4); ``snr = 0.5`` tracks the levels
    too loosely on sub-VP, whose σ̃ grid spans ~1.5x more decades than VP's (σ̃(ε) ≈ B(ε) instead of
    √B(ε)), so each of its levels is a larger jump. NFE ``= steps · n_corrector_steps + denoise``.
    """
    shape = _check_shape(shape)
    eps = _check_eps(sde, eps)
    corrector = AnnealedLangevin(snr=snr, n_steps=n_corrector_steps)
    device = _device(device, generator)
    score = CountingScore(score_fn)
    x = _initial_state(sde, shape, generator, device, dtype, x_init)
    grid = geometric_noise_grid(sde, steps, eps, device=device, dtype=x.dtype)
    x = _pc_loop(sde, score, x, grid, _KeepScaledState(), corrector, generator, progress, "annealed Langevin")
    if denoise:
        x = denoise_step(sde, score, x, grid[-1].expand(shape[0]))
    _check_finite(x, f"ald_sample(snr={snr}, n_corrector_steps={n_corrector_steps}, steps={steps})")
    return SampleResult(x, score.nfe, {"solver": "ald", "corrector": corrector, "steps": steps})


# --- probability-flow ODE ---------------------------------------------------------------------------


def _score_dtype(score_fn: ScoreFn, requested: torch.dtype | None) -> torch.dtype:
    """The dtype the score is evaluated in: as requested, else a module's parameter dtype, else float64."""
    if requested is not None:
        return requested
    if isinstance(score_fn, torch.nn.Module):
        for p in score_fn.parameters():
            if p.is_floating_point():
                return p.dtype
    return torch.float64


def _integrate_pf_ode(sde, score, x0, t0, t1, *, rtol, atol, method, score_dtype, device):
    """Integrate ``dx/dt = f - ½ g² s`` from ``t0`` to ``t1`` with scipy; only the state crosses devices."""
    from scipy.integrate import solve_ivp

    shape = tuple(x0.shape)
    B = shape[0]

    def fun(t, y):
        x = torch.from_numpy(y).to(device).reshape(shape)
        tt = torch.full((B,), t, dtype=torch.float64, device=device)
        s = score(x.to(score_dtype), tt.to(score_dtype)).to(torch.float64)
        return sde.probability_flow_drift(x, tt, s).reshape(-1).cpu().numpy()

    y0 = x0.detach().to("cpu", torch.float64).reshape(-1).numpy()
    sol = solve_ivp(fun, (t0, t1), y0, method=method, rtol=rtol, atol=atol)
    if sol.status != 0:
        raise RuntimeError(f"probability-flow ODE integration ({method}) failed at t={sol.t[-1]:.4g}: {sol.message}")
    x = torch.from_numpy(sol.y[:, -1].copy()).reshape(shape).to(device)
    info = {"status": int(sol.status), "message": sol.message, "nfev": int(sol.nfev), "n_steps": len(sol.t) - 1, "method": method}
    return x, info


def _check_tol(rtol, atol, method):
    for name, v in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a positive number, got {v!r}")
    valid = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
    if isinstance(method, str) and method not in valid:
        raise ValueError(f"unknown solve_ivp method {method!r}; valid choices: {', '.join(valid)}")


def ode_sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    *,
    steps: int | None = None,
    eps: float = SAMPLING_EPS,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "RK45",
    denoise: bool = True,
    z: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    score_dtype: torch.dtype | None = None,
) -> SampleResult:
    r"""Sample by integrating the probability-flow ODE (Song et al. 2021, eq. (13)) from ``T`` to ``eps``
    with ``scipy.integrate.solve_ivp`` (adaptive ``method``, ``rtol``/``atol``) in float64.

    Starts from the latent ``z`` (shape ``shape``) or a prior sample; ``steps`` is ignored (the step size
    is adaptive) and accepted only for the common solver signature. The score is evaluated in
    ``score_dtype`` (default: a module's parameter dtype, else float64). Returns float64 samples;
    ``info`` holds the solver ``status``/``message`` and ``nfev``. A failed integration raises ``RuntimeError``.
    """
    shape = _check_shape(shape)
    eps = _check_eps(sde, eps)
    _check_tol(rtol, atol, method)
    device = _device(device, generator)
    score = CountingScore(score_fn)
    x = _initial_state(sde, shape, generator, device, torch.float64, z, name="z")
    x, info = _integrate_pf_ode(sde, score, x, sde.T, eps, rtol=rtol, atol=atol, method=method,
                                score_dtype=_score_dtype(score_fn, score_dtype), device=device)
    if denoise:
        s_dtype = _score_dtype(score_fn, score_dtype)
        x = denoise_step(sde, lambda y, t: score(y.to(s_dtype), t.to(s_dtype)).to(torch.float64), x, eps)
    _check_finite(x, f"ode_sample({method}, rtol={rtol}, atol={atol})")
    return SampleResult(x, score.nfe, {"solver": "ode", **info})


def ode_encode(
    sde: SDE,
    score_fn: ScoreFn,
    x: torch.Tensor,
    *,
    eps: float = SAMPLING_EPS,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "RK45",
    device=None,
    score_dtype: torch.dtype | None = None,
) -> SampleResult:
    r"""Encode data into the latent space: integrate the probability-flow ODE forward from ``eps`` to ``T``.

    The inverse of :func:`ode_sample` with ``denoise=False`` (up to the solver tolerance). Returns the
    latents ``z`` (float64) in ``.samples``.
    """
    x = torch.as_tensor(x)
    _check_shape(tuple(x.shape))
    eps = _check_eps(sde, eps)
    _check_tol(rtol, atol, method)
    device = torch.device(device) if device is not None else x.device
    score = CountingScore(score_fn)
    z, info = _integrate_pf_ode(sde, score, x.to(device, torch.float64), eps, sde.T, rtol=rtol, atol=atol,
                                method=method, score_dtype=_score_dtype(score_fn, score_dtype), device=device)
    _check_finite(z, f"ode_encode({method}, rtol={rtol}, atol={atol})")
    return SampleResult(z, score.nfe, {"solver": "ode_encode", **info})


# --- reverse SDE through torchsde ---------------------------------------------------------------------


class _TimeReversedSDE(torch.nn.Module):
    r"""The reverse SDE in the increasing time ``u = T - t`` that torchsde integrates, on flat states ``(B, D)``:

        dy = -[f(y, T - u) - g(T - u)² s(y, T - u)] du + g(T - u) dW_u,    y(u) = x(T - u).
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, sde: SDE, score: ScoreFn, shape: tuple[int, ...]):
        super().__init__()
        self.sde, self.score, self.shape = sde, score, shape

    def _t(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.sde.T - u).to(y.dtype).expand(y.shape[0]).clamp(0.0, self.sde.T)

    def f(self, u, y):
        t = self._t(u, y)
        x = y.reshape(self.shape)
        return -self.sde.reverse_drift(x, t, self.score(x, t)).reshape(y.shape)

    def g(self, u, y):
        # `y * 0` keeps g in y's autograd graph (zero derivative), which Milstein differentiates.
        return append_dims(self.sde.diffusion(self._t(u, y)), 2) + y * 0


SDEINT_METHODS = ("euler", "milstein", "srk")


def sdeint_sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    *,
    steps: int = 1000,
    eps: float = SAMPLING_EPS,
    method: str = "euler",
    adaptive: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    device=None,
    x_init: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> SampleResult:
    r"""Integrate the reverse SDE (Song et al. 2021, eq. (6)) from ``T`` to ``eps`` with ``torchsde.sdeint``.

    torchsde needs increasing time and 2-D states: the SDE is integrated in ``u = T - t`` on states
    flattened to ``(B, D)`` (:class:`_TimeReversedSDE`), for any data shape, with diagonal noise.
    ``method`` is ``euler``, ``milstein`` or ``srk``; fixed step ``(T - eps) / steps`` or, with
    ``adaptive``, that initial step and ``rtol``/``atol``. The Brownian motion is seeded from ``generator``.
    """
    import torchsde

    shape = _check_shape(shape)
    eps = _check_eps(sde, eps)
    if method not in SDEINT_METHODS:
        raise ValueError(f"unknown sdeint method {method!r}; valid choices: {', '.join(SDEINT_METHODS)}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    device = _device(device, generator)
    score = CountingScore(score_fn)
    x = _initial_state(sde, shape, generator, device, dtype, x_init)
    B, D = shape[0], math.prod(shape[1:])
    ts = torch.tensor([0.0, sde.T - eps], dtype=x.dtype, device=device)
    span = float(ts[-1])  # the end point as the state dtype sees it, so the Brownian interval matches ts
    gen_device = generator.device if generator is not None else "cpu"
    entropy = int(torch.randint(0, 2**62, (1,), generator=generator, device=gen_device))
    bm = torchsde.BrownianInterval(
        t0=0.0, t1=span, size=(B, D), dtype=x.dtype, device=device, entropy=entropy, dt=span / steps,
        levy_area_approximation="space-time" if method == "srk" else "none",
    )
    with warnings.catch_warnings():
        # g does not depend on the state (additive noise), so torchsde's warning about adaptive
        # Euler–Maruyama with state-dependent diagonal noise does not apply.
        warnings.filterwarnings("ignore", message="Numerical solution is not guaranteed")
        y = torchsde.sdeint(_TimeReversedSDE(sde, score, shape), x.reshape(B, D), ts, bm=bm, method=method,
                            dt=span / steps, adaptive=adaptive, rtol=rtol, atol=atol)[-1]
    x = y.reshape(shape).detach()
    if denoise:
        with torch.no_grad():
            x = denoise_step(sde, score, x, eps)
    _check_finite(x, f"sdeint_sample({method}, steps={steps}, adaptive={adaptive})")
    return SampleResult(x, score.nfe, {"solver": "sdeint", "method": method, "adaptive": adaptive, "steps": steps})


# --- the entry point ---------------------------------------------------------------------------------


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False)


_NAMED_DEFAULTS: dict[str, Any] = {
    "predictor": "reverse_diffusion",
    "corrector": "langevin",
    "snr": 0.16,
    "n_corrector_steps": 1,
    "denoise": True,
    "rtol": 1e-5,
    "atol": 1e-5,
    "method": "RK45",
}


def sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    *,
    solver: str = "pc",
    steps: int = 1000,
    predictor: str | Predictor = "reverse_diffusion",
    corrector: str | Corrector = "langevin",
    snr: float = 0.16,
    n_corrector_steps: int = 1,
    eps: float = SAMPLING_EPS,
    denoise: bool = True,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "RK45",
    generator: torch.Generator | None = None,
    device=None,
    condition=None,
    **solver_options,
) -> SampleResult:
    """Draw ``shape[0]`` samples from the reverse process of ``sde`` with the score ``score_fn(x, t)``.

    ``condition`` (an object or list from :mod:`sde_lab.conditional`: ``Inpainting``, ``Colorization``,
    ``ClassifierGuidance``, ``ClassifierFreeGuidance``) turns this into conditional sampling.

    ``solver`` names an entry of :data:`sde_lab.registry.SOLVERS` (``pc``, ``ode``, ``sdeint``, ``ald``,
    …). For ``pc``, ``predictor`` and ``corrector`` are names from ``PREDICTORS``/``CORRECTORS`` (or
    objects), the corrector built with ``snr`` and ``n_corrector_steps``. Only options the solver accepts
    are forwarded; an option it does not take raises ``ValueError`` if given a non-default value (every
    key of ``solver_options`` counts as given). ``.info["wall_time"]`` is the solver's wall time in seconds.
    Runs under ``torch.no_grad()``: a score network with trainable parameters builds no autograd graph.
    """
    from .registry import CORRECTORS, PREDICTORS, SOLVERS, lookup

    if condition is not None:
        from .conditional import conditional_sample

        return conditional_sample(
            sde, score_fn, shape, condition, solver=solver, steps=steps, predictor=predictor, corrector=corrector,
            snr=snr, n_corrector_steps=n_corrector_steps, eps=eps, denoise=denoise, rtol=rtol, atol=atol,
            method=method, generator=generator, device=device, **solver_options,
        )
    solve = lookup(SOLVERS, solver, "solver")
    shape = _check_shape(shape)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    _check_eps(sde, eps)

    params = inspect.signature(solve).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    def accepts(name: str) -> bool:
        return takes_any or name in params

    # sample()'s defaults are placeholders: an option left at its default is forwarded only when the
    # solver has no default of its own for it, so each solver keeps its own defaults (e.g. sdeint's method).
    named = {"predictor": predictor, "corrector": corrector, "snr": snr, "n_corrector_steps": n_corrector_steps,
             "denoise": denoise, "rtol": rtol, "atol": atol, "method": method}
    given = {k for k, v in named.items() if not _same(v, _NAMED_DEFAULTS[k])}
    consumed: set[str] = set()
    if accepts("predictor") and isinstance(predictor, str):
        named["predictor"] = lookup(PREDICTORS, predictor, "predictor")()
    if accepts("corrector") and isinstance(corrector, str):
        ctor = lookup(CORRECTORS, corrector, "corrector")
        ctor_params = inspect.signature(ctor).parameters
        kwargs = {"snr": snr, "n_steps": n_corrector_steps}
        named["corrector"] = ctor(**{k: v for k, v in kwargs.items() if k in ctor_params})
        consumed |= {"snr", "n_corrector_steps"}
        if given & consumed:
            given.add("corrector")

    options: dict[str, Any] = {}
    for name, value in named.items():
        if name in consumed and not accepts(name):
            continue
        if not accepts(name):
            if name in given:
                raise ValueError(
                    f"solver {solver!r} does not take option {name}={value!r}; it takes: {_describe(params)}"
                )
            continue
        has_default = name in params and params[name].default is not inspect.Parameter.empty
        if name in given or not has_default:
            options[name] = value
    for name, value in solver_options.items():
        if not accepts(name):
            raise ValueError(f"solver {solver!r} does not take option {name}={value!r}; it takes: {_describe(params)}")
        options[name] = value

    start = time.perf_counter()
    with torch.no_grad():  # sampling never back-propagates (classifier guidance re-enables grad for its own gradient)
        result = solve(sde, score_fn, shape, steps=steps, eps=eps, generator=generator, device=device, **options)
    result.info.setdefault("wall_time", time.perf_counter() - start)
    return result


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


def _describe(params) -> str:
    common = {"sde", "score_fn", "shape", "steps", "eps", "generator", "device"}
    names = [n for n, p in params.items() if n not in common and p.kind is not inspect.Parameter.VAR_KEYWORD]
    return ", ".join(names) or "(no options)"
