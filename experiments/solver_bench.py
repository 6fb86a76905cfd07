"""Solver benchmark on the analytic oracle with the exact score: every SDE x sampler x step count.

For a 2-D target (``aniso``: unequal, anisotropic modes) and a 16-D one (``gmm16``), each sampler draws
``n`` samples; we report

* sliced Wasserstein-2 to fresh true samples (mean over 3 reference sets) divided by the noise floor
  (mean SW2 between two independent true sets of the same size) — 1.0 is a perfect sampler;
* mode-weight error: total variation between the component proportions (each sample assigned to the
  most probable component under the exact posterior at t = eps) and the true weights, with its own floor;
* NFE (counted score calls) and wall time;
* overhead: with the exact score on 10,000 2-D points, wall time / (NFE x one score call), the call
  timed inside the run.

Writes figures/solver_bench.json and figures/solver_bench.png (quality vs NFE, one panel per SDE and
target). ``--quick``: fewer steps and samples (a minute or two); full mode: steps 10, 30, 100, 300, 1000.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from sde_lab.analytic import make_target
from sde_lab.metrics import sliced_wasserstein
from sde_lab.registry import SOLVERS, make_sde
from sde_lab import sample

ROOT = Path(__file__).resolve().parents[1]
SDE_NAMES = ("ve", "vp", "subvp")
TARGET_NAMES = ("aniso", "gmm16")

PC = [
    ("rd+langevin", dict(predictor="reverse_diffusion", corrector="langevin")),
    ("rd", dict(predictor="reverse_diffusion", corrector="none")),
    ("em+langevin", dict(predictor="euler_maruyama", corrector="langevin")),
    ("em", dict(predictor="euler_maruyama", corrector="none")),
    ("ancestral+langevin", dict(predictor="ancestral", corrector="langevin")),
    ("ancestral", dict(predictor="ancestral", corrector="none")),
    ("pf_euler+langevin", dict(predictor="probability_flow", corrector="langevin")),
    ("pf_euler", dict(predictor="probability_flow", corrector="none")),
]


def samplers(quick: bool):
    """(label, sample() kwargs, step counts) for every sampler benchmarked."""
    steps = (10, 30, 100) if quick else (10, 30, 100, 300, 1000)
    out = [(label, dict(solver="pc", **kw), steps) for label, kw in PC]
    out.append(("ald", dict(solver="ald"), steps))
    out.append(("sdeint_euler", dict(solver="sdeint", method="euler"), steps))
    out.append(("sdeint_srk", dict(solver="sdeint", method="srk"), tuple(s for s in steps if s <= 100)))
    for tol in (1e-3, 1e-4, 1e-5):
        out.append((f"ode_rtol{tol:g}", dict(solver="ode", rtol=tol, atol=tol), (1,)))
    for name in sorted(SOLVERS):  # fast solvers registered by sde_lab.fast_samplers, if present
        if name not in ("pc", "ode", "sdeint", "ald"):
            out.append((name, dict(solver=name), tuple(s for s in steps if s <= 300)))
    return out


def mode_tv(gm, sde, x, eps=1e-3):
    """Total variation between component proportions (posterior argmax at t=eps) and the weights."""
    x = x.double()
    post = gm.posterior(sde, x, torch.full((x.shape[0],), eps, dtype=torch.float64))
    p = torch.bincount(post.argmax(1), minlength=gm.n_components).double() / x.shape[0]
    return 0.5 * (p - gm.weights).abs().sum().item()


def sw_to_truth(gm, x, g, refs=3):
    return statistics.mean(sliced_wasserstein(x.float(), gm.sample(x.shape[0], g), generator=g) for _ in range(refs))


class _TimedScore:
    """The score, with the wall time spent inside its calls accumulated (the sampler's own cost is the rest)."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, x, t):
        t0 = time.perf_counter()
        out = self.fn(x, t)
        self.seconds += time.perf_counter() - t0
        return out


def overhead(n=10_000, steps=200):
    """Sampler wall time over the time spent in its score calls, on 10,000 2-D points with the exact score.

    ``ratio`` = wall / (NFE x one score call), with the score call timed *inside the run* (the total time
    in the calls the sampler made, divided by NFE): the cost of the mixture score depends on where the
    points are (exponentials of far-out log-densities), so a call timed on fresh Gaussian input is not the
    call the sampler pays for. ``ratio_standalone`` uses a median call on N(0, I) input at 15 times in the
    sampler's dtype, measured right before the run, for reference. ``ode`` evaluates the plain-function
    score in float64, ``ode_f32`` with ``score_dtype=torch.float32`` (the float64 state and the scipy
    loop remain).
    """
    gm = make_target("aniso")
    rows = []
    for sde_name in ("ve", "vp"):
        sde = make_sde(sde_name)
        sf = gm.score_fn(sde)
        x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
        for _ in range(3):
            sf(x, torch.full((n,), 0.5))
        for label, kw, dtype in (("rd+langevin", dict(solver="pc"), torch.float32),
                                 ("em", dict(solver="pc", predictor="euler_maruyama", corrector="none"), torch.float32),
                                 ("ode", dict(solver="ode"), torch.float64),
                                 ("ode_f32", dict(solver="ode", score_dtype=torch.float32), torch.float32)):
            calls = []
            xd = x.to(dtype)
            for t in torch.linspace(1.0, 1e-3, 15).tolist():
                tt = torch.full((n,), t, dtype=dtype)
                t0 = time.perf_counter()
                sf(xd, tt)
                calls.append(time.perf_counter() - t0)
            standalone = statistics.median(calls)
            timed = _TimedScore(sf)
            t0 = time.perf_counter()
            res = sample(sde, timed, (n, 2), steps=steps, generator=torch.Generator().manual_seed(1), **kw)
            wall = time.perf_counter() - t0
            rows.append(dict(sde=sde_name, sampler=label, nfe=res.nfe, wall=wall, score_dtype=str(dtype),
                             score_call=timed.seconds / res.nfe, score_call_standalone=standalone,
                             ratio=wall / timed.seconds, ratio_standalone=wall / (res.nfe * standalone)))
            r = rows[-1]
            print(f"overhead {sde_name:5s} {label:12s} NFE={res.nfe:5d} wall={wall:7.2f}s "
                  f"score call={r['score_call'] * 1e3:6.2f}ms in the run ({standalone * 1e3:6.2f}ms standalone) "
                  f"ratio={r['ratio']:.2f} (standalone {r['ratio_standalone']:.2f})", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="steps (10, 30, 100) and fewer samples")
    ap.add_argument("--n", type=int, default=None, help="samples per run (default: 4000, quick: 1500)")
    ap.add_argument("--targets", nargs="+", default=list(TARGET_NAMES))
    ap.add_argument("--out", default=str(ROOT / "figures" / "solver_bench"), help="output path without suffix")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, nargs="+", default=None, help="override the step counts")
    ap.add_argument("--only", nargs="+", default=None, help="benchmark only these sampler labels")
    ap.add_argument("--seeds", type=int, default=1,
                    help="repeat each run with this many sampler seeds; SW2/floor is their mean, the spread is in the JSON")
    ap.add_argument("--no-overhead", action="store_true", help="skip the overhead measurement")
    ap.add_argument("--overhead-only", action="store_true",
                    help="only measure the overhead and update it in the existing JSON (--out)")
    args = ap.parse_args(argv)
    if args.overhead_only:
        torch.set_num_threads(args.threads)
        path = Path(args.out).with_suffix(".json")
        data = json.loads(path.read_text())
        data["overhead"] = overhead(steps=100 if args.quick else 200)
        path.write_text(json.dumps(data, indent=1, default=str))
        print(f"updated the overhead rows of {path}")
        return data
    torch.set_num_threads(args.threads)
    n = args.n or (1500 if args.quick else 4000)
    start = time.perf_counter()
    results, floors = [], {}

    for target in args.targets:
        gm = make_target(target)
        g = torch.Generator().manual_seed(1234)
        floor = statistics.mean(sliced_wasserstein(gm.sample(n, g), gm.sample(n, g), generator=g) for _ in range(6))
        tv_floor = statistics.mean(mode_tv(gm, make_sde("vp"), gm.sample(n, g).reshape(n, *gm.event_shape)) for _ in range(6))
        floors[target] = dict(sw=floor, tv=tv_floor)
        print(f"\n== target {target} (D={gm.dim}), n={n}: SW2 noise floor {floor:.4f}, mode-TV floor {tv_floor:.4f}", flush=True)
        print(f"{'sde':6s} {'sampler':20s} {'steps':>5s} {'NFE':>6s} {'SW2/floor':>9s} {'modeTV':>7s} {'time[s]':>8s}")
        for sde_name in SDE_NAMES:
            sde = make_sde(sde_name)
            sf = gm.score_fn(sde)
            for label, kw, step_list in samplers(args.quick):
                if args.only and label not in args.only:
                    continue
                if args.steps and step_list != (1,):
                    step_list = tuple(args.steps)
                for steps in step_list:
                    row = dict(target=target, sde=sde_name, sampler=label, steps=steps)
                    t0 = time.perf_counter()
                    try:
                        sws = []
                        for rep in range(args.seeds):
                            res = sample(sde, sf, (n, *gm.event_shape), steps=steps,
                                         generator=torch.Generator().manual_seed(steps + 100_003 * rep), **kw)
                            sws.append(sw_to_truth(gm, res.samples, g))
                        wall = (time.perf_counter() - t0) / args.seeds
                        x = res.samples
                        row.update(nfe=res.nfe, time=wall, sw=statistics.mean(sws), tv=mode_tv(gm, sde, x), finite=True)
                        row["sw_ratio"] = row["sw"] / floor
                        if args.seeds > 1:
                            row["sw_ratios"] = [v / floor for v in sws]
                    except FloatingPointError as e:
                        row.update(nfe=None, time=time.perf_counter() - t0, sw=math.inf, sw_ratio=math.inf, tv=math.nan,
                                   finite=False, error=str(e)[:200])
                    except Exception as e:  # a solver that cannot run this configuration: record, don't abort
                        row.update(nfe=None, time=time.perf_counter() - t0, sw=math.nan, sw_ratio=math.nan, tv=math.nan,
                                   finite=None, error=f"{type(e).__name__}: {str(e)[:200]}")
                    results.append(row)
                    spread = (f"  (seeds: {min(row['sw_ratios']):.2f}-{max(row['sw_ratios']):.2f})"
                              if "sw_ratios" in row else "")
                    print(f"{sde_name:6s} {label:20s} {steps:5d} {str(row['nfe']):>6s} {row['sw_ratio']:9.2f} "
                          f"{row['tv']:7.3f} {row['time']:8.2f}" + (f"  [{row.get('error')}]" if "error" in row else "") + spread,
                          flush=True)

    if not args.no_overhead:
        print("\n== overhead (exact score, 10,000 2-D points)")
    ovh = [] if args.no_overhead else overhead(steps=100 if args.quick else 200)
    runtime = time.perf_counter() - start
    print(f"\nruntime {runtime:.0f}s")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json.dump(dict(n=n, quick=args.quick, seeds=args.seeds, floors=floors, results=results, overhead=ovh, runtime_s=runtime,
                   threads=args.threads), open(out.with_suffix(".json"), "w"), indent=1, default=str)
    plot(results, floors, args.targets, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


def plot(results, floors, targets, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(targets), len(SDE_NAMES), figsize=(5 * len(SDE_NAMES), 4 * len(targets)), squeeze=False)
    labels = sorted({r["sampler"] for r in results})
    cmap = plt.get_cmap("tab20")
    for i, target in enumerate(targets):
        for j, sde_name in enumerate(SDE_NAMES):
            ax = axes[i][j]
            for k, label in enumerate(labels):
                rows = [r for r in results if r["target"] == target and r["sde"] == sde_name and r["sampler"] == label
                        and r.get("nfe") and math.isfinite(r["sw_ratio"])]
                if not rows:
                    continue
                rows.sort(key=lambda r: r["nfe"])
                style = "o" if label.startswith("ode") else "o-"
                ax.plot([r["nfe"] for r in rows], [r["sw_ratio"] for r in rows], style, color=cmap(k % 20), label=label, ms=3)
            ax.axhline(1.0, color="k", lw=0.8)
            ax.axhline(1.5, color="k", lw=0.8, ls="--")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{target} / {sde_name}")
            ax.set_xlabel("NFE")
            ax.set_ylabel("SW2 / noise floor")
    axes[0][-1].legend(fontsize=6, loc="upper right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
