"""Few-step predictor–corrector sampling on the oracle: grid, last step and ancestral variance, against
score_sde's published PC sampler on the same exact score.

    python experiments/pc_study.py                 # full study (~25 min on 2 CPU cores)
    python experiments/pc_study.py --quick         # 2 seeds, fewer step counts

SW2 barely sees a wrong within-mode spread, so every sample set is judged by the within-mode RMS of
``(x − μ_k)/s_k`` (1 for exact samples; each sample assigned to its most likely component), by the total
variation between its mode weights and the true ones, and by SW2 over the noise floor. The target is a 2-D
mixture of 5 separated modes at three widths (``--scales``: the mode stds times 0.25, 1 and 2). Variants, all
on the same exact oracle model, on a grid of ``N`` intervals from ``T`` to ``eps = 1e-3``:

* ``published`` — score_sde's ``get_pc_sampler`` written out from its formulas (``sampling.py``, ``sde_lib.py``):
  evaluation times ``linspace(T, eps, N)``, every step of length ``T/N`` on the discrete chain of ``N`` levels
  (``discrete_betas = linspace(β_min/N, β_max/N, N)``, geometric ``discrete_sigmas``), ancestral with variance
  ``β_i`` on VP, the last step's mean returned;
* ``logsnr`` — sde_lab's default: the grid uniform in λ, Tweedie's denoiser at ``eps``;
* ``uniform`` — sde_lab 0.1: the uniform-t grid (for VE the same as ``logsnr``), Tweedie at ``eps``;
* ``uniform_mean`` — the uniform-t grid, the last step's mean (its noise dropped), no Tweedie step;
* ``quadratic`` — ``t`` quadratic in the step index (DDIM's spacing), Tweedie at ``eps``;
* the ancestral predictor also with ``variance="forward"`` (``σ_ts``; DDPM's ``β_i``) on every grid.

Writes ``figures/pc_study.json`` and ``figures/pc_study.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sde_lab import (  # noqa: E402
    VESDE,
    VPSDE,
    Ancestral,
    EulerMaruyama,
    GaussianMixture,
    Langevin,
    NoCorrector,
    PredictorCorrector,
    ReverseDiffusion,
    SubVPSDE,
    logsnr_grid,
    quadratic_time_grid,
    uniform_time_grid,
)
from sde_lab.metrics import sliced_wasserstein  # noqa: E402

PATHS = {"ve": VESDE(), "vp": VPSDE(), "subvp": SubVPSDE()}


def five_modes(scale: float = 1.0) -> GaussianMixture:
    """2-D, 5 separated modes of unequal weight and anisotropic spread (stds 0.12–0.3 times ``scale``)."""
    k = torch.arange(5, dtype=torch.float64)
    means = 2.5 * torch.stack([torch.cos(2 * math.pi * k / 5), torch.sin(2 * math.pi * k / 5)], 1)
    stds = torch.tensor([[0.25, 0.12], [0.15, 0.3], [0.2, 0.2], [0.3, 0.15], [0.12, 0.25]], dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.3, 0.25, 0.2, 0.15, 0.1]), means, scale * stds)


def mode_stats(x: torch.Tensor, gm: GaussianMixture):
    if not bool(torch.isfinite(x).all()):
        return float("nan"), float("nan")
    xf = x.detach().double().reshape(x.shape[0], -1)
    logp = torch.log(gm.weights)[None] - 0.5 * (((xf[:, None] - gm.means[None]) / gm.stds[None]) ** 2
                                                 + 2 * torch.log(gm.stds[None])).sum(-1)
    k = logp.argmax(1)
    rms = ((xf - gm.means[k]) / gm.stds[k]).pow(2).mean().sqrt().item()
    w = torch.bincount(k, minlength=gm.n_components).double() / len(k)
    return rms, 0.5 * (w - gm.weights).abs().sum().item()


# --- score_sde's PC sampler, from its formulas ----------------------------------------------------------------
def published_pc(name: str, model, n: int, N: int, predictor: str, corrector: str, snr: float, eps: float,
                 g: torch.Generator) -> torch.Tensor:
    path = PATHS[name]
    T = 1.0
    x = path.prior_std * torch.randn(n, 2, generator=g, dtype=torch.float64)
    times = torch.linspace(T, eps, N, dtype=torch.float64)
    if name == "ve":
        sigmas = torch.exp(torch.linspace(math.log(path.sigma_min), math.log(path.sigma_max), N, dtype=torch.float64))
    else:
        betas = torch.linspace(path.beta_min / N, path.beta_max / N, N, dtype=torch.float64)
        alphas = 1.0 - betas
    x_mean = x
    for i in range(N):
        t = times[i].expand(n)
        idx = int(times[i] * (N - 1) / T)  # (t (N - 1) / T).long()
        if corrector == "langevin":
            alpha = 1.0 if name == "ve" else float(alphas[idx])
            grad = model.score(x, t)
            z = torch.randn(x.shape, generator=g, dtype=x.dtype)
            step = (snr * z.norm(dim=1).mean() / grad.norm(dim=1).mean()) ** 2 * 2 * alpha
            x_mean = x + step * grad
            x = x_mean + torch.sqrt(2 * step) * z
        s = model.score(x, t)
        z = torch.randn(x.shape, generator=g, dtype=x.dtype)
        if predictor == "euler_maruyama":
            dt = 1.0 / N
            drift = path.drift(x, t) - path.diffusion(t)[:, None] ** 2 * s
            x_mean = x - drift * dt
            x = x_mean + path.diffusion(t)[:, None] * math.sqrt(dt) * z
        elif predictor == "reverse_diffusion":
            if name == "ve":
                adj = 0.0 if idx == 0 else float(sigmas[idx - 1])
                G2 = float(sigmas[idx]) ** 2 - adj**2
                f = torch.zeros_like(x)
            elif name == "vp":
                G2 = float(betas[idx])
                if G2 >= 1.0:  # β_i = β_max / N > 1 below 20 steps: score_sde's sqrt(1 - β) is NaN
                    return torch.full_like(x, float("nan"))
                f = math.sqrt(1 - G2) * x - x
            else:  # SDE.discretize: the Euler–Maruyama increments
                G2 = float(path.diffusion(t[:1])) ** 2 / N
                f = path.drift(x, t) / N
            x_mean = x - (f - G2 * s)
            x = x_mean + math.sqrt(G2) * z
        else:  # ancestral (VE, VP)
            if name == "ve":
                sig = float(sigmas[idx])
                adj = 0.0 if idx == 0 else float(sigmas[idx - 1])
                x_mean = x + (sig**2 - adj**2) * s
                x = x_mean + math.sqrt(adj**2 * (sig**2 - adj**2) / sig**2) * z
            else:
                b = float(betas[idx])
                if b >= 1.0:
                    return torch.full_like(x, float("nan"))
                x_mean = (x + b * s) / math.sqrt(1 - b)
                x = x_mean + math.sqrt(b) * z
    return x_mean


VARIANTS = ["published", "logsnr", "uniform", "uniform_mean", "quadratic"]


def ours(name, model, n, N, predictor, corrector, snr, eps, g, variant):
    path = PATHS[name]
    pred = {"euler_maruyama": EulerMaruyama(), "reverse_diffusion": ReverseDiffusion(), "ancestral": Ancestral(),
            "ancestral_fwd": Ancestral(variance="forward")}[predictor]
    corr = Langevin(snr=snr) if corrector == "langevin" else NoCorrector()
    grid, final = {
        "logsnr": (lambda: logsnr_grid(path, N, eps), "tweedie"),
        "uniform": (lambda: uniform_time_grid(N, eps), "tweedie"),
        "uniform_mean": (lambda: uniform_time_grid(N, eps), "mean"),
        "quadratic": (lambda: quadratic_time_grid(path, N, eps), "tweedie"),
    }[variant]
    x = path.prior_std * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return PredictorCorrector(pred, corr, final)(model, x, grid(), noise=g).samples


COMBOS = [("euler_maruyama", "none"), ("reverse_diffusion", "langevin"), ("ancestral", "none"), ("ancestral_fwd", "none")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, nargs="*", default=[10, 20, 30, 50, 100, 300])
    ap.add_argument("--scales", type=float, nargs="*", default=[0.25, 1.0, 2.0])
    ap.add_argument("--out", default=str(ROOT / "figures" / "pc_study"))
    ap.add_argument("--replot", action="store_true", help="redraw the figure from the JSON of an earlier run")
    args = ap.parse_args()
    if args.replot:
        data = json.loads(Path(args.out).with_suffix(".json").read_text())
        args.scales = data["summary"]["scales"]
        _plot(data["rows"], Path(args.out).with_suffix(".png"), args)
        return
    if args.quick:
        args.seeds, args.steps = 2, [10, 30, 100]
    torch.set_num_threads(2)
    eps = 1e-3
    rows = []
    start = time.time()
    for scale in args.scales:
        gm = five_modes(scale)
        g_ref = torch.Generator().manual_seed(999)
        floor = sum(sliced_wasserstein(gm.sample(args.n, g_ref), gm.sample(args.n, g_ref), generator=g_ref) for _ in range(4)) / 4
        for name in PATHS:
            model = gm.model(PATHS[name])
            for pred, corr in COMBOS:
                published_ok = not (name == "subvp" and pred.startswith("ancestral")) and pred != "ancestral_fwd"
                for variant in [v for v in VARIANTS if v != "published" or published_ok]:
                    for N in args.steps:
                        stats = []
                        for seed in range(args.seeds):
                            g = torch.Generator().manual_seed(1000 * seed + N)
                            if variant == "published":
                                x = published_pc(name, model, args.n, N, pred, corr, 0.16, eps, g)
                            else:
                                x = ours(name, model, args.n, N, pred, corr, 0.16, eps, g, variant)
                            rms, tv = mode_stats(x, gm)
                            finite = bool(torch.isfinite(x).all())
                            sw = sliced_wasserstein(x.float(), gm.sample(args.n, g_ref), generator=g_ref) / floor if finite else float("nan")
                            stats.append((rms, tv, sw))
                        mean = [sum(s[k] for s in stats) / len(stats) for k in range(3)]
                        spread = [max(s[k] for s in stats) - min(s[k] for s in stats) for k in range(3)]
                        rows.append(dict(scale=scale, path=name, predictor=pred, corrector=corr, variant=variant, steps=N,
                                         rms=mean[0], tv=mean[1], sw2_ratio=mean[2], rms_range=spread[0], tv_range=spread[1],
                                         seeds=args.seeds))
                        print(f"x{scale:<4} {name:5s} {pred:17s} {corr:8s} {variant:12s} N={N:4d}  rms {mean[0]:.3f}  "
                              f"TV {mean[1]:.3f}  SW2 {mean[2]:.2f}x", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = dict(n=args.n, seeds=args.seeds, steps=args.steps, scales=args.scales, eps=eps, seconds=time.time() - start,
                   target="five_modes(scale) (experiments/pc_study.py)", table=_table(rows, args))
    out.with_suffix(".json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    _plot(rows, out.with_suffix(".png"), args)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')} in {time.time() - start:.0f} s")


def _table(rows, args):
    """Within-mode RMS per (scale, path, predictor, variant) at each step count, and the worst |log RMS|."""
    print("\nwithin-mode RMS (1 = exact), mean over seeds")
    table = []
    for scale in args.scales:
        for name in PATHS:
            for pred, corr in COMBOS:
                for variant in VARIANTS:
                    r = [x for x in rows if (x["scale"], x["path"], x["predictor"], x["variant"]) == (scale, name, pred, variant)]
                    if not r:
                        continue
                    vals = {x["steps"]: x["rms"] for x in r}
                    worst = max((abs(math.log(v)) if v == v and v > 0 else float("inf")) for v in vals.values())
                    table.append(dict(scale=scale, path=name, predictor=pred, corrector=corr, variant=variant, rms=vals,
                                      worst_abs_log_rms=worst))
                    print(f"x{scale:<4} {name:5s} {pred:15s} {variant:12s} " + " ".join(f"{vals[n]:6.3f}" for n in sorted(vals)))
    return table


def _plot(rows, path, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = args.scales
    fig, axes = plt.subplots(len(PATHS) * len(scales), len(COMBOS), figsize=(4 * len(COMBOS), 2.6 * len(PATHS) * len(scales)),
                             sharex=True)
    for si, scale in enumerate(scales):
        for i, name in enumerate(PATHS):
            for j, (pred, corr) in enumerate(COMBOS):
                ax = axes[si * len(PATHS) + i, j]
                for k, variant in enumerate(VARIANTS):
                    r = [x for x in rows if (x["scale"], x["path"], x["predictor"], x["variant"]) == (scale, name, pred, variant)]
                    if r:
                        ax.plot([x["steps"] for x in r], [x["rms"] for x in r], marker="o", label=variant, color=f"C{k}",
                                lw=2.5 if variant in ("published", "logsnr") else 1.0)
                ax.axhline(1.0, color="k", lw=0.8)
                ax.set_xscale("log")
                ax.set_ylim(0.4, 2.0)
                ax.set_title(f"modes x{scale}, {name}: {pred} + {corr}", fontsize=8)
                if j == 0:
                    ax.set_ylabel("within-mode RMS")
    for ax in axes[-1]:
        ax.set_xlabel("steps")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
