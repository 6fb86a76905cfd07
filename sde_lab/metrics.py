"""Sample-quality metrics.

Low-dimensional: sliced Wasserstein-2 (with a noise floor from two true sample sets).
(MMD, energy distance, Fréchet distance, FID and FID-LeNet join this module.)
"""

from __future__ import annotations

import torch

__all__ = ["sliced_wasserstein", "noise_floor"]


def sliced_wasserstein(
    x: torch.Tensor, y: torch.Tensor, *, n_projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced Wasserstein-2 distance between two equal-size sample sets (any shape, batch first).

    ``SW2² = E_θ W2²(θᵀx, θᵀy)`` over random unit directions θ; each 1-D W2 is computed exactly from
    sorted projections. Computed in float64.
    """
    x = x.detach().flatten(1).to("cpu", torch.float64)
    y = y.detach().flatten(1).to("cpu", torch.float64)
    if x.shape != y.shape:
        raise ValueError(f"sliced_wasserstein needs equal-size sample sets of equal dimension, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        return float("inf")
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y @ theta, dim=0)
    return ((px - py) ** 2).mean().sqrt().item()


def noise_floor(sampler, n: int, *, repeats: int = 5, n_projections: int = 256, generator: torch.Generator | None = None) -> float:
    """Mean SW2 between independent true sample sets of size ``n``: what a perfect sampler scores.

    ``sampler(n, generator)`` draws ``n`` true samples.
    """
    vals = [
        sliced_wasserstein(sampler(n, generator), sampler(n, generator), n_projections=n_projections, generator=generator)
        for _ in range(repeats)
    ]
    return sum(vals) / len(vals)
