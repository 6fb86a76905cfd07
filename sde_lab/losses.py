r"""Denoising score-matching losses, per sample (shape ``(B,)``).

Continuous DSM (Song et al. 2021, eq. (7)): with ``x_t = α(t) x_0 + σ(t) z``, ``z ~ N(0, I)``,

    L(θ) = E_t E_{x_0, z} [ λ(t) ‖ s_θ(x_t, t) + z / σ(t) ‖² ],

``-z/σ = ∇ log p_0t(x_t | x_0)``. The time density and ``λ`` come from a *weighting* object:

* :class:`SigmaSquaredWeighting` — ``λ = σ(t)²``, ``t ~ U[ε, T]`` (the paper's default);
* :class:`LikelihoodWeighting` — ``λ = g(t)²``, ``t ~ U[ε, T]``: the bound on the negative
  log-likelihood (Song, Durkan, Murray & Ermon 2021, Theorem 1);
* :class:`ImportanceLikelihoodWeighting` — the same objective with ``t ~ p(t) ∝ g(t)²/σ(t)²``
  (Song, Durkan, Murray & Ermon 2021, §5), sampled by inverting a numerical CDF built from the SDE's own
  ``diffusion`` and ``marginal``; the weight ``g²/((T-ε) p(t))`` keeps it an unbiased estimate of the
  uniform-time objective, with far smaller variance.

Since ``E‖s + z/σ‖² = E‖s - ∇log p_t‖² + C(t)`` (Vincent 2011), DSM is minimised by the true score.
Discrete losses: :func:`smld_loss` (NCSN, Song & Ermon 2019, eq. (5) with ``λ_i = σ_i²``) over
``VESDE.smld_sigmas(N)``, and :func:`ddpm_loss` (Ho et al. 2020, ``L_simple``) over
``VPSDE.ddpm_schedule(N)``; both take the schedule tensor, so no loss looks at the SDE's class.

Each loss compares the network's *output* with the output that the target score corresponds to
(:meth:`ScoreModel.output_from_score`), so a noise-predicting network trained with σ² weighting
computes exactly ``‖ε_θ - z‖²``; a plain score function (e.g. the analytic oracle) is also accepted.
``reduce`` sums (``"sum"``) or averages (``"mean"``) over the non-batch dimensions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol, Union

import torch

from .score import ScoreFn, ScoreModel
from .sde import SDE, DDPMSchedule
from .utils import append_dims, randn

__all__ = [
    "TRAIN_EPS",
    "TimeWeighting",
    "SigmaSquaredWeighting",
    "LikelihoodWeighting",
    "ImportanceLikelihoodWeighting",
    "dsm_loss",
    "smld_loss",
    "ddpm_loss",
    "REDUCTIONS",
]

TRAIN_EPS = 1e-5
"""Smallest training time ε (Song et al. 2021, Appendix C)."""

REDUCTIONS = ("mean", "sum")

Model = Union[ScoreModel, ScoreFn]


def _uniform(n: int, generator, device, dtype) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=gen_device, dtype=dtype).to(device)


def _check_eps(eps: float, T: float) -> None:
    if not (isinstance(eps, (int, float)) and 0 < eps < T):
        raise ValueError(f"eps must lie in (0, T={T}), got {eps!r}")


class TimeWeighting(Protocol):
    """A time density ``p(t)`` on ``[ε, T]`` and the per-sample weight ``λ(t) / ((T-ε) p(t))``."""

    eps: float

    def sample(self, sde: SDE, n: int, *, generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor: ...

    def weight(self, sde: SDE, t: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class SigmaSquaredWeighting:
    """``λ(t) = σ(t)²``, ``t ~ U[ε, T]`` (Song et al. 2021, eq. (7) with λ ∝ 1/E‖∇log p_0t‖²)."""

    eps: float = TRAIN_EPS

    def sample(self, sde, n, *, generator=None, device=None, dtype=torch.float32):
        _check_eps(self.eps, sde.T)
        return self.eps + (sde.T - self.eps) * _uniform(n, generator, device, dtype)

    def weight(self, sde, t):
        return sde.marginal(t)[1] ** 2


@dataclass(frozen=True)
class LikelihoodWeighting:
    """``λ(t) = g(t)²``, ``t ~ U[ε, T]``: the likelihood bound (Song, Durkan, Murray & Ermon 2021, Thm. 1)."""

    eps: float = TRAIN_EPS

    def sample(self, sde, n, *, generator=None, device=None, dtype=torch.float32):
        _check_eps(self.eps, sde.T)
        return self.eps + (sde.T - self.eps) * _uniform(n, generator, device, dtype)

    def weight(self, sde, t):
        return sde.diffusion(t) ** 2


@functools.lru_cache(maxsize=32)
def _importance_table(sde: SDE, eps: float, n_grid: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grid ``t_k`` (geometric, dense near ε where ``g²/σ²`` ~ 1/t for VP), CDF ``F_k`` and cell densities."""
    t = torch.logspace(torch.log10(torch.tensor(eps)), torch.log10(torch.tensor(sde.T)), n_grid, dtype=torch.float64)
    q = sde.diffusion(t) ** 2 / sde.marginal(t)[1] ** 2
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(0.5 * (q[1:] + q[:-1]) * torch.diff(t), 0)])
    cdf = cum / cum[-1]
    return t, cdf, torch.diff(cdf) / torch.diff(t)  # the sampler's exact piecewise-constant density


