"""DDPM's weight initialisation, shared by the layers and the FIR convolutions."""

from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["default_init"]


def default_init(shape: Sequence[int], scale: float = 1.0) -> torch.Tensor:
    """DDPM's initialiser: ``U(-a, a)`` with ``a = sqrt(3 scale / fan_avg)``; ``scale = 0`` means 1e-10.

    ``fan_in`` is dimension 1 and ``fan_out`` dimension 0, each times the receptive field (the product of
    the remaining dimensions), like ``jax.nn.initializers.variance_scaling``.
    """
    scale = 1e-10 if scale == 0 else scale
    shape = tuple(shape)
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    bound = math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2))
    return (torch.rand(shape) * 2.0 - 1.0) * bound
