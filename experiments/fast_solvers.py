"""Fast samplers vs the PC / Euler–Maruyama baselines: sample quality (SW2 against the noise floor) vs NFE.

For every problem (an SDE, a score function, a sample shape and a quality function with its noise floor)
and every solver of ``sde_lab.sample`` — heun, dpm_solver (orders 1/2/3), dpm_solver_pp, adaptive (a
tolerance sweep), torchsde's adaptive ``sdeint`` — and the baselines ``pc`` (reverse diffusion +
Langevin, the paper's default) and ``pc`` with Euler–Maruyama and no corrector, it measures the quality
at NFE 5…1000 and reports the smallest NFE that reaches 1.5 × the noise floor.

Problems here are the analytic oracle (exact score) on a 2-D target and gmm16 for VE, VP and sub-VP.
Other problems plug in through :class:`Problem` — e.g. a trained network's score with a FID-type quality
function: ``run_problem(Problem(...), ...)``.

    python experiments/fast_solvers.py [--n 5000] [--quick]

Writes figures/fast_solvers.json and figures/fast_solvers.png; prints a table and the runtime.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from sde_lab.analytic import make_target
from sde_lab.metrics import sliced_wasserstein
from sde_lab.registry import make_sde
from sde_lab import sample
from sde_lab.sde import SDE

ROOT = Path(__file__).resolve().parents[1]
FIG = ROOT / "figures"

NFE_FAST = [5, 10, 15, 20, 30, 50, 100, 200]
NFE_BASELINE = [10, 20, 30, 50, 100, 200, 500, 1000]
NFE_BASELINE_MAX = 500  # default cap (--nfe-max 1000 for the full sweep)
ADAPTIVE_TOLS = [(0.2, 0.5), (0.1, 0.3), (0.05, 0.2), (0.03, 0.1), (0.01, 0.05), (0.005, 0.02)]
SDEINT_TOLS = [(1e-1, 1e-1), (3e-2, 3e-2)]
TOLERANCE_CURVES = ("adaptive", "adaptive_rms", "sdeint-adaptive")  # swept over tolerances, not NFE


@dataclass(frozen=True)
class Problem:
    """What a solver is run on: ``quality(samples) -> float`` (lower is better) and its noise ``floor``."""

    name: str
    sde: SDE
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    shape: tuple[int, ...]
    quality: Callable[[torch.Tensor], float]
    floor: float


def _oracle_quality(target: str, n: int, seed: int = 0):
    gm = make_target(target)
    ref = gm.sample(n, torch.Generator().manual_seed(seed + 1), dtype=torch.float64)

    def quality(x: torch.Tensor) -> float:
        return sliced_wasserstein(x, ref, generator=torch.Generator().manual_seed(seed + 2))

    return gm, quality


def oracle_floor(target: str, n: int, seed: int = 0, repeats: int = 8) -> float:
    """What a perfect sampler scores under the *same* quality function: mean SW2 of fresh true sets to the
    reference set, same projections. (``metrics.noise_floor`` compares pairs of fresh sets under fresh
    projections; on gmm16 with n = 1000 and 4 repeats it gave 0.074 where true sets score ~0.050 here.)"""
    gm, quality = _oracle_quality(target, n, seed)
    return sum(quality(gm.sample(n, torch.Generator().manual_seed(seed + 100 + k), dtype=torch.float64))
               for k in range(repeats)) / repeats


def oracle_problem(target: str, sde_name: str, n: int, seed: int = 0) -> Problem:
    """The exact score of an analytic target; quality = SW2 to a fixed true sample set of size ``n``."""
    gm, quality = _oracle_quality(target, n, seed)
    sde = make_sde(sde_name)
    return Problem(f"{target}/{sde_name}", sde, gm.score_fn(sde), (n, *gm.event_shape), quality,
                   oracle_floor(target, n, seed))


# label -> (solver name, NFE -> options for that NFE budget or None, family)
def _runs() -> dict[str, tuple[str, Callable[[int], dict | None], str]]:
    return {
        "heun": ("heun", lambda nfe: {"steps": (nfe + 1) // 2}, "ode"),
        "dpm_solver-1": ("dpm_solver", lambda nfe: {"steps": nfe - 1, "order": 1}, "ode"),
        "dpm_solver-2": ("dpm_solver", lambda nfe: {"steps": nfe - 1, "order": 2}, "ode"),
        "dpm_solver-3": ("dpm_solver", lambda nfe: {"steps": nfe - 1, "order": 3}, "ode"),
        "dpm_solver_pp-2M": ("dpm_solver_pp", lambda nfe: {"steps": nfe - 1}, "ode"),
        "pc-EM": ("pc", lambda nfe: {"steps": nfe - 1, "predictor": "euler_maruyama", "corrector": "none"}, "baseline"),
        "pc-RD+Langevin": ("pc", lambda nfe: {"steps": (nfe - 1) // 2} if nfe >= 3 else None, "baseline"),
    }


def _one(problem: Problem, solver: str, opts: dict, seed: int, seeds: int = 1) -> dict:
    """Quality averaged over ``seeds`` independent runs (an ODE solver maps a fixed prior draw
    deterministically, so one unlucky draw shows up identically in every ODE solver); NFE of the first."""
    t0 = time.perf_counter()
    qs, nfe = [], None
    try:
        for k in range(seeds):
            r = sample(problem.sde, problem.score_fn, problem.shape, solver=solver,
                       generator=torch.Generator().manual_seed(seed + 1000 * k), **opts)
            qs.append(problem.quality(r.samples))
            nfe = r.nfe if nfe is None else nfe
    except FloatingPointError:
        qs, nfe = [float("inf")], None
    return {"nfe": nfe, "sw2": sum(qs) / len(qs), "sw2_runs": qs, "seconds": time.perf_counter() - t0,
            "options": {k: v for k, v in opts.items()}}


def run_problem(problem: Problem, *, quick: bool = False, seed: int = 0, with_sdeint: bool = True,
                nfe_max: int = NFE_BASELINE_MAX, seeds: int = 1, only: list[str] | None = None) -> dict:
    """Every solver's quality-vs-NFE curve on ``problem`` (``only``: just these curve labels)."""
    out: dict = {"floor": problem.floor, "curves": {}}
    for label, (solver, make_opts, family) in _runs().items():
        if only and label not in only:
            continue
        grid = [n for n in (NFE_BASELINE if family == "baseline" else NFE_FAST) if n <= nfe_max]
        if quick:
            grid = grid[::2]
        pts = []
        for nfe in grid:
            opts = make_opts(nfe)
            if opts is None or opts.get("steps", 1) < 1:
                continue
            pts.append(_one(problem, solver, opts, seed, seeds))
        out["curves"][label] = pts
    tols = ADAPTIVE_TOLS[::2] if quick else ADAPTIVE_TOLS
    if not only or "adaptive" in only:
        out["curves"]["adaptive"] = [_one(problem, "adaptive", {"abs_tol": a, "rel_tol": r}, seed, seeds)
                                       for a, r in tols]
    if not only or "adaptive_rms" in only:  # the batch's RMS error controls the step (error_norm="batch_rms")
        out["curves"]["adaptive_rms"] = [
            _one(problem, "adaptive", {"abs_tol": a, "rel_tol": r, "error_norm": "batch_rms"}, seed, seeds) for a, r in tols
        ]
    if with_sdeint and (not only or "sdeint-adaptive" in only):  # torchsde's own adaptive mode, for comparison (sdeint_sample(adaptive=True))
        out["curves"]["sdeint-adaptive"] = [
            _one(problem, "sdeint", {"adaptive": True, "rtol": r, "atol": a, "steps": 50, "dtype": torch.float64}, seed,
                 seeds)
            for a, r in SDEINT_TOLS
        ]
    return out


