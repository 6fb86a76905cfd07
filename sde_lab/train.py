r"""Training: Adam with warm-up and gradient clipping, EMA, atomic checkpoints, resume, DDP.

The recipe of Song et al. (2021, Appendix H / score_sde ``run_lib.train``): Adam (lr 2e-4, β=(0.9, 0.999),
ε=1e-8), linear learning-rate warm-up (5000 steps), gradient-norm clipping at 1, an exponential moving
average of the weights (used for sampling), DSM with ``ε = 1e-5``.

Determinism. Everything random in a step is a function of ``(config.seed, step)``: the data order is a
seeded permutation per epoch (dropping the last incomplete batch), fresh samples of an analytic target and
the noise ``(t, z)`` come from generators seeded by ``(seed, step)``. A resumed run therefore repeats an
uninterrupted one exactly; the torch/NumPy/Python global RNG states (used e.g. by dropout) are saved and
restored as well.

Distributed (``torchrun``): ``config.training.batch_size`` is the *global* batch; rank ``r`` of ``W``
takes the ``r``-th contiguous slice of every global batch of data and noise, DDP averages the gradients,
so an update equals the single-process update at the same global batch. EMA, logging and checkpoints live
on rank 0.

Checkpoints: ``workdir/checkpoints/checkpoint_<step>.pt`` written atomically (temporary file +
``os.replace``) with a ``latest`` pointer file; each holds the model, EMA, optimizer, step, RNG states,
the data-order position and the config (JSON), so :func:`load_checkpoint_score` needs only the path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import os
import random
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import losses as L
from .score import ScoreModel
from .sde import SDE

__all__ = [
    "EMA",
    "Trainer",
    "TrainResult",
    "TrainingDiverged",
    "CheckpointError",
    "train",
    "build_sde",
    "build_network_from_config",
    "build_score_model",
    "build_objective",
    "data_shape",
    "save_checkpoint",
    "load_checkpoint",
    "load_checkpoint_score",
    "latest_checkpoint",
    "config_from_dict",
    "load_config",
    "apply_overrides",
    "dataset_from_config",
    "sample_from_config",
]

CHECKPOINT_FORMAT = "sde_lab.checkpoint/1"


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf; the message names the step and the last good checkpoint."""


class CheckpointError(ValueError):
    """A checkpoint is missing or unreadable; the message says what to do."""


