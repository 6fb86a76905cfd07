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
  uniform-time objective, with far smaller variance;
* :class:`FlowMatchingWeighting` — the velocity MSE of flow matching, ``t`` uniform or logit-normal;
* :class:`EDMWeighting` — EDM's log-normal σ and ``λ(σ) = (σ² + σ_d²)/(σ σ_d)²`` on the denoiser;
* :class:`VPredictionWeighting` — the v-MSE; :class:`MinSNRWeighting` — min-SNR-γ.

Since ``E‖s + z/σ‖² = E‖s - ∇log p_t‖² + C(t)`` (Vincent 2011), DSM is minimised by the true score.
Discrete losses: :func:`smld_loss` (NCSN, Song & Ermon 2019, eq. (5) with ``λ_i = σ_i²``) over
``VESDE.smld_sigmas(N)``, and :func:`ddpm_loss` (Ho et al. 2020, ``L_simple``) over
``VPSDE.ddpm_schedule(N)``; both take the schedule tensor, so no loss looks at the SDE's class.

Each loss is written on the network's *own* target (:class:`~sde_lab.model.Model`: ε, score, x_0, v,
velocity, EDM's ``F``): with ``s = a(t) x + c(t) · out``,

    λ(t) ‖s_θ(x_t, t) + z/σ‖² = λ(t) c(t)² ‖out_θ − out*‖²,     out* = the output for ``(x_0, z)``,

so a noise-predicting network trained with σ² weighting computes exactly ``‖ε_θ − z‖²`` and an
x_0-predicting one ``(α²/σ²) ‖x̂_0 − x_0‖²`` (tested as that identity). Any other model (the analytic
oracle, a plain score function) is compared in score space. ``reduce`` sums (``"sum"``) or averages
(``"mean"``) over the non-batch dimensions.

:class:`DSMObjective`, :class:`SMLDObjective` and :class:`DDPMObjective` bundle a loss with its time law
for the :class:`~sde_lab.training.Trainer`: ``draw`` draws the noise for a whole (global) batch,
``__call__`` evaluates the per-sample loss on it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar, Protocol, Union

import torch

from .model import DiffusionModel, Model, ScoreFn
from .sde import SDE, DDPMSchedule
from .utils import append_dims, randn

__all__ = [
    "TRAIN_EPS",
    "TimeWeighting",
    "SigmaSquaredWeighting",
    "LikelihoodWeighting",
    "ImportanceLikelihoodWeighting",
    "FlowMatchingWeighting",
    "EDMWeighting",
    "VPredictionWeighting",
    "MinSNRWeighting",
    "TIME_LAWS",
    "dsm_loss",
    "smld_loss",
    "ddpm_loss",
    "REDUCTIONS",
    "Objective",
    "DSMObjective",
    "SMLDObjective",
    "DDPMObjective",
]

TRAIN_EPS = 1e-5
"""Smallest training time ε (Song et al. 2021, Appendix C)."""

REDUCTIONS = ("mean", "sum")

