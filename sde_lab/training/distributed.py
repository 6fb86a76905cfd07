"""Process groups under ``torchrun``: rank, world size and the device of this process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "resolve_device"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def resolve_device(device_pref: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """``auto`` / ``None``: CUDA (this rank's GPU) when available, else CPU; ``cuda`` without CUDA is an error."""
    pref = "auto" if device_pref is None else str(device_pref)
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {pref!r} was requested but CUDA is not available on this machine; use 'auto' or 'cpu'")
    if pref == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if pref == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(pref)


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1): nccl on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, world, local)