# --------------------------------------------------------------------------------------------------
# EMA
# --------------------------------------------------------------------------------------------------
class EMA:
    r"""Exponential moving average of parameters, ``θ̄ ← d θ̄ + (1 - d) θ`` (Song & Ermon 2020, Technique 5).

    With ``warmup=True`` the decay is ``min(d, (1 + n)/(10 + n))`` after ``n`` updates (score_sde's
    ``ExponentialMovingAverage(use_num_updates=True)``), so early averages do not remember the random init.
    :meth:`store` / :meth:`copy_to` / :meth:`restore` swap the averaged weights in and out of a model;
    :meth:`average_of` is a context manager doing the three.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, *, warmup: bool = True):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay!r}")
        self.decay, self.warmup, self.num_updates = float(decay), bool(warmup), 0
        self.shadow = [p.detach().clone() for p in model.parameters()]
        self._backup: list[torch.Tensor] | None = None

    def _params(self, model: nn.Module) -> list[torch.Tensor]:
        params = list(model.parameters())
        if len(params) != len(self.shadow) or any(p.shape != s.shape for p, s in zip(params, self.shadow)):
            raise ValueError("the model's parameters do not match the EMA's shadow parameters")
        return params

    @torch.no_grad()
    def update(self, model: nn.Module | list[torch.Tensor]) -> None:
        """One averaging step; ``model`` may be the module or its parameter list (cached by a hot loop)."""
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates)) if self.warmup else self.decay
        params = model if isinstance(model, list) else self._params(model)
        torch._foreach_lerp_(self.shadow, [p.detach() for p in params], 1.0 - d)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for p, s in zip(self._params(model), self.shadow):
            p.copy_(s)

    @torch.no_grad()
    def store(self, model: nn.Module) -> None:
        self._backup = [p.detach().clone() for p in self._params(model)]

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        if self._backup is None:
            raise RuntimeError("EMA.restore called without a preceding EMA.store")
        for p, b in zip(self._params(model), self._backup):
            p.copy_(b)
        self._backup = None

    @contextlib.contextmanager
    def average_of(self, model: nn.Module):
        """Temporarily load the averaged weights into ``model``."""
        self.store(model)
        self.copy_to(model)
        try:
            yield model
        finally:
            self.restore(model)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates, "shadow": list(self.shadow)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        shadow = state["shadow"]
        if len(shadow) != len(self.shadow) or any(a.shape != b.shape for a, b in zip(shadow, self.shadow)):
            raise ValueError("EMA state does not match the model's parameters")
        self.decay, self.warmup, self.num_updates = float(state["decay"]), bool(state["warmup"]), int(state["num_updates"])
        self.shadow = [s.to(device=b.device, dtype=b.dtype).clone() for s, b in zip(shadow, self.shadow)]


# --------------------------------------------------------------------------------------------------
# building blocks from a config (names resolved here, at the edge)
# --------------------------------------------------------------------------------------------------
def _get(section, key: str, default=None):
    return section.get(key, default) if hasattr(section, "get") else getattr(section, key, default)


def build_sde(config) -> SDE:
    """``config.training.sde`` (``ve``/``vp``/``subvp``) with the hyperparameters found in ``config.model``."""
    from .registry import SDES, lookup

    cls = lookup(SDES, config.training.sde, "SDE")
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: config.model[k] for k in ("sigma_min", "sigma_max", "beta_min", "beta_max") if k in names and k in config.model}
    return cls(**kwargs)


def data_shape(config) -> tuple[int, ...]:
    """Shape of one sample: ``(data.dim,)`` for vectors, else ``(num_channels, image_size, image_size)``."""
    d = config.data
    if _get(d, "dim") is not None:
        return (int(d.dim),)
    return (int(d.num_channels), int(d.image_size), int(d.image_size))


def build_network_from_config(config) -> nn.Module:
    """The network named by ``config.model.name`` (:data:`sde_lab.nets.NETWORKS`)."""
    from .nets import build_network

    return build_network(config)


def _discrete_sigmas(config, sde) -> torch.Tensor | None:
    """Per-index stds of the discrete chain the network is trained on (``None`` for continuous training)."""
    if _get(config.training, "continuous", True):
        return None
    N, kind = int(config.model.num_scales), config.training.get("discrete_loss", "ddpm")
    try:
        if kind == "smld":
            return sde.smld_sigmas(N)
        if kind == "ddpm":
            return (1.0 - sde.ddpm_schedule(N).alphas_cumprod).sqrt()
    except AttributeError:
        raise ValueError(
            f"training.discrete_loss={kind!r} needs an SDE with a {'smld_sigmas' if kind == 'smld' else 'ddpm_schedule'} "
            f"chain, but training.sde={config.training.sde!r} has none (smld: ve; ddpm: vp)"
        ) from None
    raise ValueError(f"unknown training.discrete_loss {kind!r}; valid choices: ddpm, smld")


def build_score_model(config, sde: SDE | None = None) -> ScoreModel:
    """Network + parametrization from ``config.model`` (``prediction``, ``time_label``, ``num_scales``)."""
    sde = sde if sde is not None else build_sde(config)
    net = build_network_from_config(config)
    sigmas = _discrete_sigmas(config, sde)
    time_label = config.model.get("time_label", "t")
    discrete = sigmas is not None or time_label in ("index", "reversed_index")
    return ScoreModel(
        net,
        sde,
        prediction=config.model.get("prediction", "noise"),
        time_label=time_label,
        n_discrete=int(config.model.num_scales) if discrete else None,
        sigmas=sigmas,
    )


@dataclass(frozen=True)
class Objective:
    """One loss with its randomness drawn for the *global* batch and sliced per rank.

    ``kind`` is ``"dsm"`` (continuous, with ``weighting``), ``"smld"`` or ``"ddpm"`` (discrete, with the
    chain's ``sigmas`` / ``schedule``).
    """

    kind: str
    reduce: str = "sum"
    weighting: Any = None
    schedule: Any = None

    def draw(self, sde: SDE, global_batch: int, shape: tuple[int, ...], generator: torch.Generator, device) -> dict[str, torch.Tensor]:
        if self.kind == "dsm":
            t = self.weighting.sample(sde, global_batch, generator=generator, device=device)
            key = "t"
        else:
            n = len(self.schedule.alphas_cumprod) if self.kind == "ddpm" else len(self.schedule)
            t = torch.randint(0, n, (global_batch,), generator=generator, device=generator.device).to(device)
            key = "index"
        z = torch.randn((global_batch, *shape), generator=generator, device=generator.device).to(device)
        return {key: t, "z": z}

    def __call__(self, model, sde: SDE, x0: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.kind == "dsm":
            return L.dsm_loss(model, sde, x0, weighting=self.weighting, reduce=self.reduce, **draws)
        if self.kind == "smld":
            return L.smld_loss(model, sde, x0, self.schedule, reduce=self.reduce, **draws)
        return L.ddpm_loss(model, sde, x0, self.schedule, reduce=self.reduce, **draws)


def build_objective(config, sde: SDE) -> Objective:
    """The loss of ``config.training`` (continuous / likelihood_weighting / importance_sampling / reduce_mean)."""
    tr = config.training
    reduce = "mean" if tr.get("reduce_mean", False) else "sum"
    eps = float(tr.get("eps", L.TRAIN_EPS))
    if tr.get("continuous", True):
        if tr.get("likelihood_weighting", False):
            w = L.ImportanceLikelihoodWeighting(eps) if tr.get("importance_sampling", False) else L.LikelihoodWeighting(eps)
        elif tr.get("importance_sampling", False):
            raise ValueError("training.importance_sampling=True needs training.likelihood_weighting=True")
        else:
            w = L.SigmaSquaredWeighting(eps)
        return Objective("dsm", reduce, weighting=w)
    kind = tr.get("discrete_loss", "ddpm")
    N = int(config.model.num_scales)
    _discrete_sigmas(config, sde)  # validates kind against the SDE
    schedule = sde.smld_sigmas(N, dtype=torch.float32) if kind == "smld" else sde.ddpm_schedule(N)
    return Objective(kind, reduce, schedule=schedule)


def _total_norm(tensors: list[torch.Tensor], device) -> torch.Tensor:
    """The L2 norm of all ``tensors`` together (float32 scalar): one multi-tensor pass where they share a
    device and dtype. Used with the rescaling in :meth:`Trainer.step`, it is ``clip_grad_norm_`` minus its
    per-call grouping and, when the norm is under the limit, its multiply-by-one pass."""
    if not tensors:
        return torch.zeros((), device=device)
    if len({(t.device, t.dtype) for t in tensors}) == 1:
        norms = torch._foreach_norm(tensors)
    else:
        norms = [torch.linalg.vector_norm(t) for t in tensors]
    return torch.linalg.vector_norm(torch.stack([n.to(device, torch.float32) for n in norms]))


class _LossModule(nn.Module):
    """``forward(x0, draws) -> per-sample loss``; DDP and ``torch.compile`` wrap this one module."""

    def __init__(self, score_model: ScoreModel, objective: Objective):
        super().__init__()
        self.score_model, self.objective = score_model, objective

    def forward(self, x0, draws):
        return self.objective(self.score_model, self.score_model.sde, x0, draws)


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
_MASK64 = (1 << 64) - 1


def make_optimizer(params, optim_config) -> torch.optim.Optimizer:
    """Adam from ``config.optim`` (``lr``, ``beta1``, ``beta2``, ``eps``, ``weight_decay``).

    With ``optim.fused`` (default ``True``) the fused single-kernel Adam is used where this PyTorch build
    supports it for the parameters' device (CPU from PyTorch 2.4 on; it is ~4× faster than the multi-tensor
    version there: 0.75 vs 3.4 ms a step for the 2-D MLP, 11 vs 40 ms for the digits MLP), otherwise the
    multi-tensor (``foreach``) Adam. Both compute the same update (up to float rounding); checkpoints of
    either load into the other.
    """
    params = list(params)
    kwargs = dict(
        lr=float(optim_config.lr),
        betas=(float(optim_config.get("beta1", 0.9)), float(optim_config.get("beta2", 0.999))),
        eps=float(optim_config.get("eps", 1e-8)),
        weight_decay=float(optim_config.get("weight_decay", 0.0)),
    )
    name = optim_config.get("optimizer", "Adam")
    if name != "Adam":
        raise ValueError(f"unknown optim.optimizer {name!r}; valid choices: Adam")
    if bool(optim_config.get("fused", True)):
        try:
            return torch.optim.Adam(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # fused Adam unsupported for this device / dtype / version
            pass
    return torch.optim.Adam(params, foreach=True, **kwargs)


def _splitmix64(z: int) -> int:
    """One SplitMix64 output (Steele, Lea & Flood 2014): a well-mixed 64-bit hash of a 64-bit integer."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _step_seed(seed: int, step: int, stream: int) -> int:
    """A 63-bit seed for ``(seed, step, stream)``: per-step randomness that a resumed run or another rank
    reproduces without any state (chained SplitMix64; a few µs, unlike numpy's SeedSequence)."""
    h = _splitmix64(int(seed) & _MASK64)
    h = _splitmix64(h ^ (int(step) & _MASK64))
    return _splitmix64(h ^ int(stream)) >> 1


