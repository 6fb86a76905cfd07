"""Per-step randomness without global state: every draw of a training step is a function of (seed, step, stream).

:func:`step_seed` hashes ``(seed, step, stream)`` to a 63-bit seed (chained SplitMix64; a few µs, unlike
numpy's SeedSequence); a resumed run or another rank reproduces it without any saved state.
:func:`seeded` runs a block (a forward pass with dropout, say) under torch's global generator reseeded for
that block and restores the caller's generator state afterwards, so the library never changes the
caller's global RNGs.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["step_seed", "seeded", "STREAM_PERMUTATION", "STREAM_SAMPLER", "STREAM_NOISE", "STREAM_GRID", "STREAM_FLIP",
           "STREAM_MODULE"]

_MASK64 = (1 << 64) - 1

# streams of one run: each purpose draws from its own seed sequence
STREAM_PERMUTATION = 1  # the data order of an epoch
STREAM_SAMPLER = 2  # fresh samples of a sampler source
STREAM_NOISE = 3  # the objective's (t, z) and the label dropout
STREAM_GRID = 4  # samples logged during training
STREAM_FLIP = 5  # random horizontal flips
STREAM_MODULE = 1 << 16  # + rank: the model's own randomness (dropout), different on every rank


def _splitmix64(z: int) -> int:
    """One SplitMix64 output (Steele, Lea & Flood 2014): a well-mixed 64-bit hash of a 64-bit integer."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def step_seed(seed: int, step: int, stream: int) -> int:
    """A 63-bit seed for ``(seed, step, stream)``."""
    h = _splitmix64(int(seed) & _MASK64)
    h = _splitmix64(h ^ (int(step) & _MASK64))
    return _splitmix64(h ^ int(stream)) >> 1


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Run the block with torch's generators (CPU, and ``device`` if CUDA) seeded by ``seed``; restore them after."""
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
