"""Noise sources for stochastic solvers: randomness is injected, never global.

A solver draws standard normal noise through a :class:`Noise` object, ``noise.randn_like(x)``. The default,
:class:`GeneratorNoise`, draws the whole batch from one ``torch.Generator`` (on the generator's device, so a
CPU generator is reproducible for CUDA tensors). Anything with ``randn_like(x)`` can be passed instead (for
example a per-sample source whose draw for sample ``i`` depends only on ``(seed, i)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Union, runtime_checkable

import torch

from .utils import randn_like

__all__ = ["Noise", "GeneratorNoise", "NoiseLike", "as_noise", "draw_normal"]


@runtime_checkable
class Noise(Protocol):
    """A source of standard normal noise shaped like a given tensor."""

    def randn_like(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True, eq=False)
class GeneratorNoise:
    """Noise from one generator (``None``: torch's global generator)."""

    generator: torch.Generator | None = None

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return randn_like(x, self.generator)

    def rand(self, shape, *, device=None, dtype=torch.float64) -> torch.Tensor:
        """Uniform ``[0, 1)`` draws (for resampling and accept/reject decisions)."""
        g = self.generator
        out = torch.rand(tuple(shape), generator=g, device=g.device if g is not None else device, dtype=dtype)
        return out.to(device) if device is not None else out


NoiseLike = Union[Noise, torch.Generator, None]


def as_noise(noise: NoiseLike) -> Noise:
    """A :class:`Noise` from a noise object, a ``torch.Generator`` or ``None`` (the global generator)."""
    if noise is None or isinstance(noise, torch.Generator):
        return GeneratorNoise(noise)
    if isinstance(noise, Noise):
        return noise
    raise ValueError(f"noise must be a torch.Generator, None, or an object with randn_like(x); got {type(noise).__name__}")


def draw_normal(noise: NoiseLike, x: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like ``x`` from a noise object or generator."""
    if noise is None or isinstance(noise, torch.Generator):
        return randn_like(x, noise)
    return noise.randn_like(x)
