"""Sharded, resumable sampling: any number of processes (``torchrun``, gloo or nccl), the same samples.

The sample indices ``0 .. n−1`` are cut into chunks of ``chunk`` consecutive indices; chunk ``k`` is drawn
with randomness that depends only on ``(seed, k)`` (``noise="batch"``: one generator seeded by the pair) or
only on ``(seed, i)`` for every sample ``i`` (``noise="per_sample"``: :class:`~sde_lab.noise.PerSampleNoise`,
which also makes the set independent of ``chunk``). Chunk ``k`` goes to rank ``k mod W``, so 1, 2 or 8
processes draw bitwise the same set. Each finished chunk is written at once, atomically, to
``out/shards/<lo>-<hi>.npz`` (the indices and the samples: uint8 pixels for images, float32 otherwise), next
to ``out/manifest.json`` (what is being drawn: source, solver and options, seed, n, chunk, noise). A re-run
with the same arguments draws only the missing chunks (a run killed at sample 40 000 keeps its first 40 000);
one with other arguments is refused, naming the differences. When every chunk exists, rank 0 joins them
into ``out/samples.npz``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .workdir import OutputError, atomic_write, config_differences, remove_stale_temps

__all__ = ["ShardPlan", "chunk_seed", "sample_sharded", "read_samples", "MANIFEST", "to_pixels"]

MANIFEST = "manifest.json"
SHARDS = "shards"
FORMAT = "sde_lab.samples/1"


def chunk_seed(seed: int, k: int) -> int:
    """The seed of chunk ``k`` (splitmix64 of the pair): chunks never share a stream."""
    from .training.rng import step_seed

    return step_seed(int(seed), int(k), 7)


def to_pixels(x01: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as score_sde's evaluation writes them: ``clip(x * 255, 0, 255)`` truncated to integers."""
    return (x01.float() * 255.0).clamp(0, 255).to(torch.uint8)


class ShardPlan:
    """The chunks of a run, which of them exist in ``out``, and which this rank draws."""

    def __init__(self, out, n: int, chunk: int, rank: int = 0, world: int = 1):
        if n < 1 or chunk < 1:
            raise ValueError(f"n and chunk must be positive, got n={n}, chunk={chunk}")
        self.out, self.n, self.chunk, self.rank, self.world = Path(out), int(n), int(chunk), int(rank), int(world)
        self.chunks = [(lo, min(lo + self.chunk, self.n)) for lo in range(0, self.n, self.chunk)]

    def shard_path(self, lo: int, hi: int) -> Path:
        return self.out / SHARDS / f"{lo:09d}-{hi:09d}.npz"

    def missing(self) -> list[int]:
        return [k for k, (lo, hi) in enumerate(self.chunks) if not self.shard_path(lo, hi).is_file()]

    def mine(self, todo: list[int]) -> list[int]:
        return [k for k in todo if k % self.world == self.rank]


def _check_manifest(out: Path, fingerprint: dict, overwrite: bool, final: str = "samples.npz") -> str:
    """``"fresh"``, ``"resume"`` or ``"done"``; refuses a folder holding another run's samples."""
    man = out / MANIFEST
    if overwrite and out.is_dir():
        for p in [man, out / final, out / "samples.png"]:
            p.unlink(missing_ok=True)
        if (out / SHARDS).is_dir():
            for p in (out / SHARDS).glob("*.npz"):
                p.unlink()
        return "fresh"
    if man.is_file():
        try:
            old = json.loads(man.read_text())
        except ValueError:
            raise OutputError(f"{man} is damaged (not JSON); pass --overwrite to start the samples in {out} afresh") from None
        diff = config_differences(old.get("run", {}), fingerprint, free=())
        if diff:
            raise OutputError(f"--out {out} holds samples of another run ({'; '.join(diff[:6])}); re-run with the same "
                              "arguments to resume it, pass --overwrite to replace it, or choose another --out")
        return "done" if (out / final).is_file() else "resume"
    if (out / final).is_file() or (out / "samples.png").is_file():
        raise OutputError(f"--out {out} already holds {final} / samples.png (of a run without a manifest); "
                          "pass --overwrite to replace them or choose another --out")
    return "fresh"