@dataclass(frozen=True)
class ImportanceLikelihoodWeighting:
    """Likelihood weighting with ``t ~ p(t) ∝ g(t)²/σ(t)²`` (Song, Durkan, Murray & Ermon 2021, §5).

    ``p`` is built from ``sde.diffusion`` and ``sde.marginal`` on an ``n_grid``-point grid; ``t`` is drawn
    by inverting its piecewise-linear CDF, and :meth:`weight` divides by that sampler's exact (piecewise
    constant) density, so the estimate is unbiased for the uniform-time likelihood-weighted loss.
    """

    eps: float = TRAIN_EPS
    n_grid: int = 4097

    def _table(self, sde):
        _check_eps(self.eps, sde.T)
        return _importance_table(sde, float(self.eps), int(self.n_grid))

    def sample(self, sde, n, *, generator=None, device=None, dtype=torch.float32):
        grid, cdf, _ = self._table(sde)
        u = _uniform(n, generator, "cpu" if generator is None else generator.device, torch.float64).cpu()
        k = torch.searchsorted(cdf, u, right=True).clamp(1, len(grid) - 1) - 1
        frac = (u - cdf[k]) / (cdf[k + 1] - cdf[k])
        t = grid[k] + frac * (grid[k + 1] - grid[k])
        return t.clamp(self.eps, sde.T).to(device=device, dtype=dtype)

    def density(self, sde, t: torch.Tensor) -> torch.Tensor:
        """The sampler's density ``p(t)`` at ``t`` (shape ``(B,)``)."""
        grid, _, dens = self._table(sde)
        k = torch.searchsorted(grid, t.detach().to("cpu", torch.float64), right=True).clamp(1, len(grid) - 1) - 1
        return dens[k].to(device=t.device, dtype=t.dtype)

    def weight(self, sde, t):
        return sde.diffusion(t) ** 2 / ((sde.T - self.eps) * self.density(sde, t))


def _reduce(sq: torch.Tensor, reduce: str) -> torch.Tensor:
    if reduce == "sum":
        return sq.flatten(1).sum(1)
    if reduce == "mean":
        return sq.flatten(1).mean(1)
    raise ValueError(f"unknown reduce {reduce!r}; valid choices: {', '.join(REDUCTIONS)}")


def _weighted_error(model: Model, x_t, t, target_score, weight, reduce, y=None) -> torch.Tensor:
    """``weight · ‖s(x_t, t[, y]) - target_score‖²``, computed in the network's output space when possible."""
    if isinstance(model, ScoreModel):
        out = model.output(x_t, t, y)
        if out.shape != x_t.shape:
            raise ValueError(f"the network returned shape {tuple(out.shape)} for input of shape {tuple(x_t.shape)}")
        out = out.to(torch.promote_types(out.dtype, torch.float32))  # bf16/fp16 outputs: loss in float32
        target = model.output_from_score(target_score.to(out.dtype), t)
        weight = weight * model.output_scale(t) ** 2  # ‖s - s*‖² = c(t)² ‖out - out*‖²
    else:
        out = model(x_t, t) if y is None else model(x_t, t, y)
        if out.shape != x_t.shape:
            raise ValueError(f"the score function returned shape {tuple(out.shape)} for input of shape {tuple(x_t.shape)}")
        target = target_score
    return weight.to(out.dtype) * _reduce((out - target) ** 2, reduce)


def _check_batch(x0: torch.Tensor, t: torch.Tensor | None, z: torch.Tensor | None) -> None:
    if not torch.is_tensor(x0) or x0.ndim < 2:
        raise ValueError(f"x0 must be a batch of shape (B, ...) with at least 2 dims, got {getattr(x0, 'shape', type(x0))}")
    if z is not None and z.shape != x0.shape:
        raise ValueError(f"z must have the shape of x0 {tuple(x0.shape)}, got {tuple(z.shape)}")
    if t is not None and t.shape != (x0.shape[0],):
        raise ValueError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")


