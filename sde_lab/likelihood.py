r"""Exact log-likelihood through the probability-flow ODE, and bits/dim for 8-bit data.

The probability-flow ODE of an SDE with score ``s(x, t) ≈ ∇_x log p_t(x)`` (Song et al. 2021, eq. (13))

    dx/dt = f̃(x, t) = f(x, t) - ½ g(t)² s(x, t)

moves samples of ``p_eps`` to samples of ``p_T`` and, by the instantaneous change of variables
(Chen et al. 2018; Song et al. 2021, eq. (39), Appendix D.2), ``d log p_t(x(t)) / dt = -∇·f̃(x(t), t)``, so

    log p_eps(x) = log p_T(x(T)) + ∫_eps^T ∇·f̃(x(t), t) dt,      x(eps) = x.

:func:`log_likelihood` integrates ``[x, ∫ ∇·f̃]`` jointly from ``eps`` to ``T`` with
``scipy.integrate.solve_ivp`` in float64. The divergence is either exact (trace of the Jacobian by
autograd, :class:`ExactDivergence`) or the Hutchinson–Skilling estimate ``E_v[vᵀ (∂f̃/∂x) v]`` with
Rademacher or Gaussian probes ``v`` drawn once per sample and held fixed along the trajectory
(:class:`HutchinsonDivergence`; Grathwohl et al. 2019). With a fixed probe, the estimate of
``log p_eps(x)`` is unbiased (the integral is linear in the integrand).

:func:`bits_per_dim` turns the continuous density of a model on scaled data into bits/dim of 8-bit
data: uniform dequantization ``v = k + u``, ``u ~ U[0, 1)^D``, the affine scaler ``y = scale · v / 256 +
shift`` and the change of variables give

    bpd(k, u) = [ -log p_eps(y) / D + log 256 - log |scale| ] / log 2,

an upper bound, in expectation over ``u``, on the discrete model's NLL (see ``docs/likelihood.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch
from scipy.integrate import solve_ivp

from .data import DataScaler, uniform_dequantize
from .model import DiffusionModel, as_model
from .sde import LIKELIHOOD_EPS, SDE
from .utils import batch_sum

__all__ = [
    "DivergenceEstimator",
    "ExactDivergence",
    "HutchinsonDivergence",
    "PROBES",
    "ODE_METHODS",
    "LikelihoodResult",
    "BitsPerDimResult",
    "LikelihoodError",
    "log_likelihood",
    "bits_per_dim",
    "dequantization_offset",
    "mean_and_stderr",
]

DriftFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

PROBES = ("rademacher", "gaussian")
ODE_METHODS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")


class LikelihoodError(RuntimeError):
    """The probability-flow ODE could not be integrated (solver failure, NaN or Inf in the drift)."""


# --- divergence estimators --------------------------------------------------------------------


@runtime_checkable
class DivergenceEstimator(Protocol):
    """Computes the drift ``f̃(x, t)`` and ``n_estimates`` estimates of ``∇·f̃(x, t)``, shape ``(B, K)``."""

    @property
    def n_estimates(self) -> int: ...

    def draw_probes(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor | None:
        """Randomness held fixed along one ODE solve (``None`` for a deterministic estimator)."""
        ...

    def __call__(
        self, drift_fn: DriftFn, x: torch.Tensor, t: torch.Tensor, probes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class ExactDivergence:
    r"""``∇·f̃(x, t) = Σ_i ∂f̃_i/∂x_i``, the trace of the Jacobian by reverse-mode autograd.

    Batched over dimensions: the batch is replicated ``c`` times, the ``j``-th replica's output is
    contracted with the unit vector of dimension ``i_j`` and a single backward pass returns ``c``
    diagonal entries of every sample's Jacobian. ``D / c`` passes cost ``O(D)`` network evaluations:
    meant for low-dimensional data and for checking Hutchinson. Assumes the drift treats samples
    independently (no batch statistics), as every score function in eval mode does.

    Args:
        max_rows: at most this many replicated rows (``c · B``) per pass; bounds memory.
    """

    max_rows: int = 8192

    def __post_init__(self):
        if not isinstance(self.max_rows, int) or self.max_rows < 1:
            raise ValueError(f"max_rows must be a positive integer, got {self.max_rows!r}")

    @property
    def n_estimates(self) -> int:
        return 1

    def draw_probes(self, x: torch.Tensor, generator: torch.Generator | None) -> None:
        return None

    def __call__(self, drift_fn: DriftFn, x: torch.Tensor, t: torch.Tensor, probes: None = None):
        B, D = x.shape[0], x[0].numel()
        chunk = max(1, min(D, self.max_rows // B))
        drift, div = None, torch.zeros(B, dtype=x.dtype, device=x.device)
        with torch.enable_grad():
            for start in range(0, D, chunk):
                idx = torch.arange(start, min(start + chunk, D), device=x.device)
                c = idx.numel()
                xr = x.detach().repeat(c, *([1] * (x.ndim - 1))).requires_grad_(True)  # (c·B, ...)
                fr = drift_fn(xr, t.repeat(c))
                # Replica j (rows j·B .. (j+1)·B - 1) picks out output dimension idx[j].
                sel = torch.zeros(c, B, D, dtype=fr.dtype, device=fr.device)
                sel[torch.arange(c, device=x.device), :, idx] = 1.0
                (grad,) = torch.autograd.grad(fr, xr, grad_outputs=sel.reshape(fr.shape))
                div = div + (grad.reshape(c, B, D) * sel).sum(dim=(0, 2))
                if drift is None:
                    drift = fr[:B].detach()
        return drift, div[:, None]


@dataclass(frozen=True)
class HutchinsonDivergence:
    r"""Hutchinson–Skilling estimate ``∇·f̃ ≈ vᵀ (∂f̃/∂x) v`` with ``E[v vᵀ] = I`` (Hutchinson 1990; Skilling 1989).

    ``vᵀ J`` is one vector-Jacobian product (one backward pass for all probes: the batch is replicated
    per probe, as in :class:`ExactDivergence`). Each sample gets ``n_probes`` independent probes drawn
    once per ODE solve (:meth:`draw_probes`) and held fixed along the trajectory, so the integrated
    estimate of ``log p_eps(x)`` is unbiased; the ``n_probes`` estimates are integrated jointly on the
    same trajectory, sharing every drift evaluation. For a Jacobian ``J`` with symmetric part ``S``,
    the variance is ``2 (‖S‖_F² - Σ_i S_ii²)`` for Rademacher probes (``v_i = ±1``) and ``2 ‖S‖_F²`` for
    Gaussian ones: Rademacher never does worse.

    Args:
        probe: ``"rademacher"`` or ``"gaussian"``.
        n_probes: independent probes per sample; their mean is the estimate and their spread its error.
        max_rows: at most this many replicated rows (``probes · B``) per pass; bounds memory.
    """

    probe: str = "rademacher"
    n_probes: int = 1
    max_rows: int = 8192

    def __post_init__(self):
        if not isinstance(self.max_rows, int) or self.max_rows < 1:
            raise ValueError(f"max_rows must be a positive integer, got {self.max_rows!r}")
        if self.probe not in PROBES:
            raise ValueError(f"unknown probe {self.probe!r}; valid choices: {', '.join(PROBES)}")
        if not isinstance(self.n_probes, int) or isinstance(self.n_probes, bool) or self.n_probes < 1:
            raise ValueError(f"n_probes must be a positive integer, got {self.n_probes!r}")

    @property
    def n_estimates(self) -> int:
        return self.n_probes

    def draw_probes(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Probes of shape ``(n_probes, *x.shape)``, drawn on the generator's device."""
        shape = (self.n_probes, *x.shape)
        gen_device = generator.device if generator is not None else x.device
        if self.probe == "rademacher":
            v = torch.randint(0, 2, shape, generator=generator, device=gen_device).to(x.dtype) * 2 - 1
        else:
            v = torch.randn(shape, generator=generator, device=gen_device, dtype=x.dtype)
        return v.to(x.device)

    def __call__(self, drift_fn: DriftFn, x: torch.Tensor, t: torch.Tensor, probes: torch.Tensor):
        # The batch is replicated once per probe (at most max_rows rows per pass), so one forward and one
        # backward pass give every probe's vector-Jacobian product.
        B, K = x.shape[0], self.n_probes
        chunk = max(1, min(K, self.max_rows // B))
        drift, divs = None, []
        with torch.enable_grad():
            for start in range(0, K, chunk):
                c = min(chunk, K - start)
                xr = x.detach().repeat(c, *([1] * (x.ndim - 1))).requires_grad_(True)  # (c·B, ...)
                fr = drift_fn(xr, t.repeat(c))
                v = probes[start : start + c].to(fr.dtype).reshape(fr.shape)
                (vjp,) = torch.autograd.grad(fr, xr, grad_outputs=v)
                divs.append(batch_sum(vjp * v).reshape(c, B))
                if drift is None:
                    drift = fr[:B].detach()
        return drift, torch.cat(divs).T


# --- results ----------------------------------------------------------------------------------


@dataclass
class LikelihoodResult:
    """Per-sample ``log p_eps(x)`` (nats) from the probability-flow ODE and the solver's report.

    Attributes:
        log_prob: ``(B,)`` float64, ``log p_eps(x) = prior_log_prob + delta_log_prob`` (mean over probes).
        z: the latent ``x(t_end)`` (``t_end = info["t_end"]``, ``T`` unless the path is singular there), float64.
        nfe: evaluations of the ODE's right-hand side (scipy's ``nfev``), whatever the divergence method.
        stderr: ``(B,)`` standard error of ``log_prob`` over probes: 0 for the exact divergence, NaN for
            a single Hutchinson probe (one draw has no spread; average over samples instead).
        prior_log_prob: ``(B,)`` ``log p_T(z)``.
        delta_log_prob: ``(B,)`` ``∫_eps^T ∇·f̃ dt`` (mean over probes).
        per_probe: ``(B, K)`` ``log p_eps(x)`` for each of the ``K`` probes (``K = 1`` for exact).
        solver_status: scipy's status (0: reached ``T``); ``success``/``message`` likewise.
        n_steps: accepted solver steps.
        eps: the start time; ``log_prob`` is the density of ``p_eps``, not ``p_0``.
    """

    log_prob: torch.Tensor
    z: torch.Tensor
    nfe: int
    stderr: torch.Tensor
    prior_log_prob: torch.Tensor
    delta_log_prob: torch.Tensor
    per_probe: torch.Tensor
    solver_status: int
    success: bool
    message: str
    n_steps: int
    eps: float
    info: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.z[0].numel()

    @property
    def nats_per_dim(self) -> torch.Tensor:
        """``-log p_eps(x) / D`` per sample (a continuous density: no dequantization)."""
        return -self.log_prob / self.dim


@dataclass
class BitsPerDimResult:
    """Bits/dim of discrete data under a continuous model, per dequantization repeat and sample.

    Attributes:
        bpd: ``(repeats, B)`` bits/dim of each sample under each dequantization draw.
        mean: mean of ``bpd`` over samples and repeats.
        stderr: standard error of ``mean``, from the spread over samples of each sample's repeat average
            (dequantization and Hutchinson noise are inside it); over repeats when ``B = 1``.
        log_prob: ``(repeats, B)`` model log-density ``log p_eps(y)`` of the scaled dequantized data (nats).
        offset: ``log(levels) - log|scale|``, nats per dimension added to ``-log p_eps(y) / D``.
        nfe: total right-hand-side evaluations over all repeats.
        runs: the :class:`LikelihoodResult` of each repeat (latents, solver reports, probe errors).
    """

    bpd: torch.Tensor
    mean: float
    stderr: float
    log_prob: torch.Tensor
    offset: float
    nfe: int
    runs: list[LikelihoodResult] = field(default_factory=list)

    @property
    def nats_per_dim(self) -> torch.Tensor:
        """``bpd · log 2``: NLL of the dequantized data in pixel units, nats per dimension."""
        return self.bpd * math.log(2)


# --- the ODE ----------------------------------------------------------------------------------


def _resolve_divergence(divergence, probe: str, n_probes: int) -> DivergenceEstimator:
    if isinstance(divergence, str):
        cls = _DIVERGENCES.get(divergence)
        if cls is None:
            raise ValueError(f"unknown divergence {divergence!r}; valid choices: {', '.join(sorted(_DIVERGENCES))}")
        if cls is HutchinsonDivergence:
            return cls(probe=probe, n_probes=n_probes)
        if probe != "rademacher" or n_probes != 1:
            raise ValueError(
                f"probe={probe!r} and n_probes={n_probes!r} apply only to divergence='hutchinson', not {divergence!r}; "
                "leave them at their defaults"
            )
        return cls()
    if isinstance(divergence, DivergenceEstimator):
        if probe != "rademacher" or n_probes != 1:
            raise ValueError(
                "probe and n_probes configure the string form of divergence; for an estimator object set them "
                f"on the object itself, e.g. HutchinsonDivergence(probe={probe!r}, n_probes={n_probes!r})"
            )
        return divergence
    raise ValueError(
        f"divergence must be 'exact', 'hutchinson' or a DivergenceEstimator (ExactDivergence(), "
        f"HutchinsonDivergence(...)), got {divergence!r}"
    )


_DIVERGENCES = {"exact": ExactDivergence, "hutchinson": HutchinsonDivergence}


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def warn_outside_training_range(data_range, x: torch.Tensor, margin: float = 0.5) -> bool:
    """Warn (and return ``True``) when ``x`` reaches beyond the model's training range ``[lo, hi]`` by more than
    ``margin`` times its width: a likelihood there says little about the model (data scaled differently,
    e.g. [0, 255] pixels for a model trained on [0, 1]). The range is recorded in every training checkpoint."""
    if data_range is None:
        return False
    lo, hi = (float(v) for v in data_range)
    w = max(hi - lo, 1e-12)
    xmin, xmax = float(x.min()), float(x.max())
    if xmin < lo - margin * w or xmax > hi + margin * w:
        import warnings

        warnings.warn(f"the data lie in [{xmin:.4g}, {xmax:.4g}], far outside the range the model was trained on "
                      f"[{lo:.4g}, {hi:.4g}]; check the data scaling (centered / [0, 1] / pixels)", stacklevel=3)
        return True
    return False


def log_likelihood(
    sde: SDE | DiffusionModel,
    score_fn,
    x: torch.Tensor | None = None,
    *,
    divergence: str | DivergenceEstimator = "hutchinson",
    probe: str = "rademacher",
    n_probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = LIKELIHOOD_EPS,
    method: str = "RK45",
    generator: torch.Generator | None = None,
    compute_dtype: torch.dtype = torch.float64,
    t_end: float | None = None,
) -> LikelihoodResult:
    r"""``log p_eps(x)`` per sample by integrating the probability-flow ODE from ``eps`` to ``T``.

    Solves ``d[x, Δ]/dt = [f̃(x, t), ∇·f̃(x, t)]`` with ``f̃`` the model's probability-flow velocity
    (``f x − ½ g² s`` for a score; Song et al. 2021, eq. (13)), ``x(eps) = x``, ``Δ(eps) = 0``, jointly for the
    whole batch with
    ``scipy.integrate.solve_ivp`` on a float64 state, and returns
    ``log p_eps(x) = sde.prior_log_prob(x(T)) + Δ(T)`` (Song et al. 2021, eq. (39)).

    Where the path is singular at ``T`` (``α(T) = 0``: rectified flow, cosine), a velocity computed from an
    ε / x0 / score output divides by ``α`` there, so the integration ends at ``t_end = path.t_max`` with the
    prior ``N(0, σ(t_end)² I)``, which drops the ``α(t_end) x_0`` part of ``x_{t_end}`` (a bias of order
    ``α(t_end)² E‖x_0‖² / (2 D σ²)`` nats/dim: 1e-5 for unit-variance data at rectified flow's 0.995). A model
    whose velocity is finite at ``T`` (one that predicts the velocity, or the oracle) integrates to ``T``,
    where the prior is exact.

    Called as ``log_likelihood(model, x, ...)`` or (v1) ``log_likelihood(sde, score_fn, x, ...)``.

    Args:
        sde: the forward SDE the score belongs to (or a :class:`~sde_lab.model.DiffusionModel`, then ``x`` second).
        score_fn: ``s(x, t)`` with ``x`` of shape ``(B, ...)`` and ``t`` of shape ``(B,)``, or a model of ``sde``;
            must be differentiable in ``x`` and treat samples independently.
        x: data, shape ``(B, ...)`` (batch first, any event shape).
        divergence: ``"exact"``, ``"hutchinson"`` or a :class:`DivergenceEstimator` object.
        probe: ``"rademacher"`` or ``"gaussian"`` (string ``"hutchinson"`` only).
        n_probes: probes per sample, integrated jointly on one trajectory; ``stderr`` is their spread.
        rtol, atol: solver tolerances, applied to every component of the state.
        eps: start time; the result is the density of ``p_eps``.
        t_end: end time in ``(eps, T]``; default ``T``, or ``path.t_max`` on a path singular at ``T`` for a model
            whose velocity is not defined there (above).
        method: a ``solve_ivp`` method (``"RK45"``, ``"RK23"``, ``"DOP853"``, ``"Radau"``, ``"BDF"``, ``"LSODA"``).
        generator: randomness for the probes.
        compute_dtype: dtype in which ``score_fn`` and its derivatives are evaluated (float32 for a
            float32 network); the solver state is always float64.

    Raises:
        ValueError: bad arguments or data. LikelihoodError: the solver failed, or the drift or its
        divergence became NaN/Inf.
    """
    if isinstance(sde, SDE):
        given = score_fn
        model = as_model(sde, score_fn)
    else:
        if x is not None:
            raise ValueError("log_likelihood(model, x, ...) takes a model and the data; the v1 form is (sde, score_fn, x)")
        given = sde
        model, x = as_model(None, sde), score_fn
    sde = model.path
    estimator = _resolve_divergence(divergence, probe, n_probes)
    rtol, atol = _check_positive("rtol", rtol), _check_positive("atol", atol)
    T = float(sde.T)
    if t_end is None:
        t_end = T if (sde.regular_at_T or getattr(model, "velocity_defined_at_T", False)) else float(sde.t_max)
    if isinstance(t_end, bool) or not isinstance(t_end, (int, float)) or not 0 < t_end <= T:
        raise ValueError(f"t_end must lie in (0, T={T}], got {t_end!r}")
    t_end = float(t_end)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < t_end:
        raise ValueError(f"eps must lie in (0, t_end={t_end}), got {eps!r}")
    if method not in ODE_METHODS:
        raise ValueError(f"unknown ODE method {method!r}; valid choices: {', '.join(ODE_METHODS)}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(
            f"x must be a floating-point tensor of shape (B, ...), got {type(x).__name__}"
            + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else "")
            + "; for integer pixels use bits_per_dim, which dequantizes them"
        )
    if x.ndim < 2 or x.shape[0] < 1 or x[0].numel() < 1:
        raise ValueError(f"x must have shape (B, ...) with B >= 1 and at least one data dimension, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or Inf")
    warn_outside_training_range(getattr(given, "data_range", None) or getattr(model, "data_range", None), x)

    device, shape = x.device, x.shape
    B, n_x = shape[0], x.numel()
    K = estimator.n_estimates
    probes = estimator.draw_probes(x.to(compute_dtype), generator)

    def drift_fn(xx: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        return model.velocity(xx, tt)

    hint = (f"; the path is singular at T={T} (alpha(T) = 0): integrate to t_end=path.t_max ({sde.t_max:g})"
            if t_end == T and not sde.regular_at_T else "")

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(y[:n_x]).reshape(shape).to(device=device, dtype=compute_dtype)
        tt = torch.full((B,), t, device=device, dtype=compute_dtype)
        f, div = estimator(drift_fn, xt, tt, probes)
        out = torch.cat([f.reshape(-1), div.reshape(-1)]).to(torch.float64).cpu().numpy()
        if not np.isfinite(out).all():
            which = "drift" if not np.isfinite(out[:n_x]).all() else "divergence"
            raise LikelihoodError(
                f"the probability-flow {which} is NaN/Inf at t={t:.6g}; check the score function and data scaling"
                + hint
            )
        return out

    y0 = np.concatenate([x.detach().to(torch.float64).cpu().reshape(-1).numpy(), np.zeros(B * K)])
    sol = solve_ivp(rhs, (float(eps), t_end), y0, method=method, rtol=rtol, atol=atol)
    if sol.status != 0 or not sol.success:
        reached = float(sol.t[-1]) if len(sol.t) else float(eps)
        raise LikelihoodError(
            f"probability-flow ODE solver {method} failed at t={reached:.6g} (integrating from eps={eps} to {t_end}, "
            f"status {sol.status}, {sol.nfev} evaluations): {sol.message}{hint}"
        )
    yT = torch.from_numpy(sol.y[:, -1].copy())
    z = yT[:n_x].reshape(shape).to(device)
    delta = yT[n_x:].reshape(B, K).to(device)
    if t_end == T:
        prior = sde.prior_log_prob(z)
    else:
        var = float(sde.sigma(torch.tensor([t_end], dtype=torch.float64))) ** 2
        prior = -0.5 * z[0].numel() * math.log(2 * math.pi * var) - z.flatten(1).pow(2).sum(1) / (2 * var)
    per_probe = prior[:, None] + delta
    if not torch.isfinite(per_probe).all():
        raise LikelihoodError("the log-likelihood is NaN/Inf at T; check the score function and data scaling")
    log_prob = per_probe.mean(1)
    if isinstance(estimator, HutchinsonDivergence):
        stderr = per_probe.std(1) / math.sqrt(K) if K > 1 else torch.full_like(log_prob, float("nan"))
    elif K > 1:
        stderr = per_probe.std(1) / math.sqrt(K)
    else:
        stderr = torch.zeros_like(log_prob)
    return LikelihoodResult(
        log_prob=log_prob,
        z=z,
        nfe=int(sol.nfev),
        stderr=stderr,
        prior_log_prob=prior,
        delta_log_prob=delta.mean(1),
        per_probe=per_probe,
        solver_status=int(sol.status),
        success=bool(sol.success),
        message=str(sol.message),
        n_steps=len(sol.t) - 1,
        eps=float(eps),
        info={"method": method, "rtol": rtol, "atol": atol, "divergence": estimator, "t_end": t_end},
    )


# --- bits/dim ---------------------------------------------------------------------------------


def dequantization_offset(scaler: DataScaler, levels: int = 256) -> float:
    r"""Nats per dimension between the model density on scaled data and the density of dequantized pixels.

    Pixels ``k ∈ {0, …, levels-1}`` are dequantized to ``v = k + u ∈ [0, levels)`` and scaled to
    ``y = scale · v / levels + shift``; ``log q(v) = log p(y) + D (log|scale| - log levels)``, so
    ``-log q(v) / D = -log p(y) / D + log(levels) - log|scale|``. For 8-bit data this is ``log 256`` for
    the ``[0, 1]`` scaler and ``log 128`` for ``[-1, 1]`` (score_sde's offsets of 8 and 7 bits).
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    return math.log(levels) - scaler.log_abs_det_jacobian_per_dim


def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    """Mean of a ``(repeats, B)`` table and its standard error over samples (over repeats if ``B = 1``).

    Repeats of one sample are correlated, so the error comes from the spread of per-sample averages.
    """
    values = torch.as_tensor(values, dtype=torch.float64)
    if values.ndim == 1:
        values = values[None]
    per_sample = values.mean(0)
    if per_sample.numel() > 1:
        se = (per_sample.std() / math.sqrt(per_sample.numel())).item()
    elif values.shape[0] > 1:
        se = (values[:, 0].std() / math.sqrt(values.shape[0])).item()
    else:
        se = float("nan")
    return values.mean().item(), se


def bits_per_dim(
    sde: SDE,
    score_fn,
    pixels: torch.Tensor,
    scaler: DataScaler,
    *,
    repeats: int = 1,
    levels: int = 256,
    generator: torch.Generator | None = None,
    **ode_kwargs,
) -> BitsPerDimResult:
    r"""Bits/dim of integer pixels under the model ``p_eps`` on scaled data, with uniform dequantization.

    For each of ``repeats`` draws ``u ~ U[0, 1)^D``: ``y = scaler((k + u) / levels)``,
    ``log p_eps(y)`` from :func:`log_likelihood`, and

        bpd = [ -log p_eps(y) / D + log(levels) - log|scale| ] / log 2

    (:func:`dequantization_offset`). ``E_u[bpd] ≥ -log₂ P(k) / D`` for the discrete model
    ``P(k) = ∫ q(k + u) du`` (Jensen); docs/likelihood.md derives the gap.

    Args:
        pixels: integer values in ``{0, …, levels-1}`` (any integer or integer-valued float dtype),
            shape ``(B, ...)``; anything else (e.g. data already scaled to ``[0, 1]``) raises ``ValueError``.
        scaler: the affine map ``[0, 1] → `` model space the model was trained with.
        repeats: independent dequantization (and probe) draws per sample.
        generator: randomness for dequantization and probes (dequantization first, then probes, per repeat).
        **ode_kwargs: forwarded to :func:`log_likelihood` (``divergence``, ``probe``, ``rtol``, ...).
    """
    if not isinstance(scaler, DataScaler):
        raise ValueError(f"scaler must be a DataScaler (e.g. ZeroOneScaler(), CenteredScaler()), got {scaler!r}")
    if not (math.isfinite(scaler.scale) and scaler.scale != 0):
        raise ValueError(f"scaler.scale must be finite and non-zero, got {scaler.scale!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    offset = dequantization_offset(scaler, levels)
    p = torch.as_tensor(pixels)
    if p.ndim < 2 or p.shape[0] < 1:
        raise ValueError(f"pixels must have shape (B, ...) with a batch dimension, got {tuple(p.shape)}")
    if p.dtype == torch.bool or p.is_complex():
        raise ValueError(f"pixels must be integer values in [0, {levels - 1}], got dtype {p.dtype}")
    pf = p.to(torch.float64)
    if not torch.isfinite(pf).all() or pf.min() < 0 or pf.max() > levels - 1 or not torch.equal(pf, pf.round()):
        raise ValueError(
            f"bits_per_dim expects integer pixel values in [0, {levels - 1}], got values in "
            f"[{pf.min().item():.4g}, {pf.max().item():.4g}]"
            + ("" if torch.equal(pf, pf.round()) else " (not integers: pass raw pixels, not data scaled to [0, 1])")
        )
    D = p[0].numel()
    runs = []
    for _ in range(repeats):
        y = scaler(uniform_dequantize(pf, generator=generator, levels=levels))
        runs.append(log_likelihood(sde, score_fn, y, generator=generator, **ode_kwargs))
    log_prob = torch.stack([r.log_prob.cpu() for r in runs])
    bpd = (-log_prob / D + offset) / math.log(2)
    mean, se = mean_and_stderr(bpd)
    return BitsPerDimResult(
        bpd=bpd, mean=mean, stderr=se, log_prob=log_prob, offset=offset, nfe=sum(r.nfe for r in runs), runs=runs
    )
