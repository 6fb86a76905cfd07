r"""Predictors: one step of a reverse-time solver from ``t`` to ``t_next < t`` (Song et al. 2021, §4.2).

Every predictor works on every path: it uses only the model's score (or velocity) and the path's
``drift``, ``diffusion``, ``marginal`` and ``transition``. A step returns ``(x_next, x_next_mean)``, the
sample and its mean before the step's noise is added (equal for deterministic steps). Times ``t``,
``t_next`` are ``(B,)`` tensors; ``h = t − t_next > 0``; ``z`` is standard normal noise from ``noise``
(a :class:`~sde_lab.noise.Noise`, a ``torch.Generator`` or ``None``).

Each class declares ``nfe_per_step``, the exact number of model evaluations of one step.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import torch

from .model import DiffusionModel
from .noise import NoiseLike, draw_normal
from .utils import append_dims

__all__ = ["Predictor", "EulerMaruyama", "ProbabilityFlowEuler", "ReverseDiffusion", "Ancestral", "NoPredictor",
           "ANCESTRAL_VARIANCES"]


@dataclass(frozen=True)
class Predictor(abc.ABC):
    """A reverse-time step ``x_t -> x_{t_next}``; subclasses hold only hyperparameters."""

    nfe_per_step: ClassVar[int] = 1

    @abc.abstractmethod
    def step(
        self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, noise: NoiseLike = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_next, x_next_mean)``."""


@dataclass(frozen=True)
class EulerMaruyama(Predictor):
    r"""Euler–Maruyama on the reverse SDE (Song et al. 2021, eq. (6)):

        x_mean = x − [f(x, t) − g(t)² s(x, t)] h,    x_next = x_mean + g(t) √h z.
    """

    def step(self, model, x, t, t_next, noise=None):
        path = model.path
        h = append_dims(t - t_next, x.ndim)
        x_mean = x - path.reverse_drift(x, t, model.score(x, t)) * h
        g = append_dims(path.diffusion(t), x.ndim)
        return x_mean + g * h.sqrt() * draw_normal(noise, x), x_mean


@dataclass(frozen=True)
class ProbabilityFlowEuler(Predictor):
    r"""Euler step of the probability-flow ODE (Song et al. 2021, eq. (13)): ``x_next = x − v(x, t) h`` with the
    model's velocity ``v = f x − ½ g² s``. Deterministic; the noise-free limit of :class:`EulerMaruyama`."""

    def step(self, model, x, t, t_next, noise=None):
        h = append_dims(t - t_next, x.ndim)
        x_next = x - model.velocity(x, t) * h
        return x_next, x_next


@dataclass(frozen=True)
class ReverseDiffusion(Predictor):
    r"""Reverse diffusion (Song et al. 2021, eq. (46)).

    The forward chain between the grid times is the exact transition ``x_t = a x_{t_next} + σ z``
    (``(a, σ) = path.transition(t_next, t)``), i.e. ``f_i(x) = (a − 1) x`` and ``G_i = σ``. Its reverse is

        x_mean = x − f_i(x) + G_i² s(x, t) = (2 − a) x + σ² s(x, t),    x_next = x_mean + σ z.

    For VE this is the SMLD chain (``a = 1``, ``σ² = σ(t)² − σ(t_next)²``); for VP the DDPM chain with
    ``a = √(1 − β_i)``, ``σ² = β_i`` — but from the exact transition, so few-step grids stay finite.
    """

    def step(self, model, x, t, t_next, noise=None):
        a, sigma = (append_dims(v, x.ndim) for v in model.path.transition(t_next, t))
        x_mean = (2 - a) * x + sigma**2 * model.score(x, t)
        return x_mean + sigma * draw_normal(noise, x), x_mean


ANCESTRAL_VARIANCES = ("posterior", "forward")


@dataclass(frozen=True)
class Ancestral(Predictor):
    r"""Ancestral sampling for any affine path (DDPM: Ho et al. 2020; SMLD: Song et al. 2021, eq. (47)).

    With ``x_t = a x_s + σ_ts z`` (``s = t_next``, ``(a, σ_ts) = path.transition(s, t)``), Tweedie's formula
    on this kernel gives the exact reverse mean ``E[x_s | x_t] = (x_t + σ_ts² ∇log p_t(x_t)) / a``:

        x_mean = (x + σ_ts² s(x, t)) / a,     x_next = x_mean + std · z,

    with ``std = σ_ts σ(s) / σ(t)``, the std of the posterior ``q(x_s | x_t, x_0)`` (``variance="posterior"``;
    DDPM's ``σ̃_i² = β_i (1 − ᾱ_{i−1})/(1 − ᾱ_i)``), or ``std = σ_ts`` (``variance="forward"``; DDPM's
    ``σ_i² = β_i``, score_sde's ancestral predictor). Ho et al. (2020, §3.2) found both give similar
    samples with many steps; with few steps the posterior variance under-disperses.

    VE: exactly SMLD ancestral, ``x + (σ_t² − σ_s²) s + √(σ_s² (σ_t² − σ_s²) / σ_t²) z`` (posterior).
    """

    variance: str = "posterior"

    def __post_init__(self):
        if self.variance not in ANCESTRAL_VARIANCES:
            raise ValueError(f"unknown ancestral variance {self.variance!r}; valid choices: {', '.join(ANCESTRAL_VARIANCES)}")

    def step(self, model, x, t, t_next, noise=None):
        path = model.path
        a, sigma_ts = path.transition(t_next, t)
        if self.variance == "posterior":
            std = sigma_ts * path.marginal(t_next)[1] / path.marginal(t)[1]
        else:
            std = sigma_ts
        a, sigma_ts, std = (append_dims(v, x.ndim) for v in (a, sigma_ts, std))
        x_mean = (x + sigma_ts**2 * model.score(x, t)) / a
        return x_mean + std * draw_normal(noise, x), x_mean


@dataclass(frozen=True)
class NoPredictor(Predictor):
    """The identity step (corrector-only sampling, e.g. annealed Langevin dynamics)."""

    nfe_per_step: ClassVar[int] = 0

    def step(self, model, x, t, t_next, noise=None):
        return x, x
