"""Training, one concern per module: :mod:`~.trainer` (the loop), :mod:`~.ema`, :mod:`~.streams` (data),
:mod:`~.checkpoint` (files on disk), :mod:`~.distributed` (process groups), :mod:`~.rng` (per-step seeds).

The :class:`Trainer` takes objects — a model, an objective, data — so a user trains their own ``nn.Module``
without editing the library; building those objects from an ml-collections config is ``sde_lab.config``'s job.
"""

from .checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    checkpoint_steps,
    latest_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from .distributed import DistInfo, init_distributed, resolve_device
from .ema import EMA
from .rng import seeded, step_seed
from .streams import BatchStream
from .trainer import OPTIMIZERS, Trainer, TrainingDiverged, TrainResult, make_optimizer

__all__ = [
    "Trainer",
    "TrainResult",
    "TrainingDiverged",
    "EMA",
    "BatchStream",
    "make_optimizer",
    "OPTIMIZERS",
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "resolve_checkpoint",
    "checkpoint_steps",
    "DistInfo",
    "init_distributed",
    "resolve_device",
    "seeded",
    "step_seed",
]
