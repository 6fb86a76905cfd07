"""Noise sources for stochastic solvers: randomness is injected, never global.

A solver draws standard normal noise through a :class:`Noise` object, ``noise.randn_like(x)``. The default,
:class:`GeneratorNoise`, draws the whole batch from one ``torch.Generator`` (on the generator's device, so a
CPU generator is reproducible for CUDA tensors). Anything with ``randn_like(x)`` can be passed instead (for
example :class:`PerSampleNoise`, whose draws for sample ``i`` depend only on ``(seed, i)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Union, runtime_checkable

import torch

from .utils import randn_like

__all__ = ["Noise", "GeneratorNoise", "PerSampleNoise", "NoiseLike", "as_noise", "draw_normal", "normal_for"]


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


# --- per-sample, counter-based noise ---------------------------------------------------------------
_M1 = -4658895280553007687  # 0xbf58476d1ce4e5b9 as a signed 64-bit integer
_M2 = -7723592293110705685  # 0x94d049bb133111eb
_GOLDEN = -7046029254386353131  # 0x9e3779b97f4a7c15


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finaliser (Steele, Lea & Flood 2014) on int64 tensors (multiplication wraps mod 2⁶⁴)."""
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def _uniform(z: torch.Tensor) -> torch.Tensor:
    """A 64-bit hash → float64 in the open interval (0, 1) from its top 53 bits."""
    return (_shr(z, 11).to(torch.float64) + 0.5) * (1.0 / 9007199254740992.0)


class PerSampleNoise:
    r"""Noise in which sample ``i``'s draws depend only on ``(seed, i)`` — never on the batch it is drawn in.

    Counter-based (in the spirit of Salmon et al. 2011): element ``j`` of sample ``i``'s ``k``-th draw is a
    normal made by Box–Muller from two splitmix64 hashes of ``(seed, i, k, j)``; every sample keeps its own
    draw counter ``k``. So sample ``i`` is bitwise the same in a batch of 1, 7 or 64, on 1 or 8 processes
    (``start`` = the index of the batch's first sample: a shard or chunk starting at sample 40 000 passes
    ``start=40000``), and a solver that draws only for some rows (the adaptive solver's ``per_sample`` mode)
    advances only their counters. CPU and CUDA give the same bits (integer hashing; the float maths is
    elementwise). ``rows`` in :meth:`randn_like` names the batch rows being drawn for.

    Use :meth:`at` for a chunk (``noise.at(start)``) and :meth:`prior` for the initial state.
    """

    def __init__(self, seed: int = 0, start: int = 0):
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"PerSampleNoise: seed must be an integer, got {seed!r}")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"PerSampleNoise: start must be a non-negative integer, got {start!r}")
        self.seed, self.start = seed, start
        self._counts: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"PerSampleNoise(seed={self.seed}, start={self.start})"

    def at(self, start: int) -> "PerSampleNoise":
        """A fresh source for the batch whose first sample has index ``start`` (same seed, counters at 0)."""
        return PerSampleNoise(self.seed, start)

    def _normals(self, idx: torch.Tensor, k: torch.Tensor, shape, device) -> torch.Tensor:
        n = math.prod(shape)
        j = torch.arange(n, dtype=torch.int64, device=device)
        key = _mix(torch.tensor(self.seed, dtype=torch.int64, device=device) ^ _GOLDEN)
        key = _mix(key ^ (idx.to(device) * _GOLDEN))
        key = _mix(key ^ (k.to(device) * _M1 + 1))[:, None]
        h = _mix(key ^ (j[None, :] * _M2))
        u1, u2 = _uniform(h), _uniform(_mix(h ^ _GOLDEN))
        z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
        return z.reshape(len(idx), *shape)

    def randn_like(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        B = x.shape[0]
        rows_list = list(range(B)) if rows is None else [int(r) for r in rows.tolist()]
        if len(rows_list) != B:
            raise ValueError(f"PerSampleNoise: {len(rows_list)} rows given for a batch of {B}")
        ids = [self.start + r for r in rows_list]
        ks = [self._counts.get(i, 0) for i in ids]
        for i in ids:
            self._counts[i] = self._counts.get(i, 0) + 1
        idx = torch.tensor(ids, dtype=torch.int64)
        z = self._normals(idx, torch.tensor(ks, dtype=torch.int64), tuple(x.shape[1:]), x.device)
        return z.to(dtype=x.dtype)

    def prior(self, shape, *, device=None, dtype=torch.float32) -> torch.Tensor:
        """Standard normals of ``shape`` for the initial state (each sample's draw number 0... in its own stream)."""
        return self.randn_like(torch.empty(tuple(shape), device=device, dtype=dtype))


def normal_for(noise: NoiseLike, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`draw_normal` for a subset of a batch: ``rows`` are the batch rows of ``x``'s samples."""
    if rows is not None and isinstance(noise, PerSampleNoise):
        return noise.randn_like(x, rows=rows)
    return draw_normal(noise, x)
