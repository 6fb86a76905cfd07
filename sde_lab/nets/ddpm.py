r"""The DDPM U-Net of Ho et al. (2020), Appendix B, as ported in score_sde (``models/ddpm.py``).

A PixelCNN++-style U-Net: per resolution ``num_res_blocks`` wide-ResNet blocks (GroupNorm, swish,
dropout, time embedding added after the first conv), self-attention at the resolutions listed in
``attn_resolutions`` (16×16 for CIFAR-10), a middle ResBlock–Attn–ResBlock, skip connections from every
down block into the up path, and the sinusoidal Transformer embedding of the time label.

Pure function ``net(x, labels)``: ``labels`` ``(B,)`` are time labels (``999 t`` / the step index for
VP, ``σ`` or an index for VE); converting the output to a score is :class:`sde_lab.score.ScoreModel`'s
job (``scale_by_sigma`` is not done here). Keys match the score_sde_pytorch checkpoints.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from . import layers
from .embeddings import add_class_embedding, class_embedding, sinusoidal_embedding
from .ncsnpp import geometric_sigmas

__all__ = ["DDPM", "ddpm_from_config"]


class DDPM(nn.Module):
    """DDPM U-Net (Ho et al. 2020); ``forward(x, labels) -> (B, C, H, W)``.

    ``centered=False`` maps ``[0, 1]`` inputs to ``2x - 1`` first. The ``sigmas`` buffer is unused by
    ``forward`` and kept for checkpoint compatibility with score_sde.
    """

    def __init__(
        self,
        *,
        image_size: int,
        num_channels: int = 3,
        centered: bool = True,
        nf: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        resamp_with_conv: bool = True,
        nonlinearity: str = "swish",
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        num_scales: int = 1000,
        num_classes: int = 0,
    ):
        super().__init__()
        n_levels = len(ch_mult)
        if n_levels < 1 or image_size % 2 ** (n_levels - 1) != 0:
            raise ValueError(f"image_size {image_size} must be divisible by 2**(len(ch_mult)-1) = {2 ** (n_levels - 1)}")
        if nf < 4 or nf % 2:
            raise ValueError(f"nf must be an even number >= 4, got {nf}")
        self.act = act = layers.activation(nonlinearity)
        self.nf, self.num_res_blocks, self.num_levels = nf, num_res_blocks, n_levels
        self.centered, self.num_channels, self.image_size = centered, num_channels, image_size
        resolutions = [image_size // 2**i for i in range(n_levels)]
        self.attn_levels = [r in tuple(attn_resolutions) for r in resolutions]
        self.register_buffer("sigmas", geometric_sigmas(sigma_min, sigma_max, num_scales))

        def ResBlock(in_ch, out_ch=None):
            return layers.ResnetBlockDDPM(act, in_ch, out_ch, temb_dim=4 * nf, dropout=dropout)

        modules: list[nn.Module] = [layers.dense(nf, 4 * nf), layers.dense(4 * nf, 4 * nf)]
        modules.append(layers.conv3x3(num_channels, nf))
        hs_c, in_ch = [nf], nf
        for level in range(n_levels):
            for _ in range(num_res_blocks):
                out_ch = nf * ch_mult[level]
                modules.append(ResBlock(in_ch, out_ch))
                in_ch = out_ch
                if self.attn_levels[level]:
                    modules.append(layers.AttnBlock(in_ch))
                hs_c.append(in_ch)
            if level != n_levels - 1:
                modules.append(layers.Downsample(in_ch, with_conv=resamp_with_conv))
                hs_c.append(in_ch)

        in_ch = hs_c[-1]
        modules += [ResBlock(in_ch), layers.AttnBlock(in_ch), ResBlock(in_ch)]

        for level in reversed(range(n_levels)):
            for _ in range(num_res_blocks + 1):
                out_ch = nf * ch_mult[level]
                modules.append(ResBlock(in_ch + hs_c.pop(), out_ch))
                in_ch = out_ch
            if self.attn_levels[level]:
                modules.append(layers.AttnBlock(in_ch))
            if level != 0:
                modules.append(layers.Upsample(in_ch, with_conv=resamp_with_conv))
        assert not hs_c
        modules += [layers.group_norm(in_ch), layers.conv3x3(in_ch, num_channels, init_scale=0.0)]
        self.all_modules = nn.ModuleList(modules)
        self.num_classes = num_classes  # class_embed registered last: checkpoint keys unchanged when 0
        self.class_embed = class_embedding(num_classes, 4 * nf) if num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Network output for images ``x`` ``(B, C, H, W)`` at time labels ``labels`` ``(B,)``; class labels
        ``y`` ``(B,)`` for a class-conditional network (``None``: the null label)."""
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
        temb = next(mods)(sinusoidal_embedding(labels, self.nf).to(x.dtype))
        temb = add_class_embedding(self, next(mods)(self.act(temb)), y)
        h = x if self.centered else 2 * x - 1.0

        hs = [next(mods)(h)]
        for level in range(self.num_levels):
            for _ in range(self.num_res_blocks):
                h = next(mods)(hs[-1], temb)
                if self.attn_levels[level]:
                    h = next(mods)(h)
                hs.append(h)
            if level != self.num_levels - 1:
                hs.append(next(mods)(hs[-1]))

        h = hs[-1]
        h = next(mods)(h, temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)

        for level in reversed(range(self.num_levels)):
            for _ in range(self.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if self.attn_levels[level]:
                h = next(mods)(h)
            if level != 0:
                h = next(mods)(h)
        assert not hs
        norm, conv = next(mods), next(mods)
        return conv(self.act(norm(h)))


def ddpm_from_config(config) -> DDPM:
    """Build :class:`DDPM` from an ml-collections config (sections ``data`` and ``model``)."""
    m, d = config.model, config.data
    if not m.get("conditional", True):
        raise ValueError("the DDPM U-Net always conditions on time; set config.model.conditional = True")
    return DDPM(
        image_size=d.image_size,
        num_channels=d.num_channels,
        centered=d.centered,
        nf=m.nf,
        ch_mult=tuple(m.ch_mult),
        num_res_blocks=m.num_res_blocks,
        attn_resolutions=tuple(m.attn_resolutions),
        dropout=m.dropout,
        resamp_with_conv=m.get("resamp_with_conv", True),
        nonlinearity=m.get("nonlinearity", "swish"),
        sigma_min=m.get("sigma_min", 0.01),
        sigma_max=m.get("sigma_max", 50.0),
        num_scales=m.get("num_scales", 1000),
        num_classes=int(m.get("num_classes", 0)),
    )
