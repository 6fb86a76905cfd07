"""Problems with known answers, shared by the tests (in the spirit of torchsde's ``tests/problems.py``).

* paths: VE, VP, sub-VP, and two defined in this file by ``α(t)`` and ``σ(t)`` alone — the cosine schedule
  of Nichol & Dhariwal (2021) and rectified flow (``α = 1 − t``, ``σ = t``, singular at ``T``): everything
  else (drift, diffusion, σ̃, λ, their inverses, derivatives) comes from the base class;
* the analytic oracle's targets (exact scores, posterior means, velocities, log-densities under any path);
* noise floors: the metric between two independent exact sample sets, what a perfect sampler scores;
* a Gaussian data distribution ``N(m, c²)`` whose every marginal is Gaussian in closed form;
* wrong models for teeth checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sde_lab.analytic import GaussianMixture, make_target
from sde_lab.metrics import noise_floor, sliced_wasserstein
from sde_lab.model import DiffusionModel
from sde_lab.sde import SDE, VESDE, VPSDE, SubVPSDE


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class CosinePath(SDE):
    r"""The cosine schedule (Nichol & Dhariwal 2021, eq. (17)): ``ᾱ(t) = f(t)/f(0)``, ``f(t) = cos²(π/2 (t + s)/(1 + s))``,
    as the variance-preserving path ``α = √ᾱ``, ``σ = √(1 − ᾱ)``. Only α and σ are given; α(1) = 0 (to round-off),
    so samplers start at ``T_MAX``."""

    s: float = 0.008

    def _u(self, t):
        return 0.5 * math.pi * (t + self.s) / (1 + self.s)

    def alpha(self, t):
        return torch.cos(self._u(t)) / math.cos(0.5 * math.pi * self.s / (1 + self.s))

    def sigma(self, t):
        return torch.sqrt((1.0 - self.alpha(t) ** 2).clamp_min(0.0))

    # closed forms the tests compare the base class's derivations with (not used by the library)
    def exact_drift_coef(self, t):
        return -0.5 * math.pi / (1 + self.s) * torch.tan(self._u(t))

    def exact_diffusion2(self, t):
        return -2.0 * self.exact_drift_coef(t)  # α² + σ² = 1  ⇒  g² = −2f


@dataclass(frozen=True)
class RectifiedFlowPath(SDE):
    """``x_t = (1 − t) x_0 + t ε`` (Liu et al. 2023; conditional OT, Lipman et al. 2023): α(1) = 0, σ̃(1) = ∞."""

    def alpha(self, t):
        return 1.0 - t

    def sigma(self, t):
        return t


COSINE = CosinePath()
RF = RectifiedFlowPath()
COSINE_T_MAX = 0.99  # where the cosine path's samplers start (α = 0.016 there; Nichol & Dhariwal clip β at 0.999)

PATHS = {"ve": VESDE(), "vp": VPSDE(), "subvp": SubVPSDE(), "cosine": COSINE}
T_MAX = {"cosine": COSINE_T_MAX}


def t_max(name: str) -> float | None:
    return T_MAX.get(name)


def five_modes(scale: float = 1.0) -> GaussianMixture:
    """2-D, 5 separated modes of unequal weight and anisotropic spread (stds 0.12–0.3 times ``scale``); the
    target of ``experiments/pc_study.py``."""
    k = torch.arange(5, dtype=torch.float64)
    means = 2.5 * torch.stack([torch.cos(2 * math.pi * k / 5), torch.sin(2 * math.pi * k / 5)], 1)
    stds = torch.tensor([[0.25, 0.12], [0.15, 0.3], [0.2, 0.2], [0.3, 0.15], [0.12, 0.25]], dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.3, 0.25, 0.2, 0.15, 0.1]), means, scale * stds)


def floor(target: GaussianMixture, n: int, seed: int = 123, repeats: int = 4) -> float:
    """Mean SW2 between independent exact sample sets of size ``n``."""
    return noise_floor(lambda m, g: target.sample(m, g), n, repeats=repeats, generator=gen(seed))


def sw_ratio(samples: torch.Tensor, target: GaussianMixture, seed: int = 1, repeats: int = 5) -> tuple[float, float]:
    """``(SW2(samples, fresh exact samples), noise floor)`` at the sample size of ``samples``."""
    n = samples.shape[0]
    g = gen(seed)
    sw = sliced_wasserstein(samples.flatten(1), target.sample(n, g).flatten(1), generator=g)
    return sw, floor(target, n, seed + 1, repeats)


def quality(x: torch.Tensor, gm: GaussianMixture, floor_value: float, seed: int = 7) -> tuple[float, float, float]:
    """(SW2 / floor, max |mean error| in standard errors, max relative covariance error)."""
    g = gen(seed)
    ref = gm.sample(x.shape[0], g)
    sw = sliced_wasserstein(x.float(), ref, generator=g)
    mean, cov = gm.moments()
    xf = x.detach().double().flatten(1)
    se = (torch.diagonal(cov) / xf.shape[0]).sqrt()
    mean_err = ((xf.mean(0) - mean).abs() / se).max().item()
    cov_err = ((torch.cov(xf.T) - cov).abs().max() / torch.diagonal(cov).max()).item()
    return sw / floor_value, mean_err, cov_err


def passes(x: torch.Tensor, gm: GaussianMixture, floor_value: float) -> bool:
    """The acceptance check every correct sampler must pass (tolerances from the noise floor / standard errors)."""
    if not torch.isfinite(x).all():
        return False
    sw, mean_err, cov_err = quality(x, gm, floor_value)
    return sw < 2.0 and mean_err < 6.0 and cov_err < 0.08


def mode_stats(x: torch.Tensor, gm: GaussianMixture) -> tuple[float, torch.Tensor]:
    """``(within-mode RMS of (x − μ_k)/s_k, mode weights)`` with each sample assigned to its most likely component.

    The RMS is 1 for exact samples of well-separated modes; SW2 barely sees a too narrow or too wide spread.
    """
    xf = x.detach().double().reshape(x.shape[0], -1)
    logp = torch.log(gm.weights)[None] - 0.5 * (((xf[:, None] - gm.means[None]) / gm.stds[None]) ** 2 + 2 * torch.log(gm.stds[None])).sum(-1)
    k = logp.argmax(1)
    r = (xf - gm.means[k]) / gm.stds[k]
    weights = torch.bincount(k, minlength=gm.n_components).double() / len(k)
    return r.pow(2).mean().sqrt().item(), weights


class ScaledModel(DiffusionModel):
    """A wrong model: the oracle's score times ``factor`` (teeth checks)."""

    def __init__(self, model: DiffusionModel, factor: float):
        self.model, self.path, self.factor = model, model.path, factor

    def score(self, x, t, y=None):
        return self.factor * self.model.score(x, t)