def nfe_to_floor(points: list[dict], floor: float, factor: float = 1.5) -> int | None:
    """Smallest measured NFE with quality ≤ factor × floor (None if never reached)."""
    ok = [p["nfe"] for p in points if p["nfe"] is not None and p["sw2"] <= factor * floor]
    return min(ok) if ok else None


def summarize(results: dict, factor: float = 1.5) -> list[str]:
    lines = []
    header = f"{'problem':14s} {'floor':>7s} " + " ".join(f"{k:>16s}" for k in next(iter(results.values()))["curves"])
    lines.append(f"NFE to reach SW2 <= {factor} x floor (— = not reached within the grid)")
    lines.append(header)
    for name, res in results.items():
        row = f"{name:14s} {res['floor']:7.4f} "
        for label, pts in res["curves"].items():
            n = nfe_to_floor(pts, res["floor"], factor)
            row += f"{('—' if n is None else str(n)):>16s} "
        lines.append(row)
    lines.append("")
    lines.append(f"ratios: best fast ODE solver vs PC baselines; adaptive vs Euler–Maruyama (NFE to {factor} x floor)")
    for name, res in results.items():
        c = res["curves"]
        fast = {k: nfe_to_floor(c[k], res["floor"], factor) for k in c if k.startswith(("heun", "dpm"))}
        fast = {k: v for k, v in fast.items() if v is not None}
        best = min(fast.items(), key=lambda kv: kv[1]) if fast else (None, None)
        pc, em = (nfe_to_floor(c.get(k, []), res["floor"], factor) for k in ("pc-RD+Langevin", "pc-EM"))
        ad, ad_rms = (nfe_to_floor(c.get(k, []), res["floor"], factor) for k in ("adaptive", "adaptive_rms"))
        r1 = f"{pc / best[1]:.1f}x" if pc and best[1] else "n/a"
        r2 = f"{em / best[1]:.1f}x" if em and best[1] else "n/a"
        r3 = f"{em / ad:.2f}x" if em and ad else "n/a"
        r4 = f"{em / ad_rms:.2f}x" if em and ad_rms else "n/a"
        head = f"best={best[0]}@{best[1]}  pc={pc} ({r1})  " if fast else ""
        lines.append(f"{name:14s} {head}em={em} ({r2})  adaptive={ad} (EM/adaptive {r3})"
                     f"  adaptive_rms={ad_rms} (EM/adaptive_rms {r4})")
    return lines


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    cols = 3
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        res = results[name]
        for label, pts in res["curves"].items():
            pts = [p for p in pts if p["nfe"] is not None and math.isfinite(p["sw2"])]
            if not pts:
                continue
            pts.sort(key=lambda p: p["nfe"])
            style = "--" if label.startswith(("pc", "sdeint")) else "-"
            ax.plot([p["nfe"] for p in pts], [p["sw2"] for p in pts], style, marker="o", ms=3, label=label)
        ax.axhline(res["floor"], color="k", lw=0.8)
        ax.axhline(1.5 * res["floor"], color="k", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("NFE")
        ax.set_ylabel("SW2")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nfe-max", type=int, default=NFE_BASELINE_MAX, help="largest baseline NFE (up to 1000)")
    ap.add_argument("--n", type=int, default=3000, help="samples per run (and size of the reference set)")
    ap.add_argument("--targets", default="ring,gmm16")
    ap.add_argument("--sdes", default="ve,vp,subvp")
    ap.add_argument("--quick", action="store_true", help="every other grid point (smoke run)")
    ap.add_argument("--no-sdeint", action="store_true", help="skip torchsde's adaptive sdeint")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=1, help="independent runs averaged per point (SW2 is noisy)")
    ap.add_argument("--only", nargs="+", metavar="CURVE",
                    help="run only these curves (e.g. pc-EM adaptive_rms)")
    ap.add_argument("--out", default=str(FIG / "fast_solvers"))
    ap.add_argument("--refloor", action="store_true", help="with --merge: recompute the oracle noise floors")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="only merge earlier runs' JSON files into --out")
    args = ap.parse_args(argv)
    curves = [*_runs(), *TOLERANCE_CURVES]
    if args.only and (bad := [c for c in args.only if c not in curves]):
        ap.error(f"unknown curve(s) {', '.join(bad)}; valid: {', '.join(curves)}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.merge:
        merge(args.merge, out, refloor=args.refloor)
        return 0
    start = time.perf_counter()
    results = {}
    for target in args.targets.split(","):
        for sde_name in args.sdes.split(","):
            t0 = time.perf_counter()
            problem = oracle_problem(target, sde_name, args.n)
            results[problem.name] = run_problem(problem, quick=args.quick, with_sdeint=not args.no_sdeint,
                                                nfe_max=args.nfe_max, seeds=args.seeds, only=args.only)
            print(f"{problem.name}: {time.perf_counter() - t0:.1f}s", flush=True)
            _write(results, out, args, time.perf_counter() - start, final=False)  # partial results survive
    runtime = time.perf_counter() - start
    _write(results, out, args, runtime)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}; runtime {runtime:.1f}s")
    return 0


