"""FID sanity check: two halves of the MNIST test set score near zero, and the score rises
monotonically with a graded corruption (additive Gaussian noise, Gaussian blur) of one half.

FID-LeNet (Fréchet distance on the penultimate features of a small classifier trained on MNIST; the
classifier is trained here if none exists at its default path) on up to 5,000 vs 5,000 images (``--lenet-n``), and the
Inception FID on a small subset (``--inception-n`` per side; ~0.25 s/image on CPU). With few images
the Inception FID carries a large positive bias (2048-D covariances from ~100 samples), so only its
monotone trend is meaningful. Writes figures/fid_sanity.{json,png}.

    .venv/bin/python experiments/fid_sanity.py [--inception-n 100] [--no-inception] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torchvision.transforms.functional as TF

from sde_lab.classifier import Classifier, default_classifier_path, evaluate_classifier, load_classifier, save_classifier, train_classifier
from sde_lab.data import get_dataset
from sde_lab.metrics import ClassifierFeatures, InceptionFeatures, find_inception_weights, frechet_distance_from_features

FIG = Path(__file__).resolve().parents[1] / "figures"
NOISE = [0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5]
BLUR = [0.0, 0.5, 0.75, 1.0, 1.5, 2.0]
INCEPTION_LEVELS = {"noise": [0.0, 0.1, 0.3], "blur": [0.0, 1.0, 2.0]}  # level 0 is computed once


def corrupt(x: torch.Tensor, kind: str, level: float, generator: torch.Generator) -> torch.Tensor:
    if level == 0:
        return x
    if kind == "noise":
        return (x + level * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    k = 2 * int(3 * level + 0.5) + 1
    return TF.gaussian_blur(x, [k, k], [level, level])


def mnist_classifier(epochs: int, width: int):
    path = default_classifier_path("mnist")
    if path.is_file():
        model, meta = load_classifier(path)
        print(f"classifier: {path} (test accuracy {meta.get('test_accuracy')})")
        return model
    print(f"training an MNIST classifier ({epochs} epochs, width {width}) -> {path}")
    torch.manual_seed(0)
    model = Classifier(1, 10, 28, width=width)
    t0 = time.perf_counter()
    train_classifier(model, get_dataset("mnist", split="train"), epochs=epochs, generator=torch.Generator().manual_seed(0))
    acc = evaluate_classifier(model, get_dataset("mnist", split="test"))
    print(f"  trained in {time.perf_counter() - t0:.0f} s, test accuracy {acc:.4f}")
    save_classifier(path, model, dataset="mnist", image_size=28, centered=False, time_conditional=False, epochs=epochs, test_accuracy={"clean": acc})
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inception-n", type=int, default=100, help="images per side for the Inception FID (default 100)")
    ap.add_argument("--no-inception", action="store_true")
    ap.add_argument("--no-lenet", action="store_true", help="only the Inception part (merged into an existing JSON)")
    ap.add_argument("--lenet-n", type=int, default=5000, help="images per side for FID-LeNet (default 5000, max 5000)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    x = get_dataset("mnist", split="test").x
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    a, b = x[perm[:5000]], x[perm[5000:]]
    out_json = FIG / "fid_sanity.json"
    results: dict = json.loads(out_json.read_text()) if out_json.is_file() else {}
    results.setdefault("fid_lenet", {})
    results.setdefault("fid_inception", {})
    results["levels"] = {"noise": NOISE, "blur": BLUR}
    if not args.no_lenet:
        lenet = ClassifierFeatures(mnist_classifier(args.epochs, args.width))
        nl = min(args.lenet_n, 5000)
        fa, fb0 = lenet(a[:nl], progress=True), lenet(b[:nl], progress=True)
        results["n_lenet"] = nl
        for kind, levels in (("noise", NOISE), ("blur", BLUR)):
            g = torch.Generator().manual_seed(1)
            results["fid_lenet"][kind] = [
                frechet_distance_from_features(fa, fb0 if lv == 0 else lenet(corrupt(b[:nl], kind, lv, g), progress=True)) for lv in levels
            ]
        results["runtime_lenet_s"] = time.perf_counter() - start
    use_inception = not args.no_inception and find_inception_weights() is not None
    if use_inception:
        t0 = time.perf_counter()
        inc = InceptionFeatures(batch_size=25)
        m = args.inception_n
        fia = inc(a[:m], progress=True)
        f0 = inc(b[:m], progress=True)
        count = 2 * m
        for kind, levels in INCEPTION_LEVELS.items():
            g = torch.Generator().manual_seed(1)
            vals = {}
            for lv in levels:
                fb = f0 if lv == 0 else inc(corrupt(b[:m], kind, lv, g), progress=True)
                count += 0 if lv == 0 else m
                vals[str(lv)] = frechet_distance_from_features(fia, fb)
            results["fid_inception"][kind] = vals
        results["n_inception"] = m
        results["inception_images_per_s"] = count / (time.perf_counter() - t0)
        results["runtime_inception_s"] = time.perf_counter() - t0
    n_inc = results.get("n_inception", args.inception_n)

    # merge with results another run (e.g. --no-lenet in parallel) wrote meanwhile
    if out_json.is_file():
        latest = json.loads(out_json.read_text())
        for key in ("fid_lenet", "fid_inception"):
            latest.setdefault(key, {}).update(results[key])
        for key, value in results.items():
            if key not in ("fid_lenet", "fid_inception"):
                latest[key] = value
        results = latest
    results["monotone_lenet"] = {k: all(u < w for u, w in zip(v, v[1:])) for k, v in results["fid_lenet"].items()}
    if results["fid_inception"]:
        results["monotone_inception"] = {
            k: all(u < w for u, w in zip(list(v.values()), list(v.values())[1:])) for k, v in results["fid_inception"].items()
        }
    results["runtime_s"] = time.perf_counter() - start
    FIG.mkdir(exist_ok=True)
    out_json.write_text(json.dumps(results, indent=2, default=str))

    n_len = results.get("n_lenet")
    print(f"\n{'corruption':>16s} {f'FID-LeNet ({n_len} vs {n_len})':>26s} {f'Inception FID ({n_inc} vs {n_inc})':>28s}")
    for kind, levels in (("noise", NOISE), ("blur", BLUR)):
        lenet_vals = results["fid_lenet"].get(kind, [None] * len(levels))
        for lv, v in zip(levels, lenet_vals):
            inc_v = results["fid_inception"].get(kind, {}).get(str(lv))
            print(f"{kind + ' ' + format(lv, 'g'):>16s} {'' if v is None else format(v, '.4f'):>26s} {'' if inc_v is None else format(inc_v, '.2f'):>28s}")
    print(f"monotone (FID-LeNet): {results['monotone_lenet']}")
    if results["fid_inception"]:
        print(f"monotone (Inception FID): {results['monotone_inception']}; {results.get('inception_images_per_s', float('nan')):.2f} images/s")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (kind, levels, xlabel) in zip(axes, (("noise", NOISE, "added Gaussian noise std"), ("blur", BLUR, "Gaussian blur sigma (pixels)"))):
        if kind in results["fid_lenet"]:
            ax.plot(levels, results["fid_lenet"][kind], "o-", label=f"FID-LeNet ({results.get('n_lenet')} vs {results.get('n_lenet')})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("FID-LeNet")
        ax.set_yscale("symlog", linthresh=0.1)
        if kind in results["fid_inception"]:
            ax2 = ax.twinx()
            d = results["fid_inception"][kind]
            ax2.plot([float(k) for k in d], list(d.values()), "s--", color="C1", label=f"Inception FID ({n_inc} vs {n_inc})")
            ax2.set_ylabel("Inception FID", color="C1")
            ax2.legend(loc="lower right", fontsize=8)
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title(f"MNIST test half A vs corrupted half B: {kind}")
    fig.tight_layout()
    fig.savefig(FIG / "fid_sanity.png", dpi=120)
    print(f"wrote {FIG / 'fid_sanity.png'} and .json; runtime {results['runtime_s']:.0f} s")


if __name__ == "__main__":
    main()