class _Batches:
    """Global batch number ``step`` → this rank's slice, a deterministic function of ``(seed, step)``.

    Sources: a tensor ``(N, ...)`` (seeded permutation per epoch), a map-style dataset (same order, items may
    be ``(x, label)`` tuples), an object with ``sample(n, generator)`` (fresh samples every step, e.g. an
    analytic :class:`~sde_lab.analytic.GaussianMixture`), or any iterable of batches (consumed in order;
    resuming skips the batches already used). A sampler is asked for several global batches at a time,
    seeded by ``(seed, step // chunk)``: one call instead of one per step, the batch still a function of
    ``(seed, step)``.
    """

    SAMPLER_CHUNK_ELEMENTS = 1 << 20  # at most this many sample elements per sampler call

    def __init__(self, source, global_batch: int, seed: int, rank: int, world: int, num_workers: int = 0, *, labels: bool = False):
        self.labels = labels
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
        epoch, b = divmod(step, self.per_epoch)
        g = torch.Generator().manual_seed(_step_seed(self.seed, epoch, 1))
        perm = torch.randperm(len(self.source), generator=g)
        lo = b * self.B + self.rank * self.local
        return perm[lo : lo + self.local]

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
        lo, hi = self.rank * self.local, (self.rank + 1) * self.local
        if self.kind == "sampler":
            c, i = divmod(step, self.per_chunk)
            if self._chunk is None or self._chunk[0] != c:
                g = torch.Generator().manual_seed(_step_seed(self.seed, c, 2))
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
        outer = self

        class _Sampler(torch.utils.data.Sampler):
            def __iter__(self):
                s = step
                while True:
                    yield outer._indices(s).tolist()
                    s += 1

        loader = torch.utils.data.DataLoader(
            self.source, batch_sampler=_Sampler(), num_workers=self.num_workers, persistent_workers=False
        )
        self._iter = (step, iter(loader))


