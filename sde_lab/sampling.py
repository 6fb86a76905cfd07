r"""Solvers over explicit grids: predictor–corrector, annealed Langevin, probability-flow ODE, torchsde.

A solver is a frozen dataclass holding only hyperparameters — *how* to step. It is called as

    solver(model, x_T, grid, *, noise=None, callback=None) -> SampleResult

with *what* to integrate (a :class:`~sde_lab.model.DiffusionModel`: a network model, the oracle, or a
score function through :func:`~sde_lab.model.as_model`), the initial state, and *where* to step (a 1-D
tensor of times, strictly decreasing; :mod:`sde_lab.grids` builds them). ``noise`` is a
:class:`~sde_lab.noise.Noise`, a ``torch.Generator`` or ``None``; ``callback(i, t, x, x0_hat)`` is called
after step ``i`` with the new time ``t``, the state and the step's denoised estimate (``None`` where the
step computes none). Every solver runs under ``torch.no_grad()`` however it is called, never changes its
inputs, counts its model evaluations exactly and refuses to return non-finite samples (one check at the
end, no per-step host synchronisation).

The solvers here:

* :class:`PredictorCorrector` — Song et al. 2021, Algorithm 1: any predictor (:mod:`sde_lab.predictors`) ×
  any corrector (:mod:`sde_lab.correctors`), with per-step hooks that inpainting and SMC use;
* :class:`AnnealedLangevinDynamics` — Song & Ermon 2019, Algorithm 1;
* :class:`ProbabilityFlowODE` — eq. (13) through ``scipy.integrate.solve_ivp`` in float64 (and
  :func:`ode_encode`, data → latent);
* :class:`ReverseSDE` — eq. (6) through ``torchsde.sdeint``.

The v1 functions ``pc_sample``, ``ald_sample``, ``ode_sample``, ``ode_encode``, ``sdeint_sample`` remain:
each builds the prior draw and the solver's default grid from ``steps`` and calls the solver.
"""

from __future__ import annotations

import abc
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol

import torch

from .correctors import AnnealedLangevin, Corrector, Langevin, NoCorrector
from .grids import check_grid, geometric_noise_grid, logsnr_grid, uniform_time_grid
from .model import CountingModel, DiffusionModel, MappedModel, ScoreFn, as_model
from .noise import Noise, NoiseLike, as_noise
from .predictors import NoPredictor, Predictor, ProbabilityFlowEuler, ReverseDiffusion
from .sde import SAMPLING_EPS, SDE
from .utils import append_dims

__all__ = [
    "SampleResult",
    "Solver",
    "PCHook",
    "Callback",
    "PredictorCorrector",
    "AnnealedLangevinDynamics",
    "KeepScaledState",
    "ProbabilityFlowODE",
    "ReverseSDE",
    "CountingScore",
    "ScoreFn",
    "uniform_time_grid",
    "geometric_noise_grid",
    "denoise_step",
    "prior_state",
    "pc_sample",
    "ald_sample",
    "ode_sample",
    "ode_encode",
    "sdeint_sample",
    "ODE_METHODS",
    "SDEINT_METHODS",
]

Callback = Callable[[int, torch.Tensor, torch.Tensor, "torch.Tensor | None"], None]


@dataclass
class SampleResult:
    """Samples of shape ``shape``, the exact number of model evaluations, and solver details."""

    samples: torch.Tensor
    nfe: int
    info: dict[str, Any] = field(default_factory=dict)


class CountingScore:
    """Wraps a score function and counts its calls (one call = one batched score evaluation)."""

    def __init__(self, score_fn: ScoreFn):
        self.score_fn = score_fn
        self.nfe = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, *args) -> torch.Tensor:
        self.nfe += 1
        return self.score_fn(x, t, *args)


# --- shared pieces ----------------------------------------------------------------------------------


def _check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, tuple) or len(shape) < 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
        raise ValueError(
            f"shape must be a tuple of positive ints with the batch size first and at least one data "
            f"dimension, e.g. (1000, 2) or (16, 3, 32, 32); got {shape!r}"
        )
    return shape


def _check_eps(path: SDE, eps: float) -> float:
    if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and 0 < eps < path.T):
        raise ValueError(f"eps must lie in (0, T={path.T}), got {eps!r}")
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


