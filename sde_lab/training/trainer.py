r"""The training loop: a model, an objective, data — objects in, a trained EMA model out.

The recipe of Song et al. (2021, Appendix H / score_sde ``run_lib.train``): Adam (lr 2e-4, β=(0.9, 0.999),
ε=1e-8), linear learning-rate warm-up, gradient-norm clipping at 1, an exponential moving average of the
weights (used for sampling).

    model = Model(MyNet(), VPSDE(), target="eps")          # any nn.Module net(x, t_label)
    trainer = Trainer(model, DSMObjective(), data, batch_size=256, workdir="runs/mine")
    result = trainer.fit(10_000)                           # result.model: the EMA weights

Determinism. Everything random in a step is a function of ``(seed, step)`` (:mod:`sde_lab.training.rng`):
the data order and flips (:class:`~sde_lab.training.streams.BatchStream`), the objective's ``(t, z)`` and the
label dropout, drawn for the *global* batch; the model's own randomness (dropout) runs under the global
generator reseeded by ``(seed, step, rank)`` for the step and restored afterwards. A resumed run therefore
repeats an uninterrupted one exactly, ranks draw different dropout masks, and the trainer never changes
the caller's global RNG state.

Distributed (``torchrun``): ``batch_size`` is the *global* batch; rank ``r`` of ``W`` takes the ``r``-th
contiguous slice of every global batch of data and noise, DDP averages the gradients, so an update equals
the single-process update at the same global batch. EMA, logging and checkpoints live on rank 0; a stop
signal on any rank stops every rank at the same step (the flag is all-reduced).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import CHECKPOINT_FORMAT, CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from .distributed import DistInfo, init_distributed
from .ema import EMA
from .rng import STREAM_GRID, STREAM_MODULE, STREAM_NOISE, seeded, step_seed
from .streams import BatchStream
from ..workdir import OutputError, WorkdirLock, claim_workdir

__all__ = ["Trainer", "TrainResult", "TrainingDiverged", "make_optimizer", "OPTIMIZERS"]

OPTIMIZERS = ("Adam",)


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf; the message names the step and the last good checkpoint."""


@dataclass
class TrainResult:
    """The trained model (EMA weights loaded), the final step and the logged losses."""

    model: nn.Module
    step: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    interrupted: bool = False
    checkpoint: Path | None = None


