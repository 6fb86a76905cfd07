"""Sampling entry point, results, time grids and the NFE counter shared by every solver.

Every solver is a function with the same signature,

    solver(sde, score_fn, shape, *, steps, eps, generator, device, **options) -> SampleResult

registered by name in :data:`sde_lab.registry.SOLVERS`; :func:`sample` resolves the name and forwards
the options that solver accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .sde import SAMPLING_EPS, SDE

__all__ = ["SampleResult", "CountingScore", "ScoreFn", "uniform_time_grid", "sample"]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SampleResult:
    """Samples of shape ``shape``, the exact number of score evaluations, and solver details."""

    samples: torch.Tensor
    nfe: int
    info: dict[str, Any] = field(default_factory=dict)


class CountingScore:
    """Wraps a score function and counts its calls (one call = one batched score evaluation)."""

    def __init__(self, score_fn: ScoreFn):
        self.score_fn = score_fn
        self.nfe = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.score_fn(x, t)


def uniform_time_grid(steps: int, eps: float = SAMPLING_EPS, T: float = 1.0, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """``steps + 1`` times from ``T`` down to ``eps`` (uniform in t): ``steps`` intervals."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not 0 < eps < T:
        raise ValueError(f"eps must lie in (0, T={T}), got {eps!r}")
    return torch.linspace(T, eps, steps + 1, device=device, dtype=dtype)