def dataset_from_config(config, *, split: str = "train"):
    """Training data named by ``config.data.dataset``.

    An analytic target (``ring``, ``aniso``, …) is an infinite sampler: fresh exact samples every step. Any
    other name goes to :func:`sde_lab.data.get_dataset` (scaled per ``data.centered``); in-memory sets are
    returned as one tensor, which the loop indexes directly — or as ``(x, y)`` tensors for a
    class-conditional model (``model.num_classes > 0``).
    """
    from .analytic import TARGETS, make_target
    from .data import get_dataset

    d = config.data
    name = d.dataset
    conditional = int(config.model.get("num_classes", 0)) > 0
    if name in TARGETS:
        return make_target(name)  # labels: the mixture component (sample_with_labels)
    shape = data_shape(config)
    ds = get_dataset(
        name,
        split=split,
        centered=bool(d.get("centered", False)),
        image_size=shape[-1] if len(shape) == 3 else None,
        seed=int(config.get("seed", 0)),
        random_flip=bool(d.get("random_flip", False)),
        labels=conditional,
    )
    in_memory = torch.is_tensor(getattr(ds, "x", None)) and getattr(ds, "transform", None) is None
    if conditional:
        if in_memory and getattr(ds, "y", None) is None:
            raise ValueError(f"data set {name!r} has no class labels; a class-conditional model (model.num_classes > 0) needs them")
        n_classes = int(config.model.num_classes)
        if in_memory and int(ds.y.max()) >= n_classes:
            raise ValueError(f"data set {name!r} has labels up to {int(ds.y.max())} but model.num_classes={n_classes}")
        return (ds.x, ds.y.long()) if in_memory else ds
    return ds.x if in_memory else ds


# --------------------------------------------------------------------------------------------------
# config files
# --------------------------------------------------------------------------------------------------
def load_config(path):
    """Import an ml-collections config file by path and return its ``get_config()``.

    The directory above the nearest ``configs/`` folder is put on ``sys.path`` while importing, so config
    files can share ``from configs.default import ...``.
    """
    import importlib.util

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} does not exist; configs live in configs/<sde>/<name>.py")
    root = next((a.parent for a in p.resolve().parents if a.name == "configs"), None)
    added = root is not None and str(root) not in sys.path
    if added:
        sys.path.insert(0, str(root))
    try:
        spec = importlib.util.spec_from_file_location(f"_sde_lab_config_{abs(hash(str(p.resolve())))}", p)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if added:
            sys.path.remove(str(root))
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"config file {p} defines no get_config() function")
    return module.get_config()


def _parse_value(text: str):
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        low = text.lower()
        return {"true": True, "false": False, "none": None}.get(low, text)