ModelLike = Union[DiffusionModel, ScoreFn]


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
def _importance_table(sde: SDE, eps: float, n_grid: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grid ``t_k`` (geometric, dense near ε where ``g²/σ²`` ~ 1/t for VP), CDF ``F_k`` and cell densities,
    built once per device so that drawing ``t`` never synchronises with the host."""
    t = torch.logspace(torch.log10(torch.tensor(eps)), torch.log10(torch.tensor(sde.T)), n_grid, dtype=torch.float64)
    q = sde.diffusion(t) ** 2 / sde.marginal(t)[1] ** 2
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(0.5 * (q[1:] + q[:-1]) * torch.diff(t), 0)])
    cdf = cum / cum[-1]
    dens = torch.diff(cdf) / torch.diff(t)  # the sampler's exact piecewise-constant density
    return t.to(device), cdf.to(device), dens.to(device)


@dataclass(frozen=True)
class ImportanceLikelihoodWeighting:
    """Likelihood weighting with ``t ~ p(t) ∝ g(t)²/σ(t)²`` (Song, Durkan, Murray & Ermon 2021, §5).

    ``p`` is built from ``sde.diffusion`` and ``sde.marginal`` on an ``n_grid``-point grid; ``t`` is drawn
    by inverting its piecewise-linear CDF, and :meth:`weight` divides by that sampler's exact (piecewise
    constant) density, so the estimate is unbiased for the uniform-time likelihood-weighted loss.
    """

    eps: float = TRAIN_EPS
    n_grid: int = 4097

    def _table(self, sde, device):
        _check_eps(self.eps, sde.T)
        return _importance_table(sde, float(self.eps), int(self.n_grid), str(torch.device(device or "cpu")))

    def sample(self, sde, n, *, generator=None, device=None, dtype=torch.float32):
        device = torch.device(device) if device is not None else (generator.device if generator is not None else torch.device("cpu"))
        grid, cdf, _ = self._table(sde, device)
        u = _uniform(n, generator, device, torch.float64)
        k = torch.searchsorted(cdf, u, right=True).clamp(1, len(grid) - 1) - 1
        frac = (u - cdf[k]) / (cdf[k + 1] - cdf[k])
        t = grid[k] + frac * (grid[k + 1] - grid[k])
        return t.clamp(self.eps, sde.T).to(dtype=dtype)

    def density(self, sde, t: torch.Tensor) -> torch.Tensor:
        """The sampler's density ``p(t)`` at ``t`` (shape ``(B,)``)."""
        grid, _, dens = self._table(sde, t.device)
        k = torch.searchsorted(grid, t.detach().to(torch.float64), right=True).clamp(1, len(grid) - 1) - 1
        return dens[k].to(dtype=t.dtype)

    def weight(self, sde, t):
        return sde.diffusion(t) ** 2 / ((sde.T - self.eps) * self.density(sde, t))


TIME_LAWS = ("uniform", "logit_normal")


def _normal(n, generator, device, dtype) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randn(n, generator=generator, device=gen_device, dtype=dtype).to(device)


@dataclass(frozen=True)
class FlowMatchingWeighting:
    r"""Flow matching (Lipman et al. 2023; Liu et al. 2023): ``‖u_θ − u*‖²`` with ``u* = α' x_0 + σ' ε``, i.e.

        λ(t) = (σ (α σ' − σ α') / α)²          (``= σ̃²`` on rectified flow),

    so that ``λ ‖s_θ − s*‖² = ‖u_θ − u*‖²`` for a velocity network. ``t ~ U[ε, T − ε]`` (``time_law="uniform"``)
    or ``t = T · sigmoid(m + s z)`` (``"logit_normal"``, Esser et al. 2024 / SD3: ``m = 0``, ``s = 1``).
    """

    time_law: str = "uniform"
    mean: float = 0.0
    std: float = 1.0
    eps: float = TRAIN_EPS

    def __post_init__(self):
        if self.time_law not in TIME_LAWS:
            raise ValueError(f"unknown time_law {self.time_law!r}; valid choices: {', '.join(TIME_LAWS)}")
        if not (isinstance(self.std, (int, float)) and self.std > 0):
            raise ValueError(f"std must be a positive number, got {self.std!r}")

    def sample(self, sde, n, *, generator=None, device=None, dtype=torch.float32):
        T = float(sde.T)
        _check_eps(self.eps, T / 2)
        if self.time_law == "uniform":
            t = self.eps + (T - 2 * self.eps) * _uniform(n, generator, device, torch.float64)
        else:
            t = T * torch.sigmoid(self.mean + self.std * _normal(n, generator, device, torch.float64))
        return t.clamp(self.eps, T - self.eps).to(dtype)

    def weight(self, sde, t):
        alpha, sigma = sde.marginal(t)
        da, ds = sde.marginal_derivatives(t)
        return (sigma * (alpha * ds - sigma * da) / alpha) ** 2