def make_optimizer(params, optim_config=None, *, lr: float = 2e-4, beta1: float = 0.9, beta2: float = 0.999,
                   eps: float = 1e-8, weight_decay: float = 0.0, fused: bool = True, optimizer: str = "Adam") -> torch.optim.Optimizer:
    """Adam with the given hyperparameters (or those of an ml-collections ``config.optim`` section).

    With ``fused`` (default) the fused single-kernel Adam is used where this PyTorch build supports it for the
    parameters' device (CPU from PyTorch 2.4 on; it is ~4× faster than the multi-tensor version there: 0.75 vs
    3.4 ms a step for the 2-D MLP, 11 vs 40 ms for the digits MLP), otherwise the multi-tensor (``foreach``)
    Adam. Both compute the same update (up to float rounding); checkpoints of either load into the other.
    """
    if optim_config is not None:
        get = optim_config.get
        lr, beta1, beta2 = float(optim_config.lr), float(get("beta1", beta1)), float(get("beta2", beta2))
        eps, weight_decay = float(get("eps", eps)), float(get("weight_decay", weight_decay))
        fused, optimizer = bool(get("fused", fused)), get("optimizer", optimizer)
    params = list(params)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optim.optimizer {optimizer!r}; valid choices: {', '.join(OPTIMIZERS)}")
    kwargs = dict(lr=float(lr), betas=(float(beta1), float(beta2)), eps=float(eps), weight_decay=float(weight_decay))
    if fused:
        try:
            return torch.optim.Adam(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # fused Adam unsupported for this device / dtype / version
            pass
    return torch.optim.Adam(params, foreach=True, **kwargs)


def _total_norm(tensors: list[torch.Tensor], device) -> torch.Tensor:
    """The L2 norm of all ``tensors`` together (float32 scalar): one multi-tensor pass where they share a
    device and dtype. With the rescaling in :meth:`Trainer.step` it is ``clip_grad_norm_`` minus its
    per-call grouping and, when the norm is under the limit, its multiply-by-one pass."""
    if not tensors:
        return torch.zeros((), device=device)
    if len({(t.device, t.dtype) for t in tensors}) == 1:
        norms = torch._foreach_norm(tensors)
    else:
        norms = [torch.linalg.vector_norm(t) for t in tensors]
    return torch.linalg.vector_norm(torch.stack([n.to(device, torch.float32) for n in norms]))


class _LossModule(nn.Module):
    """``forward(x0, draws, y) -> per-sample loss``; DDP and ``torch.compile`` wrap this one module."""

    def __init__(self, model: nn.Module, objective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, x0, draws, y=None):
        return self.objective(self.model, x0, draws, y)


def _positive_int(name, v, zero_ok=False):
    if isinstance(v, bool) or not isinstance(v, int) or v < (0 if zero_ok else 1):
        raise ValueError(f"{name} must be a {'non-negative' if zero_ok else 'positive'} integer, got {v!r}")
    return v


class Trainer:
    """The training loop; :meth:`fit` runs it, :meth:`step` one update.

    Args:
        model: the model to train, an ``nn.Module`` carrying its path (:class:`~sde_lab.model.Model` around any
            network); moved to ``device``.
        objective: the loss and its time law (:class:`~sde_lab.losses.DSMObjective`, ``SMLDObjective``,
            ``DDPMObjective`` or any object with ``draw`` and ``__call__``).
        data: a tensor, ``(x, y)`` tensors, a dataset, an iterable of batches or a sampler
            (:class:`~sde_lab.training.streams.BatchStream`).
        optimizer: default Adam (:func:`make_optimizer`) with ``lr``. ema: default ``EMA(model, 0.9999)``.
        workdir: checkpoints and TensorBoard logs go here (``None``: nothing is written).
        batch_size: the global batch. seed: the run's randomness (module docstring).
        warmup: linear learning-rate warm-up steps. grad_clip: gradient-norm clip (0: off).
        label_dropout: for a class-conditional model, P(label → null label) (classifier-free guidance).
        num_workers, random_flip: data loading (see ``BatchStream``).
        bf16: bf16 autocast of the loss's forward pass. compile: ``torch.compile`` the loss.
        snapshot_freq, keep_checkpoints, log_freq, tensorboard: checkpointing and logging.
        sample_fn, sample_freq: ``sample_fn(model, n, generator) -> samples`` logged every ``sample_freq`` steps.
        config: a JSON-serialisable description of the run stored in every checkpoint (a config dict).
        shape: the expected shape of one sample (checked on every batch); default: the first batch's.
        n_iters: the default total number of steps of :meth:`fit`.
        resume: ``True``: continue from ``workdir``'s latest checkpoint (refused if there is none, or if ``config``
            differs from the run's in anything but the schedule); ``"auto"``: continue if there is one, else start;
            ``False``: a fresh run (refused if ``workdir`` holds one, unless ``overwrite``).
        overwrite: a fresh run into a used ``workdir`` moves the old run to ``<workdir>.old-<time>`` first.
        device: default: the model's device. progress: a tqdm bar on rank 0.

    The workdir belongs to one run and one process (:mod:`sde_lab.workdir`): rank 0 checks that it is
    writable, records the run in ``run.json`` and holds ``workdir/.sde_lab.lock`` from construction to the end of
    :meth:`fit` (:meth:`close` releases it earlier), so a second trainer on the same folder is refused before
    its first step.
    """

    def __init__(self, model: nn.Module, objective, data, *, optimizer: torch.optim.Optimizer | None = None,
                 ema: EMA | None = None, workdir=None, batch_size: int = 128, seed: int = 0, lr: float = 2e-4,
                 warmup: int = 5000, grad_clip: float = 1.0, label_dropout: float = 0.1, num_workers: int = 0,
                 random_flip: bool = False, bf16: bool = False, compile: bool = False, snapshot_freq: int = 10_000,
                 keep_checkpoints: int = 0, log_freq: int = 50, tensorboard: bool = True,
                 sample_fn: Callable | None = None, sample_freq: int = 0, n_grid_samples: int = 64,
                 config: dict | None = None, resume: bool | str = False, device=None, progress: bool = True,
                 shape: tuple[int, ...] | None = None, n_iters: int | None = None, overwrite: bool = False):
        if not isinstance(model, nn.Module) or not any(True for _ in model.parameters()):
            raise ValueError(f"model must be an nn.Module with parameters (e.g. sde_lab.Model(net, path)), got {type(model).__name__}")
        if not (callable(getattr(objective, "draw", None)) and callable(objective)):
            raise ValueError(f"objective must have draw(path, n, shape, generator, device) and __call__(model, x0, draws, y), "
                             f"e.g. sde_lab.losses.DSMObjective(); got {objective!r}")
        self.path = getattr(model, "path", None)
        if self.path is None:
            raise ValueError(f"the model must carry its path (wrap the network: sde_lab.Model(net, VPSDE(), target='eps')), "
                             f"got {type(model).__name__} without .path")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.dist: DistInfo = init_distributed(self.device)
        self.workdir = Path(workdir) if workdir is not None else None
        self.progress, self.seed = progress, int(seed)
        self.global_batch = _positive_int("batch_size", batch_size)
        if self.global_batch % self.dist.world:
            raise ValueError(
                f"batch_size={self.global_batch} (the global batch) must be a positive multiple of the number of "
                f"processes ({self.dist.world})"
            )
        self.snapshot_freq = _positive_int("snapshot_freq", snapshot_freq, zero_ok=True)
        self.log_freq = _positive_int("log_freq", log_freq)
        self.sample_freq = _positive_int("sample_freq", sample_freq, zero_ok=True)
        self.keep_checkpoints = _positive_int("keep_checkpoints", keep_checkpoints, zero_ok=True)
        self.warmup = _positive_int("warmup", warmup, zero_ok=True)
        self.grad_clip = float(grad_clip)
        self.tensorboard, self.sample_fn, self.n_grid_samples = bool(tensorboard), sample_fn, int(n_grid_samples)
        self.config_json = json.dumps(config if config is not None else {}, default=lambda o: list(o) if isinstance(o, (tuple, set)) else str(o))
        self.n_iters = None if n_iters is None else _positive_int("n_iters", n_iters)
        if resume not in (True, False, "auto"):
            raise ValueError(f"resume must be True, False or 'auto', got {resume!r}")
        self._lock: WorkdirLock | None = None
        self.notes: list[str] = []
        if self.workdir is not None:
            resume = self._claim(resume, bool(overwrite))

        self.model = model.to(self.device)
        self.objective = objective
        self.ema = ema if ema is not None else EMA(self.model, 0.9999)
        self._param_list = list(self.model.parameters())
        self.optimizer = optimizer if optimizer is not None else make_optimizer(self._param_list, lr=lr)
        self._base_lrs = [float(g.get("initial_lr", g["lr"])) for g in self.optimizer.param_groups]
        self.step_count = 0
        self.last_good: Path | None = None
        self.data_range: tuple[float, float] | None = None
        self._range: torch.Tensor | None = None
        if resume and self.workdir is not None:
            found = self._resume_point()
            if found is not None:
                self.load_state_dict(load_checkpoint(found, map_location=self.device))
                self.last_good = found

        self.num_classes = int(getattr(model, "num_classes", 0) or 0)
        self.label_dropout = float(label_dropout) if self.num_classes else 0.0
        if not 0.0 <= self.label_dropout <= 1.0:
            raise ValueError(f"label_dropout must lie in [0, 1], got {label_dropout}")
        self.batches = BatchStream(data, self.global_batch, self.seed, self.dist.rank, self.dist.world, int(num_workers),
                                   labels=self.num_classes > 0, random_flip=random_flip)
        self.expected_shape = tuple(shape) if shape is not None else None
        self.shape: tuple[int, ...] | None = self.expected_shape

        self.amp = bool(bf16)
        loss_module: nn.Module = _LossModule(self.model, self.objective)
        if self.dist.enabled:
            loss_module = nn.parallel.DistributedDataParallel(
                loss_module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if compile:  # inductor: Triton on CUDA, a C++ compiler on CPU
            loss_module = torch.compile(loss_module)
        self.loss_module = loss_module
        self._stop_signal: int | None = None
        self._stop_agreed = False

    # --- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step_count,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data": self.batches.position(self.step_count) if hasattr(self, "batches") else {},
            "config": self.config_json,
            "world_size": self.dist.world,
            "data_range": self._data_range(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"the checkpoint in {self.workdir} does not match this model ({e}); use a fresh --workdir or the original config"
            ) from None
        self.step_count = int(state["step"])
        r = state.get("data_range")
        if r is not None:
            self._range = torch.tensor([-float(r[0]), float(r[1])], device=self.device)

    def _data_range(self) -> list[float] | None:
        """``[min, max]`` over every training value seen so far (recorded in the checkpoint; ``log_likelihood``
        warns on data far outside it)."""
        if self._range is None:
            return None
        lo, hi = self._range.tolist()
        return [-lo, hi]

    # --- the workdir ----------------------------------------------------------------------------
    def _claim(self, resume, overwrite: bool):
        """Rank 0 takes the workdir (:func:`sde_lab.workdir.claim_workdir`); every rank learns the outcome."""
        error, mode = None, "fresh"
        if self.dist.rank == 0:
            try:
                mode, self._lock, self.notes = claim_workdir(
                    self.workdir, config=json.loads(self.config_json), seed=self.seed, resume=resume, overwrite=overwrite)
            except OutputError as e:
                error = str(e)
        if self.dist.enabled:
            box = [error, mode]
            dist.broadcast_object_list(box, src=0)
            error, mode = box
        if error is not None:
            raise OutputError(error)
        for note in self.notes:
            print(note, file=sys.stderr)
        return mode == "resume"

    def _resume_point(self) -> Path | None:
        """The checkpoint to resume from: ``latest``, or the newest one when ``latest`` points at an older one."""
        from .checkpoint import checkpoint_steps

        found = latest_checkpoint(self.workdir)
        steps = checkpoint_steps(self.workdir / "checkpoints")
        if found is not None and steps and found.name != f"checkpoint_{steps[-1]}.pt":
            newest = self.workdir / "checkpoints" / f"checkpoint_{steps[-1]}.pt"
            if self.dist.rank == 0:
                print(f"note: {self.workdir}/checkpoints/latest names {found.name}, but {newest.name} is newer "
                      f"(a run stopped between writing it and updating latest); resuming from {newest.name}", file=sys.stderr)
            found = newest
        return found

    def close(self) -> None:
        """Release the workdir's lock (done at the end of :meth:`fit`)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def save(self) -> Path | None:
        """Checkpoint on rank 0 (other ranks return ``None``); nothing without a workdir."""
        path = None
        if self.dist.rank == 0 and self.workdir is not None:
            path = save_checkpoint(self.workdir, self.state_dict(), keep=self.keep_checkpoints)
            self.last_good = path
        if self.dist.enabled:
            dist.barrier()
        return path

    # --- one update ---------------------------------------------------------------------------
    def lr(self, step: int) -> float:
        """Linear warm-up to the base rate over ``warmup`` steps (score_sde ``optimization_manager``), group 0."""
        return self._lr_factor(step) * self._base_lrs[0]

    def _lr_factor(self, step: int) -> float:
        return min((step + 1) / self.warmup, 1.0) if self.warmup > 0 else 1.0

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
        if self.shape is None:
            self.shape = tuple(x.shape[1:])
        elif tuple(x.shape[1:]) != self.shape:
            if self.expected_shape is not None:
                raise ValueError(
                    f"the data has samples of shape {tuple(x.shape[1:])} but the config expects {self.expected_shape} "
                    f"(config.data.dim or num_channels/image_size); fix config.data or the dataset"
                )
            raise ValueError(f"the data changed sample shape from {self.shape} to {tuple(x.shape[1:])} at step {step}")
        x = x.to(self.device, torch.float32, non_blocking=True)
        with torch.no_grad():
            r = torch.stack([-x.min(), x.max()])
            self._range = r if self._range is None else torch.maximum(self._range, r)
        return x, y

    def step(self) -> tuple[float, float]:
        """One optimisation step at ``self.step_count``; returns the global mean loss and the gradient norm."""
        step = self.step_count
        x0, y = self._batch(step)
        g = torch.Generator(self.device).manual_seed(step_seed(self.seed, step, STREAM_NOISE))
        draws = self.objective.draw(self.path, self.global_batch, self.shape, g, self.device)
        drop = None
        if y is not None:  # label dropout (Ho & Salimans 2022): the same net learns s(x, t, ∅)
            drop = torch.rand(self.global_batch, generator=g, device=g.device).to(self.device) < self.label_dropout
        lo = self.dist.rank * x0.shape[0]
        draws = {k: v[lo : lo + x0.shape[0]] for k, v in draws.items()}
        if y is not None:
            y = torch.where(drop[lo : lo + x0.shape[0]], torch.full_like(y, self.num_classes), y)
        self.optimizer.zero_grad(set_to_none=True)
        with seeded(step_seed(self.seed, step, STREAM_MODULE + self.dist.rank), self.device):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss = self.loss_module(x0, draws, y).mean()
            loss.backward()
        factor = self._lr_factor(step)
        for group, base in zip(self.optimizer.param_groups, self._base_lrs):
            group["lr"] = base * factor
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
        self._stop_agreed = stop > 0  # every rank sees the same all-reduced flag and stops at the same step
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
        """Train until ``n_iters`` total steps (default: the trainer's ``n_iters``), or a stop signal.

        A checkpoint is written every ``snapshot_freq`` steps and at the end (unless ``final_checkpoint=False``;
        a signal always saves). Returns the EMA model (a copy, in eval mode) and the loss log.
        """
        if n_iters is None:
            if self.n_iters is None:
                raise ValueError("fit() needs n_iters, the total number of training steps (or Trainer(..., n_iters=...))")
            n_iters = self.n_iters
        n_iters = _positive_int("n_iters", n_iters)
        rank0 = self.dist.rank == 0
        if rank0 and self.workdir is not None and self._lock is None:
            self._lock = WorkdirLock(self.workdir).acquire()
        self._stop_signal, self._stop_agreed = None, False
        self.model.train()
        writer = _tensorboard(self.workdir) if rank0 and self.tensorboard and self.workdir is not None else None
        from tqdm.auto import tqdm

        bar = tqdm(total=n_iters, initial=self.step_count, disable=not (self.progress and rank0), desc="train", dynamic_ncols=True)
        losses: list[tuple[int, float]] = []
        run_mean, n_mean, interrupted, path = 0.0, 0, False, None
        try:
            with self._signals(), _frozen_heap():
                while self.step_count < n_iters:
                    loss, gn = self.step()
                    run_mean, n_mean = run_mean + loss, n_mean + 1
                    bar.update(1)
                    s = self.step_count
                    if s % self.log_freq == 0 or s == n_iters:
                        avg = run_mean / n_mean
                        losses.append((s, avg))
                        bar.set_postfix(loss=f"{avg:.4g}", lr=f"{self.lr(s - 1):.2g}")
                        if writer is not None:
                            writer.add_scalar("train/loss", avg, s)
                            writer.add_scalar("train/grad_norm", gn, s)
                            writer.add_scalar("train/lr", self.lr(s - 1), s)
                        run_mean, n_mean = 0.0, 0
                    if self.snapshot_freq > 0 and s % self.snapshot_freq == 0 and s < n_iters:
                        self.save()
                    if rank0 and writer is not None and self.sample_fn is not None and self.sample_freq > 0 and s % self.sample_freq == 0:
                        self._sample_grid(writer, s)
                    if self._stop_agreed:
                        interrupted = True
                        break
            path = self.save() if (final_checkpoint or interrupted) else None
        finally:
            bar.close()
            if writer is not None:
                writer.close()
            self.close()
        if interrupted and rank0:
            print(f"stopped by signal at step {self.step_count}; checkpoint saved to {path}; continue with resume", file=sys.stderr)
        import copy

        ema_model = copy.deepcopy(self.model)
        self.ema.copy_to(ema_model)
        return TrainResult(ema_model.eval().requires_grad_(False), self.step_count, losses, interrupted, path)

    def _sample_grid(self, writer, step: int) -> None:
        """Log EMA samples: a scatter plot for 2-D data, an image grid for images."""
        g = torch.Generator().manual_seed(step_seed(self.seed, step, STREAM_GRID))
        with self.ema.average_of(self.model):
            self.model.eval()
            x = self.sample_fn(self.model, self.n_grid_samples, g)
        self.model.train()
        x = x.detach().float().cpu()
        if x.ndim == 2:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(4, 4))
            ax.scatter(x[:, 0], x[:, 1], s=2)
            writer.add_figure("samples", fig, step)
            plt.close(fig)
        elif x.ndim == 4:
            import torchvision

            lo, hi = float(x.min()), float(x.max())
            grid = torchvision.utils.make_grid(((x - lo) / max(hi - lo, 1e-8)).clamp(0, 1), nrow=int(math.sqrt(len(x))))
            writer.add_image("samples", grid, step)


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
