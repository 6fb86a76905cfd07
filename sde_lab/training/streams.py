"""Training data as a deterministic stream: global batch number ``step`` → this rank's slice.

Every batch is a function of ``(seed, step)`` alone, so a resumed run repeats an uninterrupted one and the
ranks of a distributed run slice the same global batch. Sources: a tensor ``(N, ...)`` or ``(x, y)`` tensors
(seeded permutation per epoch, dropping the last incomplete batch), a map-style dataset (the same order,
read through a ``DataLoader`` with ``num_workers``; items may be ``(x, label)``), an object with
``sample(n, generator)`` (fresh samples every step, e.g. an analytic
:class:`~sde_lab.analytic.GaussianMixture`), or any iterable of batches (consumed in order; resuming skips
the batches already used). Random horizontal flips are drawn here, for the global batch, from ``(seed,
step)`` — never inside data-loader workers — so they too are replayed on resume and identical for any
number of workers and ranks.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from ..utils import append_dims
from .rng import STREAM_FLIP, STREAM_PERMUTATION, STREAM_SAMPLER, step_seed

__all__ = ["BatchStream"]


class BatchStream:
    """This rank's slice of global batch ``step`` of ``source`` (see the module docstring)."""

    SAMPLER_CHUNK_ELEMENTS = 1 << 20  # at most this many sample elements per sampler call

    def __init__(self, source, global_batch: int, seed: int, rank: int = 0, world: int = 1, num_workers: int = 0, *,
                 labels: bool = False, random_flip: bool = False):
        self.labels, self.random_flip = labels, bool(random_flip)
        self.label_tensor = None
        if isinstance(source, tuple) and len(source) == 2 and all(torch.is_tensor(s) for s in source):
            source, self.label_tensor = source  # (x, y) tensors
            if self.label_tensor.shape[:1] != source.shape[:1]:
                raise ValueError(f"{len(source)} samples but {len(self.label_tensor)} labels")
        self.source, self.B, self.seed, self.rank, self.world = source, global_batch, seed, rank, world
        self.local = global_batch // world
        self.num_workers = num_workers
        self._iter = None
        if labels and torch.is_tensor(source) and self.label_tensor is None:
            raise ValueError("a class-conditional model (model.num_classes > 0) needs labelled data: pass (x, y) tensors or a dataset of (x, y) items")
        if hasattr(source, "sample") and callable(source.sample):
            self.kind = "sampler"
            self._chunk: tuple[int, Any] | None = None
            self.per_chunk = self._per_chunk()
            if labels and not callable(getattr(source, "sample_with_labels", None)):
                raise ValueError(f"a class-conditional model needs labels, but {type(source).__name__} has no sample_with_labels(n, generator)")
        elif torch.is_tensor(source) or (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
            self.kind = "indexed"
            n = len(source)
            if n < global_batch:
                raise ValueError(f"the dataset has {n} samples, fewer than the global batch size {global_batch}")
            self.per_epoch = n // global_batch
        elif isinstance(source, Iterable):
            self.kind = "iterable"
        else:
            raise ValueError(f"cannot train on a {type(source).__name__}: pass a tensor, a dataset, an iterable of batches or a sampler")

    def position(self, step: int) -> dict[str, int]:
        if self.kind == "indexed":
            return {"epoch": step // self.per_epoch, "batch_in_epoch": step % self.per_epoch, "seed": self.seed}
        return {"batches_consumed": step, "seed": self.seed}

    def _indices(self, step: int) -> torch.Tensor:
        return _rank_indices(len(self.source), self.B, self.per_epoch, self.seed, self.rank, self.local, step)

    def _first(self, item):
        """``x`` of an item, or ``(x, y)`` when training on labels."""
        if not self.labels:
            return item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ValueError("a class-conditional model (model.num_classes > 0) needs labelled data: items must be (x, y) pairs")
        return torch.as_tensor(item[0]), torch.as_tensor(item[1])

    def _slice(self, item, lo: int, hi: int):
        return (item[0][lo:hi], item[1][lo:hi]) if self.labels else item[lo:hi]

    def get(self, step: int):
        """This rank's slice of global batch ``step``: ``x``, or ``(x, y)`` with ``labels=True``."""
        out = self._get(step)
        if not self.random_flip:
            return out
        x = out[0] if self.labels else out
        if x.ndim < 4:
            raise ValueError(f"random_flip needs image batches (B, C, H, W), got shape {tuple(x.shape)}")
        g = torch.Generator().manual_seed(step_seed(self.seed, step, STREAM_FLIP))
        flip = (torch.rand(self.B, generator=g) < 0.5)[self.rank * self.local : (self.rank + 1) * self.local]
        x = torch.where(append_dims(flip.to(x.device), x.ndim), x.flip(-1), x)
        return (x, out[1]) if self.labels else x

    def _get(self, step: int):
        lo, hi = self.rank * self.local, (self.rank + 1) * self.local
        if self.kind == "sampler":
            c, i = divmod(step, self.per_chunk)
            if self._chunk is None or self._chunk[0] != c:
                g = torch.Generator().manual_seed(step_seed(self.seed, c, STREAM_SAMPLER))
                n = self.per_chunk * self.B
                x = self.source.sample_with_labels(n, g) if self.labels else self.source.sample(n, g)
                self._chunk = (c, self._first(x))
            return self._slice(self._chunk[1], i * self.B + lo, i * self.B + hi)
        if self.kind == "indexed":
            idx = self._indices(step)
            if torch.is_tensor(self.source):
                return (self.source[idx], self.label_tensor[idx]) if self.labels else self.source[idx]
            if self._iter is None or self._iter[0] != step:
                self._start_loader(step)
            _, it = self._iter
            x = next(it)
            self._iter = (step + 1, it)
            return self._first(x)
        if self._iter is None or self._iter[0] != step:
            it = iter(self.source)
            for _ in range(step):
                next(it)
            self._iter = (step, it)
        _, it = self._iter
        try:
            x = self._first(next(it))
        except StopIteration:
            raise ValueError(f"the iterable of batches ran out after {step} batches; use a longer (or infinite) one") from None
        self._iter = (step + 1, it)
        n = x[0].shape[0] if self.labels else x.shape[0]
        return self._slice(x, lo, hi) if n == self.B else x

    def _per_chunk(self) -> int:
        """Global batches per sampler call: up to 64, within ``SAMPLER_CHUNK_ELEMENTS`` sample elements
        (1 for a sampler that does not say its sample size by ``event_shape`` or ``dim``)."""
        shape = getattr(self.source, "event_shape", None) or ((self.source.dim,) if isinstance(getattr(self.source, "dim", None), int) else None)
        if not shape:
            return 1
        return max(1, min(64, self.SAMPLER_CHUNK_ELEMENTS // max(1, self.B * math.prod(shape))))

    def _start_loader(self, step: int) -> None:
        # the sampler holds plain numbers, not the stream: no reference cycle keeps the workers alive
        sampler = _BatchIndices(len(self.source), self.B, self.per_epoch, self.seed, self.rank, self.local, step)
        loader = torch.utils.data.DataLoader(self.source, batch_sampler=sampler, num_workers=self.num_workers,
                                             persistent_workers=False)
        self._iter = (step, iter(loader))


def _rank_indices(n: int, B: int, per_epoch: int, seed: int, rank: int, local: int, step: int) -> torch.Tensor:
    """This rank's indices of global batch ``step``: a seeded permutation per epoch."""
    epoch, b = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(step_seed(seed, epoch, STREAM_PERMUTATION))
    perm = torch.randperm(n, generator=g)
    lo = b * B + rank * local
    return perm[lo : lo + local]


class _BatchIndices(torch.utils.data.Sampler):
    """The endless sequence of this rank's batch indices from ``start`` on."""

    def __init__(self, n, B, per_epoch, seed, rank, local, start):
        self.args, self.start = (n, B, per_epoch, seed, rank, local), start

    def __iter__(self):
        s = self.start
        while True:
            yield _rank_indices(*self.args, s).tolist()
            s += 1
