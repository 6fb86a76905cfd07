"""What every subcommand shares: the ``--device`` check, ``--threads``, ``--overwrite``."""

from __future__ import annotations

import os

import torch

from . import CLIError

# a model below this many parameters gains nothing from several intra-op threads: one thread per process
SMALL_MODEL_PARAMS = 1_000_000


def available_devices() -> list[str]:
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def check_device(name: str | None, *, default: str = "auto") -> torch.device:
    """``--device`` as a ``torch.device``; a device this machine lacks is a one-line error naming those it has."""
    name = default if name is None else str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device {name!r} is not a device name; available here: {', '.join(available_devices())}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"--device {name}: CUDA is not available on this machine; available here: "
                           f"{', '.join(available_devices())} (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CLIError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                           f"available here: {', '.join(available_devices())}")
    elif dev.type == "mps" and "mps" not in available_devices():
        raise CLIError(f"--device {name}: MPS is not available; available here: {', '.join(available_devices())}")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise CLIError(f"--device {name}: unsupported device type; available here: {', '.join(available_devices())}")
    return dev


def add_threads(p) -> None:
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="intra-op CPU threads (default: 1 for models under 1M parameters, else the cores / processes "
                        "on this node; OMP_NUM_THREADS is respected when set)")


def add_overwrite(p, what: str = "existing outputs") -> None:
    p.add_argument("--overwrite", action="store_true", help=f"replace {what} (refused by default)")


def set_threads(args, n_params: int | None) -> int:
    """Set ``torch``'s intra-op threads for this process; returns the number set.

    ``--threads N`` wins; else ``OMP_NUM_THREADS`` if the user set it; else one thread for a small model
    (several threads only add synchronisation there, and stall when other jobs share the cores), and the
    cores divided by the processes on this node (``LOCAL_WORLD_SIZE`` under torchrun) for a large one.
    """
    n = getattr(args, "threads", None)
    if n is not None:
        if n < 1:
            raise CLIError(f"--threads must be a positive integer, got {n}")
    elif os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    elif n_params is not None and n_params < SMALL_MODEL_PARAMS:
        n = 1
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        n = max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    torch.set_num_threads(int(n))
    return int(n)


def n_parameters(model) -> int:
    try:
        return sum(p.numel() for p in model.parameters())
    except AttributeError:
        return 0