def apply_overrides(config, assignments) -> Any:
    """Apply ``key.sub=value`` strings (values parsed as Python literals) to ``config`` in place.

    Unknown keys and values of the wrong type raise ``ValueError`` naming the key and the valid choices.
    """
    for item in assignments or ():
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value (e.g. training.n_iters=2000), got {item!r}")
        *parents, leaf = key.strip().split(".")
        node, path = config, []
        for part in parents:
            if part not in node or not hasattr(node[part], "keys"):
                raise ValueError(f"unknown config section {'.'.join(path + [part])!r}; valid: {', '.join(sorted(node.keys()))}")
            node, path = node[part], path + [part]
        if leaf not in node:
            where = ".".join(path) or "the top level"
            raise ValueError(f"unknown config key {key!r}; valid keys in {where}: {', '.join(sorted(node.keys()))}")
        value, old = _parse_value(raw.strip()), node[leaf]
        if isinstance(old, bool) and not isinstance(value, bool):
            raise ValueError(f"config key {key!r} expects a bool (true/false), got {raw!r}")
        if isinstance(old, (int, float)) and not isinstance(old, bool) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"config key {key!r} expects a number, got {raw!r}")
        if isinstance(old, int) and not isinstance(old, bool) and isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"config key {key!r} expects an integer, got {raw!r}")
            value = int(value)
        if isinstance(old, str) and not isinstance(value, str):
            value = raw.strip()
        if isinstance(old, (tuple, list)) and isinstance(value, (tuple, list)):
            value = type(old)(value)
        try:
            node[leaf] = value
        except (TypeError, ValueError) as e:
            raise ValueError(f"cannot set {key!r} to {raw!r}: {e}") from None
    return config


# --------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------
_CKPT_RE = re.compile(r"^checkpoint_(\d+)\.pt$")


def _ckpt_dir(workdir) -> Path:
    return Path(workdir) / "checkpoints"