def prior_state(path: SDE, shape, generator: torch.Generator | None = None, *, device=None, dtype=None,
                x_init: torch.Tensor | None = None, name: str = "x_init") -> torch.Tensor:
    """``x_init`` (checked against ``shape``, converted, never aliased) or a fresh draw from the prior."""
    shape = _check_shape(tuple(shape))
    if x_init is None:
        return path.prior_sample(shape, generator, device=device, dtype=dtype)
    x = torch.as_tensor(x_init)
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    return x.to(device=device, dtype=dtype if dtype is not None else x.dtype)


def _full(t, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)


def denoise_step(sde: SDE, score_fn, x: torch.Tensor, t) -> torch.Tensor:
    r"""Tweedie denoising at time ``t`` (Efron 2011; Song et al. 2021, Appendix G):

        E[x_0 | x_t] = (x_t + σ(t)² ∇log p_t(x_t)) / α(t),

    exact for the kernel ``N(α x_0, σ² I)`` of every path: the model's :meth:`~DiffusionModel.x0`.
    One model evaluation.
    """
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    return as_model(sde, score_fn).x0(x, t)


class _Recorder(DiffusionModel):
    """Remembers the last score evaluation so a callback gets the denoised estimate without another NFE."""

    def __init__(self, model: DiffusionModel):
        self.model, self.path, self.num_classes = model, model.path, model.num_classes
        self.last = None

    def score(self, x, t, y=None):
        s = self.model.score(x, t, y)
        self.last = (x, t, s)
        return s

    def velocity(self, x, t, y=None):
        self.last = None  # a velocity step gives no score to denoise with
        return self.model.velocity(x, t, y)

    def x0_hat(self) -> torch.Tensor | None:
        if self.last is None:
            return None
        x, t, s = self.last
        alpha, sigma = (append_dims(v.to(x.dtype), x.ndim) for v in self.path.marginal(t))
        return (x + sigma**2 * s) / alpha


