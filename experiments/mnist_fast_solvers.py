"""Fast samplers on a trained MNIST model: FID-LeNet against NFE for every solver, EM and PC as baselines.

The oracle benchmark (``experiments/fast_solvers.py``) cannot show what the fast solvers are for: with the
exact score of a smooth mixture, Euler–Maruyama already reaches the SW2 noise floor at 20–50 NFE. On a
trained image model the picture is the one the papers report. This script samples the model in
``--ckpt`` (default: the class-conditional run of ``experiments/mnist_cfg.py``, sampled *unconditionally*
through its null label; any MNIST checkpoint of ``sde-lab train`` works) with

* Euler–Maruyama (PC predictor, no corrector) and reverse diffusion + Langevin (PC) over a step grid,
* Heun (Karras et al. 2022), DPM-Solver-3 and DPM-Solver++(2M) at 10–30 steps,
* the adaptive reverse-SDE solver (Jolicoeur-Martineau et al. 2021) at two tolerances,

from the same ``--n`` prior draws' seeds, and scores each by FID-LeNet (Fréchet distance of LeNet features,
:class:`sde_lab.metrics.ClassifierFeatures`, classifier from ``sde-lab train-classifier --dataset mnist``)
against the MNIST test set. The noise floor is the FID-LeNet of ``--n`` real training images: FID at a
finite ``n`` is biased upward, so only values at the same ``n`` compare. Writes
``figures/mnist_fast_solvers.{json,png}``.

    python experiments/mnist_fast_solvers.py                 # ~10 min on 2 cores with the nf=16 model
    python experiments/mnist_fast_solvers.py --n 50 --quick  # smoke test
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

EM = dict(solver="pc", predictor="euler_maruyama", corrector="none")
PC = dict(solver="pc", predictor="reverse_diffusion", corrector="langevin", snr=0.16)
RUNS = [  # (family, label, options, steps grid, quick grid)
    ("Euler-Maruyama", "em", EM, (25, 50, 100, 200), (25, 100)),
    ("PC (RD + Langevin)", "pc", PC, (25, 50), (25,)),
    ("Heun", "heun", dict(solver="heun"), (6, 10), (6,)),
    ("DPM-Solver-3", "dpm3", dict(solver="dpm_solver", order=3), (9, 15), (9,)),
    ("DPM-Solver++(2M)", "dpmpp", dict(solver="dpm_solver_pp"), (10, 20), (10,)),
    ("adaptive SDE", "adaptive", dict(solver="adaptive"), (None,), (None,)),
    ("adaptive SDE (loose)", "adaptive_loose", dict(solver="adaptive", abs_tol=0.02, rel_tol=0.1), (None,), (None,)),
    ("adaptive SDE (batch RMS)", "adaptive_rms", dict(solver="adaptive", error_norm="batch_rms"), (None,), (None,)),
]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--ckpt", default=str(ROOT / "runs" / "mnist_cfg"), help="MNIST checkpoint or workdir")
    ap.add_argument("--n", type=int, default=200, help="samples per run (default: 200)")
    ap.add_argument("--classifier", default=None, help="LeNet classifier (default: sde-lab train-classifier's default path)")
    ap.add_argument("--only", nargs="+", default=None, help="run only these labels (em, pc, heun, dpm3, dpmpp, adaptive, adaptive_loose, adaptive_rms)")
    ap.add_argument("--quick", action="store_true", help="one point per solver (smoke test)")
    ap.add_argument("--out", default=str(ROOT / "figures" / "mnist_fast_solvers"), help="output path without suffix")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    start = time.time()

    from sde_lab.classifier import default_classifier_path, load_classifier
    from sde_lab.data import get_dataset
    from sde_lab.metrics import ClassifierFeatures, FeatureStats, frechet_distance_from_features
    from sde_lab import sample
    from sde_lab.training import load_checkpoint
    from sde_lab.config import load_checkpoint_score

    model = load_checkpoint_score(args.ckpt)
    sde = model.sde
    centered = bool(json.loads(load_checkpoint(args.ckpt)["config"])["data"].get("centered", False))
    clf_path = Path(args.classifier) if args.classifier else default_classifier_path("mnist")
    clf, meta = load_classifier(clf_path)  # FileNotFoundError says how to train one
    feats = ClassifierFeatures(clf, centered=bool(meta.get("centered", False)))
    test = get_dataset("mnist", split="test")  # [0, 1]
    ref = FeatureStats.from_features(feats(test.x))
    train = get_dataset("mnist", split="train")
    g = torch.Generator().manual_seed(args.seed)
    real = train.x[torch.randperm(len(train.x), generator=g)[: args.n]]
    floor = frechet_distance_from_features(feats(real), ref)
    print(f"model {args.ckpt} ({type(sde).__name__}, {'class-conditional, sampled through the null label' if model.num_classes else 'unconditional'}); "
          f"n={args.n}; FID-LeNet noise floor (n real training images) {floor:.2f}", flush=True)
    print(f"{'solver':22s} {'steps':>5s} {'NFE':>5s} {'FID-LeNet':>9s} {'/floor':>7s} {'time[s]':>8s}", flush=True)

    rows = []
    for family, label, opts, grid, quick_grid in RUNS:
        if args.only and label not in args.only:
            continue
        for steps in quick_grid if args.quick else grid:
            t0 = time.time()
            kw = dict(opts)
            if steps is not None:
                kw["steps"] = steps
            res = sample(sde, model, (args.n, 1, 28, 28), generator=torch.Generator().manual_seed(args.seed + 1), **kw)
            x = res.samples.float()
            x = ((x.clamp(-1, 1) + 1) / 2) if centered else x.clamp(0, 1)  # LeNet features take [0, 1]
            fid = frechet_distance_from_features(feats(x), ref)
            row = dict(family=family, label=label, steps=steps, nfe=int(res.nfe), fid_lenet=round(fid, 3),
                       ratio=round(fid / floor, 3), seconds=round(time.time() - t0, 1), finite=bool(torch.isfinite(res.samples).all()))
            rows.append(row)
            print(f"{family:22s} {str(steps or '-'):>5s} {row['nfe']:5d} {fid:9.2f} {row['ratio']:7.2f} {row['seconds']:8.1f}", flush=True)

    # adaptive vs EM at equal quality: the fewest EM NFE whose FID is at most the adaptive solver's
    comparisons = []
    em = sorted((r for r in rows if r["label"] == "em"), key=lambda r: r["nfe"])
    for r in rows:
        if r["label"].startswith("adaptive") and em:
            match = next((e for e in em if e["fid_lenet"] <= r["fid_lenet"]), None)
            comparisons.append(dict(solver=r["label"], nfe=r["nfe"], fid_lenet=r["fid_lenet"],
                                    em_nfe_at_equal_fid=match["nfe"] if match else None,
                                    em_best_fid=min(e["fid_lenet"] for e in em),
                                    em_over_adaptive_nfe=round(match["nfe"] / r["nfe"], 2) if match else None))
    for c in comparisons:
        print(f"{c['solver']}: NFE {c['nfe']} at FID-LeNet {c['fid_lenet']:.2f}; Euler-Maruyama needs "
              f"{c['em_nfe_at_equal_fid'] if c['em_nfe_at_equal_fid'] else '> ' + str(em[-1]['nfe'])} NFE for the same FID "
              f"(ratio {c['em_over_adaptive_nfe']})")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = dict(ckpt=str(args.ckpt), sde=type(sde).__name__, n=args.n, fid_floor=round(floor, 3), classifier=str(clf_path),
                   rows=rows, adaptive_vs_em=comparisons, runtime_s=round(time.time() - start, 1),
                   command="python experiments/mnist_fast_solvers.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]))
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for family in dict.fromkeys(r["family"] for r in rows):
        pts = sorted((r["nfe"], r["fid_lenet"]) for r in rows if r["family"] == family)
        ax.plot(*zip(*pts), "o-" if len(pts) > 1 else "s", label=family)
    ax.axhline(floor, color="k", ls=":", lw=1, label=f"noise floor (n={args.n} real)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE (score evaluations)")
    ax.set_ylabel("FID-LeNet")
    ax.set_title(f"MNIST ({type(sde).__name__}), {args.n} samples per point", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=130)
    plt.close(fig)
    print(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.png')} ({summary['runtime_s']} s)")
    return summary


if __name__ == "__main__":
    main()