def sample_sharded(draw: Callable[[int, int], tuple[torch.Tensor, int]], *, out, n: int, chunk: int, fingerprint: dict,
                   pixels: Callable[[torch.Tensor], torch.Tensor] | None = None, overwrite: bool = False,
                   progress: bool = True, log: Callable[[str], None] | None = None, final: str = "samples.npz",
                   dtype=np.float32, desc: str = "sample") -> dict[str, Any]:
    """Draw samples ``0 .. n−1`` in chunks across the ranks of the process group (if any) into ``out``.

    ``draw(lo, hi) -> (samples, nfe)`` draws samples ``lo .. hi−1`` (its randomness a function of the run's
    seed and ``lo`` only); ``pixels(x)`` turns image samples into uint8 (``None``: keep ``dtype``). Returns a
    summary (``mode``, chunks drawn here, NFE, seconds); rank 0 writes ``out/<final>`` at the end. The same
    machinery stores per-example likelihoods (``sde-lab likelihood --out``).
    """
    import torch.distributed as dist

    ddp = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    out = Path(out)
    say = log or (lambda m: print(f"[rank {rank}/{world}] {m}", file=sys.stderr, flush=True))
    error, mode = None, "fresh"
    if rank == 0:
        try:
            mode = _check_manifest(out, fingerprint, overwrite, final)
            (out / SHARDS).mkdir(parents=True, exist_ok=True)
            remove_stale_temps(out / SHARDS)
            if mode == "fresh":
                record = {"format": FORMAT, "run": fingerprint, "n": n, "chunk": chunk,
                          "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
                atomic_write(out / MANIFEST, lambda f: f.write(json.dumps(record, indent=1).encode()))
        except OutputError as e:
            error = str(e)
    if ddp:
        box = [error, mode]
        dist.broadcast_object_list(box, src=0)
        error, mode = box
    if error is not None:
        raise OutputError(error)
    plan = ShardPlan(out, n, chunk, rank, world)
    if mode == "done":
        if rank == 0:
            say(f"{out / final} is complete ({n} items of this run); nothing to do (--overwrite redoes them)")
        return {"mode": "done", "drawn": 0, "nfe": [], "seconds": 0.0}
    todo = plan.missing()
    if ddp:  # every rank plans from the same listing, taken before anyone writes
        box = [todo]
        dist.broadcast_object_list(box, src=0)
        todo = box[0]
    if mode == "resume" and rank == 0:
        say(f"resuming: {len(plan.chunks) - len(todo)} of {len(plan.chunks)} chunks already in {out / SHARDS}")
    mine = plan.mine(todo)
    from tqdm.auto import tqdm

    done_before = sum(plan.chunks[k][1] - plan.chunks[k][0] for k in range(len(plan.chunks)) if k not in set(todo))
    bar = tqdm(total=n, initial=done_before, disable=not (progress and rank == 0), desc=f"{desc} ({world} proc)",
               unit="sample", dynamic_ncols=True, file=sys.stderr)
    rounds = math.ceil(len(todo) / world) if todo else 0
    nfes, start = [], time.perf_counter()
    for r in range(rounds):
        k = todo[r * world + rank] if r * world + rank < len(todo) else None
        count = 0
        if k is not None:
            lo, hi = plan.chunks[k]
            x, nfe = draw(lo, hi)
            x = x.detach().cpu()
            data = pixels(x).numpy() if pixels is not None else x.numpy().astype(dtype)
            path = plan.shard_path(lo, hi)
            atomic_write(path, lambda f: np.savez(f, indices=np.arange(lo, hi, dtype=np.int64), samples=data, nfe=nfe))
            nfes.append(int(nfe))
            count = hi - lo
        if ddp:
            c = torch.tensor([count], dtype=torch.int64)
            dist.all_reduce(c)
            count = int(c)
        bar.update(count)
    bar.close()
    seconds = time.perf_counter() - start
    if ddp:
        dist.barrier()
    if rank == 0:
        missing = plan.missing()
        if missing:
            raise OutputError(f"{len(missing)} chunks are missing in {out / SHARDS} after the run (another process removed "
                              "them?); run the same command again to draw them")
        x, idx = read_samples(out)
        all_nfe = sorted({int(np.load(f)["nfe"]) for f in (out / SHARDS).glob("*.npz")})
        atomic_write(out / final, lambda f: np.savez_compressed(
            f, samples=x, indices=idx, nfe=np.array(all_nfe[0] if len(all_nfe) == 1 else all_nfe), run=json.dumps(fingerprint)))
    if ddp:
        dist.barrier()
    return {"mode": mode, "drawn": len(mine), "nfe": nfes, "seconds": seconds, "world": world}


def read_samples(out) -> tuple[np.ndarray, np.ndarray]:
    """All shards of ``out`` joined in index order: ``(samples, indices)``; duplicates or gaps are an error."""
    files = sorted((Path(out) / SHARDS).glob("*.npz"))
    if not files:
        raise OutputError(f"no shards in {Path(out) / SHARDS}")
    parts, idx = [], []
    for f in files:
        with np.load(f) as z:
            parts.append(z["samples"])
            idx.append(z["indices"])
    indices = np.concatenate(idx)
    order = np.argsort(indices, kind="stable")
    indices = indices[order]
    if len(np.unique(indices)) != len(indices) or indices[0] != 0 or indices[-1] != len(indices) - 1:
        raise OutputError(f"the shards in {Path(out) / SHARDS} do not cover 0..n-1 exactly once; pass --overwrite to redraw")
    return np.concatenate(parts)[order], indices
