"""Time / noise-level embeddings for noise-conditional networks."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["GaussianFourierProjection", "ClassEmbedding", "sinusoidal_embedding"]


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


class ClassEmbedding(nn.Module):
    """Learned class-label embedding added to the time embedding (class-conditional score networks).

    Holds ``n_classes + 1`` rows: row ``n_classes`` is the *null* label ``∅`` that label dropout
    (:func:`sde_lab.conditional.drop_labels`) trains, so one network is both the conditional model
    ``s(x, t, y)`` and the unconditional ``s(x, t, ∅)`` that classifier-free guidance mixes
    (Ho & Salimans 2022). ``y=None`` means ``∅`` for the whole batch.
    """

    def __init__(self, n_classes: int, dim: int):
        super().__init__()
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
        self.n_classes = n_classes
        self.embedding = nn.Embedding(n_classes + 1, dim)
        nn.init.normal_(self.embedding.weight, std=0.02)  # small: conditioning starts as a perturbation

    @property
    def null_label(self) -> int:
        return self.n_classes

    def forward(self, y: torch.Tensor | None, batch_size: int, device) -> torch.Tensor:
        if y is None:
            y = torch.full((batch_size,), self.n_classes, dtype=torch.long, device=device)
        y = torch.as_tensor(y, device=device)
        if y.ndim == 0:
            y = y.expand(batch_size)
        if y.shape != (batch_size,) or y.is_floating_point() or y.dtype == torch.bool:
            raise ValueError(f"class labels y must be a ({batch_size},) integer tensor, got shape {tuple(y.shape)}, dtype {y.dtype}")
        if bool(((y < 0) | (y > self.n_classes)).any()):
            bad = y[(y < 0) | (y > self.n_classes)][0].item()
            raise ValueError(f"class label {bad} out of range: valid labels are 0..{self.n_classes - 1} and {self.n_classes} (null)")
        return self.embedding(y.long())


def class_embedding(n_classes: int, dim: int) -> ClassEmbedding | None:
    """A :class:`ClassEmbedding`, or ``None`` for an unconditional network (``n_classes == 0``)."""
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 0:
        raise ValueError(f"num_classes must be a non-negative integer (0: unconditional), got {n_classes!r}")
    return ClassEmbedding(n_classes, dim) if n_classes else None


def add_class_embedding(net: nn.Module, temb: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """``temb + E(y)`` for a class-conditional ``net`` (its ``class_embed``); ``temb`` for an unconditional one.

    Passing labels to an unconditional network is an error rather than silently ignored.
    """
    emb = getattr(net, "class_embed", None)
    if emb is None:
        if y is not None:
            raise ValueError(f"{type(net).__name__} is unconditional (model.num_classes=0) but was given class labels y")
        return temb
    return temb + emb(y, temb.shape[0], temb.device).to(temb.dtype)
