r"""FIR up/down-sampling in plain PyTorch (no custom CUDA op), as used by NCSN++ (Song et al. 2021, §H.1).

``upfirdn2d`` is the resampling primitive of StyleGAN2 (Karras et al. 2020): per channel, *up*-sample by
inserting ``up - 1`` zeros after every pixel, zero-*pad* (negative pads crop), *FIR*-filter with kernel
``k`` (a true convolution), then *down*-sample by keeping every ``down``-th pixel. It is written here with
``F.pad`` and a depthwise ``F.conv2d``, so it runs (and differentiates to any order) on CPU and CUDA
without compiling anything.

The kernel ``(1, 3, 3, 1)`` used by NCSN++ is the binomial filter of "Making convolutional networks
shift-invariant again" (Zhang 2019); it is normalised so a constant image keeps its value (times
``factor²`` for up-sampling, which undoes the zeros that were inserted).

The fused ``upsample_conv_2d`` / ``conv_downsample_2d`` compute exactly ``conv(upsample(x))`` and
``downsample(conv(x))`` away from the border while padding only once; they follow the padding
conventions of the score_sde reference code so published weights see the same pixels.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .init import default_init

__all__ = [
    "setup_kernel",
    "upfirdn2d",
    "upsample_2d",
    "downsample_2d",
    "upsample_conv_2d",
    "conv_downsample_2d",
    "naive_upsample_2d",
    "naive_downsample_2d",
    "FIRConv2d",
]


def setup_kernel(k: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """A 2-D FIR kernel normalised to sum 1: ``outer(k, k) / sum`` for a 1-D ``k``, ``k / sum`` for 2-D."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = torch.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.numel() == 0:
        raise ValueError(f"FIR kernel must be a 1-D sequence or a square 2-D array, got shape {tuple(k.shape)}")
    total = k.sum()
    if total == 0:
        raise ValueError("FIR kernel must not sum to zero")
    return k / total


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, *, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter (convolution with ``kernel``), downsample; per channel.

    ``x``: ``(N, C, H, W)``; ``kernel``: ``(kh, kw)``; ``pad = (before, after)`` applies to both axes.
    Output side: ``(H * up + before + after - kh) // down + 1``.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects (N, C, H, W) input, got shape {tuple(x.shape)}")
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be positive integers, got up={up}, down={down}")
    n, c, h, w = x.shape
    if up > 1:
        # Insert up-1 zeros after every pixel along H and W.
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(n, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    if p0 < 0 or p1 < 0:
        x = x[:, :, max(-p0, 0): x.shape[2] - max(-p1, 0), max(-p0, 0): x.shape[3] - max(-p1, 0)]
    kh, kw = kernel.shape
    # conv2d is a cross-correlation; flipping the kernel makes it the convolution of the definition.
    weight = torch.flip(kernel, (0, 1)).to(dtype=x.dtype, device=x.device)
    weight = weight.reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
    return F.conv2d(x, weight, stride=down, groups=c)


def upsample_2d(x: torch.Tensor, k: Sequence[float] | None = None, factor: int = 2, gain: float = 1.0) -> torch.Tensor:
    """Upsample ``(N, C, H, W)`` by ``factor`` with FIR kernel ``k`` (default ``[1]*factor``: nearest)."""
    kernel = setup_kernel([1] * factor if k is None else k) * (gain * factor**2)
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: torch.Tensor, k: Sequence[float] | None = None, factor: int = 2, gain: float = 1.0) -> torch.Tensor:
    """Downsample ``(N, C, H, W)`` by ``factor`` with FIR kernel ``k`` (default ``[1]*factor``: box average)."""
    kernel = setup_kernel([1] * factor if k is None else k) * gain
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x: torch.Tensor, w: torch.Tensor, k: Sequence[float] | None = None, factor: int = 2,
                     gain: float = 1.0) -> torch.Tensor:
    """``conv2d(upsample_2d(x, k), w, padding=same)`` fused: a strided transposed convolution, then one FIR pass.

    ``w``: ``(out_C, in_C, kh, kh)`` with odd ``kh``. Output ``(N, out_C, H*factor, W*factor)``.
    """
    out_c, in_c, kh, kw = w.shape
    if kh != kw:
        raise ValueError(f"upsample_conv_2d needs a square convolution kernel, got {kh}x{kw}")
    kernel = setup_kernel([1] * factor if k is None else k) * (gain * factor**2)
    p = (kernel.shape[0] - factor) - (kw - 1)
    # A transposed convolution with the spatially flipped, in/out-swapped weight is the correlation
    # with ``w`` of the zero-inserted input.
    wt = torch.flip(w, (2, 3)).transpose(0, 1)
    x = F.conv_transpose2d(x, wt, stride=factor)
    return upfirdn2d(x, kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x: torch.Tensor, w: torch.Tensor, k: Sequence[float] | None = None, factor: int = 2,
                       gain: float = 1.0) -> torch.Tensor:
    """``downsample_2d(conv2d(x, w, padding=same), k)`` fused: one FIR pass, then a strided convolution."""
    _, _, kh, kw = w.shape
    if kh != kw:
        raise ValueError(f"conv_downsample_2d needs a square convolution kernel, got {kh}x{kw}")
    kernel = setup_kernel([1] * factor if k is None else k) * gain
    p = (kernel.shape[0] - factor) + (kw - 1)
    x = upfirdn2d(x, kernel, pad=((p + 1) // 2, p // 2))
    return F.conv2d(x, w, stride=factor)


def naive_upsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Nearest-neighbour upsampling (each pixel repeated ``factor × factor`` times)."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h, 1, w, 1).expand(n, c, h, factor, w, factor)
    return x.reshape(n, c, h * factor, w * factor)


def naive_downsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Box-average downsampling over non-overlapping ``factor × factor`` blocks."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // factor, factor, w // factor, factor).mean(dim=(3, 5))


class FIRConv2d(nn.Module):
    """Convolution fused with FIR up- or down-sampling (StyleGAN2); state-dict keys ``weight``, ``bias``.

    Same parameters and keys as the ``up_or_down_sampling.Conv2d`` of the score_sde reference code.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, *, up: bool = False, down: bool = False,
                 resample_kernel: Sequence[float] = (1, 3, 3, 1), use_bias: bool = True, init_scale: float = 1.0):
        super().__init__()
        if up and down:
            raise ValueError("FIRConv2d: choose at most one of up=True and down=True")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"FIRConv2d: kernel size must be a positive odd integer, got {kernel}")
        self.weight = nn.Parameter(default_init((out_ch, in_ch, kernel, kernel), init_scale))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if use_bias else None
        self.up, self.down = up, down
        self.resample_kernel = tuple(resample_kernel)
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = upsample_conv_2d(x, self.weight, k=self.resample_kernel)
        elif self.down:
            x = conv_downsample_2d(x, self.weight, k=self.resample_kernel)
        else:
            x = F.conv2d(x, self.weight, padding=self.kernel // 2)
        if self.bias is not None:
            x = x + self.bias.reshape(1, -1, 1, 1)
        return x