def dsm_loss(
    model: Model,
    sde: SDE,
    x0: torch.Tensor,
    *,
    weighting: TimeWeighting = SigmaSquaredWeighting(),
    reduce: str = "sum",
    generator: torch.Generator | None = None,
    t: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample continuous DSM loss ``λ(t) ‖s(x_t, t) + z/σ(t)‖² / ((T-ε) p(t))`` (Song et al. 2021, eq. (7)).

    ``t`` and ``z`` are drawn (with ``generator``) unless given — passing them lets two models be compared
    on the same draws, and distributed training draw a global batch once and slice it. ``y``: class labels
    ``(B,)`` of ``x0`` for a class-conditional model (with label dropout already applied).
    """
    _check_batch(x0, t, z)
    if t is None:
        t = weighting.sample(sde, x0.shape[0], generator=generator, device=x0.device, dtype=x0.dtype)
    if z is None:
        z = randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    alpha, sigma = sde.marginal(t)
    x_t = append_dims(alpha, x0.ndim) * x0 + append_dims(sigma, x0.ndim) * z
    target = -z / append_dims(sigma, x0.ndim)
    return _weighted_error(model, x_t, t, target, weighting.weight(sde, t), reduce, y)


def _discrete_draw(N: int, x0, generator, index, z):
    if index is None:
        gen_device = generator.device if generator is not None else x0.device
        index = torch.randint(0, N, (x0.shape[0],), generator=generator, device=gen_device).to(x0.device)
    elif index.shape != (x0.shape[0],):
        raise ValueError(f"index must have shape ({x0.shape[0]},), got {tuple(index.shape)}")
    if z is None:
        z = randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return index, z


def _check_schedule(name: str, v: torch.Tensor) -> int:
    if not torch.is_tensor(v) or v.ndim != 1 or v.numel() < 2:
        raise ValueError(f"{name} must be a 1-D tensor of at least 2 noise levels, got {getattr(v, 'shape', type(v))}")
    return v.numel()


def smld_loss(
    model: Model,
    sde: SDE,
    x0: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    reduce: str = "sum",
    generator: torch.Generator | None = None,
    index: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
) -> torch.Tensor:
    """NCSN loss ``σ_i² ‖s(x_0 + σ_i z, t_i) + z/σ_i‖²``, ``i ~ U{0..N-1}`` (Song & Ermon 2019, eq. (5)).

    ``sigmas`` are the ``N`` noise levels in increasing order (``VESDE.smld_sigmas(N)``); level ``i`` sits at
    time ``t_i = i T/(N-1)``, which a :class:`ScoreModel` turns into its label (``"reversed_index"`` for
    score_sde's NCSN checkpoints).
    """
    _check_batch(x0, None, z)
    N = _check_schedule("sigmas", sigmas)
    index, z = _discrete_draw(N, x0, generator, index, z)
    sig = sigmas.to(x0.device, x0.dtype)[index]
    t = index.to(x0.dtype) * (sde.T / (N - 1))
    x_t = x0 + append_dims(sig, x0.ndim) * z
    return _weighted_error(model, x_t, t, -z / append_dims(sig, x0.ndim), sig**2, reduce, y)


def ddpm_loss(
    model: Model,
    sde: SDE,
    x0: torch.Tensor,
    schedule: DDPMSchedule,
    *,
    reduce: str = "sum",
    generator: torch.Generator | None = None,
    index: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
) -> torch.Tensor:
    """DDPM ``L_simple = ‖ε_θ(sqrt(ᾱ_i) x_0 + sqrt(1-ᾱ_i) z, i) - z‖²`` (Ho et al. 2020, eq. (14)).

    Written as ``σ_i² ‖s + z/σ_i‖²`` with ``σ_i = sqrt(1-ᾱ_i)``: for a noise-predicting :class:`ScoreModel`
    whose ``sigmas`` are these ``σ_i`` it is exactly ``‖ε_θ - z‖²``. Level ``i`` sits at ``t_i = i T/(N-1)``.
    """
    _check_batch(x0, None, z)
    abar = schedule.alphas_cumprod
    N = _check_schedule("schedule.alphas_cumprod", abar)
    index, z = _discrete_draw(N, x0, generator, index, z)
    abar = abar.to(x0.device, torch.float64)[index]
    a, sig = abar.sqrt().to(x0.dtype), (1 - abar).sqrt().to(x0.dtype)
    t = index.to(x0.dtype) * (sde.T / (N - 1))
    x_t = append_dims(a, x0.ndim) * x0 + append_dims(sig, x0.ndim) * z
    return _weighted_error(model, x_t, t, -z / append_dims(sig, x0.ndim), sig**2, reduce, y)