def wrong(score_fn, kind: str):
    """A sign-flipped or halved score function."""
    return (lambda x, t: -score_fn(x, t)) if kind == "flipped" else (lambda x, t: 0.5 * score_fn(x, t))


@dataclass(frozen=True)
class GaussianData:
    """Data ``N(m, c² I)``: under any path ``p_t = N(α m, (α² c² + σ²) I)`` and the score is linear in ``x``."""

    m: float = 0.7
    c: float = 0.3

    def score_fn(self, path: SDE):
        def score(x, t):
            alpha, sigma = (v.reshape(-1, *([1] * (x.ndim - 1))) for v in path.marginal(t))
            return -(x - alpha * self.m) / (alpha**2 * self.c**2 + sigma**2)

        return score

    def posterior_mean_variance(self, path: SDE, t: float) -> float:
        """Variance over ``x_t ~ p_t`` of Tweedie's ``E[x_0 | x_t]``: ``(α c²)² / (α² c² + σ²)``."""
        alpha, sigma = (v.item() for v in path.marginal(torch.tensor([t], dtype=torch.float64)))
        return (alpha * self.c**2) ** 2 / (alpha**2 * self.c**2 + sigma**2)

    def marginal_variance(self, path: SDE, t: float) -> float:
        alpha, sigma = (v.item() for v in path.marginal(torch.tensor([t], dtype=torch.float64)))
        return alpha**2 * self.c**2 + sigma**2


__all__ = [
    "gen", "five_modes", "CosinePath", "RectifiedFlowPath", "COSINE", "RF", "COSINE_T_MAX", "PATHS", "t_max", "floor", "sw_ratio",
    "quality", "passes", "mode_stats", "ScaledModel", "wrong", "GaussianData", "make_target",
]


class ListNoise:
    """Noise that replays a list of tensors (the same draws for sde_lab and the peer)."""

    def __init__(self, draws):
        self.draws, self.k = list(draws), 0

    def randn_like(self, x):
        z = self.draws[self.k]
        self.k += 1
        return z.to(x.dtype)

    def __call__(self, sigma, sigma_next):  # k-diffusion's noise_sampler
        return self.randn_like(self.draws[0])
