r"""NCSN++ and DDPM++: the config-driven U-Net of Song et al. (2021), Appendix H.1.

One class covers both: DDPM++ is :class:`NCSNpp` with positional (sinusoidal) time embedding, no FIR
and no progressive paths; NCSN++ adds Gaussian Fourier features of ``log σ``, FIR resampling with the
``(1, 3, 3, 1)`` kernel and a progressive input pyramid. The architecture choices are the ones of the
paper's ablation (Table 2 / §H.1):

* residual blocks ``ddpm`` (DDPM block + separate up/down layers) or ``biggan`` (blocks that resample);
* ``progressive``: ``none`` | ``output_skip`` (sum of upsampled per-resolution RGB outputs) | ``residual``;
* ``progressive_input``: ``none`` | ``input_skip`` (downsampled image merged at every resolution) |
  ``residual``; ``progressive_combine``: ``sum`` | ``cat``;
* ``skip_rescale`` divides every residual sum by ``sqrt(2)``; ``init_scale`` scales the last conv of each
  residual branch (0 → 1e-10).

The network is a pure function ``net(x, labels)``: ``labels`` of shape ``(B,)`` are the time labels
(``999 t`` for DDPM++, ``σ(t)`` for NCSN++). It never converts its output to a score — in particular it
does not divide by ``σ`` (``scale_by_sigma``); :class:`sde_lab.score.ScoreModel` does that. Submodules
live in one ``all_modules`` list in the reference order, so the published score_sde_pytorch checkpoints
load key for key.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from . import layers
from .embeddings import GaussianFourierProjection, add_class_embedding, class_embedding, sinusoidal_embedding

__all__ = ["NCSNpp", "ncsnpp_from_config", "geometric_sigmas"]

_RESBLOCKS = ("ddpm", "biggan")
_PROGRESSIVE = ("none", "output_skip", "residual")
_PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
_COMBINE = ("sum", "cat")
_EMBEDDINGS = ("fourier", "positional")


def _choice(name: str, value: str, valid: Sequence[str]) -> str:
    value = str(value).lower()
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(valid)}")
    return value


def geometric_sigmas(sigma_min: float, sigma_max: float, num_scales: int) -> torch.Tensor:
    """``num_scales`` noise levels from σ_max down to σ_min, geometric, float64 (the reference ``sigmas``)."""
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_scales, dtype=torch.float64))


class NCSNpp(nn.Module):
    """NCSN++ / DDPM++ U-Net (Song et al. 2021, §H.1); ``forward(x, labels) -> (B, C, H, W)``.

    ``centered=False`` means data in ``[0, 1]``: the input is mapped to ``2x - 1`` first, as in the
    reference code. ``conditional=False`` drops the time embedding (and the per-block ``Dense_0``).
    The ``sigmas`` buffer (geometric σ_max → σ_min, ``num_scales`` levels) is unused by ``forward``; it is
    kept because every published checkpoint stores it.
    """

    def __init__(
        self,
        *,
        image_size: int,
        num_channels: int = 3,
        centered: bool = True,
        nf: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        resamp_with_conv: bool = True,
        conditional: bool = True,
        fir: bool = False,
        fir_kernel: Sequence[float] = (1, 3, 3, 1),
        skip_rescale: bool = True,
        resblock_type: str = "biggan",
        progressive: str = "none",
        progressive_input: str = "none",
        progressive_combine: str = "sum",
        embedding_type: str = "positional",
        fourier_scale: float = 16.0,
        init_scale: float = 0.0,
        nonlinearity: str = "swish",
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        num_scales: int = 1000,
        num_classes: int = 0,
    ):
        super().__init__()
        if num_classes and not conditional:
            raise ValueError("num_classes > 0 (a class-conditional network) needs conditional=True: the class embedding is added to the time embedding")
        self.resblock_type = _choice("resblock_type", resblock_type, _RESBLOCKS)
        self.progressive = _choice("progressive", progressive, _PROGRESSIVE)
        self.progressive_input = _choice("progressive_input", progressive_input, _PROGRESSIVE_INPUT)
        combine = _choice("progressive_combine", progressive_combine, _COMBINE)
        self.embedding_type = _choice("embedding_type", embedding_type, _EMBEDDINGS)
        n_levels = len(ch_mult)
        if n_levels < 1 or image_size % 2 ** (n_levels - 1) != 0:
            raise ValueError(f"image_size {image_size} must be divisible by 2**(len(ch_mult)-1) = {2 ** (n_levels - 1)}")
        if nf < 4 or nf % 2:
            raise ValueError(f"nf must be an even number >= 4, got {nf}")

        self.act = act = layers.activation(nonlinearity)
        self.nf, self.num_res_blocks, self.num_levels = nf, num_res_blocks, n_levels
        self.centered, self.conditional, self.skip_rescale = centered, conditional, skip_rescale
        self.image_size, self.num_channels = image_size, num_channels
        resolutions = [image_size // 2**i for i in range(n_levels)]
        self.attn_levels = [r in tuple(attn_resolutions) for r in resolutions]
        self.register_buffer("sigmas", geometric_sigmas(sigma_min, sigma_max, num_scales))

        temb_dim = 4 * nf if conditional else None
        ResBlock: Any
        if self.resblock_type == "ddpm":
            def ResBlock(in_ch, out_ch=None):
                return layers.ResnetBlockDDPM(act, in_ch, out_ch, temb_dim=temb_dim, dropout=dropout,
                                              skip_rescale=skip_rescale, init_scale=init_scale)
        else:
            def ResBlock(in_ch, out_ch=None, up=False, down=False):
                return layers.ResnetBlockBigGAN(act, in_ch, out_ch, temb_dim=temb_dim, up=up, down=down,
                                                dropout=dropout, fir=fir, fir_kernel=fir_kernel,
                                                skip_rescale=skip_rescale, init_scale=init_scale)

        def Attn(ch):
            return layers.AttnBlock(ch, skip_rescale=skip_rescale, init_scale=init_scale)

        def conv_out(in_ch, out_ch):
            return layers.conv3x3(in_ch, out_ch, init_scale=init_scale)

        modules: list[nn.Module] = []
        if conditional:
            if self.embedding_type == "fourier":
                modules.append(GaussianFourierProjection(embedding_size=nf, scale=fourier_scale))
                embed_dim = 2 * nf
            else:
                embed_dim = nf
            modules += [layers.dense(embed_dim, 4 * nf), layers.dense(4 * nf, 4 * nf)]

        # Downsampling path; hs_c tracks the channels of every skip connection.
        channels = num_channels
        pyramid_ch = channels
        modules.append(layers.conv3x3(channels, nf))
        hs_c, in_ch = [nf], nf
        for level in range(n_levels):
            for _ in range(num_res_blocks):
                out_ch = nf * ch_mult[level]
                modules.append(ResBlock(in_ch, out_ch))
                in_ch = out_ch
                if self.attn_levels[level]:
                    modules.append(Attn(in_ch))
                hs_c.append(in_ch)
            if level != n_levels - 1:
                if self.resblock_type == "ddpm":
                    modules.append(layers.Downsample(in_ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                else:
                    modules.append(ResBlock(in_ch, down=True))
                if self.progressive_input == "input_skip":
                    modules.append(layers.Downsample(pyramid_ch, with_conv=False, fir=fir, fir_kernel=fir_kernel))
                    modules.append(layers.Combine(pyramid_ch, in_ch, method=combine))
                    if combine == "cat":
                        in_ch *= 2
                elif self.progressive_input == "residual":
                    modules.append(layers.Downsample(pyramid_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fir_kernel))
                    pyramid_ch = in_ch
                hs_c.append(in_ch)

        in_ch = hs_c[-1]
        modules += [ResBlock(in_ch), Attn(in_ch), ResBlock(in_ch)]

        # Upsampling path.
        out_pyramid_ch = 0
        for level in reversed(range(n_levels)):
            for _ in range(num_res_blocks + 1):
                out_ch = nf * ch_mult[level]
                modules.append(ResBlock(in_ch + hs_c.pop(), out_ch))
                in_ch = out_ch
            if self.attn_levels[level]:
                modules.append(Attn(in_ch))
            if self.progressive != "none":
                if level == n_levels - 1:
                    modules.append(layers.group_norm(in_ch))
                    if self.progressive == "output_skip":
                        modules.append(conv_out(in_ch, channels))
                        out_pyramid_ch = channels
                    else:
                        modules.append(layers.conv3x3(in_ch, in_ch))
                        out_pyramid_ch = in_ch
                elif self.progressive == "output_skip":
                    modules.append(layers.Upsample(out_pyramid_ch, with_conv=False, fir=fir, fir_kernel=fir_kernel))
                    modules.append(layers.group_norm(in_ch))
                    modules.append(conv_out(in_ch, channels))
                    out_pyramid_ch = channels
                else:
                    modules.append(layers.Upsample(out_pyramid_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fir_kernel))
                    out_pyramid_ch = in_ch
            if level != 0:
                if self.resblock_type == "ddpm":
                    modules.append(layers.Upsample(in_ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                else:
                    modules.append(ResBlock(in_ch, up=True))
        assert not hs_c

        if self.progressive != "output_skip":
            modules += [layers.group_norm(in_ch), conv_out(in_ch, channels)]
        self.all_modules = nn.ModuleList(modules)
        # Registered after all_modules and only when num_classes > 0: the published checkpoints' keys are unchanged.
        self.num_classes = num_classes
        self.class_embed = class_embedding(num_classes, temb_dim) if num_classes else None

    def _rescaled_sum(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a + b) / math.sqrt(2.0) if self.skip_rescale else a + b

    def forward(self, x: torch.Tensor, labels: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Network output for images ``x`` ``(B, C, H, W)`` at time labels ``labels`` ``(B,)``.

        ``y``: class labels ``(B,)`` for a class-conditional network (``num_classes > 0``; ``None`` is the
        null label ∅).
        """
        if x.ndim != 4 or x.shape[1] != self.num_channels:
            raise ValueError(f"expected images of shape (B, {self.num_channels}, H, W), got {tuple(x.shape)}")
        if any(s % 2 ** (self.num_levels - 1) for s in x.shape[-2:]):
            raise ValueError(f"image sides {tuple(x.shape[-2:])} must be divisible by {2 ** (self.num_levels - 1)}")
        labels = torch.as_tensor(labels, device=x.device)
        if labels.ndim == 0:
            labels = labels.expand(x.shape[0])
        if labels.shape != (x.shape[0],):
            raise ValueError(f"labels must have shape ({x.shape[0]},), got {tuple(labels.shape)}")

        mods = iter(self.all_modules)
        temb = None
        if self.conditional:
            if self.embedding_type == "fourier":
                temb = next(mods)(torch.log(labels.to(x.dtype)))  # Fourier features of log σ
            else:
                temb = sinusoidal_embedding(labels, self.nf).to(x.dtype)
            temb = next(mods)(temb)
            temb = next(mods)(self.act(temb))
            temb = add_class_embedding(self, temb, y)
        elif y is not None:
            raise ValueError("this NCSNpp has conditional=False and takes no class labels y")

        if not self.centered:
            x = 2 * x - 1.0  # data in [0, 1] -> [-1, 1]

        # Downsampling path.
        input_pyramid = x if self.progressive_input != "none" else None
        hs = [next(mods)(x)]
        for level in range(self.num_levels):
            for _ in range(self.num_res_blocks):
                h = next(mods)(hs[-1], temb)
                if self.attn_levels[level]:
                    h = next(mods)(h)
                hs.append(h)
            if level != self.num_levels - 1:
                h = next(mods)(hs[-1]) if self.resblock_type == "ddpm" else next(mods)(hs[-1], temb)
                if self.progressive_input == "input_skip":
                    input_pyramid = next(mods)(input_pyramid)
                    h = next(mods)(input_pyramid, h)
                elif self.progressive_input == "residual":
                    input_pyramid = self._rescaled_sum(next(mods)(input_pyramid), h)
                    h = input_pyramid
                hs.append(h)

        h = hs[-1]
        h = next(mods)(h, temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)

        # Upsampling path.
        pyramid = None
        for level in reversed(range(self.num_levels)):
            for _ in range(self.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if self.attn_levels[level]:
                h = next(mods)(h)
            if self.progressive != "none":
                if level == self.num_levels - 1:
                    norm, conv = next(mods), next(mods)
                    pyramid = conv(self.act(norm(h)))
                elif self.progressive == "output_skip":
                    up, norm, conv = next(mods), next(mods), next(mods)
                    pyramid = up(pyramid) + conv(self.act(norm(h)))
                else:
                    pyramid = self._rescaled_sum(next(mods)(pyramid), h)
                    h = pyramid
            if level != 0:
                h = next(mods)(h) if self.resblock_type == "ddpm" else next(mods)(h, temb)
        assert not hs

        if self.progressive == "output_skip":
            h = pyramid
        else:
            norm, conv = next(mods), next(mods)
            h = conv(self.act(norm(h)))
        return h


def ncsnpp_from_config(config) -> NCSNpp:
    """Build :class:`NCSNpp` from an ml-collections config (sections ``data`` and ``model``)."""
    m, d = config.model, config.data
    return NCSNpp(
        image_size=d.image_size,
        num_channels=d.num_channels,
        centered=d.centered,
        nf=m.nf,
        ch_mult=tuple(m.ch_mult),
        num_res_blocks=m.num_res_blocks,
        attn_resolutions=tuple(m.attn_resolutions),
        dropout=m.dropout,
        resamp_with_conv=m.get("resamp_with_conv", True),
        conditional=m.get("conditional", True),
        fir=m.get("fir", False),
        fir_kernel=tuple(m.get("fir_kernel", (1, 3, 3, 1))),
        skip_rescale=m.get("skip_rescale", True),
        resblock_type=m.get("resblock_type", "biggan"),
        progressive=m.get("progressive", "none"),
        progressive_input=m.get("progressive_input", "none"),
        progressive_combine=m.get("progressive_combine", "sum"),
        embedding_type=m.get("embedding_type", "positional"),
        fourier_scale=m.get("fourier_scale", 16.0),
        init_scale=m.get("init_scale", 0.0),
        nonlinearity=m.get("nonlinearity", "swish"),
        sigma_min=m.get("sigma_min", 0.01),
        sigma_max=m.get("sigma_max", 50.0),
        num_scales=m.get("num_scales", 1000),
        num_classes=int(m.get("num_classes", 0)),
    )
