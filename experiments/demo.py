"""The sde_lab demo: train a score model on 2-D data, sample it with several solvers, measure its likelihood.

What `make demo` runs on a fresh machine (a few minutes on a 2-core CPU):

1. trains the VP SDE config ``configs/vp/toy2d.py`` (residual MLP, noise prediction, Adam + EMA) with the
   library's training loop (:func:`sde_lab.train.train`) on exact samples of the 8-mode ``ring`` oracle
   target (or ``--target``: another oracle target or a built-in 2-D point set such as ``swiss_roll``);
2. samples the EMA model with predictor–corrector samplers, the probability-flow ODE (scipy RK45) and
   the fast solvers, and scores each by sliced Wasserstein-2 (SW2) against fresh data — next to the noise
   floor (SW2 between two independent data sets of the same size: what a perfect sampler scores) and
   next to the same solver driven by the *exact* score of the target (sampler error vs learning error);
3. computes the model's log-likelihood of held-out points through the probability-flow ODE with the exact
   divergence (Song et al. 2021, eq. (39)), and, for an oracle target, the exact log-density of the data
   and the ODE likelihood of the exact score for comparison;
4. writes figures into ``figures/demo/`` and prints a summary table.

The training run lives in ``<out>/workdir``; each demo run starts afresh and replaces the previous demo's run there.

    python experiments/demo.py [--quick] [--out figures/demo] [--seed 0] [--target ring] [--n-iters N]

``--quick`` is a smoke test (a few hundred steps, small sample sizes; seconds), not a result.
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

# solver key -> (label, options for sde_lab.sampling.sample (None: the config's sampler), options in --quick mode)
SOLVERS = [
    ("pc_config", "PC (config: Euler-Maruyama)", None, None),
    ("pc_rd_langevin", "PC (reverse diffusion + Langevin)",
     dict(solver="pc", steps=500, predictor="reverse_diffusion", corrector="langevin", snr=0.16),
     dict(solver="pc", steps=40, predictor="reverse_diffusion", corrector="langevin", snr=0.16)),
    ("ancestral", "ancestral sampling", dict(solver="pc", steps=500, predictor="ancestral", corrector="none"),
     dict(solver="pc", steps=40, predictor="ancestral", corrector="none")),
    ("ode", "probability-flow ODE (RK45)", dict(solver="ode", rtol=1e-5, atol=1e-5),
     dict(solver="ode", rtol=1e-3, atol=1e-3)),
    ("heun", "Heun (Karras et al.)", dict(solver="heun", steps=18), dict(solver="heun", steps=6)),
    ("dpm_solver_pp", "DPM-Solver++(2M)", dict(solver="dpm_solver_pp", steps=20), dict(solver="dpm_solver_pp", steps=8)),
    ("sdeint", "reverse SDE (torchsde Euler)", dict(solver="sdeint", steps=500), None),
]


SHORT = {"pc_config": "PC (EM)", "pc_rd_langevin": "PC (RD+Langevin)", "ancestral": "ancestral", "ode": "ODE RK45",
         "heun": "Heun", "dpm_solver_pp": "DPM-Solver++", "sdeint": "torchsde"}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--quick", action="store_true", help="tiny smoke-test run (seconds)")
    ap.add_argument("--out", default=str(ROOT / "figures" / "demo"), help="output folder (default: figures/demo)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the model init, training noise and sampling")
    ap.add_argument("--target", default="ring", help="oracle target (ring, aniso) or 2-D point set (swiss_roll, moons, ...)")
    ap.add_argument("--n-iters", type=int, default=None, help="training steps (default 5000; --quick 150)")
    ap.add_argument("--n-samples", type=int, default=None, help="samples per solver (default 2000; --quick 200)")
    ap.add_argument("--n-likelihood", type=int, default=None, help="held-out points for the likelihood (default 500; --quick 20)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the MLP is too small to gain from more)")
    ap.add_argument("--progress", action="store_true", help="show the training progress bar")
    return ap.parse_args(argv)


def _data_source(target: str, seed: int):
    """``(true sampler (n, generator) -> (n, 2), oracle mixture or None, description)``."""
    from sde_lab.analytic import TARGETS, make_target
    from sde_lab.data import dataset_info, get_dataset

    if target in TARGETS:
        gm = make_target(target)
        if gm.dim != 2:
            raise ValueError(f"the demo plots 2-D data; target {target!r} is {gm.dim}-D (use ring or aniso)")
        return (lambda n, g: gm.sample(n, g)), gm, TARGETS[target][1]
    info = dataset_info(target)  # raises ValueError listing the valid names
    if info.shape != (2,):
        raise ValueError(f"the demo plots 2-D data; {target!r} has shape {info.shape}")
    return (lambda n, g: get_dataset(target, split="test", n=n, generator=g).x), None, info.description


def _sw2(x, y) -> float:
    from sde_lab.metrics import sliced_wasserstein

    return sliced_wasserstein(x, y, n_projections=256, generator=torch.Generator().manual_seed(7))


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.time()

    from sde_lab.likelihood import log_likelihood
    from sde_lab import sample
    from sde_lab.config import apply_overrides, load_config, sample_from_config, train

    quick = args.quick
    n_iters = args.n_iters or (150 if quick else 5000)
    n = args.n_samples or (200 if quick else 2000)
    n_ll = args.n_likelihood or (20 if quick else 500)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    true_sampler, gm, description = _data_source(args.target, args.seed)

    # --- 1. training with the library's loop ------------------------------------------------------
    config = load_config(ROOT / "configs" / "vp" / "toy2d.py")
    apply_overrides(config, [
        f"data.dataset={args.target!r}", "device='cpu'", "training.tensorboard=False", f"seed={args.seed}",
        f"training.n_iters={n_iters}", f"training.snapshot_freq={n_iters}", "training.keep_checkpoints=1",
        f"training.log_freq={max(1, n_iters // 100)}",
    ] + (["optim.warmup=20", "sampling.num_steps=40"] if quick else []))
    print(f"[1/4] training {config.model.name} ({config.training.sde} SDE, {config.model.prediction} prediction) on "
          f"{args.target}: {description}; {n_iters} steps, batch {config.training.batch_size}", flush=True)
    t0 = time.time()
    workdir = out / "workdir"
    from sde_lab.workdir import is_workdir

    if is_workdir(workdir):  # the previous demo's run (this demo's own by-product) is replaced
        import shutil

        print(f"      replacing the previous demo run in {workdir}", flush=True)
        shutil.rmtree(workdir)
    result = train(config, workdir, progress=args.progress)
    train_s = time.time() - t0
    model = result.model
    sde = model.sde
    print(f"      {result.step} steps in {train_s:.1f} s; final loss {result.losses[-1][1]:.4f}; checkpoint {result.checkpoint}", flush=True)

    # --- 2. sampling: every solver, trained model and exact score ---------------------------------
    truth = true_sampler(n, torch.Generator().manual_seed(10_000 + args.seed)).float()
    floor = sum(_sw2(true_sampler(n, torch.Generator().manual_seed(20_000 + r)), true_sampler(n, torch.Generator().manual_seed(30_000 + r)))
                for r in range(5)) / 5
    oracle = gm.score_fn(sde) if gm is not None else None
    rows, samples = [], {}
    print(f"[2/4] sampling {n} points per solver; SW2 noise floor {floor:.4f}", flush=True)
    for key, label, opts, quick_opts in SOLVERS:
        if quick and key != "pc_config" and quick_opts is None:
            continue
        o = quick_opts if quick else opts
        steps = int(config.sampling.num_steps) if o is None else o.get("steps")
        row = {"solver": key, "label": label + (f", {steps} steps" if steps and o is not None and o["solver"] != "ode" else "")}
        if o is None:
            row["label"] = f"{label}, {steps} steps"
        for who, score in (("model", model), ("oracle", oracle)):
            if score is None:
                continue
            g = torch.Generator().manual_seed(args.seed + 1)
            t0 = time.time()
            with torch.no_grad():
                res = sample_from_config(config, sde, score, (n, 2), generator=g) if o is None else sample(sde, score, (n, 2), generator=g, **o)
            x = res.samples.float()
            row[f"{who}_sw2"], row[f"{who}_nfe"], row[f"{who}_s"] = _sw2(x, truth), res.nfe, round(time.time() - t0, 2)
            if who == "model":
                samples[key] = x
        row["ratio_to_floor"] = row["model_sw2"] / floor
        rows.append(row)
        print(f"      {label:40s} NFE {row['model_nfe']:5d}  SW2 {row['model_sw2']:.4f} ({row['ratio_to_floor']:.2f}x floor)"
              + (f"  exact score: {row['oracle_sw2']:.4f}" if oracle is not None else "") + f"  {row['model_s']:.1f} s", flush=True)

    # --- 3. likelihood of held-out points ---------------------------------------------------------
    print(f"[3/4] log-likelihood of {n_ll} held-out points (probability-flow ODE, exact divergence, RK45)", flush=True)
    x_test = true_sampler(n_ll, torch.Generator().manual_seed(40_000 + args.seed)).double()
    tol = 1e-3 if quick else 1e-5
    t0 = time.time()
    ll = log_likelihood(sde, model, x_test, divergence="exact", rtol=tol, atol=tol)
    lik = {"n": n_ll, "model_nll": -ll.log_prob.mean().item(), "model_nll_se": ll.log_prob.std().item() / math.sqrt(n_ll),
           "model_nfe": ll.nfe, "model_s": round(time.time() - t0, 2), "eps": ll.eps}
    if gm is not None:
        t_eps = torch.full((n_ll,), ll.eps, dtype=torch.float64)
        exact = gm.marginal_log_prob(sde, x_test, t_eps)
        ll_o = log_likelihood(sde, oracle, x_test, divergence="exact", rtol=tol, atol=tol)
        lik.update(exact_nll=-exact.mean().item(), exact_data_nll=-gm.log_prob(x_test).mean().item(),
                   oracle_ode_nll=-ll_o.log_prob.mean().item(),
                   oracle_ode_max_abs_err=(ll_o.log_prob - exact).abs().max().item(),
                   model_minus_exact=(exact - ll.log_prob).mean().item())
    print(f"      model NLL {lik['model_nll']:.4f} ± {lik['model_nll_se']:.4f} nats (NFE {ll.nfe}, {lik['model_s']:.1f} s)", flush=True)
    if gm is not None:
        print(f"      exact NLL of p_eps {lik['exact_nll']:.4f} nats (of p_0: {lik['exact_data_nll']:.4f}); the ODE with the exact "
              f"score gives {lik['oracle_ode_nll']:.4f} (max |error| {lik['oracle_ode_max_abs_err']:.1e})", flush=True)

    # --- 4. figures and summary -------------------------------------------------------------------
    print("[4/4] figures", flush=True)
    figs = _figures(out, truth, samples, rows, result.losses, floor, ll, exact if gm is not None else None, args.target)
    runtime = time.time() - t_start
    summary = {
        "target": args.target, "description": description, "quick": quick, "seed": args.seed, "threads": args.threads,
        "config": "configs/vp/toy2d.py", "n_iters": result.step, "train_s": round(train_s, 1),
        "final_loss": result.losses[-1][1], "losses": result.losses, "n_samples": n, "noise_floor_sw2": floor,
        "solvers": rows, "likelihood": lik, "runtime_s": round(runtime, 1), "figures": [str(f) for f in figs],
        "checkpoint": str(result.checkpoint),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))

    print()
    print(f"sde_lab demo — VP SDE, MLP, target {args.target!r}, {result.step} training steps ({train_s:.0f} s)")
    print(f"{'solver':42s} {'NFE':>6s} {'SW2':>8s} {'x floor':>8s}" + (f" {'exact-score SW2':>16s}" if gm is not None else ""))
    for r in rows:
        print(f"{r['label']:42s} {r['model_nfe']:6d} {r['model_sw2']:8.4f} {r['ratio_to_floor']:8.2f}"
              + (f" {r['oracle_sw2']:16.4f}" if gm is not None else ""))
    print(f"{'noise floor (two true sets of ' + str(n) + ')':42s} {'':6s} {floor:8.4f} {1.0:8.2f}")
    line = f"held-out NLL (nats, n={n_ll}): model {lik['model_nll']:.3f} ± {lik['model_nll_se']:.3f}"
    if gm is not None:
        line += f"; exact {lik['exact_nll']:.3f}; exact score through the ODE {lik['oracle_ode_nll']:.3f}"
    print(line)
    print(f"figures: {', '.join(str(f) for f in figs)}")
    print(f"summary: {out / 'summary.json'}; checkpoint: {result.checkpoint}")
    print(f"runtime {runtime:.1f} s")
    return summary


def _figures(out: Path, truth, samples, rows, losses, floor, ll, exact, target) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    lim = float(truth.abs().max()) * 1.15
    shown = [k for k in ("pc_config", "pc_rd_langevin", "ode", "dpm_solver_pp") if k in samples]
    fig, axes = plt.subplots(1, len(shown) + 1, figsize=(3.4 * (len(shown) + 1), 3.9))
    axes[0].scatter(truth[:, 0], truth[:, 1], s=1, c="k")
    axes[0].set_title(f"data ({target})", fontsize=9)
    by_key = {r["solver"]: r for r in rows}
    for ax, k in zip(axes[1:], shown):
        ax.scatter(truth[:, 0], truth[:, 1], s=1, c="0.85")
        ax.scatter(samples[k][:, 0], samples[k][:, 1], s=1, c="C0")
        r = by_key[k]
        ax.set_title(f"{r['label']}\nNFE {r['model_nfe']}, SW2 {r['model_sw2']:.3f}", fontsize=7)
    for ax in axes:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    paths.append(out / "samples.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    steps, vals = zip(*losses)
    ax.plot(steps, vals)
    ax.set_xlabel("training step")
    ax.set_ylabel("DSM loss (running mean)")
    ax.set_yscale("log")
    ax.set_title("training loss (VP, reduce_mean, σ² weighting)", fontsize=9)
    fig.tight_layout()
    paths.append(out / "loss.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        ax.scatter(r["model_nfe"], r["model_sw2"], c="C0")
        ax.annotate(SHORT[r["solver"]], (r["model_nfe"], r["model_sw2"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if "oracle_sw2" in r:
            ax.scatter(r["oracle_nfe"], r["oracle_sw2"], c="C1", marker="x")
    ax.axhline(floor, c="k", ls="--", lw=1, label="noise floor")
    ax.scatter([], [], c="C0", label="trained model")
    if any("oracle_sw2" in r for r in rows):
        ax.scatter([], [], c="C1", marker="x", label="exact score")
    ax.set_xscale("log")
    ax.set_xlabel("score evaluations (NFE)")
    ax.set_ylabel("SW2 to fresh data")
    ax.legend(fontsize=8)
    ax.set_title("solver comparison", fontsize=9)
    fig.tight_layout()
    paths.append(out / "solvers.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    if exact is not None:
        fig, ax = plt.subplots(figsize=(4, 4))
        e, m = exact.numpy(), ll.log_prob.numpy()
        ax.scatter(e, m, s=4)
        lo, hi = min(e.min(), m.min()), max(e.max(), m.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_xlabel("exact log p_eps(x)")
        ax.set_ylabel("model log-likelihood (ODE)")
        ax.set_title("held-out log-likelihood", fontsize=9)
        fig.tight_layout()
        paths.append(out / "likelihood.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:  # bad --target etc.: a message, not a traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