def _write(results: dict, out: Path, args, runtime: float, final: bool = True) -> None:
    lines = summarize(results, 1.5) + [""] + summarize(results, 1.2)
    if final:
        print("\n".join(lines))
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"n": args.n, "nfe_max": args.nfe_max, "seeds": args.seeds, "only": args.only, "runtime_s": runtime, "complete": final}
    with open(out.with_suffix(".json"), "w") as f:
        json.dump({**meta, "results": results, "summary": lines}, f, indent=1, default=str)
    if final:
        plot(results, out.with_suffix(".png"))


def merge(paths: list[str], out: Path, refloor: bool = False) -> None:
    """Combine the JSON files of several runs (e.g. one per target) into one table, JSON and figure."""
    results, meta = {}, []
    for p in paths:
        d = json.load(open(p))
        if refloor:  # recompute oracle floors with the current definition (cheap: no sampling)
            for name, res in d["results"].items():
                res["floor_at_run"] = res["floor"]
                res["floor"] = oracle_floor(name.split("/")[0], d["n"])
        meta.append({k: d[k] for k in ("n", "nfe_max", "runtime_s", "complete") if k in d} | {"file": p})
        results.update(d["results"])
    lines = summarize(results, 1.5) + [""] + summarize(results, 1.2)
    print("\n".join(lines))
    with open(out.with_suffix(".json"), "w") as f:
        json.dump({"runs": meta, "results": results, "summary": lines}, f, indent=1, default=str)
    plot(results, out.with_suffix(".png"))


if __name__ == "__main__":
    raise SystemExit(main())
