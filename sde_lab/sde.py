r"""Gaussian paths and their SDEs: everything from α(t) and σ(t) (Song et al. 2021, §3.4 and Appendix B).

An affine Gaussian path ``x_t = α(t) x_0 + σ(t) ε``, ``ε ~ N(0, I)``, on ``t ∈ [0, T]`` is fixed by two
functions. The forward SDE ``dx = f(t) x dt + g(t) dw`` with that kernel, its reverse-time SDE and its
probability-flow ODE all follow from them and their time derivatives:

    f(t)  = α'/α,                      g(t)² = dσ²/dt − 2 f σ² = −2 σ² dλ/dt,
    σ̃(t) = σ/α  (noise level of x/α),  λ(t) = log α − log σ = −log σ̃  (half log-SNR),
    reverse SDE  dx = [f x − g² s] dt + g dw̄,     probability-flow ODE  dx/dt = f x − ½ g² s.

A path subclass gives :meth:`SDE.alpha` and :meth:`SDE.sigma` and nothing else is required: the
derivatives come from autograd (float64), the inverses ``t(σ̃)`` and ``t(λ)`` from a monotone bisection.
VE, VP and sub-VP override them with closed forms that stay accurate at ``t = 1e-5`` (no cancellation).
Samplers, losses and likelihoods use only these methods, never the concrete class. Endpoints may be
singular (``α(T) = 0`` for rectified flow, so ``σ̃(T) = ∞``): grids then start at a ``t_max < T``.

Discrete chains. SMLD/NCSN and DDPM are discretizations with ``N`` steps; the step count is an argument,
never stored on the path. Level ``i`` sits at ``t_i = i T / (N - 1)`` (:func:`discrete_times`):
``σ_i = σ̃(t_i)`` for SMLD and ``β_i = −2 f(t_i) / N`` (``β(t_i)/N`` for VP) for DDPM, as in the
score_sde reference code.

Smallest times: samplers stop at ``SAMPLING_EPS = 1e-3`` and likelihoods start at ``LIKELIHOOD_EPS = 1e-5``
(Song et al. 2021, Appendix C and D).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch

from .utils import append_dims, batch_sum, randn

__all__ = [
    "SDE",
    "GaussianPath",
    "VESDE",
    "VPSDE",
    "SubVPSDE",
    "RectifiedFlow",
    "CosineVP",
    "EDMPath",
    "AffinePath",
    "DiscreteVP",
    "DDPMSchedule",
    "discrete_index",
    "discrete_times",
    "SAMPLING_EPS",
    "LIKELIHOOD_EPS",
]

SAMPLING_EPS = 1e-3
LIKELIHOOD_EPS = 1e-5

_BISECTION_ITERS = 64  # the bracket [0, T] shrinks to T·2^-64: float64 resolution


class DDPMSchedule(NamedTuple):
    """DDPM chain ``x_i = sqrt(α_i) x_{i-1} + sqrt(β_i) z`` (Ho et al. 2020) with ``ᾱ_i = Π_{j≤i} α_j``."""

    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor


def discrete_times(N: int, T: float = 1.0, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """The times ``t_i = i T / (N - 1)``, ``i = 0..N-1``, that the discrete chains sit on."""
    _check_steps(N)
    return torch.linspace(0.0, T, N, dtype=dtype, device=device)


def discrete_index(t: torch.Tensor, N: int, T: float = 1.0) -> torch.Tensor:
    """Index ``i = round(t (N - 1) / T)`` of the discrete noise level nearest to continuous time ``t``."""
    _check_steps(N)
    return torch.round(torch.as_tensor(t) * (N - 1) / T).long().clamp(0, N - 1)


def _check_steps(N: int) -> None:
    if not isinstance(N, int) or isinstance(N, bool) or N < 2:
        raise ValueError(f"the number of discretization steps N must be an integer >= 2, got {N!r}")


def _derivative(fn, t: torch.Tensor) -> torch.Tensor:
    """``d fn(t) / dt`` elementwise by autograd in float64 (``fn`` acts elementwise on ``(B,)``)."""
    with torch.enable_grad():
        tt = t.detach().to(torch.float64).requires_grad_(True)
        y = fn(tt)
        if not y.requires_grad:  # constant in t
            return torch.zeros_like(t)
        (d,) = torch.autograd.grad(y.sum(), tt)
    return d.to(t.dtype)


@dataclass(frozen=True)
class SDE(abc.ABC):
    """An affine Gaussian path ``x_t = α(t) x_0 + σ(t) ε`` on ``[0, T]`` and its forward SDE.

    Subclasses implement :meth:`alpha` and :meth:`sigma` (elementwise on a ``(B,)`` time tensor); they may
    override the derived methods with closed forms. Tensors are batch first with ``t`` of shape ``(B,)``.
    """

    T: ClassVar[float] = 1.0

    # --- what a path defines -----------------------------------------------------------------------
    @abc.abstractmethod
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Signal scale ``α(t)`` of the kernel ``N(α(t) x_0, σ(t)² I)``, shape ``(B,)``."""

    @abc.abstractmethod
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise scale ``σ(t)``, shape ``(B,)``."""

    # --- derived from α and σ (closed forms may override) --------------------------------------------
    def marginal(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(α(t), σ(t))`` of the perturbation kernel ``N(α(t) x_0, σ(t)² I)``, each of shape ``(B,)``."""
        t = self.check_time(t)
        return self.alpha(t), self.sigma(t)

    def marginal_derivatives(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(α'(t), σ'(t))``, by autograd in float64 unless a subclass gives them in closed form."""
        t = self.check_time(t)
        return _derivative(self.alpha, t), _derivative(self.sigma, t)

    def drift_coef(self, t: torch.Tensor) -> torch.Tensor:
        """``f(t) = α'(t)/α(t)`` of the affine drift ``f(x, t) = f(t) x``, shape ``(B,)``."""
        t = self.check_time(t)
        return _derivative(lambda u: torch.log(self.alpha(u)), t)

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """``g(t) = sqrt(dσ²/dt − 2 f σ²) = sqrt(−2 σ² dλ/dt)``, shape ``(B,)``."""
        t = self.check_time(t)
        dlam = _derivative(self.log_snr, t)
        return torch.sqrt((-2.0 * self.sigma(t) ** 2 * dlam).clamp_min(0.0))

    def sigma_tilde(self, t: torch.Tensor) -> torch.Tensor:
        """Noise level of the scaled state ``x / α(t)``: ``σ̃(t) = σ(t) / α(t)`` (Karras et al. 2022)."""
        alpha, sigma = self.marginal(t)
        return sigma / alpha

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """Half log signal-to-noise ratio ``λ(t) = log α(t) − log σ(t)`` (Lu et al. 2022)."""
        alpha, sigma = self.marginal(t)
        return torch.log(alpha) - torch.log(sigma)

    def t_from_sigma_tilde(self, sigma_tilde: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`sigma_tilde` (increasing in ``t``) by bisection on ``[0, T]`` in float64.

        Values outside ``[σ̃(0), σ̃(T)]`` map to the nearer end. Subclasses override this in closed form.
        """
        s = torch.as_tensor(sigma_tilde)
        target = s.detach().to(torch.float64)
        lo = torch.zeros_like(target)
        hi = torch.full_like(target, float(self.T))
        for _ in range(_BISECTION_ITERS):
            mid = 0.5 * (lo + hi)
            above = self.sigma_tilde(mid) >= target
            hi = torch.where(above, mid, hi)
            lo = torch.where(above, lo, mid)
        out = 0.5 * (lo + hi)
        return out.to(s.dtype) if s.is_floating_point() else out

    def t_from_log_snr(self, lam: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`log_snr`."""
        return self.t_from_sigma_tilde(torch.exp(-torch.as_tensor(lam)))

    # --- the SDE and ODE --------------------------------------------------------------------------
    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``f(x, t) = f(t) x``."""
        t = self._check(x, t)
        return append_dims(self.drift_coef(t), x.ndim) * x

    def reverse_drift(self, x: torch.Tensor, t: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """Drift of the reverse-time SDE, ``f(x, t) − g(t)² s`` (Song et al. 2021, eq. (6))."""
        g2 = append_dims(self.diffusion(self._check(x, t)) ** 2, x.ndim)
        return self.drift(x, t) - g2 * score

    def probability_flow_drift(self, x: torch.Tensor, t: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """Drift of the probability-flow ODE, ``f(x, t) − ½ g(t)² s`` (Song et al. 2021, eq. (13))."""
        g2 = append_dims(self.diffusion(self._check(x, t)) ** 2, x.ndim)
        return self.drift(x, t) - 0.5 * g2 * score

    def transition(self, s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, σ)`` with ``x_t | x_s ~ N(a x_s, σ² I)`` for ``s ≤ t``.

        For an affine path, ``a = α(t)/α(s)`` and ``σ² = σ(t)² − a² σ(s)² = α(t)² (σ̃(t)² − σ̃(s)²)``;
        subclasses override this with a form that stays accurate for short steps.
        """
        s, t = self._check_pair(s, t)
        alpha_s, sigma_s = self.marginal(s)
        alpha_t, sigma_t = self.marginal(t)
        a = alpha_t / alpha_s
        return a, (sigma_t**2 - (a * sigma_s) ** 2).clamp_min(0.0).sqrt()

    # --- where sampling starts ------------------------------------------------------------------
    @property
    def t_max(self) -> float:
        """The time samplers start from by default: ``T``, or just below it where the path is singular there."""
        return float(self.T)

    @property
    def regular_at_T(self) -> bool:
        """Whether the SDE's coefficients are finite at ``T`` (False where ``α(T) = 0``: rectified flow, cosine).

        The probability-flow likelihood integrates to ``T`` on a regular path, and on a singular one when the
        model's velocity is defined there (:attr:`~sde_lab.model.DiffusionModel.velocity_defined_at_T`)."""
        return True

    # --- prior --------------------------------------------------------------------------------
    @property
    def prior_std(self) -> float:
        """Standard deviation of the prior ``p_T = N(0, prior_std² I)``; ``σ(T)`` unless overridden."""
        return float(self.sigma(torch.tensor([float(self.T)], dtype=torch.float64)))

    def prior_sample(self, shape, generator: torch.Generator | None = None, *, device=None, dtype=None) -> torch.Tensor:
        """A batch of shape ``shape`` (batch first) from the prior ``N(0, prior_std² I)``."""
        return self.prior_std * randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p_T(z)`` summed over non-batch dimensions, shape ``(B,)``."""
        d = z[0].numel()
        var = self.prior_std**2
        return -0.5 * d * math.log(2 * math.pi * var) - batch_sum(z**2) / (2 * var)

    # --- discrete chains ------------------------------------------------------------------------
    def smld_sigmas(self, N: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
        """SMLD/NCSN noise levels ``σ_i = σ̃(t_i)``, ``i = 0..N-1`` (geometric from σ_min to σ_max for VE).

        The ancestral (SMLD) chain adds ``N(0, (σ_i² − σ_{i-1}²) I)`` per step, i.e. :meth:`transition`
        from ``t_{i-1}`` to ``t_i`` on a path with ``α ≡ 1`` (Song et al. 2021, eq. (8)).
        """
        return self.sigma_tilde(discrete_times(N, self.T, dtype=torch.float64, device=device)).to(dtype)

    def ddpm_schedule(self, N: int, *, dtype=torch.float64, device=None) -> DDPMSchedule:
        """DDPM chain with ``β_i = −2 f(t_i) / N`` (``β(t_i)/N`` for VP; Song et al. 2021, Appendix B)."""
        t = discrete_times(N, self.T, dtype=torch.float64, device=device)
        betas = (-2.0 * self.drift_coef(t) / N).to(dtype)
        alphas = 1.0 - betas
        return DDPMSchedule(betas, alphas, torch.cumprod(alphas, 0))

    # --- checks -------------------------------------------------------------------------------
    def check_time(self, t: torch.Tensor) -> torch.Tensor:
        """Return ``t`` as a tensor, raising ``ValueError`` if it lies outside ``[0, T]`` or is NaN.

        The range check reads values, so it runs only for CPU tensors: a CUDA loop is never synchronised.
        """
        t = torch.as_tensor(t)
        if t.ndim != 1:
            raise ValueError(f"t must have shape (B,), got shape {tuple(t.shape)}")
        if t.device.type == "cpu" and t.numel():
            tol = 1e-6 * self.T
            lo, hi = t.min().item(), t.max().item()
            if not (lo >= -tol and hi <= self.T + tol):  # also catches NaN
                raise ValueError(f"t must lie in [0, T={self.T}], got values in [{lo}, {hi}]")
        return t

    def _check(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = self.check_time(t)
        if x.ndim < 1 or x.shape[0] != t.shape[0]:
            raise ValueError(
                f"x has batch size {x.shape[0] if x.ndim else 'none'} but t has shape {tuple(t.shape)}; "
                "pass one time per sample"
            )
        return t

    def _check_pair(self, s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.check_time(s), self.check_time(t)
        if s.shape != t.shape:
            raise ValueError(f"s and t must have the same shape, got {tuple(s.shape)} and {tuple(t.shape)}")
        return s, t


GaussianPath = SDE
"""The same class under the name the design notes use: a path is its α and σ."""


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class VESDE(SDE):
    r"""Variance-exploding SDE, the continuous limit of SMLD/NCSN (Song et al. 2021, eq. (9), (30)).

    ``dx = σ(t) sqrt(2 log(σ_max/σ_min)) dw`` with ``σ(t) = σ_min (σ_max/σ_min)^t``; kernel
    ``N(x_0, σ(t)² I)``. As in the paper and its reference code, time 0 already carries noise ``σ_min``
    (``σ(0) = σ_min``): the kernel describes a process started at ``x_0 + σ_min z``. Prior ``N(0, σ_max² I)``.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def __post_init__(self):
        _positive("sigma_min", self.sigma_min)
        _positive("sigma_max", self.sigma_max)
        if not self.sigma_max > self.sigma_min:
            raise ValueError(f"sigma_max must exceed sigma_min, got sigma_min={self.sigma_min}, sigma_max={self.sigma_max}")

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def alpha(self, t):
        return torch.ones_like(t)

    def sigma(self, t):
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def marginal_derivatives(self, t):
        t = self.check_time(t)
        return torch.zeros_like(t), self.sigma(t) * self._log_ratio

    def drift_coef(self, t):
        return torch.zeros_like(self.check_time(t))

    def diffusion(self, t):
        return self.sigma(self.check_time(t)) * math.sqrt(2 * self._log_ratio)

    def transition(self, s, t):
        s, t = self._check_pair(s, t)
        return torch.ones_like(t), (self.sigma(t) ** 2 - self.sigma(s) ** 2).clamp_min(0.0).sqrt()

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def t_from_sigma_tilde(self, sigma_tilde):
        return torch.log(torch.as_tensor(sigma_tilde) / self.sigma_min) / self._log_ratio


@dataclass(frozen=True)
class _BetaSchedule(SDE):
    """Linear ``β(t) = β_min + t (β_max − β_min)`` with integral ``B(t) = β_min t + ½ (β_max − β_min) t²``."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self):
        _positive("beta_min", self.beta_min)
        _positive("beta_max", self.beta_max)
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max must be >= beta_min, got beta_min={self.beta_min}, beta_max={self.beta_max}")

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def beta_integral(self, t: torch.Tensor) -> torch.Tensor:
        return t * (self.beta_min + 0.5 * t * (self.beta_max - self.beta_min))

    def _t_from_beta_integral(self, B: torch.Tensor) -> torch.Tensor:
        # Root of ½ Δ t² + β_min t − B = 0, written without cancellation (also valid for Δ = 0).
        delta = self.beta_max - self.beta_min
        return 2 * B / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * delta * B))

    def alpha(self, t):
        return torch.exp(-0.5 * self.beta_integral(t))

    def drift_coef(self, t):
        return -0.5 * self.beta(self.check_time(t))

    @property
    def prior_std(self) -> float:
        return 1.0

    def ddpm_schedule(self, N: int, *, dtype=torch.float64, device=None) -> DDPMSchedule:
        """DDPM chain with ``β_i = β(t_i) / N`` (Song et al. 2021, Appendix B), ``α_i = 1 − β_i``, ``ᾱ_i``."""
        betas = self.beta(discrete_times(N, self.T, dtype=dtype, device=device)) / N
        alphas = 1.0 - betas
        return DDPMSchedule(betas, alphas, torch.cumprod(alphas, 0))


@dataclass(frozen=True)
class VPSDE(_BetaSchedule):
    r"""Variance-preserving SDE, the continuous limit of DDPM (Song et al. 2021, eq. (11), (29)).

    ``dx = −½ β(t) x dt + sqrt(β(t)) dw``; kernel ``N(e^{−B/2} x_0, (1 − e^{−B}) I)``. Prior ``N(0, I)``.
    """

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(-self.beta_integral(t)))

    def marginal_derivatives(self, t):
        t = self.check_time(t)
        beta, B = self.beta(t), self.beta_integral(t)
        return -0.5 * beta * torch.exp(-0.5 * B), 0.5 * beta * torch.exp(-B) / torch.sqrt(-torch.expm1(-B))

    def diffusion(self, t):
        return torch.sqrt(self.beta(self.check_time(t)))

    def transition(self, s, t):
        s, t = self._check_pair(s, t)
        dB = self.beta_integral(t) - self.beta_integral(s)
        return torch.exp(-0.5 * dB), torch.sqrt((-torch.expm1(-dB)).clamp_min(0.0))

    def log_snr(self, t):
        # λ = −½ log(e^B − 1)
        return -0.5 * torch.log(torch.expm1(self.beta_integral(self.check_time(t))))

    def t_from_sigma_tilde(self, sigma_tilde):
        # σ̃² = e^B − 1
        return self._t_from_beta_integral(torch.log1p(torch.as_tensor(sigma_tilde) ** 2))


@dataclass(frozen=True)
class SubVPSDE(_BetaSchedule):
    r"""Sub-VP SDE (Song et al. 2021, eq. (12)): ``dx = −½ β x dt + sqrt(β (1 − e^{−2B})) dw``.

    Kernel ``N(e^{−B/2} x_0, (1 − e^{−B})² I)``; its variance stays below the VP one. Prior ``N(0, I)``.
    """

    def sigma(self, t):
        return -torch.expm1(-self.beta_integral(t))

    def marginal_derivatives(self, t):
        t = self.check_time(t)
        beta, B = self.beta(t), self.beta_integral(t)
        return -0.5 * beta * torch.exp(-0.5 * B), beta * torch.exp(-B)

    def diffusion(self, t):
        t = self.check_time(t)
        return torch.sqrt(-self.beta(t) * torch.expm1(-2 * self.beta_integral(t)))

    def transition(self, s, t):
        # σ_t² − e^{−ΔB} σ_s² = (1 − e^{−ΔB}) (1 − e^{−(B_s + B_t)})
        s, t = self._check_pair(s, t)
        Bs, Bt = self.beta_integral(s), self.beta_integral(t)
        var = torch.expm1(-(Bt - Bs)) * torch.expm1(-(Bs + Bt))
        return torch.exp(-0.5 * (Bt - Bs)), var.clamp_min(0.0).sqrt()

    def t_from_sigma_tilde(self, sigma_tilde):
        # σ̃ = (1 − e^{−B}) e^{B/2} = 2 sinh(B/2)
        return self._t_from_beta_integral(2 * torch.asinh(torch.as_tensor(sigma_tilde) / 2))


@dataclass(frozen=True)
class RectifiedFlow(SDE):
    r"""Rectified flow / conditional optimal transport (Liu et al. 2023; Lipman et al. 2023 with σ_min = 0):
    ``x_t = (1 − t) x_0 + t ε`` on ``[0, 1]``.

    ``f = −1/(1 − t)``, ``g² = 2t/(1 − t)``, ``σ̃ = t/(1 − t)``, ``λ = log((1 − t)/t)``; the probability-flow
    velocity is ``ε − x_0`` in expectation. ``α(1) = 0``: the prior ``N(0, I)`` is exact at ``T = 1``, and the
    σ̃ / λ grids start at ``t_max`` (default 0.995, σ̃ = 199) where the SDE is still regular.
    """

    t_max: float = 0.995

    def __post_init__(self):
        if isinstance(self.t_max, bool) or not (isinstance(self.t_max, (int, float)) and 0 < self.t_max <= 1):
            raise ValueError(f"t_max must lie in (0, 1], got {self.t_max!r}")

    def alpha(self, t):
        return 1.0 - t

    def sigma(self, t):
        return t.clone() if isinstance(t, torch.Tensor) else torch.as_tensor(t)

    def marginal_derivatives(self, t):
        t = self.check_time(t)
        return -torch.ones_like(t), torch.ones_like(t)

    def drift_coef(self, t):
        return -1.0 / (1.0 - self.check_time(t))

    def diffusion(self, t):
        t = self.check_time(t)
        return torch.sqrt(2.0 * t / (1.0 - t))

    def sigma_tilde(self, t):
        t = self.check_time(t)
        return t / (1.0 - t)

    def log_snr(self, t):
        t = self.check_time(t)
        return torch.log1p(-t) - torch.log(t)

    def t_from_sigma_tilde(self, sigma_tilde):
        s = torch.as_tensor(sigma_tilde)
        return torch.where(torch.isinf(s), torch.ones_like(s), s / (1.0 + s))

    def t_from_log_snr(self, lam):
        return torch.sigmoid(-torch.as_tensor(lam))

    def transition(self, s, t):
        s, t = self._check_pair(s, t)
        a = (1.0 - t) / (1.0 - s)
        return a, (t**2 - (a * s) ** 2).clamp_min(0.0).sqrt()

    @property
    def regular_at_T(self) -> bool:
        return False

    @property
    def prior_std(self) -> float:
        return 1.0


@dataclass(frozen=True)
class CosineVP(SDE):
    r"""The cosine schedule (Nichol & Dhariwal 2021, eq. (17)) as a variance-preserving path:
    ``ᾱ(t) = cos²(u)/cos²(u_0)``, ``u = π/2 · (t + s)/(1 + s)``, ``α = √ᾱ``, ``σ = √(1 − ᾱ)``.

    ``f = −(π/2)/(1 + s) · tan u``, ``g² = −2f``; ``σ = √(sin(u − u_0) sin(u + u_0))/cos u_0`` without
    cancellation at small ``t``. ``α(1) = 0`` (Nichol & Dhariwal clip β at 0.999): samplers start at ``t_max``
    (default 0.995, σ̃ = 128).
    """

    s: float = 0.008
    t_max: float = 0.995

    def __post_init__(self):
        if isinstance(self.s, bool) or not (isinstance(self.s, (int, float)) and math.isfinite(self.s) and self.s >= 0):
            raise ValueError(f"s must be a non-negative finite number (Nichol & Dhariwal: 0.008), got {self.s!r}")
        if isinstance(self.t_max, bool) or not (isinstance(self.t_max, (int, float)) and 0 < self.t_max <= 1):
            raise ValueError(f"t_max must lie in (0, 1], got {self.t_max!r}")

    @property
    def _u0(self) -> float:
        return 0.5 * math.pi * self.s / (1 + self.s)

    def _u(self, t):
        return 0.5 * math.pi * (t + self.s) / (1 + self.s)

    def alpha(self, t):
        return torch.cos(self._u(t)) / math.cos(self._u0)

    def sigma(self, t):
        u = self._u(t)
        return torch.sqrt((torch.sin(u - self._u0) * torch.sin(u + self._u0)).clamp_min(0.0)) / math.cos(self._u0)

    def marginal_derivatives(self, t):
        t = self.check_time(t)
        du = 0.5 * math.pi / (1 + self.s)
        alpha, sigma = self.alpha(t), self.sigma(t)
        dalpha = -du * torch.sin(self._u(t)) / math.cos(self._u0)
        return dalpha, -alpha * dalpha / sigma  # α² + σ² = 1

    def drift_coef(self, t):
        return -0.5 * math.pi / (1 + self.s) * torch.tan(self._u(self.check_time(t)))

    def diffusion(self, t):
        return torch.sqrt(-2.0 * self.drift_coef(t))

    def t_from_sigma_tilde(self, sigma_tilde):
        s = torch.as_tensor(sigma_tilde)
        abar = 1.0 / (1.0 + s.to(torch.float64) ** 2)
        u = torch.arccos((abar.sqrt() * math.cos(self._u0)).clamp(-1.0, 1.0))
        t = (u / (0.5 * math.pi) * (1 + self.s) - self.s).clamp(0.0, 1.0)
        return t.to(s.dtype) if s.is_floating_point() else t

    @property
    def regular_at_T(self) -> bool:
        return False

    @property
    def prior_std(self) -> float:
        return 1.0


@dataclass(frozen=True)
class EDMPath(SDE):
    r"""The EDM formulation (Karras et al. 2022): ``α = 1``, ``σ(t) = t`` — time *is* the noise level — on
    ``[0, σ_max]`` (``T = σ_max``; EDM samples from σ_max = 80 down to σ_min = 0.002).

    ``f = 0``, ``g = √(2t)``, ``σ̃ = t``, ``λ = −log t``; prior ``N(0, σ_max² I)``. Train with
    :class:`~sde_lab.losses.EDMWeighting` and :class:`~sde_lab.model.EDMPreconditioning`.
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def __post_init__(self):
        _positive("sigma_min", self.sigma_min)
        _positive("sigma_max", self.sigma_max)
        if not self.sigma_max > self.sigma_min:
            raise ValueError(f"sigma_max must exceed sigma_min, got sigma_min={self.sigma_min}, sigma_max={self.sigma_max}")

    @property
    def T(self) -> float:  # type: ignore[override]
        return float(self.sigma_max)

    def alpha(self, t):
        return torch.ones_like(t)

    def sigma(self, t):
        return t.clone() if isinstance(t, torch.Tensor) else torch.as_tensor(t)

    def marginal_derivatives(self, t):
        t = self.check_time(t)
        return torch.zeros_like(t), torch.ones_like(t)

    def drift_coef(self, t):
        return torch.zeros_like(self.check_time(t))

    def diffusion(self, t):
        return torch.sqrt(2.0 * self.check_time(t))

    def sigma_tilde(self, t):
        return self.sigma(self.check_time(t))

    def t_from_sigma_tilde(self, sigma_tilde):
        return torch.as_tensor(sigma_tilde).clone()

    def transition(self, s, t):
        s, t = self._check_pair(s, t)
        return torch.ones_like(t), (t**2 - s**2).clamp_min(0.0).sqrt()

    @property
    def prior_std(self) -> float:
        return float(self.sigma_max)


@dataclass(frozen=True, eq=False)
class AffinePath(SDE):
    r"""A path from two user functions, ``α(t)`` and ``σ(t)`` (elementwise on tensors), on ``[0, T]``.

    Everything else comes from the base class (autograd, bisection). ``σ/α`` must increase with ``t``.
    ``t_max`` (default ``T``) is where samplers start; give it below a singular end.

        path = AffinePath(lambda t: torch.cos(0.5 * math.pi * t), lambda t: torch.sin(0.5 * math.pi * t), t_max=0.995)
    """

    alpha_fn: object = None
    sigma_fn: object = None
    T_end: float = 1.0
    t_start: float | None = None
    name: str = "affine"

    def __post_init__(self):
        if not callable(self.alpha_fn) or not callable(self.sigma_fn):
            raise ValueError("AffinePath needs two callables, alpha_fn(t) and sigma_fn(t)")
        _positive("T_end", self.T_end)
        t = torch.linspace(0.01, 0.99, 9, dtype=torch.float64) * self.T_end
        st = self.sigma_fn(t) / self.alpha_fn(t)
        if not bool(torch.isfinite(st).all()) or not bool((st.diff() > 0).all()):
            raise ValueError("AffinePath: σ(t)/α(t) must be finite and increasing on (0, T)")

    @property
    def T(self) -> float:  # type: ignore[override]
        return float(self.T_end)

    @property
    def t_max(self) -> float:
        return float(self.T_end if self.t_start is None else self.t_start)

    @property
    def regular_at_T(self) -> bool:
        return self.t_start is None  # a path given a t_start declares its end singular

    def alpha(self, t):
        return self.alpha_fn(t)

    def sigma(self, t):
        return self.sigma_fn(t)

    def __repr__(self) -> str:
        return f"AffinePath({self.name!r}, T={self.T_end})"


class DiscreteVP(SDE):
    r"""The variance-preserving path through a discrete chain ``ᾱ_0 > … > ᾱ_{N−1}`` (DDPM's, diffusers'
    ``alphas_cumprod``), with level ``i`` at ``t_i = i T/(N − 1)`` — the discrete-time convention of score_sde
    (network label ``t (N − 1)``, :class:`~sde_lab.model.DiscreteIndexTime`).

    ``α(t)² = ᾱ(t)`` with ``log ᾱ`` linear between the levels, ``σ(t)² = 1 − ᾱ(t)``: at the levels every
    coefficient (α, σ, the transition between two levels, λ) is the chain's own, so a solver on a grid of
    levels takes exactly the discrete scheduler's steps (DDPM ancestral, DDIM, DPM-Solver). Between them
    ``f = ½ d log ᾱ/dt`` and ``g² = −d log ᾱ/dt`` are piecewise constant (the left segment at a level). The
    path's ``t = 0`` is the chain's first level (``σ(0)² = 1 − ᾱ_0 = β_0``), one step after the data. Prior
    ``N(0, I)``.
    """

    def __init__(self, alphas_cumprod):
        a = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu().flatten()
        if a.numel() < 2 or not bool(torch.isfinite(a).all()) or not bool(((a > 0) & (a <= 1)).all()):
            raise ValueError(f"alphas_cumprod must hold at least 2 values in (0, 1], got {a.numel()} values "
                             f"in [{float(a.min()) if a.numel() else 'nan'}, {float(a.max()) if a.numel() else 'nan'}]")
        if not bool((a[1:] < a[:-1]).all()):
            raise ValueError("alphas_cumprod must be strictly decreasing (every beta_i > 0)")
        self.alphas_cumprod = a
        self.n = int(a.numel())
        self._log = {torch.device("cpu"): a.log()}

    def __repr__(self) -> str:
        a = self.alphas_cumprod
        return f"DiscreteVP(N={self.n}, alphas_cumprod=[{float(a[0]):.6g} ... {float(a[-1]):.6g}])"

    def __eq__(self, other) -> bool:
        return isinstance(other, DiscreteVP) and torch.equal(self.alphas_cumprod, other.alphas_cumprod)

    def __hash__(self) -> int:
        return hash((self.n, float(self.alphas_cumprod.sum())))

    @property
    def betas(self) -> torch.Tensor:
        """``β_i = 1 − ᾱ_i/ᾱ_{i−1}`` (``β_0 = 1 − ᾱ_0``)."""
        a = self.alphas_cumprod
        return 1 - a / torch.cat([a.new_ones(1), a[:-1]])

    def _table(self, device) -> torch.Tensor:
        device = torch.device(device)
        if device not in self._log:
            self._log[device] = self._log[torch.device("cpu")].to(device)
        return self._log[device]

    def _segment(self, t: torch.Tensor, left: bool):
        u = t.to(torch.float64) * ((self.n - 1) / self.T)
        i = (torch.ceil(u) - 1 if left else torch.floor(u)).clamp(0, self.n - 2).long()
        return u, i

    def _L(self, t: torch.Tensor) -> torch.Tensor:
        """``log ᾱ(t)`` (float64)."""
        La = self._table(t.device)
        u, i = self._segment(t, left=False)
        w = u - i
        return (1 - w) * La[i] + w * La[i + 1]

    def _dL(self, t: torch.Tensor) -> torch.Tensor:
        La = self._table(t.device)
        _, i = self._segment(t, left=True)
        return (La[i + 1] - La[i]) * ((self.n - 1) / self.T)

    def alpha(self, t):
        return torch.exp(0.5 * self._L(t)).to(t.dtype)

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(self._L(t))).to(t.dtype)

    def marginal_derivatives(self, t):
        t = self.check_time(t)
        L, dL = self._L(t), self._dL(t)
        alpha, sigma = torch.exp(0.5 * L), torch.sqrt(-torch.expm1(L))
        return (0.5 * dL * alpha).to(t.dtype), (-0.5 * dL * torch.exp(L) / sigma).to(t.dtype)

    def drift_coef(self, t):
        t = self.check_time(t)
        return (0.5 * self._dL(t)).to(t.dtype)

    def diffusion(self, t):
        t = self.check_time(t)
        return torch.sqrt((-self._dL(t)).clamp_min(0.0)).to(t.dtype)

    def transition(self, s, t):
        s, t = self._check_pair(s, t)
        d = self._L(t) - self._L(s)
        return torch.exp(0.5 * d).to(t.dtype), torch.sqrt((-torch.expm1(d)).clamp_min(0.0)).to(t.dtype)

    def log_snr(self, t):
        L = self._L(self.check_time(t))
        return (0.5 * (L - torch.log(-torch.expm1(L)))).to(t.dtype)

    def t_from_sigma_tilde(self, sigma_tilde):
        s = torch.as_tensor(sigma_tilde)
        La = self._table(s.device)
        L = -torch.log1p(s.to(torch.float64) ** 2)  # σ̃² = 1/ᾱ − 1
        j = torch.searchsorted(-La, (-L).contiguous())
        i = (j - 1).clamp(0, self.n - 2)
        w = (L - La[i]) / (La[i + 1] - La[i])
        t = ((i + w) * (self.T / (self.n - 1))).clamp(0.0, float(self.T))
        return t.to(s.dtype) if s.is_floating_point() else t

    @property
    def prior_std(self) -> float:
        return 1.0
