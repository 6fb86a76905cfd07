"""Time / noise-level embeddings for noise-conditional networks."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["GaussianFourierProjection", "sinusoidal_embedding"]


class GaussianFourierProjection(nn.Module):
    """Random Fourier features ``[sin(2π W log σ), cos(2π W log σ)]`` (Tancik et al. 2020; NCSN++).

    ``W ~ N(0, scale²)`` is fixed (``requires_grad=False``) but stored in the state dict as ``W``,
    matching the published score_sde checkpoints.
    """

    def __init__(self, embedding_size: int = 256, scale: float = 1.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_proj = x[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([torch.sin(x_proj), torch.cos(x_proj)], dim=-1)


def sinusoidal_embedding(timesteps: torch.Tensor, embedding_dim: int, max_positions: int = 10000) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of (possibly fractional) time labels (Ho et al. 2020)."""
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must have shape (B,), got {tuple(timesteps.shape)}")
    half = embedding_dim // 2
    scale = math.log(max_positions) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=timesteps.device) * -scale)
    emb = timesteps.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if embedding_dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb
