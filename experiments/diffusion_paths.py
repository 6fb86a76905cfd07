"""Forward diffusion of 2-D data under VE, VP and sub-VP, and the reverse SDE / probability-flow ODE paths back.

For each SDE (Song et al. 2021, §3.4: VE ``σ_min = 0.01``, ``σ_max = 10`` — Technique 1 of Song & Ermon 2020
puts σ_max near the largest pairwise distance of the data, ~4.4 for the ring —; VP and sub-VP with
``β_min = 0.1``, ``β_max = 20``):

* **forward**: data points are pushed through the forward SDE ``dx = f(x, t) dt + g(t) dw`` by
  Euler–Maruyama (1000 steps; VE starts from ``x_0 + σ_min z`` since its kernel has ``σ(0) = σ_min``), shown
  at several ``t``; the empirical per-coordinate std is compared with the closed-form marginal std
  ``sqrt(α(t)² Var[x_0] + σ(t)²)`` from :meth:`SDE.marginal`;
* **reverse**: prior samples are run back with the *exact* score of the data (the analytic oracle, so every
  error is the solver's) through the reverse SDE (Euler–Maruyama, eq. (6)) and the probability-flow ODE
  (Euler, eq. (13)), 1000 steps each plus the Tweedie denoising step, with a few trajectories drawn; the
  final samples are scored by sliced Wasserstein-2 against fresh data next to the noise floor, and the
  adaptive RK45 ODE (:func:`sde_lab.sampling.ode_sample`) is scored too.

    python experiments/diffusion_paths.py [--target ring] [--forward-data swiss_roll] [--n 2000] [--steps 1000]

``--forward-data`` diffuses a built-in point set (e.g. ``swiss_roll``) in the forward panels; the reverse
panels always use the oracle ``--target``, whose exact score is known. Writes figures/diffusion_paths.json
and figures/diffusion_paths.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sde_lab.analytic import make_target
from sde_lab.data import get_dataset
from sde_lab.metrics import sliced_wasserstein
from sde_lab.correctors import NoCorrector
from sde_lab.model import as_model
from sde_lab.predictors import EulerMaruyama, ProbabilityFlowEuler
from sde_lab.sampling import PredictorCorrector
from sde_lab.sampling import denoise_step, ode_sample, uniform_time_grid
from sde_lab.sde import SAMPLING_EPS, SDE, VESDE, VPSDE, SubVPSDE
from sde_lab.utils import append_dims, randn_like

ROOT = Path(__file__).resolve().parents[1]
SHOW_T = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0)


def forward_paths(sde: SDE, x0: torch.Tensor, steps: int, snapshots, generator: torch.Generator):
    """Euler–Maruyama on the forward SDE from ``t = 0`` to ``T``; returns the state at each snapshot time and
    the empirical per-coordinate std on the whole grid."""
    alpha0, sigma0 = sde.marginal(torch.zeros(1, dtype=x0.dtype))
    x = alpha0 * x0 + sigma0 * randn_like(x0, generator)  # p_0 of the SDE: x_0 + σ(0) z (σ(0) = σ_min for VE)
    grid = torch.linspace(0.0, sde.T, steps + 1, dtype=x0.dtype)
    snaps, stds = {0.0: x.clone()}, [x.std(0).mean().item()]
    at = {round(s / sde.T * steps): s for s in snapshots if s > 0}  # grid index nearest to each snapshot time
    B = x.shape[0]
    for i in range(steps):
        t, t_next = grid[i].expand(B), grid[i + 1].expand(B)
        h = append_dims(t_next - t, x.ndim)
        x = x + sde.drift(x, t) * h + append_dims(sde.diffusion(t), x.ndim) * h.sqrt() * randn_like(x, generator)
        stds.append(x.std(0).mean().item())
        if i + 1 in at:
            snaps[at[i + 1]] = x.clone()
    return snaps, grid, torch.tensor(stds)


def reverse_paths(sde: SDE, score_fn, predictor, x_T: torch.Tensor, steps: int, generator: torch.Generator, keep: int):
    """Run ``predictor`` from the prior sample ``x_T`` at ``T`` to ``SAMPLING_EPS`` (uniform grid), then denoise; returns
    the final samples and the trajectories of the first ``keep`` particles, shape ``(steps + 2, keep, 2)``."""
    n = x_T.shape[0]
    grid = uniform_time_grid(steps, SAMPLING_EPS, sde.T, dtype=torch.float64)
    path = [x_T[:keep].clone()]
    solver = PredictorCorrector(predictor, NoCorrector(), "tweedie")  # the trajectory through the solver's callback
    res = solver(as_model(sde, score_fn), x_T, grid, noise=generator,
                 callback=lambda i, t, x, x0: path.append(x[:keep].clone()))
    path.append(res.samples[:keep].clone())
    return res.samples, torch.stack(path)


def _sw2(x, y) -> float:
    return sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(7))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="ring", help="oracle target for the reverse paths (ring, aniso)")
    ap.add_argument("--forward-data", default=None, help="2-D data set for the forward panels (default: the target)")
    ap.add_argument("--n", type=int, default=2000, help="particles (default 2000)")
    ap.add_argument("--steps", type=int, default=1000, help="forward and reverse steps (default 1000)")
    ap.add_argument("--keep", type=int, default=30, help="trajectories drawn per panel")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "figures"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.time()

    gm = make_target(args.target)
    if gm.dim != 2:
        raise SystemExit(f"error: --target must be a 2-D oracle target (ring, aniso), got {args.target!r} ({gm.dim}-D)")
    if args.forward_data:
        x0 = get_dataset(args.forward_data, split="train", n=args.n, seed=args.seed).x.double()
    else:
        x0 = gm.sample(args.n, torch.Generator().manual_seed(args.seed), dtype=torch.float64)
    var0 = x0.var(0).mean().item()
    sdes = {"VE": VESDE(sigma_min=0.01, sigma_max=10.0), "VP": VPSDE(), "sub-VP": SubVPSDE()}
    truth = gm.sample(args.n, torch.Generator().manual_seed(10_000 + args.seed))
    floors = torch.tensor([_sw2(gm.sample(args.n, torch.Generator().manual_seed(20_000 + r)), gm.sample(args.n, torch.Generator().manual_seed(30_000 + r)))
                           for r in range(10)])
    floor, floor_sd = floors.mean().item(), floors.std().item()  # the spread says how much one SW2 value can move by chance

    results, panels = {}, {}
    for name, sde in sdes.items():
        g = torch.Generator().manual_seed(args.seed + 1)
        snaps, grid, emp_std = forward_paths(sde, x0, args.steps, SHOW_T, g)
        alpha, sigma = sde.marginal(grid)
        exact_std = torch.sqrt(alpha**2 * var0 + sigma**2)
        score = gm.score_fn(sde)
        # one prior draw for the three reverse solvers, so the two ODE solvers can be compared point by point
        x_T = sde.prior_sample((args.n, 2), g, dtype=torch.float64)
        x_sde, path_sde = reverse_paths(sde, score, EulerMaruyama(), x_T, args.steps, g, max(1, args.keep // 4))
        x_ode, path_ode = reverse_paths(sde, score, ProbabilityFlowEuler(), x_T, args.steps, g, args.keep)
        rk = ode_sample(sde, score, (args.n, 2), z=x_T)
        ode_dev = (x_ode - rk.samples).norm(dim=1)
        rel_err = ((emp_std - exact_std).abs() / exact_std).max().item()
        results[name] = {
            "sde": repr(sde),
            "t": grid[:: max(1, args.steps // 100)].tolist(),
            "marginal_std_exact": exact_std[:: max(1, args.steps // 100)].tolist(),
            "marginal_std_forward_em": emp_std[:: max(1, args.steps // 100)].tolist(),
            "max_rel_err_std": rel_err,
            "prior_std": sde.prior_std,
            "reverse_sde_sw2": _sw2(x_sde.float(), truth),
            "pf_ode_euler_sw2": _sw2(x_ode.float(), truth),
            "pf_ode_rk45_sw2": _sw2(rk.samples.float(), truth),
            "pf_ode_rk45_nfe": rk.nfe,
            "pf_ode_euler_vs_rk45_median_dev": ode_dev.median().item(),
            "pf_ode_euler_vs_rk45_max_dev": ode_dev.max().item(),
            "nfe_euler": args.steps + 1,
        }
        panels[name] = (snaps, path_sde, path_ode, x_sde, x_ode, grid, emp_std, exact_std)
        r = results[name]
        print(f"{name:6s} forward std at T: {emp_std[-1]:.3f} (exact {exact_std[-1]:.3f}, prior {sde.prior_std:g}); "
              f"max rel. error of the EM std over t {rel_err:.3f}; reverse SW2: SDE {r['reverse_sde_sw2']:.4f}, "
              f"ODE-Euler {r['pf_ode_euler_sw2']:.4f}, ODE-RK45 {r['pf_ode_rk45_sw2']:.4f} (NFE {rk.nfe}; same latents, |Euler - RK45| "
              f"median {ode_dev.median():.1e}, max {ode_dev.max():.1e}); floor {floor:.4f} ± {floor_sd:.4f}", flush=True)

    print()
    print(f"{'SDE':7s} {'std(T)':>7s} {'exact':>7s} {'EM err':>7s} {'rev-SDE':>8s} {'ODE-Eul':>8s} {'ODE-RK45':>9s} {'NFE':>5s} {'|E-RK|':>7s} {'floor':>7s}")
    for name, r in results.items():
        print(f"{name:7s} {r['marginal_std_forward_em'][-1]:7.3f} {r['marginal_std_exact'][-1]:7.3f} {r['max_rel_err_std']:7.3f} "
              f"{r['reverse_sde_sw2']:8.4f} {r['pf_ode_euler_sw2']:8.4f} {r['pf_ode_rk45_sw2']:9.4f} {r['pf_ode_rk45_nfe']:5d} {r['pf_ode_euler_vs_rk45_median_dev']:7.1e} {floor:7.4f}")
    print(f"SW2 noise floor {floor:.4f} ± {floor_sd:.4f} (mean ± sd over 10 pairs of true sets of {args.n}); |E-RK|: median distance "
          "between the Euler and RK45 ODE samples from the same latents")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runtime = time.time() - t_start
    meta = {"target": args.target, "forward_data": args.forward_data or args.target, "n": args.n, "steps": args.steps,
            "seed": args.seed, "data_var_per_coord": var0, "noise_floor_sw2": floor, "noise_floor_sw2_sd": floor_sd, "sdes": results,
            "runtime_s": round(runtime, 1)}
    (out / "diffusion_paths.json").write_text(json.dumps(meta, indent=2))
    _figure(out / "diffusion_paths.png", panels, truth, args)
    print(f"wrote {out / 'diffusion_paths.json'} and {out / 'diffusion_paths.png'}; runtime {time.time() - t_start:.1f} s")
    return meta


def _figure(path: Path, panels, truth, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = len(SHOW_T) + 3
    fig, axes = plt.subplots(len(panels), ncol, figsize=(2.1 * ncol, 2.25 * len(panels)), squeeze=False)
    for row, (name, (snaps, path_sde, path_ode, x_sde, x_ode, grid, emp_std, exact_std)) in zip(axes, panels.items()):
        for ax, t in zip(row, SHOW_T):
            x = snaps[t]
            lim = max(3.5, 3.0 * x.std(0).max().item())
            ax.scatter(x[:, 0], x[:, 1], s=0.5, c="C0", alpha=0.5)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_title(f"{name} forward, t={t:g}", fontsize=7)
        for ax, (title, p, final) in zip(row[len(SHOW_T):], (("reverse SDE", path_sde, x_sde), ("prob.-flow ODE", path_ode, x_ode))):
            ax.scatter(truth[:, 0], truth[:, 1], s=0.5, c="0.85")
            ax.scatter(final[:, 0], final[:, 1], s=0.5, c="C0", alpha=0.4)
            for k in range(p.shape[1]):
                ax.plot(p[:, k, 0], p[:, k, 1], lw=0.5, c="C3", alpha=0.7)
            ax.scatter(p[-1, :, 0], p[-1, :, 1], s=4, c="C3")
            ax.set_xlim(-3.5, 3.5)
            ax.set_ylim(-3.5, 3.5)
            ax.set_title(f"{name} {title} (exact score)", fontsize=7)
        ax = row[-1]
        ax.plot(grid, exact_std, "k-", lw=1, label="exact")
        ax.plot(grid, emp_std, "C1--", lw=1, label="forward EM")
        ax.set_yscale("log")
        ax.set_xlabel("t", fontsize=7)
        ax.set_title(f"{name} marginal std", fontsize=7)
        ax.legend(fontsize=6)
        for a in row[:-1]:
            a.set_aspect("equal")
            a.set_xticks([])
            a.set_yticks([])
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
