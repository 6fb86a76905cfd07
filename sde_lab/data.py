"""Data: scalers between pixel values and model space, and uniform dequantization.

(Datasets — 2-D sets, digits, MNIST, Fashion-MNIST, CIFAR-10, CelebA, image folders — join this module.)

A scaler maps data in ``[0, 1]`` (8-bit pixels divided by 256 after dequantization, or by 255) to the
model's range, and back. It is affine, ``y = scale * x + shift``, so its log-Jacobian per dimension is
``log |scale|``: the likelihood code uses it to convert densities between spaces instead of a
hard-coded constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["DataScaler", "ZeroOneScaler", "CenteredScaler", "SCALERS", "make_scaler", "uniform_dequantize"]


@dataclass(frozen=True)
class DataScaler:
    """Affine map ``[0, 1] → [low, high]``, ``y = scale x + shift``."""

    scale: float = 1.0
    shift: float = 0.0

    @property
    def low(self) -> float:
        return self.shift

    @property
    def high(self) -> float:
        return self.scale + self.shift

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.shift) / self.scale

    @property
    def log_abs_det_jacobian_per_dim(self) -> float:
        """``log |dy/dx|`` for one dimension."""
        return math.log(abs(self.scale))


def ZeroOneScaler() -> DataScaler:
    """Identity on ``[0, 1]`` (the score_sde default, ``data.centered = False``)."""
    return DataScaler(1.0, 0.0)


def CenteredScaler() -> DataScaler:
    """``[0, 1] → [-1, 1]`` (``data.centered = True``)."""
    return DataScaler(2.0, -1.0)


SCALERS = {"zero_one": (ZeroOneScaler, "[0, 1] (identity)"), "centered": (CenteredScaler, "[-1, 1]")}


def make_scaler(centered: bool) -> DataScaler:
    return CenteredScaler() if centered else ZeroOneScaler()


def uniform_dequantize(pixels: torch.Tensor, generator: torch.Generator | None = None, levels: int = 256) -> torch.Tensor:
    """Integer pixel values ``{0, ..., levels-1}`` → ``(pixels + u) / levels`` in ``[0, 1)``, ``u ~ U[0, 1)``.

    Raises ``ValueError`` if the input is not integer-valued in range (a common silent bug is passing
    data already scaled to ``[0, 1]``).
    """
    p = torch.as_tensor(pixels)
    pf = p.to(torch.float64)
    if p.numel() and (pf.min() < 0 or pf.max() > levels - 1 or not torch.equal(pf, pf.round())):
        raise ValueError(
            f"uniform_dequantize expects integer pixel values in [0, {levels - 1}], got values in "
            f"[{pf.min().item():.4g}, {pf.max().item():.4g}]; pass raw 8-bit pixels, not scaled data"
        )
    gen_device = generator.device if generator is not None else p.device
    u = torch.rand(p.shape, generator=generator, device=gen_device, dtype=torch.float64).to(p.device)
    return ((pf + u) / levels).to(torch.float32 if not p.is_floating_point() else p.dtype)
