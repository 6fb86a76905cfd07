"""Train one small score model per SDE (VE, VP, sub-VP) on MNIST for a fixed CPU budget; report test bits/dim.

For each SDE the config ``configs/<sde>/mnist.py`` (NCSN++ with ``nf = 32`` for VE, DDPM++ for VP/sub-VP, three
resolutions 28/14/7; the paper's parametrization per SDE) is trained on the real MNIST training set
(:func:`sde_lab.data.get_dataset` from the shared data folder) with the library's training loop
(:class:`sde_lab.train.Trainer`) for ``--minutes`` of wall time each (checked every ``--chunk`` steps), so
the three models get the same budget, not the same number of steps. The learning-rate warm-up is shortened
to ``--warmup`` steps (config: 1000) to suit CPU budgets. Then, with the EMA weights:

* **test bits/dim** on the first ``--n-test`` MNIST test images: probability-flow ODE likelihood
  (Song et al. 2021, eq. (39)) with a Hutchinson–Skilling divergence estimate (one Rademacher probe per
  image), scipy RK45 at ``--tol``, one uniform dequantization draw — :func:`sde_lab.likelihood.bits_per_dim`;
  the mean and its standard error over images are reported;
* a **sample grid** from the config's PC sampler (VE: reverse diffusion + Langevin; VP / sub-VP:
  Euler–Maruyama) with ``--sample-steps`` steps.

    python experiments/mnist_sdes.py --minutes 20                      # the full run (~1h10 on 2 cores)
    python experiments/mnist_sdes.py --minutes 1 --n-test 4 --grid 16 --sample-steps 20 --tol 1e-3   # smoke test

Checkpoints stay in ``--workdir/<sde>`` (``experiments/sampler_table.py --ckpt`` reads them). Writes
figures/mnist_sdes.json, figures/mnist_sdes.png (sample grids and training curves) and
figures/mnist_sdes_loss.png.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def train_for(config, workdir: Path, minutes: float, chunk: int, overwrite: bool = False):
    """The library's training loop, run in chunks of ``chunk`` steps until ``minutes`` of wall time have passed.

    A fresh run: a previous run in ``workdir`` is refused, or moved aside with ``overwrite``."""
    from sde_lab.config import build_trainer

    trainer = build_trainer(config, workdir, progress=False, overwrite=overwrite)
    deadline, t0 = time.time() + 60 * minutes, time.time()
    losses, result = [], None
    while time.time() < deadline:
        result = trainer.fit(trainer.step_count + chunk, final_checkpoint=False)
        losses += result.losses
        if result.interrupted:
            break
    path = trainer.save()
    return result.model, trainer.step_count, losses, time.time() - t0, path


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--sdes", nargs="+", default=["ve", "vp", "subvp"], choices=["ve", "vp", "subvp"])
    ap.add_argument("--minutes", type=float, default=20.0, help="training wall time per SDE (default 20)")
    ap.add_argument("--chunk", type=int, default=10, help="steps between budget checks (default 10)")
    ap.add_argument("--warmup", type=int, default=200, help="learning-rate warm-up steps (config: 1000)")
    ap.add_argument("--n-test", type=int, default=64, help="test images for bits/dim (default 64)")
    ap.add_argument("--ll-batch", type=int, default=32, help="images per ODE solve (default 32)")
    ap.add_argument("--tol", type=float, default=1e-5, help="rtol = atol of the likelihood ODE (default 1e-5, as the paper)")
    ap.add_argument("--grid", type=int, default=36, help="samples in each grid (default 36)")
    ap.add_argument("--sample-steps", type=int, default=250, help="PC steps for the sample grids (config: 1000)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value (repeatable)")
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "mnist_sdes"), help="checkpoints go to WORKDIR/<sde>")
    ap.add_argument("--overwrite", action="store_true", help="move previous runs in WORKDIR/<sde> aside and train afresh")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "figures"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.time()

    from sde_lab.data import get_pixels, make_scaler
    from sde_lab.likelihood import bits_per_dim, mean_and_stderr
    from sde_lab.config import apply_overrides, load_config, sample_from_config

    pixels, _ = get_pixels("mnist", "test", n=args.n_test)
    rows, grids, curves = [], {}, {}
    for sde_name in args.sdes:
        config = load_config(ROOT / "configs" / sde_name / "mnist.py")
        apply_overrides(config, ["device='cpu'", "training.tensorboard=False", f"seed={args.seed}", f"optim.warmup={args.warmup}",
                                 "training.snapshot_freq=0", "training.keep_checkpoints=2"] + args.overrides)
        print(f"[{sde_name}] training {config.model.name} (nf={config.model.nf}) on MNIST for {args.minutes:g} min, "
              f"batch {config.training.batch_size}", flush=True)
        model, steps, losses, train_s, ckpt = train_for(config, Path(args.workdir) / sde_name, args.minutes, args.chunk, args.overwrite)
        sde = model.sde
        print(f"[{sde_name}] {steps} steps in {train_s:.0f} s ({train_s / max(steps, 1):.2f} s/step); last loss "
              f"{losses[-1][1] if losses else float('nan'):.4f}; checkpoint {ckpt}", flush=True)

        # test bits/dim: ODE likelihood + Hutchinson, uniform dequantization, on scaled data
        g = torch.Generator().manual_seed(args.seed + 1)
        scaler = make_scaler(bool(config.data.centered))
        t0, bpds, nfe = time.time(), [], 0
        for lo in range(0, len(pixels), args.ll_batch):
            res = bits_per_dim(sde, model, pixels[lo : lo + args.ll_batch], scaler, generator=g, divergence="hutchinson",
                               n_probes=1, rtol=args.tol, atol=args.tol, compute_dtype=torch.float32)
            bpds.append(res.bpd)
            nfe += res.nfe
        bpd = torch.cat(bpds, dim=1)
        mean, se = mean_and_stderr(bpd)
        ll_s = time.time() - t0
        print(f"[{sde_name}] test bits/dim {mean:.3f} ± {se:.3f} (n={bpd.shape[1]} images, Hutchinson, tol {args.tol:g}, "
              f"NFE {nfe}, {ll_s:.0f} s)", flush=True)

        # a sample grid with the config's PC sampler
        t0 = time.time()
        res = sample_from_config(config, sde, model, (args.grid, 1, 28, 28), generator=torch.Generator().manual_seed(args.seed + 2),
                                 steps=args.sample_steps)
        x = res.samples.float()
        grids[sde_name] = ((x + 1) / 2 if config.data.centered else x).clamp(0, 1)
        sample_s = time.time() - t0
        print(f"[{sde_name}] {args.grid} samples ({config.sampling.predictor} + {config.sampling.corrector}, "
              f"{args.sample_steps} steps, NFE {res.nfe}) in {sample_s:.0f} s", flush=True)

        per_dim = 1.0 if config.training.reduce_mean else 1.0 / 784  # VE sums over pixels: plot per dimension
        curves[sde_name] = [(s, l * per_dim) for s, l in losses]
        rows.append(dict(sde=sde_name, model=f"{config.model.name} nf={config.model.nf}", steps=steps, train_s=round(train_s, 1),
                         batch_size=int(config.training.batch_size), final_loss_per_dim=curves[sde_name][-1][1] if losses else None,
                         bpd=mean, bpd_stderr=se, n_test=int(bpd.shape[1]), ll_nfe=nfe, ll_s=round(ll_s, 1), ll_tol=args.tol,
                         sample_steps=args.sample_steps, sample_nfe=res.nfe, sample_s=round(sample_s, 1), checkpoint=str(ckpt)))

    print(f"\nMNIST, {args.minutes:g} min of training per SDE on {args.threads} thread(s); bits/dim on {args.n_test} test images")
    print(f"{'SDE':6s} {'steps':>6s} {'train s':>8s} {'loss/dim':>9s} {'bits/dim':>9s} {'± se':>6s} {'ODE NFE':>8s}")
    for r in rows:
        print(f"{r['sde']:6s} {r['steps']:6d} {r['train_s']:8.0f} {r['final_loss_per_dim'] or float('nan'):9.4f} {r['bpd']:9.3f} "
              f"{r['bpd_stderr']:6.3f} {r['ll_nfe']:8d}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runtime = time.time() - t_start
    meta = {"minutes_per_sde": args.minutes, "warmup": args.warmup, "threads": args.threads, "seed": args.seed, "n_test": args.n_test,
            "rows": rows, "curves": curves, "runtime_s": round(runtime, 1), "overrides": args.overrides}
    (out / "mnist_sdes.json").write_text(json.dumps(meta, indent=2))
    _figures(out, grids, curves, rows)
    print(f"wrote {out / 'mnist_sdes.json'}, {out / 'mnist_sdes.png'} and {out / 'mnist_sdes_loss.png'}; runtime {time.time() - t_start:.0f} s")
    return meta


def _figures(out: Path, grids, curves, rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torchvision

    def curve(ax):
        for sde, c in curves.items():
            if c:
                s, l = zip(*c)
                ax.plot(s, l, label=sde)
        ax.set_xlabel("training step")
        ax.set_ylabel("DSM loss per dimension")
        ax.set_yscale("log")
        ax.legend(fontsize=8)

    by = {r["sde"]: r for r in rows}
    fig, axes = plt.subplots(1, len(grids) + 1, figsize=(3.6 * (len(grids) + 1), 3.9))
    for ax, (sde, x) in zip(axes, grids.items()):
        grid = torchvision.utils.make_grid(x, nrow=int(math.ceil(math.sqrt(len(x)))), padding=1, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray")
        r = by[sde]
        ax.set_title(f"{sde}: {r['steps']} steps, {r['bpd']:.2f} bits/dim", fontsize=9)
        ax.axis("off")
    curve(axes[-1])
    axes[-1].set_title("training loss", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "mnist_sdes.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    curve(ax)
    fig.tight_layout()
    fig.savefig(out / "mnist_sdes_loss.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