def _atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(workdir, state: dict[str, Any], *, keep: int = 0) -> Path:
    """Write ``checkpoint_<step>.pt`` atomically, point ``latest`` at it, keep the newest ``keep`` (0 = all)."""
    d = _ckpt_dir(workdir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"checkpoint_{int(state['step'])}.pt"
    _atomic_write_bytes(path, lambda f: torch.save(state, f))
    _atomic_write_bytes(d / "latest", lambda f: f.write(path.name.encode()))
    if keep and keep > 0:
        for old in sorted(_scan(d))[:-keep]:
            (d / f"checkpoint_{old}.pt").unlink(missing_ok=True)
    return path


def _scan(d: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in d.glob("checkpoint_*.pt") if (m := _CKPT_RE.match(p.name))) if d.is_dir() else []


def latest_checkpoint(workdir) -> Path | None:
    """The checkpoint named by ``workdir/checkpoints/latest``, else the highest step found; ``None`` if none."""
    d = _ckpt_dir(workdir)
    pointer = d / "latest"
    if pointer.is_file():
        p = d / pointer.read_text().strip()
        if p.is_file():
            return p
    steps = _scan(d)
    return d / f"checkpoint_{steps[-1]}.pt" if steps else None


def _resolve_checkpoint(path_or_workdir) -> Path:
    p = Path(path_or_workdir)
    if p.is_dir():
        found = latest_checkpoint(p) or (latest_checkpoint(p.parent) if p.name == "checkpoints" else None)
        if found is None:
            raise CheckpointError(
                f"no checkpoint found in {p} (looked for checkpoints/checkpoint_<step>.pt); train first with "
                f"`sde-lab train --workdir {p}` or pass the path of a .pt file"
            )
        return found
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist; pass a checkpoint_<step>.pt file or a training workdir")
    return p


def load_checkpoint(path_or_workdir, map_location="cpu") -> dict[str, Any]:
    """Read a training checkpoint (a ``.pt`` file or a workdir: its latest); clear errors if missing/corrupt."""
    p = _resolve_checkpoint(path_or_workdir)
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, not a torch file, pickle error
        others = [s for s in _scan(p.parent) if p.name != f"checkpoint_{s}.pt"]
        hint = f"; older checkpoints in {p.parent}: steps {others[-3:]} (delete {p.name} to resume from them)" if others else ""
        raise CheckpointError(f"checkpoint {p} is corrupt or not a sde_lab checkpoint ({type(e).__name__}: {e}){hint}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{p} is not a sde_lab training checkpoint (format {state.get('format') if isinstance(state, dict) else type(state).__name__!r}); "
            "official score_sde checkpoints are loaded with the official-checkpoint loader instead"
        )
    return state


def config_from_dict(d: dict[str, Any]):
    """An ml-collections ``ConfigDict`` from a plain (JSON) dict."""
    import ml_collections

    return ml_collections.ConfigDict(d)


def _config_to_json(config) -> str:
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.dumps(d, default=lambda o: list(o) if isinstance(o, (tuple, set)) else str(o))


def load_checkpoint_score(path_or_workdir, config=None, *, ema: bool = True, map_location="cpu") -> ScoreModel:
    """A :class:`ScoreModel` with the checkpoint's EMA weights (``ema=False``: raw weights), in eval mode.

    The config stored in the checkpoint is used unless ``config`` is given.
    """
    state = load_checkpoint(path_or_workdir, map_location)
    config = config if config is not None else config_from_dict(json.loads(state["config"]))
    model = build_score_model(config)
    try:
        model.load_state_dict(state["model"])
        if ema:
            e = EMA(model, float(state["ema"]["decay"]))
            e.load_state_dict(state["ema"])
            e.copy_to(model)
    except (RuntimeError, ValueError) as err:
        raise CheckpointError(f"checkpoint does not match the model built from its config: {err}") from None
    return model.eval().requires_grad_(False).to(map_location)


# --------------------------------------------------------------------------------------------------
# distributed
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def _init_distributed(device_pref: str) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise ValueError("config.device='cuda' but CUDA is not available; use 'auto' or 'cpu'")
    device = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return _Dist(rank, world, local), device


# --------------------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """The trained score model (EMA weights loaded), the final step and the logged losses."""

    model: ScoreModel
    step: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    interrupted: bool = False
    checkpoint: Path | None = None


def _rng_state() -> dict[str, Any]:
    keys, pos, has_gauss, cached = np.random.get_state()[1:]
    st = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": json.dumps(random.getstate()),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = json.loads(st["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in st and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(st["cuda"])


class Trainer:
    """The training loop of Song et al. (2021) for one config; :meth:`fit` runs it, :meth:`step` one update.

    Args:
        config: ml-collections config (sections ``training``, ``optim``, ``model``, ``data``, ``sampling``).
        workdir: checkpoints, TensorBoard logs and sample grids go here.
        dataset: training data (tensor, dataset, iterable of batches, or sampler); default from ``config.data``.
        resume: continue from ``workdir``'s latest checkpoint (a fresh start if there is none).
        progress: show a tqdm bar (rank 0).
    """

    def __init__(self, config, workdir, *, dataset=None, resume: bool = False, progress: bool = True):
        self.config, self.workdir, self.progress = config, Path(workdir), progress
        tr, opt = config.training, config.optim
        self.dist, self.device = _init_distributed(str(config.get("device", "auto")))
        self.seed = int(config.get("seed", 0))
        self.global_batch = int(tr.batch_size)
        if self.global_batch < 1 or self.global_batch % self.dist.world:
            raise ValueError(
                f"training.batch_size={self.global_batch} (the global batch) must be a positive multiple of the "
                f"number of processes ({self.dist.world})"
            )
        torch.manual_seed(self.seed)  # initial weights; later randomness is per step (see module docstring)
        np.random.seed(self.seed % 2**32)
        random.seed(self.seed)

        self.sde = build_sde(config)
        self.model = build_score_model(config, self.sde).to(self.device)
        self.shape = data_shape(config)
        self.objective = build_objective(config, self.sde)
        self.ema = EMA(self.model, float(config.model.get("ema_rate", 0.9999)), warmup=bool(config.model.get("ema_warmup", True)))
        self._param_list = list(self.model.parameters())
        self.optimizer = make_optimizer(self._param_list, opt)
        self.base_lr, self.warmup = float(opt.lr), int(opt.get("warmup", 5000))
        self.grad_clip = float(opt.get("grad_clip", 1.0))
        self.step_count = 0
        self.last_good: Path | None = None
        if resume:
            found = latest_checkpoint(self.workdir)
            if found is not None:
                self._restore(load_checkpoint(found, map_location=self.device))
                self.last_good = found

        source = dataset if dataset is not None else dataset_from_config(config)
        self.num_classes = self.model.num_classes
        self.label_dropout = float(tr.get("label_dropout", 0.1)) if self.num_classes else 0.0
        if not 0.0 <= self.label_dropout <= 1.0:
            raise ValueError(f"training.label_dropout must lie in [0, 1], got {self.label_dropout}")
        self.batches = _Batches(source, self.global_batch, self.seed, self.dist.rank, self.dist.world,
                                int(tr.get("num_workers", 0)), labels=self.num_classes > 0)

        self.amp = bool(tr.get("bf16", False))  # bf16 autocast on CUDA and on CPU (slow on CPUs without bf16 units)
        loss_module: nn.Module = _LossModule(self.model, self.objective)
        if self.dist.enabled:
            loss_module = nn.parallel.DistributedDataParallel(loss_module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if bool(tr.get("compile", False)):  # inductor: Triton on CUDA, a C++ compiler on CPU
            loss_module = torch.compile(loss_module)
        self.loss_module = loss_module
        self._stop_signal: int | None = None

    # --- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step_count,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": _rng_state(),
            "data": self.batches.position(self.step_count) if hasattr(self, "batches") else {},
            "config": _config_to_json(self.config),
            "world_size": self.dist.world,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"the checkpoint in {self.workdir} does not match this config ({e}); use a fresh --workdir or the original config"
            ) from None
        self.step_count = int(state["step"])
        _set_rng_state(state["rng"])

    def save(self) -> Path | None:
        """Checkpoint on rank 0 (other ranks return ``None``)."""
        path = None
        if self.dist.rank == 0:
            path = save_checkpoint(self.workdir, self.state_dict(), keep=int(self.config.training.get("keep_checkpoints", 0)))
            self.last_good = path
        if self.dist.enabled:
            dist.barrier()
        return path

    # --- one update ---------------------------------------------------------------------------
    def _lr(self, step: int) -> float:
        """Linear warm-up to the base rate over ``warmup`` steps (score_sde ``optimization_manager``)."""
        return self.base_lr * min((step + 1) / self.warmup, 1.0) if self.warmup > 0 else self.base_lr

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, y = self.batches.get(step), None
        if self.num_classes:
            x, y = x
            y = torch.as_tensor(y).long()
            if y.shape != (len(x),) or bool(((y < 0) | (y >= self.num_classes)).any()):
                raise ValueError(f"class labels must be a ({len(x)},) tensor in 0..{self.num_classes - 1} (model.num_classes); "
                                 f"got shape {tuple(y.shape)}, range {int(y.min())}..{int(y.max())}")
            y = y.to(self.device)
        x = torch.as_tensor(x)
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"the data has samples of shape {tuple(x.shape[1:])} but the config expects {self.shape} "
                f"(config.data.dim or num_channels/image_size); fix config.data or the dataset"
            )
        return x.to(self.device, torch.float32, non_blocking=True), y

    def step(self) -> tuple[float, float]:
        """One optimisation step at ``self.step_count``; returns the global mean loss and the gradient norm."""
        step = self.step_count
        x0, y = self._batch(step)
        g = torch.Generator(self.device).manual_seed(_step_seed(self.seed, step, 3))
        draws = self.objective.draw(self.sde, self.global_batch, self.shape, g, self.device)
        if y is not None:  # label dropout (Ho & Salimans 2022): the same net learns s(x, t, ∅)
            drop = torch.rand(self.global_batch, generator=g, device=g.device).to(self.device) < self.label_dropout
            draws["y"] = drop  # sliced with the other draws, turned into labels below
        lo = self.dist.rank * x0.shape[0]
        draws = {k: v[lo : lo + x0.shape[0]] for k, v in draws.items()}
        if y is not None:
            draws["y"] = torch.where(draws["y"], torch.full_like(y, self.num_classes), y)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss = self.loss_module(x0, draws).mean()
        loss.backward()
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(step)
        grads = [p.grad for p in self._param_list if p.grad is not None]
        grad_norm = _total_norm(grads, loss.device)
        stats = torch.stack([loss.detach().float(), grad_norm, torch.tensor(float(self._stop_signal is not None), device=loss.device)])
        if self.dist.enabled:
            dist.all_reduce(stats)
            stats[0] /= self.dist.world
            stats[1] /= self.dist.world
        loss_v, gn_v, stop = stats.tolist()
        if not (math.isfinite(loss_v) and math.isfinite(gn_v)):
            where = f"the last good checkpoint {self.last_good} was kept" if self.last_good else "no checkpoint had been written yet"
            raise TrainingDiverged(
                f"the training loss became {loss_v} (grad norm {gn_v}) at step {step}; stopped without updating; {where}. "
                "Lower optim.lr, raise optim.warmup, or check the data for NaN/Inf"
            )
        if self.grad_clip > 0 and gn_v + 1e-6 > self.grad_clip:
            # clip_grad_norm_'s rescaling, skipped when it would multiply by 1; gn_v is the same on every rank
            torch._foreach_mul_(grads, self.grad_clip / (gn_v + 1e-6))
        self.optimizer.step()
        self.ema.update(self._param_list)
        self.step_count = step + 1
        if stop and self._stop_signal is None:
            self._stop_signal = signal.SIGTERM
        return loss_v, gn_v

    # --- the loop -----------------------------------------------------------------------------
    def _handle_signal(self, signum, frame):
        if self._stop_signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum

    @contextlib.contextmanager
    def _signals(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def fit(self, n_iters: int | None = None, *, final_checkpoint: bool = True) -> TrainResult:
        """Train until ``n_iters`` (default ``config.training.n_iters``) total steps, or a signal.

        A checkpoint is written every ``training.snapshot_freq`` steps and at the end (unless
        ``final_checkpoint=False``; a signal always saves).
        """
        tr = self.config.training
        n_iters = int(n_iters if n_iters is not None else tr.n_iters)
        snapshot = int(tr.get("snapshot_freq", 10000))
        log_freq = int(tr.get("log_freq", 50))
        sample_freq = int(tr.get("sample_freq", 0))
        rank0 = self.dist.rank == 0
        self._stop_signal = None
        self.model.train()
        writer = _tensorboard(self.workdir) if rank0 and tr.get("tensorboard", True) else None
        from tqdm.auto import tqdm

        bar = tqdm(total=n_iters, initial=self.step_count, disable=not (self.progress and rank0), desc="train", dynamic_ncols=True)
        losses: list[tuple[int, float]] = []
        run_mean, n_mean, interrupted = 0.0, 0, False
        try:
            with self._signals(), _frozen_heap():
                while self.step_count < n_iters:
                    loss, gn = self.step()
                    run_mean, n_mean = run_mean + loss, n_mean + 1
                    bar.update(1)
                    s = self.step_count
                    if s % log_freq == 0 or s == n_iters:
                        avg = run_mean / n_mean
                        losses.append((s, avg))
                        bar.set_postfix(loss=f"{avg:.4g}", lr=f"{self._lr(s - 1):.2g}")
                        if writer is not None:
                            writer.add_scalar("train/loss", avg, s)
                            writer.add_scalar("train/grad_norm", gn, s)
                            writer.add_scalar("train/lr", self._lr(s - 1), s)
                        run_mean, n_mean = 0.0, 0
                    if snapshot > 0 and s % snapshot == 0 and s < n_iters:
                        self.save()
                    if rank0 and writer is not None and sample_freq > 0 and s % sample_freq == 0:
                        self._sample_grid(writer, s)
                    if self._stop_signal is not None:
                        interrupted = True
                        break
            path = self.save() if (final_checkpoint or interrupted) else None
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        if interrupted and rank0:
            print(f"stopped by signal at step {self.step_count}; checkpoint saved to {path}; continue with resume", file=sys.stderr)
        self.ema.copy_to(ema_model := _clone_model(self.model))
        return TrainResult(ema_model.eval().requires_grad_(False), self.step_count, losses, interrupted, path)

    def _sample_grid(self, writer, step: int) -> None:
        """Log EMA samples: a scatter plot for 2-D data, an image grid for images."""
        n = int(self.config.training.get("n_grid_samples", 64))
        g = torch.Generator().manual_seed(_step_seed(self.seed, step, 4))
        with self.ema.average_of(self.model):
            self.model.eval()
            res = sample_from_config(self.config, self.sde, self.model, (n, *self.shape), generator=g, device=self.device)
        self.model.train()
        x = res.samples.detach().float().cpu()
        if len(self.shape) == 1:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(4, 4))
            ax.scatter(x[:, 0], x[:, 1], s=2)
            writer.add_figure("samples", fig, step)
            plt.close(fig)
        elif len(self.shape) == 3:
            import torchvision

            lo = -1.0 if self.config.data.get("centered", False) else 0.0
            grid = torchvision.utils.make_grid(((x - lo) / (1 - lo)).clamp(0, 1), nrow=int(math.sqrt(n)))
            writer.add_image("samples", grid, step)


