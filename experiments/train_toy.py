"""Train each SDE from scratch on a 2-D target on this CPU; sample with PC and the probability-flow ODE.

For every SDE (ve, vp, subvp) the config ``configs/<sde>/toy2d.py`` (residual MLP, the paper's
parametrization per SDE) is trained on exact samples of the target, then 2000 samples are drawn from the
EMA model with the config's PC sampler and with the ODE solver, and compared with fresh true samples by
sliced Wasserstein-2. The noise floor is the SW2 between two true sample sets of the same size; the target
is SW2 <= 2x the floor. The same samplers driven by the *exact* score (the analytic oracle) separate
sampler error from learning error.

    python experiments/train_toy.py [--target ring] [--n-iters 8000] [--sdes ve vp subvp]

Writes figures/train_toy.json and figures/train_toy.png.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from sde_lab.analytic import make_target
from sde_lab.metrics import sliced_wasserstein
from sde_lab.config import apply_overrides, load_config, sample_from_config, train

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="ring")
    ap.add_argument("--sdes", nargs="+", default=["ve", "vp", "subvp"])
    ap.add_argument("--n-iters", type=int, default=None, help="override training.n_iters")
    ap.add_argument("--n-samples", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--workdir", default=None, help="keep checkpoints under WORKDIR/<sde> (default: a temporary folder)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()

    gm = make_target(args.target)
    n = args.n_samples
    # the floor: SW2 between independent true sets of size n, with the projections used for the samples
    floor = sum(
        sliced_wasserstein(gm.sample(n, torch.Generator().manual_seed(1000 + r)), gm.sample(n, torch.Generator().manual_seed(2000 + r)),
                           generator=torch.Generator().manual_seed(7))
        for r in range(5)
    ) / 5
    rows, panels = [], []
    for sde_name in args.sdes:
        config = load_config(ROOT / "configs" / sde_name / "toy2d.py")
        sets = [f"data.dataset={args.target!r}", "training.tensorboard=False", "device='cpu'"] + args.overrides
        if args.n_iters:
            sets.append(f"training.n_iters={args.n_iters}")
        apply_overrides(config, sets)
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(args.workdir) / sde_name if args.workdir else tmp
            c0, w0 = time.process_time(), time.time()
            result = train(config, workdir, progress=False)
            train_cpu, train_wall = time.process_time() - c0, time.time() - w0
        model = result.model
        from sde_lab.config import build_sde

        sde = build_sde(config)
        oracle = gm.score_fn(sde)
        truth = gm.sample(n, torch.Generator().manual_seed(123))
        for sampler in ["pc", "ode"]:
            over = {} if sampler == "pc" else {"solver": "ode"}
            g = torch.Generator().manual_seed(1)
            s0 = time.time()
            res = sample_from_config(config, sde, model, (n, 2), generator=g, **over)
            dt = time.time() - s0
            res_o = sample_from_config(config, sde, oracle, (n, 2), generator=torch.Generator().manual_seed(1), **over)
            sw = sliced_wasserstein(res.samples, truth, generator=torch.Generator().manual_seed(7))
            sw_o = sliced_wasserstein(res_o.samples, truth, generator=torch.Generator().manual_seed(7))
            rows.append(
                dict(sde=sde_name, sampler=sampler, n_iters=result.step, train_cpu_s=round(train_cpu, 1),
                     train_wall_s=round(train_wall, 1), final_loss=result.losses[-1][1], nfe=res.nfe,
                     sample_s=round(dt, 1), max_norm=res.samples.norm(dim=1).max().item(),
                     frac_far=(res.samples.norm(dim=1) > 4).float().mean().item(), sw2=sw, sw2_oracle=sw_o, noise_floor=floor, ratio=sw / floor,
                     within_2x=sw <= 2 * floor)
            )
            panels.append((f"{sde_name} {sampler}: SW2={sw:.3f} ({sw / floor:.2f}x floor)", res.samples))
            print(f"{sde_name:6s} {sampler:4s} iters={result.step} train={train_cpu:6.1f}s cpu ({train_wall:6.1f}s wall) "
                  f"nfe={res.nfe:5d} max|x|={rows[-1]['max_norm']:.2f} SW2={sw:.4f} oracle={sw_o:.4f} floor={floor:.4f} ratio={sw / floor:.2f}", flush=True)

    print()
    print(f"{'sde':6s} {'sampler':7s} {'train cpu s':>11s} {'SW2':>8s} {'oracle':>8s} {'floor':>8s} {'ratio':>6s} {'<=2x':>5s}")
    for r in rows:
        print(f"{r['sde']:6s} {r['sampler']:7s} {r['train_cpu_s']:11.1f} {r['sw2']:8.4f} {r['sw2_oracle']:8.4f} "
              f"{r['noise_floor']:8.4f} {r['ratio']:6.2f} {str(r['within_2x']):>5s}")
    out = ROOT / "figures"
    out.mkdir(exist_ok=True)
    runtime = time.time() - t_start
    meta = dict(target=args.target, n_samples=n, threads=args.threads, runtime_s=round(runtime, 1),
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rows=rows)
    (out / "train_toy.json").write_text(json.dumps(meta, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2
    fig, axes = plt.subplots(len(panels) // cols, cols, figsize=(4 * cols, 4 * len(panels) // cols), squeeze=False)
    for ax, (title, x) in zip(axes.flat, panels):
        ax.scatter(truth[:, 0], truth[:, 1], s=1, c="0.8", label="data")
        ax.scatter(x[:, 0], x[:, 1], s=1, c="C0", label="samples")
        ax.set_title(title, fontsize=8)
        ax.set_xlim(-3.5, 3.5)
        ax.set_ylim(-3.5, 3.5)
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(out / "train_toy.png", dpi=100)
    print(f"wrote {out / 'train_toy.json'} and {out / 'train_toy.png'}; runtime {runtime:.1f}s")


if __name__ == "__main__":
    main()
