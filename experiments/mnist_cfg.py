"""Class-conditional MNIST with classifier-free guidance, and MNIST inpainting, on a CPU.

1. **Train** the class-conditional DDPM++ of ``configs/vp/mnist_cfg.py`` (labels as a learned embedding,
   label dropout 0.1: one network is ``s(x, t, y)`` and ``s(x, t, ∅)``) on the real MNIST training set with
   the library's loop, to ``--iters`` steps (resuming from ``--workdir``; an existing run is reused). The
   same model trains from the CLI: ``sde-lab train --config configs/vp/mnist_cfg.py --workdir DIR``.
2. **Judge** with a separately trained LeNet classifier (``sde-lab train-classifier --dataset mnist``; trained
   here if none is found, ~1 min): for each guidance weight ``w`` in ``--weights``, ``--n-per-class`` samples
   of every class with :class:`sde_lab.conditional.ClassifierFreeGuidance`,
   ``(1 + w) s(x, t, y) - w s(x, t, ∅)`` (Ho & Salimans 2022), drawn with DPM-Solver++(2M); the
   classifier's accuracy on them (the fraction it labels as the class asked for), its mean confidence, and
   the class histogram of unguided samples from ``s(x, t, ∅)``.
3. **Inpaint** the bottom half of ``--n-inpaint`` test digits (:func:`sde_lab.conditional.inpaint`, PC sampler,
   the model's unconditional score) and report the classifier's accuracy on the completed digits against
   the true labels, next to the same digits with the bottom half blanked (the information inpainting
   must restore) and the originals.

Writes ``figures/mnist_cfg.json``, ``figures/mnist_cfg.png`` (a row per class: w = 0 | w = 2) and
``figures/mnist_inpaint.png`` (masked | inpainted | original).

    python experiments/mnist_cfg.py --iters 8000          # the README run (training ~1 h on 2 cores, then ~10 min)
    python experiments/mnist_cfg.py --iters 30 --n-per-class 4 --n-inpaint 4 --steps 5 --inpaint-steps 10   # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--config", default=str(ROOT / "configs" / "vp" / "mnist_cfg.py"))
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "mnist_cfg"), help="training run (resumed if present)")
    ap.add_argument("--iters", type=int, default=8000, help="train to this many steps (default: 8000)")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0], help="guidance weights w")
    ap.add_argument("--n-per-class", type=int, default=100)
    ap.add_argument("--solver", default="dpm_solver_pp", help="sampler for the guided samples (default: dpm_solver_pp)")
    ap.add_argument("--steps", type=int, default=30, help="solver steps (default: 30)")
    ap.add_argument("--n-inpaint", type=int, default=200, help="test digits to inpaint (default: 200)")
    ap.add_argument("--inpaint-steps", type=int, default=500, help="PC steps for inpainting (default: 500)")
    ap.add_argument("--classifier", default=None, help="MNIST classifier (default: sde-lab train-classifier's default path)")
    ap.add_argument("--batch", type=int, default=500, help="samples per sampler call")
    ap.add_argument("--out", default=str(ROOT / "figures"))
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def train_model(config_path: str, workdir: Path, iters: int):
    from sde_lab.config import build_trainer, load_config
    from sde_lab.training import latest_checkpoint, load_checkpoint

    config = load_config(config_path)
    config.device = "cpu" if not torch.cuda.is_available() else "auto"
    found = latest_checkpoint(workdir)
    done = int(load_checkpoint(found)["step"]) if found else 0
    t0 = time.time()
    if done < iters:
        print(f"[1/3] training {config_path} from step {done} to {iters} in {workdir}", flush=True)
        build_trainer(config, workdir, resume="auto", progress=True).fit(iters)
    else:
        print(f"[1/3] reusing the run in {workdir} (step {done})", flush=True)
    return config, time.time() - t0


def get_classifier(path, seed: int):
    """``(classifier, its data range is centered, its test accuracy)``; trains one on MNIST if none is found."""
    from sde_lab.classifier import Classifier, default_classifier_path, evaluate_classifier, load_classifier, save_classifier, train_classifier
    from sde_lab.data import get_dataset

    path = Path(path) if path else default_classifier_path("mnist")
    if path.is_file():
        clf, meta = load_classifier(path)
        return clf, bool(meta.get("centered", False)), meta.get("test_accuracy", {}).get("clean"), str(path)
    print(f"      no classifier at {path}: training a LeNet on MNIST (2 epochs)", flush=True)
    train, test = get_dataset("mnist", split="train"), get_dataset("mnist", split="test")
    torch.manual_seed(seed)
    clf = Classifier(1, 10, 28)
    train_classifier(clf, train, epochs=2, generator=torch.Generator().manual_seed(seed))
    acc = evaluate_classifier(clf, test)
    save_classifier(path, clf, dataset="mnist", image_size=28, centered=False, time_conditional=False, test_accuracy={"clean": acc})
    return clf, False, acc, str(path)


@torch.no_grad()
def classify(clf, centered: bool, x: torch.Tensor) -> torch.Tensor:
    """Probabilities ``(B, 10)`` of images ``x`` in [-1, 1] (the score model's range)."""
    x = x.float().clamp(-1, 1)
    x = x if centered else (x + 1) / 2
    return torch.cat([torch.softmax(clf(b, None), 1) for b in x.split(500)])


def grid_image(x: torch.Tensor, nrow: int):
    from torchvision.utils import make_grid

    return make_grid(((x.float().clamp(-1, 1) + 1) / 2).cpu(), nrow=nrow, padding=1, pad_value=1.0)[0].numpy()


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.time()
    from sde_lab.conditional import ClassifierFreeGuidance, inpaint
    from sde_lab.data import get_dataset
    from sde_lab import sample
    from sde_lab.training import load_checkpoint, latest_checkpoint
    from sde_lab.config import load_checkpoint_score

    workdir = Path(args.workdir)
    config, train_s = train_model(args.config, workdir, args.iters)
    ckpt = latest_checkpoint(workdir)
    step = int(load_checkpoint(ckpt)["step"])
    model = load_checkpoint_score(ckpt)
    sde, K = model.sde, model.num_classes
    if K != 10:
        raise ValueError(f"{ckpt} is not a 10-class conditional model (num_classes={K}); use configs/vp/mnist_cfg.py")
    clf, centered, clf_acc, clf_path = get_classifier(args.classifier, args.seed)
    shape = (1, 28, 28)

    # --- 2. classifier-free guidance -----------------------------------------------------------
    print(f"[2/3] sampling {args.n_per_class} per class with {args.solver} ({args.steps} steps) for w in {args.weights}", flush=True)
    rows, grids = [], {}
    labels = torch.arange(10).repeat_interleave(args.n_per_class)
    for w in [None] + list(args.weights):
        t0 = time.time()
        xs = []
        for i, yb in enumerate(labels.split(args.batch)):
            g = torch.Generator().manual_seed(args.seed * 1000 + i)
            cond = None if w is None else ClassifierFreeGuidance(model, yb, w, null_label=K)
            res = sample(sde, model, (len(yb), *shape), solver=args.solver, steps=args.steps, condition=cond, generator=g)
            xs.append(res.samples.float())
        x = torch.cat(xs)
        p = classify(clf, centered, x)
        pred = p.argmax(1)
        row = {"w": w, "nfe_per_sample": res.nfe * (1 if w is None or w == 0 else 2), "seconds": round(time.time() - t0, 1),
               "finite": bool(torch.isfinite(x).all())}
        if w is None:
            hist = torch.bincount(pred, minlength=10).float() / len(pred)
            row.update(guidance="none (unconditional, null label)", class_histogram=[round(v, 3) for v in hist.tolist()],
                       confidence=round(p.max(1).values.mean().item(), 4))
            print(f"      unconditional: classifier's class histogram {[round(v, 2) for v in hist.tolist()]}", flush=True)
        else:
            acc = (pred == labels).float()
            per_class = [round(acc[labels == k].mean().item(), 3) for k in range(10)]
            row.update(guidance="classifier-free", accuracy=round(acc.mean().item(), 4),
                       accuracy_se=round(math.sqrt(acc.mean().item() * (1 - acc.mean().item()) / len(acc)), 4),
                       per_class_accuracy=per_class, confidence=round(p.gather(1, labels[:, None]).mean().item(), 4))
            print(f"      w={w:g}: accuracy {row['accuracy']:.3f} ± {row['accuracy_se']:.3f}, p(y|x) {row['confidence']:.3f}, "
                  f"worst class {min(per_class):.2f} ({row['seconds']} s)", flush=True)
        rows.append(row)
        if w in (0.0, 2.0) or w is None:
            grids["none" if w is None else f"{w:g}"] = x.view(10, args.n_per_class, *shape)[:, : min(8, args.n_per_class)]

    # --- 3. inpainting -------------------------------------------------------------------------
    print(f"[3/3] inpainting the bottom half of {args.n_inpaint} test digits ({args.inpaint_steps} PC steps)", flush=True)
    test = get_dataset("mnist", split="test", centered=True)
    x_true, y_true = test.x[: args.n_inpaint], test.y[: args.n_inpaint].long()
    mask = torch.zeros(shape)
    mask[:, :14, :] = 1.0  # top half known
    t0 = time.time()
    filled = []
    for i, xb in enumerate(x_true.split(args.batch)):
        g = torch.Generator().manual_seed(10_000 + i)
        filled.append(inpaint(sde, model, xb, mask.expand_as(xb), predictor="reverse_diffusion", corrector="langevin",
                              steps=args.inpaint_steps, generator=g, progress=True).samples.float())
    filled = torch.cat(filled)
    inpaint_s = time.time() - t0
    blanked = x_true * mask + (-1.0) * (1 - mask)  # bottom half set to the background value
    acc_of = {name: (classify(clf, centered, v).argmax(1) == y_true).float().mean().item()
              for name, v in (("inpainted", filled), ("bottom_half_blank", blanked), ("original", x_true))}
    known_err = (filled - x_true).mul(mask).abs().max().item()
    mse = ((filled - x_true) ** 2 * (1 - mask)).sum() / ((1 - mask).sum() * len(x_true))
    inpaint_row = {"n": args.n_inpaint, "steps": args.inpaint_steps, "seconds": round(inpaint_s, 1),
                   "classifier_accuracy": {k: round(v, 4) for k, v in acc_of.items()},
                   "known_part_max_abs_error": known_err, "missing_part_mse": round(mse.item(), 4)}
    print(f"      classifier accuracy: inpainted {acc_of['inpainted']:.3f}, bottom half blank {acc_of['bottom_half_blank']:.3f}, "
          f"original {acc_of['original']:.3f}; known part kept exactly (max error {known_err:.2g})", flush=True)

    # --- figures -------------------------------------------------------------------------------
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_show = min(8, args.n_per_class)
    panels = [k for k in ("none", "0", "2") if k in grids]
    titles = {"none": "unconditional (null label)", "0": "class-conditional, w = 0", "2": "classifier-free guidance, w = 2"}
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 4.2))
    for ax, k in zip(list(axes) if len(panels) > 1 else [axes], panels):
        ax.imshow(grid_image(grids[k].reshape(-1, *shape), n_show), cmap="gray", vmin=0, vmax=1)
        acc = next((r.get("accuracy") for r in rows if (r["w"] is None and k == "none") or (r["w"] is not None and f"{r['w']:g}" == k)), None)
        ax.set_title(titles[k] + (f"\nclassifier accuracy {acc:.1%}" if acc is not None else ""), fontsize=9)
        ax.axis("off")
    fig.suptitle(f"MNIST, VP SDE, step {step}: rows = classes 0-9 ({args.solver}, {args.steps} steps)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "mnist_cfg.png", dpi=130)
    plt.close(fig)

    n_show = min(12, args.n_inpaint)
    strip = torch.cat([blanked[:n_show], filled[:n_show], x_true[:n_show]])
    fig, ax = plt.subplots(figsize=(1.0 * n_show, 3.4))
    ax.imshow(grid_image(strip, n_show), cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"inpainting the bottom half (rows: observed | inpainted | original); classifier accuracy "
                 f"{acc_of['bottom_half_blank']:.0%} -> {acc_of['inpainted']:.0%} (originals {acc_of['original']:.0%})", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "mnist_inpaint.png", dpi=130)
    plt.close(fig)

    summary = {
        "config": str(Path(args.config).relative_to(ROOT)) if Path(args.config).is_relative_to(ROOT) else args.config,
        "train_step": step, "train_seconds_this_run": round(train_s, 1),
        "classifier": {"path": clf_path, "test_accuracy": clf_acc},
        "solver": args.solver, "steps": args.steps, "n_per_class": args.n_per_class,
        "guidance": rows, "inpainting": inpaint_row, "runtime_s": round(time.time() - start, 1),
        "command": "python experiments/mnist_cfg.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
    }
    (out / "mnist_cfg.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {out / 'mnist_cfg.json'}, {out / 'mnist_cfg.png'}, {out / 'mnist_inpaint.png'} ({summary['runtime_s']} s)")
    return summary


if __name__ == "__main__":
    main()
