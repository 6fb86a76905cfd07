"""Throughput of sharded sampling: 2 single-threaded torchrun processes against 1 single-threaded process.

    python experiments/sharded_bench.py [--num-samples 4000] [--steps 400] [--repeats 2]

Runs ``sde-lab sample`` on the same job (oracle ``gmm16`` under VP, PC sampler, chunks of 250) once as a single
process and once under ``torchrun --standalone --nproc_per_node 2``, each with one intra-op thread, alternating
``--repeats`` times; the time is the sampling wall time the command reports (after start-up and model loading,
including the shard writes and the final join). Prints samples/s and the ratio (same run, so machine noise
largely cancels) and checks that both runs wrote the same samples. Writes ``figures/sharded_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run(cmd, env) -> float:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-2000:])
    return float(re.search(r"time=([0-9.]+)s", r.stdout).group(1))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-samples", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "figures" / "sharded_bench.json"))
    args = ap.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    job = ["sample", "--target", "gmm16", "--sde", "vp", "--solver", "pc", "--steps", str(args.steps),
           "--num-samples", str(args.num_samples), "--batch-size", "250", "--quiet", "--threads", "1"]
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    times = {"1 process": [], "2 processes": []}
    tmp = Path(tempfile.mkdtemp(prefix="sharded_bench_"))
    try:
        for r in range(args.repeats):
            for name, prefix in (("1 process", [sys.executable, "-m", "sde_lab"]),
                                 ("2 processes", [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "sde_lab"])):
                out = tmp / f"{name.replace(' ', '_')}_{r}"
                times[name].append(run(prefix + job + ["--out", str(out)], env))
        same = np.array_equal(np.load(tmp / "1_process_0" / "samples.npz")["samples"],
                              np.load(tmp / "2_processes_0" / "samples.npz")["samples"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = {k: min(v) for k, v in times.items()}
    rows = {k: {"seconds": v, "best_seconds": best[k], "samples_per_s": args.num_samples / best[k]} for k, v in times.items()}
    ratio = best["1 process"] / best["2 processes"]
    print(f"{args.num_samples} samples, PC {args.steps} steps on gmm16 (VP), one thread per process, {os.cpu_count()} cores")
    print(f"{'':12s} {'best s':>8s} {'samples/s':>10s}")
    for k, r in rows.items():
        print(f"{k:12s} {r['best_seconds']:8.2f} {r['samples_per_s']:10.1f}")
    print(f"throughput ratio 2 processes / 1 process: {ratio:.2f}x; identical samples: {same}")
    result = {"num_samples": args.num_samples, "steps": args.steps, "rows": rows, "ratio": ratio, "identical": bool(same),
              "cores": os.cpu_count()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"-> {args.out}")
    return result


if __name__ == "__main__":
    main()
