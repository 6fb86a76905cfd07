"""Training checkpoints on disk: atomic writes, a ``latest`` pointer, clear errors for missing or corrupt files.

``workdir/checkpoints/checkpoint_<step>.pt`` is written atomically (temporary file + ``os.replace``) and
``workdir/checkpoints/latest`` names the newest one. A checkpoint is a dict with ``format``
(:data:`CHECKPOINT_FORMAT`), ``step``, ``model``, ``ema``, ``optimizer``, ``data`` (the data-order
position), ``config`` (JSON, or ``"{}"`` for a run built from objects) and ``world_size``; it is read with
``torch.load(weights_only=True)``: tensors and plain containers, no arbitrary code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "save_checkpoint",
    "latest_checkpoint",
    "resolve_checkpoint",
    "load_checkpoint",
    "checkpoint_steps",
]

CHECKPOINT_FORMAT = "sde_lab.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not match the model it is loaded into; the message
    says what to do."""


_CKPT_RE = re.compile(r"^checkpoint_(\d+)\.pt$")


def _ckpt_dir(workdir) -> Path:
    return Path(workdir) / "checkpoints"


def atomic_write(path, write: Callable[[Any], None]) -> Path:
    """Write ``path`` through ``write(binary file)`` into ``.<name>.tmp<pid>`` beside it, fsync, then ``os.replace``:
    a crash leaves the old file or the new one, never half of one (:func:`sde_lab.workdir.remove_stale_temps`
    deletes what a killed process left)."""
    path = Path(path)
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
    return path


_atomic_write_bytes = atomic_write


def checkpoint_steps(d: Path) -> list[int]:
    """Steps of the ``checkpoint_<step>.pt`` files in folder ``d``, sorted."""
    return sorted(int(m.group(1)) for p in d.glob("checkpoint_*.pt") if (m := _CKPT_RE.match(p.name))) if d.is_dir() else []


def save_checkpoint(workdir, state: dict[str, Any], *, keep: int = 0) -> Path:
    """Write ``checkpoint_<step>.pt`` atomically, point ``latest`` at it, keep the newest ``keep`` (0 = all)."""
    d = _ckpt_dir(workdir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"checkpoint_{int(state['step'])}.pt"
    _atomic_write_bytes(path, lambda f: torch.save(state, f))
    _atomic_write_bytes(d / "latest", lambda f: f.write(path.name.encode()))
    if keep and keep > 0:
        for old in checkpoint_steps(d)[:-keep]:
            (d / f"checkpoint_{old}.pt").unlink(missing_ok=True)
    return path


def latest_checkpoint(workdir) -> Path | None:
    """The checkpoint named by ``workdir/checkpoints/latest``, else the highest step found; ``None`` if none."""
    d = _ckpt_dir(workdir)
    pointer = d / "latest"
    if pointer.is_file():
        p = d / pointer.read_text().strip()
        if p.is_file():
            return p
    steps = checkpoint_steps(d)
    return d / f"checkpoint_{steps[-1]}.pt" if steps else None


def resolve_checkpoint(path_or_workdir) -> Path:
    """A checkpoint file: the path itself, or a workdir's latest."""
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


def check_map_location(map_location) -> None:
    """A CUDA ``map_location`` on a machine without CUDA is an error about the device, not the file."""
    if map_location is None or callable(map_location) or isinstance(map_location, dict):
        return
    dev = torch.device(map_location)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"cannot load onto {dev}: CUDA is not available on this machine (use --device cpu)")


def describe_load_error(p: Path, e: Exception) -> str:
    """One line on why ``torch.load`` failed on ``p`` and what to do (never torch's ``weights_only=False`` advice)."""
    text = str(e)
    if "CUDA" in text and "deserialize" in text:
        return f"checkpoint {p} holds CUDA tensors and CUDA is not available here; load it with --device cpu"
    if "weights only" in text.lower() or "weights_only" in text:
        import zipfile

        if zipfile.is_zipfile(p) or "Unsupported global" in text or "GLOBAL" in text:
            return (f"{p} contains Python objects other than tensors and plain containers, which sde_lab does not "
                    "unpickle (they could run code); it is not an sde_lab checkpoint")
        first = "not a PyTorch file"
    else:
        first = f"{type(e).__name__}: {text.splitlines()[0][:160] if text else ''}"
    size = p.stat().st_size if p.exists() else 0
    what = "empty (0 bytes)" if size == 0 else f"corrupt, truncated or not a checkpoint ({first})"
    others = [s for s in checkpoint_steps(p.parent) if p.name != f"checkpoint_{s}.pt"] if p.parent.name == "checkpoints" else []
    hint = (f"; older checkpoints in {p.parent}: steps {others[-3:]} — move {p.name} away to resume from them" if others
            else "; pass a checkpoint_<step>.pt written by `sde-lab train`, or its workdir")
    return f"checkpoint {p} is {what}{hint}"


def load_checkpoint(path_or_workdir, map_location="cpu") -> dict[str, Any]:
    """Read a training checkpoint (a ``.pt`` file or a workdir: its latest); clear errors if missing/corrupt."""
    p = resolve_checkpoint(path_or_workdir)
    check_map_location(map_location)
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, not a torch file, pickle error
        raise CheckpointError(describe_load_error(p, e)) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{p} is not a sde_lab training checkpoint (format {state.get('format') if isinstance(state, dict) else type(state).__name__!r}); "
            "official score_sde checkpoints are loaded with the official-checkpoint loader instead"
        )
    return state