@dataclass(frozen=True)
class EDMWeighting:
    r"""EDM's training law and weight (Karras et al. 2022, Table 1): ``ln σ̃ ~ N(P_mean, P_std²)`` and
    ``λ(σ̃) = (σ̃² + σ_d²)/(σ̃ σ_d)²`` on ``‖D_θ − x_0‖²``, i.e. ``λ(t) = λ(σ̃) σ⁴/α²`` on the score (``D`` is the
    model's ``x0``). With :class:`~sde_lab.model.EDMPreconditioning` the network's own loss weight is 1
    (``λ(σ̃) c_out² = 1``). ``t = t(σ̃)`` on any path, clamped to ``[ε, T]``.
    """

    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_data: float = 0.5
    eps: float = TRAIN_EPS

    def __post_init__(self):
        for name in ("p_std", "sigma_data"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")

    def sample(self, sde, n, *, generator=None, device=None, dtype=torch.float32):
        _check_eps(self.eps, sde.T)
        sig = torch.exp(self.p_mean + self.p_std * _normal(n, generator, device, torch.float64))
        return sde.t_from_sigma_tilde(sig).clamp(self.eps, float(sde.T)).to(dtype)

    def weight(self, sde, t):
        alpha, sigma = sde.marginal(t)
        st, sd2 = sigma / alpha, self.sigma_data**2
        return (st**2 + sd2) / (st**2 * sd2) * sigma**4 / alpha**2


@dataclass(frozen=True)
class VPredictionWeighting:
    r"""v-prediction (Salimans & Ho 2022): ``‖v_θ − v‖²`` with ``v = α ε − σ x_0``, i.e. ``λ(t) = (σ (α² + σ²)/α)²``;
    ``t ~ U[ε, T]``."""

    eps: float = TRAIN_EPS

    def sample(self, sde, n, *, generator=None, device=None, dtype=torch.float32):
        _check_eps(self.eps, sde.T)
        return self.eps + (sde.T - self.eps) * _uniform(n, generator, device, dtype)

    def weight(self, sde, t):
        alpha, sigma = sde.marginal(t)
        return (sigma * (alpha**2 + sigma**2) / alpha) ** 2


@dataclass(frozen=True)
class MinSNRWeighting:
    r"""min-SNR-γ (Hang et al. 2023): the ε-loss ``‖ε_θ − ε‖²`` weighted by ``min(SNR, γ)/SNR``, ``SNR = α²/σ²``, i.e.
    ``λ(t) = σ² min(SNR, γ)/SNR`` — the x_0-loss weight ``min(SNR, γ)`` and, on variance-preserving paths, the
    v-loss weight ``min(SNR, γ)/(SNR + 1)`` are the same λ. ``t ~ U[ε, T]``."""

    gamma: float = 5.0
    eps: float = TRAIN_EPS

    def __post_init__(self):
        if not (isinstance(self.gamma, (int, float)) and self.gamma > 0):
            raise ValueError(f"gamma must be a positive number, got {self.gamma!r}")

    def sample(self, sde, n, *, generator=None, device=None, dtype=torch.float32):
        _check_eps(self.eps, sde.T)
        return self.eps + (sde.T - self.eps) * _uniform(n, generator, device, dtype)

    def weight(self, sde, t):
        alpha, sigma = sde.marginal(t)
        snr = (alpha / sigma) ** 2
        return sigma**2 * torch.clamp(snr, max=self.gamma) / snr


def _reduce(sq: torch.Tensor, reduce: str) -> torch.Tensor:
    if reduce == "sum":
        return sq.flatten(1).sum(1)
    if reduce == "mean":
        return sq.flatten(1).mean(1)
    raise ValueError(f"unknown reduce {reduce!r}; valid choices: {', '.join(REDUCTIONS)}")


def _weighted_error(model: ModelLike, x0, z, x_t, t, target_score, weight, reduce, y=None) -> torch.Tensor:
    """``weight · ‖s(x_t, t[, y]) − target_score‖²``, computed on the network's own target when it is a :class:`Model`."""
    if isinstance(model, Model):
        out = model.output(x_t, t, y)
        out = out.to(torch.promote_types(out.dtype, torch.float32))  # bf16/fp16 outputs: loss in float32
        target = model.output_target(x0.to(out.dtype), z.to(out.dtype), x_t.to(out.dtype), t)
        weight = weight * model.output_weight(t, x_t)  # ‖s − s*‖² = c(t)² ‖out − out*‖²
    else:
        out = model.score(x_t, t, y) if isinstance(model, DiffusionModel) else (model(x_t, t) if y is None else model(x_t, t, y))
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
    model: ModelLike,
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
    return _weighted_error(model, x0, z, x_t, t, target, weighting.weight(sde, t), reduce, y)


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
    model: ModelLike,
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
    t = index.to(torch.float64) * (sde.T / (N - 1))  # float64: the model's index convention recovers i exactly
    x_t = x0 + append_dims(sig, x0.ndim) * z
    return _weighted_error(model, x0, z, x_t, t, -z / append_dims(sig, x0.ndim), sig**2, reduce, y)


def ddpm_loss(
    model: ModelLike,
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
    t = index.to(torch.float64) * (sde.T / (N - 1))  # float64: the model's index convention recovers i exactly
    x_t = append_dims(a, x0.ndim) * x0 + append_dims(sig, x0.ndim) * z
    return _weighted_error(model, x0, z, x_t, t, -z / append_dims(sig, x0.ndim), sig**2, reduce, y)


# --- objectives: a loss and its time law, for the trainer ------------------------------------------------


class Objective(Protocol):
    """What the trainer needs: noise for a global batch (sliced per rank) and the per-sample loss on it."""

    def draw(self, path: SDE, n: int, shape: tuple[int, ...], generator: torch.Generator, device) -> dict[str, torch.Tensor]: ...

    def __call__(self, model, x0: torch.Tensor, draws: dict[str, torch.Tensor], y: torch.Tensor | None = None) -> torch.Tensor: ...


def _noise(n, shape, generator, device):
    return torch.randn((n, *shape), generator=generator, device=generator.device).to(device)


def _path_of(model) -> SDE:
    path = getattr(model, "path", None)
    if not isinstance(path, SDE):
        raise ValueError(f"the model must carry its path (an sde_lab Model), got {type(model).__name__}")
    return path


@dataclass(frozen=True)
class DSMObjective:
    """Continuous weighted DSM (:func:`dsm_loss`) with ``t`` from the weighting's time law."""

    weighting: TimeWeighting = SigmaSquaredWeighting()
    reduce: str = "sum"

    def __post_init__(self):
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"unknown reduce {self.reduce!r}; valid choices: {', '.join(REDUCTIONS)}")

    def draw(self, path, n, shape, generator, device):
        return {"t": self.weighting.sample(path, n, generator=generator, device=device), "z": _noise(n, shape, generator, device)}

    def __call__(self, model, x0, draws, y=None):
        return dsm_loss(model, _path_of(model), x0, weighting=self.weighting, reduce=self.reduce, t=draws["t"],
                        z=draws["z"], y=y)


def _check_chain(path: SDE, n: int, kind: str) -> None:
    """The discrete chain must be the path's own: SMLD needs α ≡ 1, DDPM needs α² + σ² = 1 (variance preserving)."""
    from .sde import discrete_times

    t = discrete_times(n, path.T)
    alpha, sigma = path.marginal(t)
    if kind == "smld" and not torch.allclose(alpha, torch.ones_like(alpha), rtol=0, atol=1e-12):
        raise ValueError(f"the SMLD loss trains the chain x_0 + σ_i z, which needs a path with α ≡ 1 (VE); {path!r} is not one: "
                         "use training.discrete_loss='ddpm' for VP or continuous training")
    if kind == "ddpm" and not torch.allclose(alpha**2 + sigma**2, torch.ones_like(alpha), rtol=0, atol=1e-6):
        raise ValueError(f"the DDPM loss trains the variance-preserving chain (α_i² + σ_i² = 1), but {path!r} does not "
                         "preserve variance (e.g. sub-VP): use continuous training (training.continuous=True)")


@dataclass(frozen=True)
class _ChainObjective:
    """A loss over the ``n`` levels of the path's discrete chain, ``i ~ U{0..n−1}``."""

    n: int = 1000
    reduce: str = "sum"
    kind: ClassVar[str]

    def draw(self, path, n, shape, generator, device):
        _check_chain(path, self.n, self.kind)
        i = torch.randint(0, self.n, (n,), generator=generator, device=generator.device).to(device)
        return {"index": i, "z": _noise(n, shape, generator, device)}


@dataclass(frozen=True)
class SMLDObjective(_ChainObjective):
    """The NCSN loss (:func:`smld_loss`) over the path's ``n`` SMLD levels."""

    kind: ClassVar[str] = "smld"

    def __call__(self, model, x0, draws, y=None):
        path = _path_of(model)
        return smld_loss(model, path, x0, path.smld_sigmas(self.n, dtype=torch.float32, device=x0.device),
                         reduce=self.reduce, index=draws["index"], z=draws["z"], y=y)


@dataclass(frozen=True)
class DDPMObjective(_ChainObjective):
    """DDPM's ``L_simple`` (:func:`ddpm_loss`) over the path's ``n``-step chain."""

    kind: ClassVar[str] = "ddpm"

    def __call__(self, model, x0, draws, y=None):
        path = _path_of(model)
        return ddpm_loss(model, path, x0, path.ddpm_schedule(self.n, device=x0.device), reduce=self.reduce,
                         index=draws["index"], z=draws["z"], y=y)
