r"""The analytic oracle: Gaussian mixtures whose perturbed marginals are known exactly under every SDE.

If ``x_0 ~ Σ_k w_k N(μ_k, diag(s_k²))`` and the SDE has kernel ``N(α(t) x_0, σ(t)² I)``, then

    p_t = Σ_k w_k N(α μ_k, diag(α² s_k² + σ²)),

so the exact score ``∇_x log p_t``, log-density ``log p_t`` and posterior mean ``E[x_0 | x_t]`` are
available in closed form for every ``t`` and every path — singular endpoints included (at ``α = 0`` the
posterior mean is the data mean). :meth:`GaussianMixture.model` returns an :class:`OracleModel` with the
same methods as a trained network (``score``, ``eps``, ``x0``, ``velocity``), each computed exactly: it is
the known answer every routine is tested against. :meth:`GaussianMixture.score_fn` is the same object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from .model import DiffusionModel
from .sde import SDE
from .utils import append_dims, randn

__all__ = ["GaussianMixture", "OracleModel", "TARGETS", "make_target", "target_names"]


@dataclass(frozen=True, eq=False)
class GaussianMixture:
    """A mixture of diagonal Gaussians in ``D = prod(event_shape)`` dimensions.

    Args:
        weights: ``(K,)`` non-negative mixture weights (normalised here).
        means: ``(K, D)`` component means.
        stds: ``(K, D)`` per-component, per-coordinate standard deviations (or ``(K,)`` / scalar).
        event_shape: shape of one sample, e.g. ``(2,)`` for points or ``(1, 8, 8)`` for images.
    """

    weights: torch.Tensor
    means: torch.Tensor
    stds: torch.Tensor
    event_shape: tuple[int, ...] = field(default=())

    def __post_init__(self):
        means = torch.as_tensor(self.means, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        K, D = means.shape
        weights = torch.as_tensor(self.weights, dtype=torch.float64)
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape ({K},) to match means, got {tuple(weights.shape)}")
        if not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero")
        stds = torch.as_tensor(self.stds, dtype=torch.float64)
        if stds.ndim == 0:
            stds = stds.expand(K, D)
        elif stds.ndim == 1:
            if stds.shape != (K,):
                raise ValueError(f"stds of shape {tuple(stds.shape)} do not match {K} components")
            stds = stds[:, None].expand(K, D)
        if stds.shape != (K, D):
            raise ValueError(f"stds must have shape ({K}, {D}), got {tuple(stds.shape)}")
        if not torch.isfinite(stds).all() or (stds <= 0).any():
            raise ValueError("stds must be positive and finite")
        event_shape = tuple(self.event_shape) or (D,)
        if math.prod(event_shape) != D:
            raise ValueError(f"event_shape {event_shape} has {math.prod(event_shape)} elements, means have D={D}")
        object.__setattr__(self, "weights", weights / weights.sum())
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "stds", stds.contiguous())
        object.__setattr__(self, "event_shape", event_shape)

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    # --- the data distribution ------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None, *, dtype=torch.float32, device=None) -> torch.Tensor:
        """``n`` samples of shape ``(n, *event_shape)``."""
        return self.sample_with_labels(n, generator, dtype=dtype, device=device)[0]

    def sample_with_labels(self, n: int, generator: torch.Generator | None = None, *, dtype=torch.float32, device=None):
        """``(samples, component labels)``; randomness drawn on the generator's device (CPU by default)."""
        gen_device = generator.device if generator is not None else torch.device("cpu")
        labels = torch.multinomial(self.weights.to(gen_device), n, replacement=True, generator=generator)
        z = randn((n, self.dim), generator=generator, device=gen_device, dtype=torch.float64)
        means, stds = self.means.to(gen_device), self.stds.to(gen_device)
        x = means[labels] + stds[labels] * z
        device = device if device is not None else gen_device
        return x.reshape(n, *self.event_shape).to(device=device, dtype=dtype), labels.to(device)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p_data(x)``, shape ``(B,)``."""
        ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        return self._log_prob(x, ones, torch.zeros_like(ones))

    # --- the perturbed marginal p_t under an SDE -----------------------------------------------
    def _params(self, x: torch.Tensor):
        return (self.weights.to(x.device, x.dtype), self.means.to(x.device, x.dtype), self.stds.to(x.device, x.dtype))

    def _component_terms(self, x, alpha, sigma):
        """Per-sample, per-component ``(log w_k N_k(x), (x - α μ_k) / v_k)`` with ``v_k = α² s_k² + σ²``."""
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.event_shape))}), got {tuple(x.shape)}")
        w, mu, s = self._params(x)
        xf = x.reshape(x.shape[0], 1, self.dim)  # (B, 1, D)
        a, sg = alpha[:, None, None], sigma[:, None, None]
        var = (a * s[None]) ** 2 + sg**2  # (B, K, D)
        diff = xf - a * mu[None]
        logn = -0.5 * ((diff**2 / var) + torch.log(2 * math.pi * var)).sum(-1)  # (B, K)
        return torch.log(w)[None] + logn, diff / var

    def _log_prob(self, x, alpha, sigma):
        logc, _ = self._component_terms(x, alpha, sigma)
        return torch.logsumexp(logc, dim=1)

    def _score(self, x, alpha, sigma):
        logc, r = self._component_terms(x, alpha, sigma)
        resp = torch.softmax(logc, dim=1)  # (B, K)
        return -(resp[..., None] * r).sum(1).reshape(x.shape)

    def marginal_log_prob(self, sde: SDE, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Exact ``log p_t(x)`` under ``sde``, shape ``(B,)``."""
        alpha, sigma = sde.marginal(sde._check(x, t).to(x.dtype))
        return self._log_prob(x, alpha, sigma)

    def marginal_score(self, sde: SDE, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Exact ``∇_x log p_t(x)`` under ``sde``, same shape as ``x``."""
        alpha, sigma = sde.marginal(sde._check(x, t).to(x.dtype))
        return self._score(x, alpha, sigma)

    def posterior_mean(self, sde: SDE, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r"""Exact ``E[x_0 | x_t = x]``: ``Σ_k p_t(k | x) [μ_k + α s_k² (x − α μ_k) / (α² s_k² + σ²)]``."""
        alpha, sigma = sde.marginal(sde._check(x, t).to(x.dtype))
        logc, r = self._component_terms(x, alpha, sigma)
        resp = torch.softmax(logc, dim=1)[..., None]  # (B, K, 1)
        _, mu, s = self._params(x)
        comp = mu[None] + alpha[:, None, None] * s[None] ** 2 * r  # (B, K, D)
        return (resp * comp).sum(1).reshape(x.shape)

    def posterior_noise(self, sde: SDE, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r"""Exact ``E[ε | x_t = x] = σ Σ_k p_t(k | x) (x − α μ_k) / (α² s_k² + σ²)`` (``= −σ ∇ log p_t``)."""
        alpha, sigma = sde.marginal(sde._check(x, t).to(x.dtype))
        return -append_dims(sigma, x.ndim) * self._score(x, alpha, sigma)

    def marginal_velocity(self, sde: SDE, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r"""Exact probability-flow velocity ``E[α' x_0 + σ' ε | x_t = x]``, finite where ``α(t) = 0``."""
        da, ds = (append_dims(v.to(x.dtype), x.ndim) for v in sde.marginal_derivatives(sde._check(x, t)))
        return da * self.posterior_mean(sde, x, t) + ds * self.posterior_noise(sde, x, t)

    def model(self, sde: SDE) -> "OracleModel":
        """The exact model of this mixture under ``sde``: score, ε, x_0 and velocity in closed form."""
        return OracleModel(self, sde)

    def posterior(self, sde: SDE, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Exact component posterior ``p_t(k | x_t)`` (the oracle's noise-conditional classifier), ``(B, K)``."""
        alpha, sigma = sde.marginal(sde._check(x, t).to(x.dtype))
        logc, _ = self._component_terms(x, alpha, sigma)
        return torch.softmax(logc, dim=1)

    def score_fn(self, sde: SDE) -> "OracleModel":
        """The exact score of ``p_t`` under ``sde`` as a ``(x, t) -> score`` callable (the :meth:`model`)."""
        return self.model(sde)

    def log_prob_fn(self, sde: SDE) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The exact ``log p_t`` under ``sde`` as a ``(x, t) -> (B,)`` callable."""
        return lambda x, t: self.marginal_log_prob(sde, x, t)

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact mean ``(D,)`` and covariance ``(D, D)`` of the data distribution."""
        w, mu, s = self.weights, self.means, self.stds
        mean = (w[:, None] * mu).sum(0)
        second = (w[:, None, None] * (torch.diag_embed(s**2) + mu[:, :, None] * mu[:, None, :])).sum(0)
        return mean, second - mean[:, None] * mean[None, :]

    # --- conditioning (exact answers for inpainting and class-conditional sampling) -------------
    def component(self, k: int) -> "GaussianMixture":
        """Component ``k`` alone: the class-conditional ``p(x | y = k)`` of the mixture, same event shape."""
        return self.components([k])

    def components(self, ks) -> "GaussianMixture":
        """The mixture restricted to components ``ks`` (weights renormalised): ``p(x | y ∈ ks)``."""
        idx = torch.as_tensor(ks)
        if idx.ndim == 0:
            idx = idx[None]
        if idx.ndim != 1 or idx.numel() == 0 or idx.dtype == torch.bool or idx.is_floating_point():
            raise ValueError(f"component indices must be a non-empty sequence of integers, got {ks!r}")
        K = self.n_components
        if (idx < 0).any() or (idx >= K).any():
            raise ValueError(f"component indices must lie in [0, {K}), got {idx.tolist()}")
        if idx.unique().numel() != idx.numel():
            raise ValueError(f"component indices must be distinct, got {idx.tolist()}")
        return GaussianMixture(self.weights[idx], self.means[idx], self.stds[idx], event_shape=self.event_shape)

    def condition(self, mask, observed) -> "GaussianMixture":
        r"""Exact conditional of the missing coordinates given the observed ones: again a mixture.

        With diagonal components, ``x = (x_o, x_m)`` factorises inside each component, so

            p(x_m | x_o) = Σ_k π_k N(x_m; μ_{k,m}, diag(s_{k,m}²)),   π_k ∝ w_k N(x_o; μ_{k,o}, diag(s_{k,o}²)):

        components keep their missing-coordinate parameters and are reweighted by the likelihood of the
        observation. ``mask`` (1 = observed) and ``observed`` have the event shape (or ``D`` entries);
        the result is a mixture over the ``D_m`` missing coordinates in flattened (row-major) order, with
        event shape ``(D_m,)``.
        """
        mask = torch.as_tensor(mask)
        if mask.numel() != self.dim:
            raise ValueError(f"mask must have {self.dim} entries (event shape {self.event_shape}), got shape {tuple(mask.shape)}")
        mask = mask.reshape(self.dim)
        if mask.dtype != torch.bool:
            if not ((mask == 0) | (mask == 1)).all():
                raise ValueError("mask entries must be 0/1 (or bool); 1 marks an observed coordinate")
            mask = mask.bool()
        if mask.all():
            raise ValueError("mask observes every coordinate: no missing coordinates are left to condition")
        observed = torch.as_tensor(observed, dtype=torch.float64).reshape(-1)
        if observed.numel() != self.dim:
            raise ValueError(f"observed must have {self.dim} entries (event shape {self.event_shape}), got {observed.numel()}")
        if not torch.isfinite(observed[mask]).all():
            raise ValueError("observed values must be finite at the observed coordinates")
        mu_o, s_o = self.means[:, mask], self.stds[:, mask]
        loglik = -0.5 * (((observed[mask] - mu_o) / s_o) ** 2 + torch.log(2 * math.pi * s_o**2)).sum(1)
        weights = torch.softmax(torch.log(self.weights) + loglik, 0)
        return GaussianMixture(weights, self.means[:, ~mask], self.stds[:, ~mask])

    def log_posterior(self, sde: SDE, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Exact ``log p_t(k | x_t)``, ``(B, K)``, differentiable in ``x`` (log-softmax, no underflow)."""
        alpha, sigma = sde.marginal(sde._check(x, t).to(x.dtype))
        logc, _ = self._component_terms(x, alpha, sigma)
        return torch.log_softmax(logc, dim=1)

    def classifier_fn(self, sde: SDE) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The exact noise-conditional classifier ``(x, t) -> logits`` (= log ``p_t(k | x)``) under ``sde``."""
        return lambda x, t: self.log_posterior(sde, x, t)


class OracleModel(DiffusionModel):
    """A :class:`GaussianMixture` under a path as a model: every prediction exact (no score round trip)."""

    velocity_defined_at_T = True  # closed forms: finite where α(T) = 0

    def __init__(self, mixture: GaussianMixture, path: SDE):
        self.mixture, self.path = mixture, path

    def score(self, x, t, y=None):
        return self._mixture(y).marginal_score(self.path, x, t)

    def eps(self, x, t, y=None):
        return self._mixture(y).posterior_noise(self.path, x, t)

    def x0(self, x, t, y=None):
        return self._mixture(y).posterior_mean(self.path, x, t)

    def velocity(self, x, t, y=None):
        return self._mixture(y).marginal_velocity(self.path, x, t)

    def _mixture(self, y):
        if y is not None:
            raise ValueError("the oracle model is unconditional; sample a component with mixture.component(k).model(path)")
        return self.mixture

    def __repr__(self) -> str:
        return f"OracleModel({self.mixture.n_components} components, {self.path!r})"


# --- named targets -----------------------------------------------------------------------------


def _ring(n_modes: int = 8, radius: float = 2.0, std: float = 0.2) -> GaussianMixture:
    angles = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    return GaussianMixture(torch.ones(n_modes), means, torch.full((n_modes,), std))


def _aniso() -> GaussianMixture:
    return GaussianMixture(
        weights=torch.tensor([0.5, 0.3, 0.2]),
        means=torch.tensor([[-1.5, 0.0], [1.5, 1.0], [0.5, -1.5]]),
        stds=torch.tensor([[0.6, 0.15], [0.1, 0.5], [0.3, 0.3]]),
    )


def _gmm_highdim(dim: int, n_modes: int, event_shape: tuple[int, ...] = (), seed: int = 0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n_modes, dim, generator=g, dtype=torch.float64)
    means = 1.5 * means / means.norm(dim=1, keepdim=True) * math.sqrt(dim) ** 0.5
    stds = 0.2 + 0.3 * torch.rand(n_modes, dim, generator=g, dtype=torch.float64)
    weights = torch.linspace(1.0, 2.0, n_modes, dtype=torch.float64)
    return GaussianMixture(weights, means, stds, event_shape=event_shape)


TARGETS: dict[str, tuple[Callable[[], GaussianMixture], str]] = {
    "ring": (_ring, "2-D ring of 8 equal isotropic modes (radius 2, std 0.2)"),
    "aniso": (_aniso, "2-D mixture of 3 unequal, anisotropic modes (weights 0.5/0.3/0.2)"),
    "gmm16": (lambda: _gmm_highdim(16, 4), "16-D mixture of 4 modes with per-coordinate stds in [0.2, 0.5]"),
    "gmm8x8": (
        lambda: _gmm_highdim(64, 3, (1, 8, 8), seed=1),
        "64-D mixture of 3 modes shaped as 1x8x8 images (tests image-shaped code paths)",
    ),
}


def target_names() -> list[str]:
    return sorted(TARGETS)


def make_target(name: str) -> GaussianMixture:
    """Build a named oracle target; unknown names raise ``ValueError`` listing the valid ones."""
    try:
        factory = TARGETS[name][0]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; valid targets: {', '.join(target_names())}") from None
    return factory()

