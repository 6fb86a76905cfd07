"""Intra-op threads for a small model, alone and next to another busy job: training steps per second.

    python experiments/threads_bench.py [--seconds 6] [--out figures/threads.json]

Trains the 2-D toy model (``configs/vp/toy2d.py``, the residual MLP) with 1 thread and with all cores,
first on an idle machine, then while another process keeps every core busy (a NumPy/PyTorch loop, as a
second training job would). Reported as steps/s and as the ratio to the one-thread run in the same
setting (same run, so machine noise cancels). This is what the CLI's default (one thread below 1M
parameters, ``sde_lab/cli/_common.py``) rests on.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _busy(stop, threads):
    torch.set_num_threads(threads)
    a = torch.randn(256, 256)
    while not stop.is_set():
        a = torch.tanh(a @ a) * 0.5


def steps_per_second(threads: int, seconds: float) -> float:
    from sde_lab.config import apply_overrides, build_trainer, load_config

    torch.set_num_threads(threads)
    config = load_config(ROOT / "configs" / "vp" / "toy2d.py")
    apply_overrides(config, ["device='cpu'", "training.tensorboard=False", "training.n_iters=1000000"])
    trainer = build_trainer(config, None, progress=False)
    for _ in range(20):  # warm-up
        trainer.step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        trainer.step()
        n += 1
    return n / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="timed seconds per cell (default 6)")
    ap.add_argument("--out", default=str(ROOT / "figures" / "threads.json"))
    args = ap.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = []
    for setting in ("idle", "busy"):
        stop, proc = None, None
        if setting == "busy":
            ctx = mp.get_context("spawn")
            stop = ctx.Event()
            proc = ctx.Process(target=_busy, args=(stop, cores), daemon=True)
            proc.start()
            time.sleep(2.0)
        try:
            for threads in sorted({1, cores}):
                rows.append({"setting": setting, "threads": threads, "steps_per_s": steps_per_second(threads, args.seconds)})
        finally:
            if proc is not None:
                stop.set()
                proc.join(10)
    for r in rows:
        one = next(q for q in rows if q["setting"] == r["setting"] and q["threads"] == 1)
        r["ratio_to_one_thread"] = r["steps_per_s"] / one["steps_per_s"]
    print(f"toy2d MLP training on {cores} cores ({torch.__version__})")
    print(f"{'machine':8s} {'threads':>7s} {'steps/s':>9s} {'vs 1 thread':>12s}")
    for r in rows:
        print(f"{r['setting']:8s} {r['threads']:7d} {r['steps_per_s']:9.1f} {r['ratio_to_one_thread']:11.2f}x")
    result = {"cores": cores, "seconds": args.seconds, "torch": torch.__version__, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"-> {out}")
    return result


if __name__ == "__main__":
    main()
