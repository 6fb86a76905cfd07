r"""Building blocks of the DDPM U-Net (Ho et al. 2020) and NCSN++ / DDPM++ (Song et al. 2021, §H.1).

Attribute names (``GroupNorm_0``, ``Conv_0``, ``Dense_0``, ``NIN_0``, ``Conv2d_0`` ...) are the ones of
the score_sde reference code, so the published checkpoints load with ``strict=True``.

Initialisation follows DDPM: ``default_init`` is variance scaling with ``fan_avg`` and a uniform
distribution (Glorot-uniform times ``scale``); a scale of 0 means 1e-10, so the last layer of every
residual branch starts (almost) at zero and each block starts as the identity.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import up_fir
from .init import default_init

__all__ = [
    "ACTIVATIONS",
    "activation",
    "default_init",
    "conv1x1",
    "conv3x3",
    "group_norm",
    "NIN",
    "AttnBlock",
    "Upsample",
    "Downsample",
    "Combine",
    "ResnetBlockDDPM",
    "ResnetBlockBigGAN",
]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "relu": nn.ReLU,
    "lrelu": lambda: nn.LeakyReLU(negative_slope=0.2),
}


def activation(name: str) -> nn.Module:
    """The nonlinearity called ``name`` (``swish`` is SiLU, ``x * sigmoid(x)``, as in DDPM/NCSN++)."""
    try:
        return ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown nonlinearity {name!r}; valid choices: {', '.join(ACTIVATIONS)}") from None


def _init_(module: nn.Conv2d | nn.Linear, scale: float = 1.0) -> nn.Module:
    with torch.no_grad():
        module.weight.copy_(default_init(module.weight.shape, scale))
        if module.bias is not None:
            module.bias.zero_()
    return module


def conv1x1(in_ch: int, out_ch: int, *, stride: int = 1, bias: bool = True, init_scale: float = 1.0,
            padding: int = 0) -> nn.Conv2d:
    """1×1 convolution with DDPM initialisation."""
    return _init_(nn.Conv2d(in_ch, out_ch, 1, stride=stride, padding=padding, bias=bias), init_scale)


def conv3x3(in_ch: int, out_ch: int, *, stride: int = 1, bias: bool = True, init_scale: float = 1.0,
            padding: int = 1) -> nn.Conv2d:
    """3×3 convolution with DDPM initialisation."""
    return _init_(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding, bias=bias), init_scale)


def dense(in_dim: int, out_dim: int) -> nn.Linear:
    """Linear layer with DDPM initialisation."""
    return _init_(nn.Linear(in_dim, out_dim))


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with ``min(C // 4, 32)`` groups and eps 1e-6 (NCSN++); 32 groups for C ≥ 128, as in DDPM."""
    return nn.GroupNorm(num_groups=max(1, min(channels // 4, 32)), num_channels=channels, eps=1e-6)


class NIN(nn.Module):
    """Network-in-network: a per-pixel linear map ``y = x W + b`` over channels (a 1×1 conv stored as ``W``)."""

    def __init__(self, in_dim: int, num_units: int, init_scale: float = 0.1):
        super().__init__()
        self.W = nn.Parameter(default_init((in_dim, num_units), init_scale))
        self.b = nn.Parameter(torch.zeros(num_units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,cd->bdhw", x, self.W) + self.b[:, None, None]


class AttnBlock(nn.Module):
    """Self-attention over all pixels, ``x + NIN(softmax(q kᵀ / sqrt(C)) v)`` (Ho et al. 2020, §B).

    ``skip_rescale`` divides the sum by ``sqrt(2)`` (NCSN++, Song et al. 2021, §H.1).
    """

    def __init__(self, channels: int, *, skip_rescale: bool = False, init_scale: float = 0.0):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        h = self.GroupNorm_0(x)
        q, k, v = (m(h).reshape(b, c, hgt * wid).transpose(1, 2) for m in (self.NIN_0, self.NIN_1, self.NIN_2))
        h = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / sqrt(C)) v
        h = self.NIN_3(h.transpose(1, 2).reshape(b, c, hgt, wid))
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class Upsample(nn.Module):
    """×2 upsampling: nearest (+ optional 3×3 conv), or FIR (+ optional fused FIR conv)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, *, with_conv: bool = False, fir: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv:
            if fir:
                self.Conv2d_0 = up_fir.FIRConv2d(in_ch, out_ch, 3, up=True, resample_kernel=fir_kernel)
            else:
                self.Conv_0 = conv3x3(in_ch, out_ch)
        elif out_ch != in_ch:
            raise ValueError(f"Upsample without conv cannot change channels ({in_ch} -> {out_ch})")
        self.fir, self.with_conv, self.fir_kernel, self.out_ch = fir, with_conv, tuple(fir_kernel), out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else up_fir.upsample_2d(x, self.fir_kernel, factor=2)
        h = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.Conv_0(h) if self.with_conv else h


class Downsample(nn.Module):
    """×2 downsampling: 2×2 average or stride-2 3×3 conv (TF 'SAME' padding), or FIR (+ fused FIR conv)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, *, with_conv: bool = False, fir: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv:
            if fir:
                self.Conv2d_0 = up_fir.FIRConv2d(in_ch, out_ch, 3, down=True, resample_kernel=fir_kernel)
            else:
                self.Conv_0 = conv3x3(in_ch, out_ch, stride=2, padding=0)
        elif out_ch != in_ch:
            raise ValueError(f"Downsample without conv cannot change channels ({in_ch} -> {out_ch})")
        self.fir, self.with_conv, self.fir_kernel, self.out_ch = fir, with_conv, tuple(fir_kernel), out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else up_fir.downsample_2d(x, self.fir_kernel, factor=2)
        if self.with_conv:
            # TensorFlow's 'SAME' padding for a stride-2 3x3 conv pads one pixel at the end only.
            return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, 2, stride=2)


class Combine(nn.Module):
    """Merge a 1×1-projected skip ``x`` into ``y`` by concatenation or sum (NCSN++ progressive input)."""

    def __init__(self, dim1: int, dim2: int, method: str = "cat"):
        super().__init__()
        if method not in ("cat", "sum"):
            raise ValueError(f"unknown combine method {method!r}; valid choices: cat, sum")
        self.Conv = conv1x1(dim1, dim2)
        self.method = method

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.Conv(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y


class ResnetBlockDDPM(nn.Module):
    r"""DDPM residual block: ``x + Conv(Dropout(act(GN(Conv(act(GN x)) + Dense(act(temb))))))``.

    Ho et al. (2020), Appendix B. The skip is a NIN (or 3×3 conv with ``conv_shortcut``) when the channel
    count changes; ``skip_rescale`` divides the sum by ``sqrt(2)`` (DDPM++, Song et al. 2021).
    """

    def __init__(self, act: nn.Module, in_ch: int, out_ch: int | None = None, *, temb_dim: int | None = None,
                 conv_shortcut: bool = False, dropout: float = 0.1, skip_rescale: bool = False,
                 init_scale: float = 0.0):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch:
            if conv_shortcut:
                self.Conv_2 = conv3x3(in_ch, out_ch)
            else:
                self.NIN_0 = NIN(in_ch, out_ch)
        self.act, self.in_ch, self.out_ch = act, in_ch, out_ch
        self.conv_shortcut, self.skip_rescale = conv_shortcut, skip_rescale

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.Conv_0(self.act(self.GroupNorm_0(x)))
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch:
            x = self.Conv_2(x) if self.conv_shortcut else self.NIN_0(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class ResnetBlockBigGAN(nn.Module):
    r"""BigGAN-style residual block that can itself resample (Brock et al. 2019; NCSN++, Song et al. 2021).

    Both branches are up/down-sampled right after the first activation (FIR or nearest/box); the skip
    gets a 1×1 conv ``Conv_2`` whenever channels change or the block resamples.
    """

    def __init__(self, act: nn.Module, in_ch: int, out_ch: int | None = None, *, temb_dim: int | None = None,
                 up: bool = False, down: bool = False, dropout: float = 0.1, fir: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1), skip_rescale: bool = True, init_scale: float = 0.0):
        super().__init__()
        if up and down:
            raise ValueError("ResnetBlockBigGAN: choose at most one of up=True and down=True")
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        self.has_skip_conv = in_ch != out_ch or up or down
        if self.has_skip_conv:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        self.act, self.up, self.down, self.fir, self.fir_kernel = act, up, down, fir, tuple(fir_kernel)
        self.skip_rescale = skip_rescale

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return up_fir.upsample_2d(x, self.fir_kernel, factor=2) if self.fir else up_fir.naive_upsample_2d(x, 2)
        if self.down:
            return up_fir.downsample_2d(x, self.fir_kernel, factor=2) if self.fir else up_fir.naive_downsample_2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self._resample(self.act(self.GroupNorm_0(x)))
        x = self._resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.has_skip_conv:
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h
