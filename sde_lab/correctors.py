r"""Correctors: score-based MCMC at a fixed time ``t`` that moves ``x`` towards ``p_t`` (Song et al. 2021, §4.2).

A corrector runs at grid time ``t``; ``t_next < t`` is the next grid time and sets the step-size factor

    α_i = a²,   (a, _) = path.transition(t_next, t),

which is ``1`` for VE and ``≈ 1 − β_i`` for VP (the ``α_i`` of Song et al. 2021, Algorithm 5), and the
same construction for any other path. A step returns ``(x, x_mean)``: the sample and its value before the
last noise injection. ``nfe_per_step`` is the exact number of model evaluations of one call.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import torch

from .model import DiffusionModel
from .noise import NoiseLike, draw_normal
from .utils import append_dims

__all__ = ["Corrector", "Langevin", "AnnealedLangevin", "NoCorrector"]


def _check_hparams(snr: float, n_steps: int) -> None:
    if isinstance(snr, bool) or not (isinstance(snr, (int, float)) and math.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be a positive finite number, got {snr!r}")
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")


def _alpha(path, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    a, _ = path.transition(t_next, t)
    return a**2


@dataclass(frozen=True)
class Corrector(abc.ABC):
    """A few MCMC steps targeting ``p_t``; subclasses hold only hyperparameters."""

    @property
    @abc.abstractmethod
    def nfe_per_step(self) -> int:
        """Model evaluations per call of :meth:`step`."""

    @abc.abstractmethod
    def step(
        self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, noise: NoiseLike = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, x_mean)`` after the corrector's steps at time ``t``."""


@dataclass(frozen=True)
class Langevin(Corrector):
    r"""Langevin corrector (Song et al. 2021, Algorithms 4–5), ``n_steps`` iterations of

        ε = 2 α_i (r ‖z‖ / ‖s‖)²,    x_mean = x + ε s(x, t),    x = x_mean + √(2ε) z,

    with signal-to-noise ratio ``r = snr``. As in the reference implementation, ``‖z‖`` and ``‖s‖`` are
    per-sample norms averaged over the batch, so a single sample with a vanishing score cannot take a
    huge step. A score that vanishes for the whole batch (a zero-initialised network) gives ``ε = 0``:
    the step leaves ``x`` unchanged instead of returning NaN. ``norm="per_sample"`` uses each sample's own
    norms instead, so that a sample does not depend on the batch it is drawn in (with
    :class:`~sde_lab.noise.PerSampleNoise`).
    """

    snr: float = 0.16
    n_steps: int = 1
    norm: str = "batch"

    def __post_init__(self):
        _check_hparams(self.snr, self.n_steps)
        if self.norm not in ("batch", "per_sample"):
            raise ValueError(f"unknown Langevin norm {self.norm!r}; valid choices: batch, per_sample")

    @property
    def nfe_per_step(self) -> int:
        return self.n_steps

    def step_size(self, score: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """``ε = 2 α (r ‖z‖ / ‖s‖)²`` (0 where the score norm is 0), broadcast over ``score``'s shape."""
        grad_norm, noise_norm = score.flatten(1).norm(dim=1), z.flatten(1).norm(dim=1)
        if self.norm == "batch":
            grad_norm, noise_norm = grad_norm.mean(), noise_norm.mean()
        ratio = torch.where(grad_norm > 0, self.snr * noise_norm / grad_norm.clamp_min(torch.finfo(grad_norm.dtype).tiny),
                            torch.zeros_like(grad_norm))
        return append_dims(2 * alpha * ratio**2, score.ndim)

    def step(self, model, x, t, t_next, noise=None):
        alpha = _alpha(model.path, t, t_next)
        x_mean = x
        for _ in range(self.n_steps):
            grad = model.score(x, t)
            z = draw_normal(noise, x)
            step_size = self.step_size(grad, z, alpha)
            x_mean = x + step_size * grad
            x = x_mean + torch.sqrt(2 * step_size) * z
        return x, x_mean


@dataclass(frozen=True)
class AnnealedLangevin(Corrector):
    r"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) as a corrector: ``n_steps`` iterations of

        ε = 2 α_i (r σ(t))²,    x_mean = x + ε s(x, t),    x = x_mean + √(2ε) z

    at the noise level ``σ(t)`` of the perturbation kernel — Algorithm 1's ``ε σ_i² / σ_L²`` schedule
    (step ∝ σ_i²), with ``r = snr`` as in Song et al. 2021's reference code.
    """

    snr: float = 0.16
    n_steps: int = 1

    def __post_init__(self):
        _check_hparams(self.snr, self.n_steps)

    @property
    def nfe_per_step(self) -> int:
        return self.n_steps

    def step(self, model, x, t, t_next, noise=None):
        path = model.path
        _, sigma = path.marginal(t)
        step_size = append_dims(2 * _alpha(path, t, t_next) * (self.snr * sigma) ** 2, x.ndim)
        noise_scale = torch.sqrt(2 * step_size)
        x_mean = x
        for _ in range(self.n_steps):
            x_mean = x + step_size * model.score(x, t)
            x = x_mean + noise_scale * draw_normal(noise, x)
        return x, x_mean


@dataclass(frozen=True)
class NoCorrector(Corrector):
    """The identity (predictor-only sampling)."""

    @property
    def nfe_per_step(self) -> int:
        return 0

    def step(self, model, x, t, t_next, noise=None):
        return x, x
