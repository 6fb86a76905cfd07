"""Small tensor helpers shared by every module: broadcasting a per-sample quantity over any data shape."""

from __future__ import annotations

import torch

__all__ = ["append_dims", "batch_sum", "batch_time", "randn", "randn_like"]


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape a per-sample tensor of shape ``(B,)`` to ``(B, 1, ..., 1)`` with ``ndim`` dimensions.

    This is the one broadcasting helper: the same code serves 2-D points ``(B, 2)`` and images
    ``(B, C, H, W)``.
    """
    if v.ndim > ndim:
        raise ValueError(f"cannot broadcast a tensor with {v.ndim} dims to {ndim} dims")
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def batch_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over every non-batch dimension: ``(B, ...) -> (B,)``."""
    return x.flatten(1).sum(1)


def batch_time(t, batch_size: int, *, device=None, dtype=None) -> torch.Tensor:
    """A time value (float, 0-d or ``(B,)`` tensor) as a ``(B,)`` tensor."""
    t = torch.as_tensor(t, device=device, dtype=dtype)
    if t.ndim == 0:
        return t.expand(batch_size).clone()
    if t.shape != (batch_size,):
        raise ValueError(f"t must be a scalar or have shape ({batch_size},), got {tuple(t.shape)}")
    return t


def randn(shape, *, generator: torch.Generator | None = None, device=None, dtype=None) -> torch.Tensor:
    """Standard normal noise drawn with ``generator`` (on the generator's device) and moved to ``device``.

    Drawing on the generator's device keeps a CPU generator reproducible for CUDA tensors.
    """
    gen_device = generator.device if generator is not None else device
    z = torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype)
    return z.to(device) if device is not None else z


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``randn`` with the shape, device and dtype of ``x``."""
    return randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
