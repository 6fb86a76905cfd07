r"""Predictors: one step of a reverse-time solver from ``t`` to ``t_next < t`` (Song et al. 2021, §4.2).

Every predictor works for every SDE: it uses only ``drift``, ``diffusion``, ``marginal`` and
``transition`` of :class:`~sde_lab.sde.SDE`. A step returns ``(x_next, x_next_mean)``, the sample and
its mean before the step's noise is added (equal for deterministic steps). Times ``t``, ``t_next``
are ``(B,)`` tensors; ``h = t - t_next > 0``; ``z`` is standard normal noise drawn with ``generator``.

Each class declares ``nfe_per_step``, the exact number of score evaluations of one step.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import torch

from .score import ScoreFn
from .sde import SDE
from .utils import append_dims, randn_like

__all__ = ["Predictor", "EulerMaruyama", "ProbabilityFlowEuler", "ReverseDiffusion", "Ancestral", "NoPredictor"]



@dataclass(frozen=True)
class Predictor(abc.ABC):
    """A reverse-time step ``x_t -> x_{t_next}``; subclasses hold only hyperparameters."""

    nfe_per_step: ClassVar[int] = 1

    @abc.abstractmethod
    def step(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        x: torch.Tensor,
        t: torch.Tensor,
        t_next: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_next, x_next_mean)``."""


@dataclass(frozen=True)
class EulerMaruyama(Predictor):
    r"""Euler–Maruyama on the reverse SDE (Song et al. 2021, eq. (6)):

        x_mean = x - [f(x, t) - g(t)² s(x, t)] h,    x_next = x_mean + g(t) √h z.
    """

    nfe_per_step: ClassVar[int] = 1

    def step(self, sde, score_fn, x, t, t_next, generator=None):
        h = append_dims(t - t_next, x.ndim)
        x_mean = x - sde.reverse_drift(x, t, score_fn(x, t)) * h
        g = append_dims(sde.diffusion(t), x.ndim)
        return x_mean + g * h.sqrt() * randn_like(x, generator), x_mean


@dataclass(frozen=True)
class ProbabilityFlowEuler(Predictor):
    r"""Euler step of the probability-flow ODE (Song et al. 2021, eq. (13)):

        x_next = x - [f(x, t) - ½ g(t)² s(x, t)] h.

    Deterministic; the noise-free limit of :class:`EulerMaruyama`.
    """

    nfe_per_step: ClassVar[int] = 1

    def step(self, sde, score_fn, x, t, t_next, generator=None):
        h = append_dims(t - t_next, x.ndim)
        x_next = x - sde.probability_flow_drift(x, t, score_fn(x, t)) * h
        return x_next, x_next


@dataclass(frozen=True)
class ReverseDiffusion(Predictor):
    r"""Reverse diffusion (Song et al. 2021, eq. (46)).

    The forward chain between the grid times is the exact transition ``x_t = a x_{t_next} + σ z``
    (``(a, σ) = sde.transition(t_next, t)``), i.e. ``f_i(x) = (a - 1) x`` and ``G_i = σ``. Its reverse is

        x_mean = x - f_i(x) + G_i² s(x, t) = (2 - a) x + σ² s(x, t),    x_next = x_mean + σ z.

    For VE this is the SMLD chain (``a = 1``, ``σ² = σ(t)² - σ(t_next)²``); for VP the DDPM chain with
    ``a = √(1 - β_i)``, ``σ² = β_i`` — but from the exact transition, so few-step grids stay finite.
    """

    nfe_per_step: ClassVar[int] = 1

    def step(self, sde, score_fn, x, t, t_next, generator=None):
        a, sigma = (append_dims(v, x.ndim) for v in sde.transition(t_next, t))
        x_mean = (2 - a) * x + sigma**2 * score_fn(x, t)
        return x_mean + sigma * randn_like(x, generator), x_mean


@dataclass(frozen=True)
class Ancestral(Predictor):
    r"""Ancestral sampling for any linear SDE (DDPM: Ho et al. 2020; SMLD: Song et al. 2021, eq. (47)).

    With ``x_t = a x_s + σ_ts z`` (``s = t_next``, ``(a, σ_ts) = sde.transition(s, t)``), Tweedie's
    formula on this kernel gives the exact reverse mean ``E[x_s | x_t] = (x_t + σ_ts² ∇log p_t(x_t)) / a``.
    The noise is the posterior std of ``q(x_s | x_t, x_0)``, ``σ_ts σ(s) / σ(t)``:

        x_mean = (x + σ_ts² s(x, t)) / a,     x_next = x_mean + σ_ts (σ(s) / σ(t)) z.

    VE: exactly SMLD ancestral, ``x + (σ_t² - σ_s²) s + √(σ_s² (σ_t² - σ_s²) / σ_t²) z``.
    VP: DDPM ancestral, ``(x + β_i s) / √(1 - β_i) + σ̃_i z`` with the posterior variance
    ``σ̃_i² = β_i (1 - ᾱ_{i-1}) / (1 - ᾱ_i)`` (Ho et al. 2020, §3.2). Sub-VP follows from its own α, σ.
    """

    nfe_per_step: ClassVar[int] = 1

    def step(self, sde, score_fn, x, t, t_next, generator=None):
        a, sigma_ts = sde.transition(t_next, t)
        _, sigma_s = sde.marginal(t_next)
        _, sigma_t = sde.marginal(t)
        a, sigma_ts = append_dims(a, x.ndim), append_dims(sigma_ts, x.ndim)
        std = sigma_ts * append_dims(sigma_s / sigma_t, x.ndim)
        x_mean = (x + sigma_ts**2 * score_fn(x, t)) / a
        return x_mean + std * randn_like(x, generator), x_mean


@dataclass(frozen=True)
class NoPredictor(Predictor):
    """The identity step (corrector-only sampling, e.g. annealed Langevin dynamics)."""

    nfe_per_step: ClassVar[int] = 0

    def step(self, sde, score_fn, x, t, t_next, generator=None):
        return x, x