# --- the solver interface ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Solver(abc.ABC):
    """A sampler: hyperparameters only. ``solver(model, x_T, grid, noise=..., callback=...)`` samples.

    Subclasses implement :meth:`_solve` and set ``state_dtype`` (``None`` keeps the dtype of ``x_T``; the ODE
    solvers integrate in float64) and ``stochastic``.
    """

    state_dtype: ClassVar[torch.dtype | None] = None
    stochastic: ClassVar[bool] = False
    default_grid: ClassVar[str] = "uniform"  # the grid sde_lab.sample builds when none is given (sde_lab.registry.GRIDS)

    @abc.abstractmethod
    def _solve(self, model: DiffusionModel, x: torch.Tensor, grid: torch.Tensor, noise: Noise,
               callback: Callback | None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Integrate from ``grid[0]`` to ``grid[-1]`` (and denoise, where the solver does)."""

    def nfe(self, grid) -> int | None:
        """The number of model evaluations on ``grid``, where it is fixed (``None`` for adaptive solvers)."""
        return None

    def needs_regular_start(self) -> bool:
        """Whether the solver uses the SDE's coefficients (f, g, σ̃, λ) at the first grid time; a solver that
        only follows the model's velocity (the probability-flow ODE) may start where the path is singular."""
        return True

    def sample(self, model, x: torch.Tensor, grid, *, noise: NoiseLike = None, callback: Callback | None = None,
               **kwargs) -> SampleResult:
        """Run the solver from the state ``x`` at ``grid[0]``; ``model`` may be a model or a score function
        only if it carries no path (wrap plain score functions with :func:`~sde_lab.model.as_model`)."""
        if not isinstance(model, DiffusionModel):
            raise ValueError(
                f"model must be a DiffusionModel (a Model, the oracle's target.model(path), or "
                f"sde_lab.as_model(path, score_fn) for a plain score function), got {type(model).__name__}"
            )
        grid = check_grid(model.path, grid)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
            raise ValueError(
                "x must be a floating-point tensor of shape (B, ...) with at least one data dimension, got "
                + (f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__)
            )
        if len(grid) > 1 and self.needs_regular_start():
            _check_regular_start(model.path, grid)
        x = x.detach().to(dtype=self.state_dtype or x.dtype).clone()  # never write into the caller's tensor
        counter = CountingModel(model)
        start = time.perf_counter()
        with torch.no_grad():  # sampling never back-propagates (guidance re-enables grad for its own gradient)
            x, info = self._solve(counter, x, grid.to(x.device), as_noise(noise), callback, **kwargs)
        _check_finite(x, repr(self))
        info = {"solver": self, "grid": grid, **info, "wall_time": time.perf_counter() - start}
        return SampleResult(x, counter.nfe, info)

    __call__ = sample


def _check_regular_start(path: SDE, grid: torch.Tensor) -> None:
    t0 = grid[:1].detach().to("cpu", torch.float64)
    f0, st0 = path.drift_coef(t0), path.sigma_tilde(t0)
    if not (bool(torch.isfinite(f0).all()) and bool(torch.isfinite(st0).all())):
        raise ValueError(
            f"the path {path!r} is singular at the grid's first time t = {t0.item():g} (α = 0 there: the drift and σ̃ "
            f"are infinite); start the grid below it, e.g. at the path's t_max = {path.t_max:g}, or follow the "
            "velocity alone (ProbabilityFlowODE, or PredictorCorrector(ProbabilityFlowEuler(), NoCorrector()))"
        )


class PCHook(Protocol):
    """Per-step hooks of :class:`PredictorCorrector` (inpainting, SMC): each returns the (modified) state."""

    def start(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def after_corrector(self, i: int, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor: ...

    def after_predictor(self, i: int, t: torch.Tensor, t_next: torch.Tensor, x: torch.Tensor,
                        x_mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def finish(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


FINAL_STEPS = ("tweedie", "mean", "none")


@dataclass(frozen=True)
class PredictorCorrector(Solver):
    r"""Predictor–corrector sampling (Song et al. 2021, Algorithm 1) on the grid ``t_0 > … > t_n``.

    For each interval ``(t_i, t_{i+1})``: the corrector at ``t_i`` (its ``α_i`` from the interval), then
    the predictor from ``t_i`` to ``t_{i+1}`` — the order of the reference implementation. Its default grid
    is uniform in the half log-SNR λ (:func:`~sde_lab.grids.logsnr_grid`; for VE that is the uniform-t grid):
    on the oracle (``experiments/pc_study.py``) it keeps the within-mode spread of few-step samples within
    ~10% from 30 steps on VP and sub-VP, where the uniform-t grid's large last steps inflate it up to 4x
    (narrow modes) or shrink it (ancestral). The last state at ``t_n`` is then, by ``final``:

    * ``"tweedie"`` (default) — denoised by Tweedie's formula ``E[x_0 | x_{t_n}]`` (one more NFE);
    * ``"mean"`` — the last predictor step's mean (its noise dropped), as score_sde returns;
    * ``"none"`` — the last sample as it is.

    NFE: ``n (predictor.nfe_per_step + corrector.nfe_per_step) + [final == "tweedie"]``.
    """

    predictor: Predictor = ReverseDiffusion()
    corrector: Corrector = Langevin()
    final: str = "tweedie"

    stochastic: ClassVar[bool] = True
    default_grid: ClassVar[str] = "logsnr"

    def __post_init__(self):
        if not isinstance(self.predictor, Predictor) or not isinstance(self.corrector, Corrector):
            raise ValueError(
                f"predictor and corrector must be Predictor / Corrector objects (sde_lab.predictors, sde_lab.correctors), "
                f"got {self.predictor!r} and {self.corrector!r}"
            )
        if self.final not in FINAL_STEPS:
            raise ValueError(f"unknown final step {self.final!r}; valid choices: {', '.join(FINAL_STEPS)}")

    def nfe(self, grid) -> int:
        n = len(grid) - 1
        return n * (self.predictor.nfe_per_step + self.corrector.nfe_per_step) + int(self.final == "tweedie")

    def needs_regular_start(self) -> bool:
        return not (isinstance(self.predictor, ProbabilityFlowEuler) and isinstance(self.corrector, NoCorrector))

    def _solve(self, model, x, grid, noise, callback, hook: PCHook | None = None):
        B = x.shape[0]
        g = grid.to(x.dtype)
        rec = _Recorder(model) if callback is not None else model
        x_mean = x
        if hook is not None:
            x = hook.start(x, g[0].expand(B))
        for i in range(len(g) - 1):
            t, t_next = g[i].expand(B), g[i + 1].expand(B)
            x, _ = self.corrector.step(rec, x, t, t_next, noise)
            if hook is not None:
                x = hook.after_corrector(i, t, x)
            x, x_mean = self.predictor.step(rec, x, t, t_next, noise)
            if hook is not None:
                x, x_mean = hook.after_predictor(i, t, t_next, x, x_mean)
            if callback is not None:
                callback(i, g[i + 1], x, rec.x0_hat())
        t_end = g[-1].expand(B)
        if self.final == "tweedie":
            x = model.x0(x, t_end)
        elif self.final == "mean":
            x = x_mean
        if hook is not None:
            x = hook.finish(x, t_end)
        return x, {}


@dataclass(frozen=True)
class KeepScaledState(Predictor):
    r"""Move between noise levels keeping ``x / α(t)`` fixed: ``x_next = x / a``, ``(a, _) = path.transition(t_next, t)``.

    Every affine path is a VE path in the scaled state ``x / α`` (Karras et al. 2022, eq. (4)); annealed
    Langevin dynamics holds that state between levels, as Song & Ermon 2019 do for VE (``a = 1``).
    """

    nfe_per_step: ClassVar[int] = 0

    def step(self, model, x, t, t_next, noise=None):
        a, _ = model.path.transition(t_next, t)
        x_next = x / append_dims(a, x.ndim)
        return x_next, x_next


@dataclass(frozen=True)
class AnnealedLangevinDynamics(Solver):
    r"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1): ``n_steps`` Langevin steps
    (:class:`~sde_lab.correctors.AnnealedLangevin`, step ``∝ σ(t)²``) at each level of the grid, no
    score-based predictor; the scaled state ``x / α(t)`` is held fixed between levels
    (:class:`KeepScaledState`; the identity for VE), so VP and sub-VP anneal exactly like VE. The paper's
    levels are geometric (:func:`~sde_lab.grids.geometric_noise_grid`, uniform in log-SNR; for VE the
    uniform-``t`` grid).

    The default ``snr = 0.35`` (step ``0.245 σ²``) is within 1.5x the SW2 noise floor on the oracle targets
    at 500 and 1000 levels for VE, VP and sub-VP, averaged over 5 seeds (0.88–1.42;
    ``experiments/solver_bench.py --only ald --seeds 5``; single seeds spread by ±0.4); ``snr = 0.5`` tracks
    the levels too loosely on sub-VP, whose σ̃ grid spans ~1.5x more decades than VP's. NFE
    ``= n · n_steps + denoise`` on ``n + 1`` levels.
    """

    snr: float = 0.35
    n_steps: int = 1
    denoise: bool = True

    stochastic: ClassVar[bool] = True
    default_grid: ClassVar[str] = "geometric"

    def __post_init__(self):
        AnnealedLangevin(snr=self.snr, n_steps=self.n_steps)  # validates

    def _pc(self) -> PredictorCorrector:
        return PredictorCorrector(KeepScaledState(), AnnealedLangevin(snr=self.snr, n_steps=self.n_steps),
                                  "tweedie" if self.denoise else "none")

    def nfe(self, grid) -> int:
        return self._pc().nfe(grid)

    def _solve(self, model, x, grid, noise, callback):
        return self._pc()._solve(model, x, grid, noise, callback)


# --- probability-flow ODE ---------------------------------------------------------------------------

ODE_METHODS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")


def _check_tol(rtol, atol, method):
    for name, v in (("rtol", rtol), ("atol", atol)):
        if isinstance(v, bool) or not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a positive number, got {v!r}")
    if method not in ODE_METHODS:
        raise ValueError(f"unknown solve_ivp method {method!r}; valid choices: {', '.join(ODE_METHODS)}")


def integrate_probability_flow(model: DiffusionModel, x0: torch.Tensor, t0: float, t1: float, *, rtol: float,
                               atol: float, method: str, t_eval=None) -> tuple[torch.Tensor, dict, list]:
    """Integrate ``dx/dt = v(x, t)`` (the model's velocity) from ``t0`` to ``t1`` with scipy in float64;
    only the state crosses devices. Returns the end state, scipy's report and the states at ``t_eval``."""
    from scipy.integrate import solve_ivp

    shape, device = tuple(x0.shape), x0.device
    B = shape[0]

    def fun(t, y):
        x = torch.from_numpy(y).to(device).reshape(shape)
        tt = torch.full((B,), t, dtype=torch.float64, device=device)
        return model.velocity(x, tt).to(torch.float64).reshape(-1).cpu().numpy()

    y0 = x0.detach().to("cpu", torch.float64).reshape(-1).numpy()
    sol = solve_ivp(fun, (float(t0), float(t1)), y0, method=method, rtol=rtol, atol=atol, t_eval=t_eval)
    if sol.status != 0:
        raise RuntimeError(f"probability-flow ODE integration ({method}) failed at t={sol.t[-1]:.4g}: {sol.message}")
    states = [torch.from_numpy(sol.y[:, k].copy()).reshape(shape).to(device) for k in range(sol.y.shape[1])]
    x = states[-1] if t_eval is None else torch.from_numpy(sol.y[:, -1].copy()).reshape(shape).to(device)
    info = {"status": int(sol.status), "message": sol.message, "nfev": int(sol.nfev), "n_steps": len(sol.t) - 1, "method": method}
    return x, info, states


@dataclass(frozen=True)
class ProbabilityFlowODE(Solver):
    r"""The probability-flow ODE (Song et al. 2021, eq. (13)) from ``grid[0]`` to ``grid[-1]`` with
    ``scipy.integrate.solve_ivp`` (adaptive ``method``, ``rtol``/``atol``) on a float64 state; the grid's
    interior points only mark where the callback sees the trajectory. ``denoise`` ends with Tweedie's
    ``E[x_0 | x_{t_min}]``. A failed integration raises ``RuntimeError``.
    """

    rtol: float = 1e-5
    atol: float = 1e-5
    method: str = "RK45"
    denoise: bool = True

    state_dtype: ClassVar[torch.dtype] = torch.float64
    default_grid: ClassVar[str] = "endpoints"

    def __post_init__(self):
        _check_tol(self.rtol, self.atol, self.method)

    def needs_regular_start(self) -> bool:
        return False

    def _solve(self, model, x, grid, noise, callback):
        g = grid.double().cpu().numpy()
        info, states = {}, []
        if len(g) > 1:
            t_eval = g if callback is not None else None
            x, info, states = integrate_probability_flow(model, x, g[0], g[-1], rtol=self.rtol, atol=self.atol,
                                                         method=self.method, t_eval=t_eval)
        if callback is not None:
            for i, xs in enumerate(states[1:]):
                callback(i, grid[i + 1], xs, None)
        if self.denoise:
            x = model.x0(x, _full(g[-1], x))
        return x, info


# --- reverse SDE through torchsde ---------------------------------------------------------------------


class _TimeReversedSDE(torch.nn.Module):
    r"""The reverse SDE in the increasing time ``u = t_0 − t`` that torchsde integrates, on flat states ``(B, D)``:

        dy = −[f(y, t_0 − u) − g(t_0 − u)² s(y, t_0 − u)] du + g(t_0 − u) dW_u,    y(u) = x(t_0 − u).
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, model: DiffusionModel, shape: tuple[int, ...], t0: float):
        super().__init__()
        self.model, self.path, self.shape, self.t0 = model, model.path, shape, t0

    def _t(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.t0 - u).to(y.dtype).expand(y.shape[0]).clamp(0.0, self.path.T)

    def f(self, u, y):
        t = self._t(u, y)
        x = y.reshape(self.shape)
        with torch.no_grad():  # Milstein differentiates g only
            return -self.path.reverse_drift(x, t, self.model.score(x, t)).reshape(y.shape)

    def g(self, u, y):
        # `y * 0` keeps g in y's autograd graph (zero derivative), which Milstein differentiates.
        return append_dims(self.path.diffusion(self._t(u, y)), 2) + y * 0


SDEINT_METHODS = ("euler", "milstein", "srk")


BROWNIAN = ("interval", "tree")


def _entropy(noise: Noise) -> int:
    g = getattr(noise, "generator", None)
    gen_device = g.device if g is not None else "cpu"
    return int(torch.randint(0, 2**62, (1,), generator=g, device=gen_device))


def _brownian(kind: str, B: int, D: int, span: float, dt: float, dtype, device, entropy: int, levy: str):
    import torchsde

    if kind == "tree":  # query-independent to tol: a refined or adaptive solve sees the same path
        if levy != "none":
            raise ValueError("brownian='tree' gives no Lévy area, which method='srk' needs; use brownian='interval'")
        # t1 a step beyond the span: the tree keeps t1 as a float, the solver queries in the state dtype
        return torchsde.BrownianTree(t0=0.0, w0=torch.zeros(B, D, dtype=dtype, device=device), t1=span + dt, tol=dt / 64,
                                     entropy=entropy)
    return torchsde.BrownianInterval(t0=0.0, t1=span, size=(B, D), dtype=dtype, device=device, entropy=entropy, dt=dt,
                                     levy_area_approximation=levy)


def _per_sample_brownian(noise, kind, B, D, span, dt, dtype, device, levy):
    """One Brownian motion per sample, seeded from ``(seed, i)``: sample i's path never depends on the batch."""
    from torchsde._brownian.brownian_base import BaseBrownian

    from .noise import _mix

    seeds = _mix(torch.tensor([noise.seed ^ 0x5DEECE66D] * B, dtype=torch.int64)
                 ^ torch.arange(noise.start, noise.start + B, dtype=torch.int64)).tolist()
    parts = [_brownian(kind, 1, D, span, dt, dtype, device, int(e) & (2**62 - 1), levy) for e in seeds]

    class _Stacked(BaseBrownian):
        def __call__(self, ta, tb=None, return_U=False, return_A=False):
            outs = [b(ta, tb, return_U=return_U, return_A=return_A) for b in parts]
            if isinstance(outs[0], tuple):
                return tuple(torch.cat(o, 0) for o in zip(*outs))
            return torch.cat(outs, 0)

        def __repr__(self):
            return f"PerSampleBrownian({kind}, B={B})"

        dtype = property(lambda self: parts[0].dtype)
        device = property(lambda self: parts[0].device)
        shape = property(lambda self: (B, D))
        levy_area_approximation = property(lambda self: parts[0].levy_area_approximation)

    return _Stacked()


@dataclass(frozen=True)
class ReverseSDE(Solver):
    r"""The reverse SDE (Song et al. 2021, eq. (6)) from ``grid[0]`` to ``grid[-1]`` with ``torchsde.sdeint``.

    torchsde needs increasing time and 2-D states: the SDE is integrated in ``u = t_0 − t`` on states
    flattened to ``(B, D)``, for any data shape, with diagonal noise. ``method`` is ``euler``, ``milstein``
    or ``srk``; the step is the grid's mean spacing (exactly the grid for a uniform one) or, with
    ``adaptive``, that initial step and ``rtol``/``atol``; a callback sees the solution at every grid time.
    The Brownian motion is torchsde's ``BrownianInterval`` (``brownian="interval"``) or ``BrownianTree``
    (``"tree"``: query-independent, so solves of one seed on refined grids or with adaptive steps follow one
    Brownian path), seeded from the noise source's generator; with a
    :class:`~sde_lab.noise.PerSampleNoise` every sample gets its own, seeded from ``(seed, i)`` (batch-independent
    samples, at the cost of one Brownian object per sample). ``denoise`` ends with Tweedie's ``E[x_0 | x_{t_min}]``.
    """

    method: str = "euler"
    adaptive: bool = False
    rtol: float = 1e-5
    atol: float = 1e-5
    brownian: str = "interval"
    denoise: bool = True

    stochastic: ClassVar[bool] = True

    def __post_init__(self):
        if self.brownian not in BROWNIAN:
            raise ValueError(f"unknown brownian {self.brownian!r}; valid choices: {', '.join(BROWNIAN)}")
        if self.method not in SDEINT_METHODS:
            raise ValueError(f"unknown sdeint method {self.method!r}; valid choices: {', '.join(SDEINT_METHODS)}")
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")

    def _solve(self, model, x, grid, noise, callback):
        import torchsde

        shape = tuple(x.shape)
        B, D = shape[0], math.prod(shape[1:])
        t0, t1, n = float(grid[0]), float(grid[-1]), len(grid) - 1
        if n == 0:
            return (model.x0(x, _full(t1, x)) if self.denoise else x), {"method": self.method, "adaptive": self.adaptive}
        # the solution at every grid time when a callback watches it (memory: one state per grid time), else the end
        ts = (t0 - grid.to(x.dtype)) if callback is not None else torch.tensor([0.0, t0 - t1], dtype=x.dtype, device=x.device)
        ts[0] = 0.0
        span = float(ts[-1])  # the end point as the state dtype sees it, so the Brownian interval matches ts
        levy = "space-time" if self.method == "srk" else "none"
        from .noise import PerSampleNoise

        if isinstance(noise, PerSampleNoise):
            bm = _per_sample_brownian(noise, self.brownian, B, D, span, span / n, x.dtype, x.device, levy)
        else:
            bm = _brownian(self.brownian, B, D, span, span / n, x.dtype, x.device, _entropy(noise), levy)
        with warnings.catch_warnings():
            # g does not depend on the state (additive noise), so torchsde's warning about adaptive
            # Euler–Maruyama with state-dependent diagonal noise does not apply.
            warnings.filterwarnings("ignore", message="Numerical solution is not guaranteed")
            with torch.enable_grad() if self.method == "milstein" else torch.no_grad():
                ys = torchsde.sdeint(_TimeReversedSDE(model, shape, t0), x.reshape(B, D), ts, bm=bm, method=self.method,
                                     dt=span / n, adaptive=self.adaptive, rtol=self.rtol, atol=self.atol)
        if callback is not None:
            for i in range(1, len(ts)):
                callback(i - 1, grid[i], ys[i].reshape(shape).detach(), None)
        x = ys[-1].reshape(shape).detach()
        if self.denoise:
            x = model.x0(x, _full(t1, x))
        return x, {"method": self.method, "adaptive": self.adaptive}


# --- the v1 functions: prior draw + default grid + solver ------------------------------------------


def _pc_objects(predictor, corrector):
    if not isinstance(predictor, Predictor) or not isinstance(corrector, Corrector):
        raise ValueError(
            f"predictor and corrector must be objects with .step and .nfe_per_step (see sde_lab.predictors, "
            f"sde_lab.correctors; names resolve via sde_lab.sample), got {predictor!r} and {corrector!r}"
        )
    return predictor, corrector


def pc_sample(sde: SDE, score_fn, shape, *, predictor: Predictor = ReverseDiffusion(), corrector: Corrector = Langevin(),
              steps: int = 1000, eps: float = SAMPLING_EPS, denoise: bool = True, generator: torch.Generator | None = None,
              device=None, progress: bool = False, x_init: torch.Tensor | None = None, dtype: torch.dtype = torch.float32,
              noise: NoiseLike = None, callback: Callback | None = None, grid=None) -> SampleResult:
    """:class:`PredictorCorrector` from a prior draw on ``steps`` intervals from ``T`` to ``eps``, uniform in λ
    (or an explicit ``grid``, e.g. ``uniform_time_grid(steps, eps)``, v1's grid)."""
    model = as_model(sde, score_fn)
    predictor, corrector = _pc_objects(predictor, corrector)
    solver = PredictorCorrector(predictor, corrector, "tweedie" if denoise else "none")
    if grid is None:
        grid = logsnr_grid(sde, steps, _check_eps(sde, eps))
    return _run(solver, model, shape, grid, generator, device, dtype, x_init, noise, callback, progress, "pc sampling")


def ald_sample(sde: SDE, score_fn, shape, *, steps: int = 1000, eps: float = SAMPLING_EPS, snr: float = 0.35,
               n_corrector_steps: int = 1, denoise: bool = True, generator: torch.Generator | None = None, device=None,
               progress: bool = False, x_init: torch.Tensor | None = None, dtype: torch.dtype = torch.float32,
               noise: NoiseLike = None, callback: Callback | None = None, grid=None) -> SampleResult:
    """:class:`AnnealedLangevinDynamics` from a prior draw on ``steps + 1`` geometric noise levels."""
    model = as_model(sde, score_fn)
    solver = AnnealedLangevinDynamics(snr=snr, n_steps=n_corrector_steps, denoise=denoise)
    if grid is None:
        grid = geometric_noise_grid(sde, steps, _check_eps(sde, eps))
    return _run(solver, model, shape, grid, generator, device, dtype, x_init, noise, callback, progress, "annealed Langevin")


def _in_dtype(model, score_dtype):
    """The model evaluated in ``score_dtype`` for a state of another dtype (v1's ``score_dtype``)."""
    if score_dtype is None:
        return model
    return MappedModel(model, lambda x: x.to(score_dtype), lambda out, x: out.to(x.dtype), f"{model!r} in {score_dtype}")


def ode_sample(sde: SDE, score_fn, shape, *, steps: int | None = None, eps: float = SAMPLING_EPS, rtol: float = 1e-5,
               atol: float = 1e-5, method: str = "RK45", denoise: bool = True, z: torch.Tensor | None = None,
               generator: torch.Generator | None = None, device=None, score_dtype: torch.dtype | None = None,
               callback: Callback | None = None, grid=None) -> SampleResult:
    r""":class:`ProbabilityFlowODE` from ``T`` to ``eps``, starting from the latent ``z`` or a prior draw.

    ``steps`` is ignored (the step size is adaptive). The model is evaluated in ``score_dtype`` (default: its
    own — a network's parameter dtype, float64 for a score function). Returns float64 samples; ``info``
    holds the solver ``status``/``message`` and ``nfev``.
    """
    model = _in_dtype(as_model(sde, score_fn), score_dtype)
    solver = ProbabilityFlowODE(rtol=rtol, atol=atol, method=method, denoise=denoise)
    if grid is None:
        grid = torch.tensor([float(sde.t_max), _check_eps(sde, eps)], dtype=torch.float64)
    x = prior_state(sde, shape, generator, device=_device(device, generator), dtype=torch.float64, x_init=z, name="z")
    return solver(model, x, grid, noise=generator, callback=callback)


def ode_encode(sde: SDE, score_fn, x: torch.Tensor, *, eps: float = SAMPLING_EPS, rtol: float = 1e-5, atol: float = 1e-5,
               method: str = "RK45", device=None, score_dtype: torch.dtype | None = None) -> SampleResult:
    r"""Encode data into the latent space: integrate the probability-flow ODE forward from ``eps`` to ``T``.

    The inverse of :func:`ode_sample` with ``denoise=False`` (up to the solver tolerance). Returns the
    latents ``z`` (float64) in ``.samples``.
    """
    x = torch.as_tensor(x)
    _check_shape(tuple(x.shape))
    eps = _check_eps(sde, eps)
    _check_tol(rtol, atol, method)
    device = torch.device(device) if device is not None else x.device
    counter = CountingModel(_in_dtype(as_model(sde, score_fn), score_dtype))
    with torch.no_grad():
        z, info, _ = integrate_probability_flow(counter, x.to(device, torch.float64), eps, sde.T, rtol=rtol, atol=atol,
                                                method=method)
    _check_finite(z, f"ode_encode({method}, rtol={rtol}, atol={atol})")
    return SampleResult(z, counter.nfe, {"solver": "ode_encode", **info})


def sdeint_sample(sde: SDE, score_fn, shape, *, steps: int = 1000, eps: float = SAMPLING_EPS, method: str = "euler",
                  adaptive: bool = False, rtol: float = 1e-5, atol: float = 1e-5, denoise: bool = True,
                  generator: torch.Generator | None = None, device=None, x_init: torch.Tensor | None = None,
                  dtype: torch.dtype = torch.float32, callback: Callback | None = None, grid=None) -> SampleResult:
    """:class:`ReverseSDE` (torchsde) from a prior draw on the uniform grid of ``steps`` intervals."""
    model = as_model(sde, score_fn)
    solver = ReverseSDE(method=method, adaptive=adaptive, rtol=rtol, atol=atol, denoise=denoise)
    if grid is None:
        grid = uniform_time_grid(steps, _check_eps(sde, eps), sde.t_max)
    return _run(solver, model, shape, grid, generator, device, dtype, x_init, None, callback, False, "sdeint")


def progress_callback(total: int, desc: str, callback: Callback | None = None):
    """A callback that advances a tqdm bar (and calls ``callback``); ``.close()`` ends the bar."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, leave=False)

    def cb(i, t, x, x0):
        bar.update(1)
        if callback is not None:
            callback(i, t, x, x0)

    cb.close = bar.close
    return cb


def _run(solver: Solver, model, shape, grid, generator, device, dtype, x_init, noise, callback, progress, desc):
    """Prior draw (or ``x_init``), then the solver on ``grid`` with a progress bar if asked."""
    x = prior_state(model.path, shape, generator, device=_device(device, generator), dtype=dtype, x_init=x_init)
    cb = progress_callback(len(grid) - 1, desc, callback) if progress else callback
    try:
        return solver(model, x, grid, noise=noise if noise is not None else generator, callback=cb)
    finally:
        if progress:
            cb.close()