def sample_from_config(config, sde: SDE, score_fn, shape, *, generator=None, device=None, **overrides):
    """:func:`sde_lab.sampling.sample` with the options of ``config.sampling`` (keyword ``overrides`` win)."""
    from .sampling import sample

    sc = config.get("sampling", {})
    opts = dict(
        solver=sc.get("method", "pc"),
        steps=int(sc.get("num_steps", 1000)),
        predictor=sc.get("predictor", "reverse_diffusion"),
        corrector=sc.get("corrector", "langevin"),
        snr=float(sc.get("snr", 0.16)),
        n_corrector_steps=int(sc.get("n_steps_each", 1)),
        eps=float(sc.get("eps", 1e-3)),
        denoise=bool(sc.get("noise_removal", True)),
    )
    opts.update(overrides)
    if opts["solver"] != "pc":
        for k in ("predictor", "corrector", "snr", "n_corrector_steps"):
            opts.pop(k)
    with torch.no_grad():
        return sample(sde, score_fn, tuple(shape), generator=generator, device=device, **opts)


def _clone_model(model: ScoreModel) -> ScoreModel:
    import copy

    return copy.deepcopy(model)


@contextlib.contextmanager
def _frozen_heap():
    """``gc.freeze()`` for the training loop: the objects alive before it (the imported libraries: ~370k
    for torch + matplotlib + TensorBoard) leave the collector's generations, so the collections that the
    loop's own allocations trigger no longer walk them (2–3% of a 2-D MLP step). Left as it was if the
    caller froze the heap itself; unfrozen afterwards."""
    mine = gc.get_freeze_count() == 0
    if mine:
        gc.freeze()
    try:
        yield
    finally:
        if mine:
            gc.unfreeze()


def _tensorboard(workdir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        return None
    return SummaryWriter(str(Path(workdir) / "tensorboard"))


def train(config, workdir, *, dataset=None, resume: bool = False, progress: bool = True, n_iters: int | None = None) -> TrainResult:
    """Train a score model as configured; see :class:`Trainer`. Returns the EMA model and the loss log."""
    return Trainer(config, workdir, dataset=dataset, resume=resume, progress=progress).fit(n_iters)
