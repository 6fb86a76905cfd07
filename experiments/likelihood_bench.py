"""Probability-flow ODE likelihood on oracle targets: bias, RMSE, NFE and time of every estimator.

For a 2-D target (``aniso``) and a 16-D one (``gmm16``), every SDE, the exact divergence and Hutchinson
with Rademacher and Gaussian probes, at rtol = atol = 1e-3 and 1e-5: the error of ``log p_eps(x)`` per
dimension against the oracle's exact ``GaussianMixture.marginal_log_prob(sde, x, eps)`` (bias ± s.e.,
RMSE), the part of the bias due to the prior (``log π(z) - log p_T(z)``), the NFE per solve and the wall
time. Two smaller tables: NFE against batch size (the solver's error norm is joint over the batch) and the
dequantization check on a 256-level discretized Gaussian (ODE bits/dim against the exact discrete NLL,
with the Jensen gap derived in docs/likelihood.md).

    python experiments/likelihood_bench.py [--n 256] [--batch-size 128] [--quick]

Writes figures/likelihood_bench.json and figures/likelihood_bench.png.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from sde_lab.analytic import GaussianMixture, make_target
from sde_lab.data import CenteredScaler, ZeroOneScaler, uniform_dequantize
from sde_lab.likelihood import bits_per_dim, log_likelihood
from sde_lab.registry import make_sde
from sde_lab.sde import LIKELIHOOD_EPS

ROOT = Path(__file__).resolve().parents[1]
ESTIMATORS = {  # label -> log_likelihood options
    "exact": dict(divergence="exact"),
    "rademacher": dict(divergence="hutchinson", probe="rademacher"),
    "gaussian": dict(divergence="hutchinson", probe="gaussian"),
}


def run_config(gm, sde, x, batch_size, tol, opts, seed):
    g = torch.Generator().manual_seed(seed)
    errs, prior_terms, nfes, secs = [], [], [], []
    for xb in torch.split(x, batch_size):
        t0 = time.perf_counter()
        r = log_likelihood(sde, gm.score_fn(sde), xb, rtol=tol, atol=tol, generator=g, **opts)
        secs.append(time.perf_counter() - t0)
        nfes.append(r.nfe)
        exact = gm.marginal_log_prob(sde, xb, torch.full((xb.shape[0],), LIKELIHOOD_EPS, dtype=xb.dtype))
        errs.append((r.log_prob - exact) / gm.dim)
        pT = gm.marginal_log_prob(sde, r.z, torch.full((xb.shape[0],), sde.T, dtype=xb.dtype))
        prior_terms.append((sde.prior_log_prob(r.z) - pT) / gm.dim)
    e, p = torch.cat(errs), torch.cat(prior_terms)
    return dict(
        bias=e.mean().item(),
        bias_se=(e.std() / math.sqrt(e.numel())).item(),
        rmse=e.pow(2).mean().sqrt().item(),
        err_std=e.std().item(),
        prior_term=p.mean().item(),
        nfe=sum(nfes) / len(nfes),
        sec_per_solve=sum(secs) / len(secs),
    )


def model_with_p_eps(sde, mean, std, D, eps=LIKELIHOOD_EPS):
    """An oracle whose perturbed marginal at ``eps`` is exactly ``N(mean, std² I)`` (a model standing in for a net)."""
    alpha, sigma = sde.marginal(torch.tensor([eps], dtype=torch.float64))
    a, s = alpha.item(), sigma.item()
    return GaussianMixture(torch.ones(1), torch.full((1, D), mean / a), torch.full((1,), math.sqrt(std**2 - s**2) / a))


def dequantization_check(sde, scaler, S, n, D, seed, tol, repeats=2):
    """ODE bits/dim of a discretized N(m, S²) (pixel units) against its exact discrete NLL and exact Jensen gap.

    Also compares the ODE bits/dim with the closed form ``-log₂ q(k + u) / D`` at the same dequantized
    points (pixel units, no scaler): that isolates the ODE and offset error from the dequantization noise.
    """
    m = 120.0
    g = torch.Generator().manual_seed(seed)
    k = (m + S * torch.randn(n, D, generator=g, dtype=torch.float64)).floor().clamp(0, 255)
    upper = torch.where(k == 255, torch.ones_like(k), torch.special.ndtr((k + 1 - m) / S))
    lower = torch.where(k == 0, torch.zeros_like(k), torch.special.ndtr((k - m) / S))
    log_P = torch.log(upper - lower)  # (n, D)
    # E_u[-log q(k + u)] for q = N(m, S²): ½ log(2πS²) + ((k + ½ - m)² + 1/12) / (2S²), exactly.
    e_nll_q = 0.5 * math.log(2 * math.pi * S**2) + ((k + 0.5 - m) ** 2 + 1 / 12) / (2 * S**2)
    gap = (e_nll_q + log_P).sum(1) / (D * math.log(2))  # exact E_u gap per sample, bits/dim
    gm = model_with_p_eps(sde, scaler.scale * m / 256 + scaler.shift, abs(scaler.scale) * S / 256, D)
    t0 = time.perf_counter()
    res = bits_per_dim(sde, gm.score_fn(sde), k, scaler, repeats=repeats, divergence="exact", rtol=tol, atol=tol,
                       generator=torch.Generator().manual_seed(seed + 1))
    secs = time.perf_counter() - t0
    g2 = torch.Generator().manual_seed(seed + 1)  # the same dequantization draws (exact divergence: no probes)
    closed = []
    for _ in range(repeats):
        v = 256 * uniform_dequantize(k, generator=g2).double()
        closed.append((0.5 * math.log(2 * math.pi * S**2) + (v - m) ** 2 / (2 * S**2)).sum(1) / (D * math.log(2)))
    closed = torch.stack(closed)
    discrete = -log_P.sum(1) / (D * math.log(2))
    diff = res.bpd.mean(0) - discrete
    return dict(
        ode_bpd=res.mean,
        ode_bpd_se=res.stderr,
        discrete_bpd=discrete.mean().item(),
        diff=diff.mean().item(),
        diff_se=(diff.std() / math.sqrt(n)).item(),
        exact_gap=gap.mean().item(),
        gap_approx=1 / (24 * S**2 * math.log(2)),
        diff_minus_gap=(diff - gap).mean().item(),
        diff_minus_gap_se=((diff - gap).std() / math.sqrt(n)).item(),
        ode_vs_closed_form=(res.bpd - closed).mean().item(),
        ode_vs_closed_form_max=(res.bpd - closed).abs().max().item(),
        offset_bits=res.offset / math.log(2),
        repeats=repeats,
        nfe=res.nfe / repeats,
        sec=secs,
    )


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    labels, colors = list(ESTIMATORS), {"exact": "C0", "rademacher": "C1", "gaussian": "C2"}
    groups = [(t, s) for t in results["targets"] for s in results["sdes"]]
    for ax, tol in zip(axes[:2], results["tols"]):
        for j, est in enumerate(labels):
            xs = [i + (j - 1) * 0.27 for i in range(len(groups))]
            rows = [next(r for r in results["rows"] if (r["target"], r["sde"], r["estimator"], r["tol"]) == (t, s, est, tol))
                    for t, s in groups]
            ax.bar(xs, [r["rmse"] for r in rows], width=0.25, color=colors[est], label=f"{est} RMSE")
            ax.scatter(xs, [abs(r["bias"]) for r in rows], color="k", marker="_", s=120, zorder=3,
                       label="|bias|" if j == 0 else None)
        ax.set_yscale("log")
        ax.set_xticks(range(len(groups)), [f"{t}\n{s}" for t, s in groups])
        ax.set_ylabel("error of log p_eps(x), nats/dim")
        ax.set_title(f"rtol = atol = {tol:g}")
        ax.axhline(0.002, color="gray", ls=":", lw=1)
        ax.legend(fontsize=7)
    ax = axes[2]
    for j, tol in enumerate(results["tols"]):
        rows = [next(r for r in results["rows"] if (r["target"], r["sde"], r["estimator"], r["tol"]) == (t, s, "exact", tol))
                for t, s in groups]
        ax.bar([i + (j - 0.5) * 0.4 for i in range(len(groups))], [r["nfe"] for r in rows], width=0.38,
               label=f"tol {tol:g}")
    ax.axhline(130, color="gray", ls=":", lw=1)
    ax.set_xticks(range(len(groups)), [f"{t}\n{s}" for t, s in groups])
    ax.set_ylabel(f"NFE per solve (batch {results['batch_size']})")
    ax.set_title("NFE (exact divergence)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="samples per target (default: 256)")
    ap.add_argument("--batch-size", type=int, default=128, help="samples per ODE solve (default: 128)")
    ap.add_argument("--quick", action="store_true", help="64 samples, fewer extra rows (smoke run)")
    ap.add_argument("--out", default=str(ROOT / "figures" / "likelihood_bench"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    n = 64 if args.quick else args.n
    targets, sdes, tols = ["aniso", "gmm16"], ["ve", "vp", "subvp"], [1e-3, 1e-5]

    rows = []
    print(f"{'target':7s} {'sde':6s} {'estimator':10s} {'tol':>6s} {'bias ± s.e. (nats/dim)':>24s} {'RMSE':>9s} "
          f"{'prior term':>11s} {'NFE':>6s} {'s/solve':>8s}")
    for ti, tname in enumerate(targets):
        gm = make_target(tname)
        x = gm.sample(n, torch.Generator().manual_seed(100 + ti), dtype=torch.float64)
        for sname in sdes:
            sde = make_sde(sname)
            for est, opts in ESTIMATORS.items():
                for tol in tols:
                    seed = 1000 * ti + 100 * sdes.index(sname) + 10 * list(ESTIMATORS).index(est)  # independent probes
                    r = run_config(gm, sde, x, args.batch_size, tol, opts, seed=seed)
                    r.update(target=tname, sde=sname, estimator=est, tol=tol)
                    rows.append(r)
                    print(f"{tname:7s} {sname:6s} {est:10s} {tol:6.0e} {r['bias']:+12.2e} ± {r['bias_se']:8.2e} "
                          f"{r['rmse']:9.2e} {r['prior_term']:+11.2e} {r['nfe']:6.1f} {r['sec_per_solve']:8.2f}", flush=True)

    print("\nNFE per solve against batch size (Rademacher, rtol = atol = 1e-5; gmm8x8 is 64-D, image-shaped)")
    nfe_rows = []
    for tname in ["gmm16", "gmm8x8"]:
        gm = make_target(tname)
        x = gm.sample(128, torch.Generator().manual_seed(200), dtype=torch.float64)
        for sname in sdes:
            sde = make_sde(sname)
            for bs in ([1, 128] if args.quick else [1, 16, 128]):
                nb = 4 if bs == 1 else max(1, min(4, 128 // bs))
                nfes = [log_likelihood(sde, gm.score_fn(sde), xb, generator=torch.Generator().manual_seed(0)).nfe
                        for xb in torch.split(x, bs)[:nb]]
                nfe_rows.append(dict(target=tname, sde=sname, batch_size=bs, nfe=sum(nfes) / len(nfes)))
                print(f"  {tname:7s} {sname:6s} batch {bs:4d}: NFE {nfe_rows[-1]['nfe']:.1f}", flush=True)

    print("\nDequantization check: 256-level discretized N(120, S²) (pixel units), D=16, exact divergence, tol 1e-5,"
          " 2 dequantization repeats; bits/dim")
    print(f"  {'sde':6s} {'scaler':9s} {'S':>4s} {'ODE bpd':>16s} {'discrete':>9s} {'ODE - discrete':>20s} "
          f"{'exact gap':>10s} {'1/(24S²ln2)':>11s} {'(ODE-disc)-gap':>20s} {'ODE-closed form':>16s}")
    deq_rows = []
    row = 0
    for sname in ["ve", "vp"]:
        for scname, scaler in [("zero_one", ZeroOneScaler()), ("centered", CenteredScaler())]:
            for S in ([12.0] if args.quick else [3.0, 12.0]):
                row += 1
                r = dequantization_check(make_sde(sname), scaler, S, 64 if args.quick else 256, 16, seed=10 * row, tol=1e-5)
                r.update(sde=sname, scaler=scname, S=S)
                deq_rows.append(r)
                print(f"  {sname:6s} {scname:9s} {S:4.0f} {r['ode_bpd']:8.4f} ± {r['ode_bpd_se']:.4f} {r['discrete_bpd']:9.4f} "
                      f"{r['diff']:+10.2e} ± {r['diff_se']:.1e} {r['exact_gap']:10.2e} {r['gap_approx']:11.2e} "
                      f"{r['diff_minus_gap']:+10.2e} ± {r['diff_minus_gap_se']:.1e} {r['ode_vs_closed_form']:+9.1e} "
                      f"(max {r['ode_vs_closed_form_max']:.0e})", flush=True)

    runtime = time.perf_counter() - start
    results = dict(targets=targets, sdes=sdes, tols=tols, n=n, batch_size=args.batch_size, eps=LIKELIHOOD_EPS,
                   rows=rows, nfe_vs_batch=nfe_rows, dequantization=deq_rows, runtime_s=runtime)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    plot(results, out.with_suffix(".png"))
    print(f"\nwrote {out.with_suffix('.json')} and {out.with_suffix('.png')}; runtime {runtime:.0f} s")


if __name__ == "__main__":
    main()
