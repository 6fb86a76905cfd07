"""Table 1 of Song et al. (2021), on the analytic oracle: predictor × {P1000, P2000, C2000, PC1000} per SDE.

Song et al. (2021, Table 1) compare, for VE and VP models on CIFAR-10, three predictors — ancestral sampling,
reverse diffusion (eq. (46)) and the probability-flow ODE taken with Euler steps — run alone for 1000 or 2000
steps (P1000, P2000), the Langevin corrector alone for 2000 steps (C2000, no predictor), and predictor +
corrector for 1000 steps (PC1000, 2000 score evaluations), all ending with the denoising step. Here the
score is the *exact* score of a Gaussian-mixture target (:mod:`sde_lab.analytic`), so every number is pure
sampler error: sliced Wasserstein-2 (SW2) of ``--n`` samples against fresh data, reported as a ratio to the
noise floor (SW2 between two independent true sets of the same size; 1.0 is a perfect sampler). Targets: a
2-D one (``ring``) and the 16-D ``gmm16``. SDEs: VE (σ_min = 0.01, σ_max = 10, near the largest pairwise
distance of the targets, Song & Ermon 2020 Technique 1), VP and sub-VP (β_min = 0.1, β_max = 20).
Langevin corrector with signal-to-noise ratio ``--snr`` (default 0.16, the paper's CIFAR-10 VE value).

With ``--ckpt`` (a trained image model, e.g. MNIST from ``experiments/mnist_sdes.py``) the same table is
computed for that model's SDE with FID-LeNet — the Fréchet distance of a trained classifier's features,
:class:`sde_lab.metrics.ClassifierFeatures`; ``--classifier`` or the default path of ``sde-lab
train-classifier`` — if such a classifier exists; otherwise only the oracle table is reported.
``--ckpt-scale`` shrinks the step counts of the checkpoint table (CPU budgets; the columns are relabelled).

    python experiments/sampler_table.py [--n 2000] [--targets ring gmm16] [--sdes ve vp subvp] [--snr 0.16]
    python experiments/sampler_table.py --ckpt runs/mnist_vp --ckpt-n 1000 [--classifier PATH]

Writes figures/sampler_table.json and figures/sampler_table.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sde_lab.analytic import make_target
from sde_lab.correctors import Corrector, Langevin, NoCorrector
from sde_lab.metrics import sliced_wasserstein
from sde_lab.predictors import Ancestral, NoPredictor, Predictor, ProbabilityFlowEuler, ReverseDiffusion
from sde_lab.sampling import pc_sample
from sde_lab.sde import VESDE, VPSDE, SubVPSDE

ROOT = Path(__file__).resolve().parents[1]
PREDICTORS = {"ancestral": Ancestral(), "reverse diffusion": ReverseDiffusion(), "probability flow": ProbabilityFlowEuler()}
SDES = {"ve": lambda: VESDE(sigma_min=0.01, sigma_max=10.0), "vp": VPSDE, "subvp": SubVPSDE}
# column -> (uses the predictor, uses the corrector, steps)
COLUMNS = {"P1000": (True, False, 1000), "P2000": (True, False, 2000), "C2000": (False, True, 2000), "PC1000": (True, True, 1000)}


def _cells(snr: float, scale: float = 1.0):
    """``(predictor name, column, predictor, corrector, steps)`` for the table; C2000 is computed once per SDE."""
    for col, (use_p, use_c, steps) in COLUMNS.items():
        steps = max(1, round(steps * scale))
        corrector: Corrector = Langevin(snr=snr) if use_c else NoCorrector()
        if not use_p:
            yield "(none)", col, NoPredictor(), corrector, steps
            continue
        for name, pred in PREDICTORS.items():
            yield name, col, pred, corrector, steps


def _sample(sde, score_fn, shape, predictor: Predictor, corrector: Corrector, steps: int, batch: int, generator):
    xs, nfe, t0 = [], 0, time.time()
    for lo in range(0, shape[0], batch):
        m = min(batch, shape[0] - lo)
        with torch.no_grad():
            res = pc_sample(sde, score_fn, (m, *shape[1:]), predictor=predictor, corrector=corrector, steps=steps, generator=generator)
        xs.append(res.samples.float())
        nfe = res.nfe
    return torch.cat(xs), nfe, time.time() - t0


def oracle_table(args) -> list[dict]:
    rows = []
    for target in args.targets:
        gm = make_target(target)
        n, shape = args.n, (args.n, *gm.event_shape)
        truth = gm.sample(n, torch.Generator().manual_seed(10_000))

        def sw2(x, y):
            return sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(7))

        floors = torch.tensor([sw2(gm.sample(n, torch.Generator().manual_seed(20_000 + r)), gm.sample(n, torch.Generator().manual_seed(30_000 + r)))
                               for r in range(5)])
        floor, floor_sd = floors.mean().item(), floors.std().item()  # the sd: how far one SW2 value moves by chance
        print(f"target {target} ({gm.dim}-D), n={n}, SW2 noise floor {floor:.4f} ± {floor_sd:.4f} (sd over 5 pairs of true sets)", flush=True)
        for sde_name in args.sdes:
            sde = SDES[sde_name]()
            score = gm.score_fn(sde)
            for pname, col, pred, corr, steps in _cells(args.snr, args.scale):
                x, nfe, wall = _sample(sde, score, shape, pred, corr, steps, n, torch.Generator().manual_seed(args.seed))
                value = sw2(x, truth)
                rows.append(dict(source="oracle", target=target, sde=sde_name, predictor=pname, column=col, steps=steps, nfe=nfe,
                                 metric="SW2", value=value, floor=floor, floor_sd=floor_sd, ratio=value / floor, wall_s=round(wall, 2)))
                print(f"  {sde_name:5s} {pname:18s} {col:6s} NFE {nfe:5d}  SW2 {value:.4f}  ({value / floor:5.2f}x floor)  {wall:.1f} s", flush=True)
    return rows


def checkpoint_table(args) -> list[dict]:
    """The same table for a trained image model with FID-LeNet; empty if no classifier is available."""
    from sde_lab.classifier import default_classifier_path, load_classifier
    from sde_lab.data import dataset_tensors, default_data_root, get_dataset
    from sde_lab.metrics import ClassifierFeatures, FeatureStats, frechet_distance, reference_stats
    from sde_lab.config import config_from_dict, data_shape, load_checkpoint_score
    from sde_lab.training import load_checkpoint

    state = load_checkpoint(args.ckpt)
    config = config_from_dict(json.loads(state["config"]))
    dataset, shape = str(config.data.dataset), data_shape(config)
    centered = bool(config.data.get("centered", False))
    path = Path(args.classifier).expanduser() if args.classifier else default_classifier_path(dataset)
    if not path.is_file():
        print(f"no classifier for FID-LeNet at {path} (train one with `sde-lab train-classifier --dataset {dataset}` or pass "
              f"--classifier): reporting the oracle table only", flush=True)
        return []
    clf, meta = load_classifier(path)
    features = ClassifierFeatures(clf, centered=bool(meta.get("centered", False)))
    ref = reference_stats(features, lambda: dataset_tensors(get_dataset(dataset, split="test", image_size=shape[-1], labels=False))[0],
                          cache=default_data_root() / "fid_stats" / f"{dataset}-test-{shape[-1]}px-nall-lenet-{path.stem}-{path.stat().st_mtime_ns}.npz",
                          key=f"{dataset}-test-{shape[-1]}px-nall-lenet-{path.stem}-{path.stat().st_mtime_ns}")
    model = load_checkpoint_score(args.ckpt, config)
    sde, n = model.sde, args.ckpt_n
    print(f"checkpoint {args.ckpt}: {dataset}, {config.training.sde} SDE, step {state['step']}; FID-LeNet of {n} samples "
          f"(classifier {path}); steps x{args.ckpt_scale}", flush=True)
    rows = []
    for pname, col, pred, corr, steps in _cells(args.snr, args.ckpt_scale):
        x, nfe, wall = _sample(sde, model, (n, *shape), pred, corr, steps, args.ckpt_batch, torch.Generator().manual_seed(args.seed))
        x01 = ((x + 1) / 2 if centered else x).clamp(0, 1)
        s = FeatureStats.from_features(features(x01))
        value = frechet_distance(s.mu, s.sigma, ref.mu, ref.sigma)
        rows.append(dict(source="checkpoint", target=dataset, sde=str(config.training.sde), predictor=pname, column=col, steps=steps, nfe=nfe,
                         metric="FID-LeNet", value=value, floor=None, ratio=None, wall_s=round(wall, 2), n=n))
        print(f"  {pname:18s} {col:6s} ({steps} steps) NFE {nfe:5d}  FID-LeNet {value:.3f}  {wall:.1f} s", flush=True)
    return rows


def _print_table(rows, key="ratio", fmt="{:6.2f}"):
    groups = {}
    for r in rows:
        groups.setdefault((r["source"], r["target"], r["sde"]), []).append(r)
    cols = list(COLUMNS)
    for (source, target, sde), rs in groups.items():
        metric = rs[0]["metric"] + (" / noise floor" if key == "ratio" and rs[0]["ratio"] is not None else "")
        print(f"\n{source}: {target}, {sde.upper()} SDE — {metric}")
        print(f"{'predictor':18s} " + " ".join(f"{c:>8s}" for c in cols))
        c2000 = next((r for r in rs if r["column"] == "C2000"), None)
        for p in PREDICTORS:
            vals = []
            for c in cols:
                r = c2000 if c == "C2000" else next((r for r in rs if r["predictor"] == p and r["column"] == c), None)
                v = None if r is None else (r[key] if r[key] is not None else r["value"])
                vals.append(f"{fmt.format(v):>8s}" if v is not None else f"{'-':>8s}")
            print(f"{p:18s} " + " ".join(vals))


def _figure(path: Path, rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = {}
    for r in rows:
        groups.setdefault((r["source"], r["target"]), []).append(r)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 5.5), squeeze=False)
    cols = list(COLUMNS)
    for ax, ((source, target), rs) in zip(axes[0], groups.items()):
        sdes = list(dict.fromkeys(r["sde"] for r in rs))
        labels, mat = [], []
        for sde in sdes:
            for p in PREDICTORS:
                line = []
                for c in cols:
                    r = next((r for r in rs if r["sde"] == sde and r["column"] == c and (c == "C2000" or r["predictor"] == p)), None)
                    line.append(np.nan if r is None else (r["ratio"] if r["ratio"] is not None else r["value"]))
                mat.append(line)
                labels.append(f"{sde} / {p}")
        mat = np.array(mat, dtype=float)
        im = ax.imshow(np.log10(mat), cmap="viridis_r", aspect="auto")
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w" if np.log10(mat[i, j]) > np.nanmean(np.log10(mat)) else "k")
        ax.set_xticks(range(len(cols)), cols, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        metric = rs[0]["metric"] + (" / floor" if rs[0]["ratio"] is not None else "")
        ax.set_title(f"{source}: {target} — {metric}", fontsize=9)
        fig.colorbar(im, ax=ax, label="log10", shrink=0.7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", nargs="+", default=["ring", "gmm16"], help="oracle targets (default: ring gmm16)")
    ap.add_argument("--sdes", nargs="+", default=list(SDES), choices=list(SDES))
    ap.add_argument("--n", type=int, default=2000, help="samples per cell for the oracle (default 2000)")
    ap.add_argument("--snr", type=float, default=0.16, help="Langevin corrector signal-to-noise ratio (default 0.16)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the step counts of the oracle table (smoke tests)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt", default=None, help="a trained image model (checkpoint or workdir) for a FID-LeNet table")
    ap.add_argument("--classifier", default=None, help="classifier for FID-LeNet (default: where sde-lab train-classifier writes)")
    ap.add_argument("--ckpt-n", type=int, default=1000, help="samples per cell for --ckpt (default 1000)")
    ap.add_argument("--ckpt-batch", type=int, default=500, help="samples per solver call for --ckpt")
    ap.add_argument("--ckpt-scale", type=float, default=1.0, help="multiply the step counts of the --ckpt table (CPU budgets)")
    ap.add_argument("--no-oracle", action="store_true", help="skip the oracle table (with --ckpt)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "figures"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    for t in args.targets:
        make_target(t)  # fail early with the list of valid names

    rows = [] if args.no_oracle else oracle_table(args)
    if args.ckpt:
        rows += checkpoint_table(args)
    if not rows:
        raise SystemExit("nothing to report: the oracle table was skipped and no FID-LeNet table could be computed")
    _print_table(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runtime = time.time() - t_start
    meta = {"n": args.n, "snr": args.snr, "scale": args.scale, "seed": args.seed, "threads": args.threads,
            "sdes": {k: repr(SDES[k]()) for k in args.sdes}, "columns": {k: dict(zip(("predictor", "corrector", "steps"), v)) for k, v in COLUMNS.items()},
            "ckpt": args.ckpt, "ckpt_scale": args.ckpt_scale if args.ckpt else None, "rows": rows, "runtime_s": round(runtime, 1)}
    (out / "sampler_table.json").write_text(json.dumps(meta, indent=2))
    _figure(out / "sampler_table.png", rows)
    print(f"\nwrote {out / 'sampler_table.json'} and {out / 'sampler_table.png'}; runtime {time.time() - t_start:.1f} s")
    return meta


if __name__ == "__main__":
    main()
