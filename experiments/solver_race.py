"""Solver race: every sde_lab ODE/SDE solver against diffusers' schedulers and k-diffusion's samplers, one run.

On the same exact scores (the analytic oracle: ``ring`` in 2-D, ``gmm16`` in 16-D) under VE, VP and sub-VP,
every solver runs at 5, 6, 8, 10, 12, 15, 20 and 50 NFE from the same prior draws (``--seeds`` of them):

* sde_lab — DPM-Solver++(2M), (3M), UniPC-2/3 (bh2) and UniPC-2 (bh1), DEIS-3 (tAB), DPM-Solver-3, Heun,
  DPM-Solver++(2M) SDE and Euler-ancestral, each on its default grid (λ-uniform for the exponential
  integrators, Karras ρ = 7 for Heun and the ancestral samplers) ending with the denoising step, and on
  diffusers' layout (uniform in t, every NFE a step; the better of the two is kept per NFE, as for the peers);
* diffusers — ``DPMSolverMultistepScheduler`` (2M, 3M, SDE), ``UniPCMultistepScheduler``,
  ``DEISMultistepScheduler``, ``EulerAncestralDiscreteScheduler``, ``HeunDiscreteScheduler``, each with its
  default timesteps and with ``use_karras_sigmas=True`` (the better of the two is kept per NFE); VP only
  (its schedulers assume α² + σ² = 1: VE and sub-VP are shown as not expressible);
* k-diffusion — ``sample_dpmpp_2m``, ``sample_dpmpp_3m_sde(eta=0)``, ``sample_heun``, ``sample_dpm_2``,
  ``sample_lms``, ``sample_euler_ancestral``, ``sample_dpmpp_2m_sde`` with Karras and exponential σ
  (better kept), on every path through the σ-form denoiser (``experiments/peers.py``).

Quality is SW2 to a fixed true set as a ratio to the noise floor (what true samples score), mean over seeds
with the spread (max − min)/2; "NFE to 1.5×" is the smallest NFE of the list with mean ratio ≤ 1.5. The
adaptive part runs sde_lab's adaptive DPM-Solver-23 and k-diffusion's ``sample_dpm_adaptive`` at equal
tolerances, and sde_lab's adaptive reverse-SDE solver. The overhead part times each solver at 20 NFE on
10,000 points of the 2-D problem as (solver wall time)/(NFE × one model evaluation) in one run.
``--parts mnist`` adds a trained MNIST model (FID-LeNet of 500 samples at 5, 10 and 20 NFE).

    python experiments/solver_race.py [--seeds 3] [--quick] [--parts oracle adaptive overhead mnist]

Writes figures/solver_race.json and figures/solver_race.png; prints the tables. Needs the bench extra
(diffusers) and k-diffusion's samplers (``make bench-deps``); a peer that is missing is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
from fast_solvers import _oracle_quality, oracle_floor  # noqa: E402

from sde_lab import sample  # noqa: E402
from sde_lab.analytic import make_target  # noqa: E402
from sde_lab.fast_samplers import AdaptiveSDE  # noqa: E402
from sde_lab.multistep import AdaptiveDPMSolver  # noqa: E402
from sde_lab.registry import make_sde  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIG = ROOT / "figures"
NFES = [5, 6, 8, 10, 12, 15, 20, 50]
EPS = 1e-3

# label -> (solver name, NFE budget -> options or None); every run ends with the denoising step (1 NFE)
SDE_LAB = {
    "dpm++2m": ("dpm_solver_pp", lambda k: {"steps": k - 1, "order": 2}),
    "dpm++3m": ("dpm_solver_pp", lambda k: {"steps": k - 1, "order": 3}),
    "unipc-2": ("unipc", lambda k: {"steps": k - 1, "order": 2}),
    "unipc-3": ("unipc", lambda k: {"steps": k - 1, "order": 3}),
    "unipc-2-bh1": ("unipc", lambda k: {"steps": k - 1, "order": 2, "variant": "bh1"}),
    "deis-3": ("deis", lambda k: {"steps": k - 1, "order": 3}),
    "dpm_solver-3": ("dpm_solver", lambda k: {"steps": k - 1, "order": 3}),
    "heun": ("heun", lambda k: {"steps": (k + 1) // 2}),
    "dpm++2m-sde": ("dpm_solver_pp_sde", lambda k: {"steps": k - 1}),
    "euler-ancestral": ("euler_ancestral", lambda k: {"steps": k - 1}),
}
STOCHASTIC = {"dpm++2m-sde", "euler-ancestral", "d:dpmpp_2m_sde", "d:euler_ancestral", "k:euler_ancestral", "k:dpmpp_2m_sde"}
DIFFUSERS = ["d:dpmpp_2m", "d:dpmpp_3m", "d:unipc_2", "d:unipc_3", "d:deis_3", "d:heun", "d:dpmpp_2m_sde",
             "d:euler_ancestral"]
K_DIFF = ["k:dpmpp_2m", "k:dpmpp_3m", "k:heun", "k:dpm_2", "k:lms", "k:dpmpp_2m_sde", "k:euler_ancestral"]


def have_diffusers() -> bool:
    try:
        import diffusers  # noqa: F401

        return True
    except ImportError:
        return False


def _ratio(quality, floor, x) -> float:
    if not bool(torch.isfinite(x).all()):
        return float("inf")
    return quality(x.double()) / floor


def _priors(path, n, shape, seeds):
    return [path.prior_sample((n, *shape), torch.Generator().manual_seed(100 + s), dtype=torch.float64) for s in range(seeds)]


def _run_sde_lab(label, model, x_T, nfe, seed, uniform=False):
    """``uniform``: diffusers' layout instead of the solver's default — a grid uniform in t ending at eps,
    every NFE spent on a step (no denoising step)."""
    name, make = SDE_LAB[label]
    opts = make(nfe)
    if opts is None or opts.get("steps", 1) < 1:
        return None, None
    if uniform:
        if name in ("heun", "dpm_solver"):
            return None, None  # their `steps` are not intervals of one NFE (Heun's levels, DPM-Solver's budget)
        opts = {**opts, "steps": opts["steps"] + 1, "grid": "uniform", "denoise": False}
    r = sample(model, tuple(x_T.shape), solver=name, x_init=x_T, generator=torch.Generator().manual_seed(seed), **opts)
    return r.samples, r.nfe


def _run_diffusers(label, model, x_T, nfe, seed, karras):
    steps = (nfe + 1) // 2 if label == "d:heun" else nfe
    cfg = {"use_karras_sigmas": True} if karras else {}
    return peers.run_diffusers(label, model, x_T, steps, generator=torch.Generator().manual_seed(seed), **cfg)


def _run_k(label, model, x_T, nfe, seed, sigmas):
    return peers.run_k_diffusion(label, model, x_T, nfe, EPS, sigmas=sigmas, generator=torch.Generator().manual_seed(seed))


def _problem(target: str, sde_name: str, n: int, seeds: int):
    """The exact model of ``target`` on the path, its SW2 quality function and floor, and the prior draws."""
    path = make_sde(sde_name)
    gm = make_target(target)
    _, quality = _oracle_quality(target, n)
    return path, gm.model(path), quality, oracle_floor(target, n), _priors(path, n, gm.event_shape, seeds)


def race_problem(target: str, sde_name: str, n: int, seeds: int, nfes, quick: bool, only=None) -> dict:
    path, model, quality, floor, priors = _problem(target, sde_name, n, seeds)
    curves: dict = {}

    def measure(label, runner):
        pts = []
        for nfe in nfes:
            ratios, used = [], None
            for s, x_T in enumerate(priors):
                try:
                    x, k = runner(model, x_T, nfe, s)
                except (ValueError, FloatingPointError, RuntimeError) as e:
                    if "variance-preserving" in str(e):
                        return None
                    x, k = None, nfe
                if x is None and k is None:
                    break
                used = k
                ratios.append(float("inf") if x is None else _ratio(quality, floor, x))
            if ratios and used is not None and used > nfe:
                raise AssertionError(f"{label}: {used} NFE for a budget of {nfe}")
            if ratios:
                mean = sum(ratios) / len(ratios)
                pts.append({"nfe_budget": nfe, "nfe": used, "ratio": mean,
                            "spread": (max(ratios) - min(ratios)) / 2 if all(map(math.isfinite, ratios)) else float("inf")})
        return pts

    keep = (lambda label: label in only) if only else (lambda label: True)
    for label in filter(keep, SDE_LAB):
        variants = [measure(label, lambda m, x, k, s, label=label, u=u: _run_sde_lab(label, m, x, k, s, u))
                    for u in ((False,) if quick else (False, True))]
        curves[label] = _best(variants)
    if have_diffusers() and peers.diffusers_supports(path):
        for label in filter(keep, DIFFUSERS):
            settings = (False, True) if not quick and _takes_karras(label) else (False,)
            variants = [measure(label, lambda m, x, k, s, label=label, kr=kr: _run_diffusers(label, m, x, k, s, kr))
                        for kr in settings]
            curves[label] = _best(variants)
    if peers.k_diffusion_sampling() is not None:
        for label in filter(keep, K_DIFF):
            variants = [measure(label, lambda m, x, k, s, label=label, sg=sg: _run_k(label, m, x, k, s, sg))
                        for sg in (("karras",) if quick else ("karras", "exponential"))]
            curves[label] = _best(variants)
    return {"floor": floor, "n": n, "seeds": seeds, "curves": curves,
            "diffusers": "n/a (not variance-preserving)" if not peers.diffusers_supports(path) else "ok"}


def _takes_karras(label) -> bool:
    import inspect

    import diffusers

    return "use_karras_sigmas" in inspect.signature(getattr(diffusers, peers.SCHEDULERS[label][0]).__init__).parameters


def _best(variants):
    """Per NFE, the better of a peer's settings (its default timesteps, Karras σ, exponential σ)."""
    variants = [v for v in variants if v]
    if not variants:
        return None
    out = []
    for pts in zip(*variants):
        out.append(min(pts, key=lambda p: p["ratio"]))
    return out


def nfe_to(points, factor=1.5):
    ok = [p["nfe"] for p in points or [] if p["ratio"] <= factor]
    return min(ok) if ok else None


def best_at(curves, prefix_filter, nfe):
    best = None
    for label, pts in curves.items():
        if not pts or not prefix_filter(label):
            continue
        for p in pts:
            if p["nfe_budget"] == nfe and (best is None or p["ratio"] < best[1]["ratio"]):
                best = (label, p)
    return best


def summary(results) -> list[str]:
    lines = []
    for prob, res in results.items():
        c = res["curves"]
        lines.append(f"\n{prob}: SW2 / floor (floor {res['floor']:.4f}, {res['seeds']} seeds; ± = half the seed range); "
                     f"diffusers: {res['diffusers']}")
        lines.append(f"{'solver':18s} " + " ".join(f"{k:>11d}" for k in NFES) + "  NFE→1.5×")
        for label, pts in c.items():
            if not pts:
                continue
            by = {p["nfe_budget"]: p for p in pts}
            cells = [f"{by[k]['ratio']:6.2f}±{min(by[k]['spread'], 9.99):4.2f}" if k in by and math.isfinite(by[k]["ratio"])
                     else f"{'—':>11s}" for k in NFES]
            lines.append(f"{label:18s} " + " ".join(cells) + f"  {nfe_to(pts) or '—'}")
        ours = lambda lab: not lab.startswith(("d:", "k:"))  # noqa: E731
        peer = lambda lab: lab.startswith(("d:", "k:"))  # noqa: E731
        row = []
        for k in NFES:
            a, b = best_at(c, ours, k), best_at(c, peer, k)
            if a and b:
                tie = a[1]["ratio"] <= b[1]["ratio"] + a[1]["spread"] + b[1]["spread"]
                row.append(f"{k}: {a[0]} {a[1]['ratio']:.2f} vs {b[0]} {b[1]['ratio']:.2f} {'ok' if tie else 'BEHIND'}")
        lines.append("best sde_lab vs best peer: " + "; ".join(row))
    return lines


def headline(results) -> list[str]:
    """Per problem: NFE to 1.5× the floor of the best sde_lab solver and of the best peer, and the best ratio at
    5, 8, 10 and 20 NFE of each side."""
    ours = lambda lab: not lab.startswith(("d:", "k:"))  # noqa: E731
    peer = lambda lab: lab.startswith(("d:", "k:"))  # noqa: E731
    lines = ["\n| problem | NFE to 1.5× (sde_lab / peers) | best at 5 NFE | 8 | 10 | 20 |", "|---|---|---|---|---|---|"]
    for prob, res in results.items():
        c = res["curves"]
        n_ours = min([v for lab, pts in c.items() if ours(lab) and (v := nfe_to(pts))] or [None], key=lambda v: v or 1e9)
        n_peer = min([v for lab, pts in c.items() if peer(lab) and (v := nfe_to(pts))] or [None], key=lambda v: v or 1e9)
        cells = []
        for k in (5, 8, 10, 20):
            a, b = best_at(c, ours, k), best_at(c, peer, k)
            cells.append(f"{a[1]['ratio']:.2f} ({a[0]}) / {b[1]['ratio']:.2f} ({b[0]})" if a and b else "—")
        lines.append(f"| {prob} | {n_ours} / {n_peer} | " + " | ".join(cells) + " |")
    return lines


# --- adaptive -----------------------------------------------------------------------------------------------
TOLS = [(0.1, 0.02), (0.05, 0.0078), (0.02, 0.004), (0.01, 0.002)]


def adaptive_part(targets, sdes, n, seeds) -> dict:
    out = {}
    for target in targets:
        for sde_name in sdes:
            path, model, quality, floor, priors = _problem(target, sde_name, n, seeds)
            rows = []
            for rtol, atol in TOLS:
                rec = {"rtol": rtol, "atol": atol}
                for label, run in [
                    ("sde_lab dpm_adaptive-3", lambda x: _nfe(AdaptiveDPMSolver(rtol=rtol, atol=atol)(model, x, _ends(path)))),
                    ("k-diffusion dpm_adaptive-3", lambda x: peers.run_k_adaptive(model, x, EPS, rtol=rtol, atol=atol)),
                ]:
                    if label.startswith("k-") and peers.k_diffusion_sampling() is None:
                        continue
                    res = [run(x) for x in priors]
                    rec[label] = {"nfe": sum(r[1] for r in res) / len(res),
                                  "ratio": sum(_ratio(quality, floor, r[0]) for r in res) / len(res)}
                rows.append(rec)
            sde_rows = []
            for abs_tol, rel_tol in [(0.0078, 0.05), (0.03, 0.1)]:
                res = [_nfe(AdaptiveSDE(abs_tol=abs_tol, rel_tol=rel_tol)(model, x, _ends(path),
                                                                           noise=torch.Generator().manual_seed(s)))
                       for s, x in enumerate(priors)]
                sde_rows.append({"abs_tol": abs_tol, "rel_tol": rel_tol, "nfe": sum(r[1] for r in res) / len(res),
                                 "ratio": sum(_ratio(quality, floor, r[0]) for r in res) / len(res)})
            out[f"{target}/{sde_name}"] = {"floor": floor, "ode": rows, "sde": sde_rows}
    return out


def _ends(path):
    return torch.tensor([float(path.t_max), EPS], dtype=torch.float64)


def _nfe(r):
    return r.samples, r.nfe


def adaptive_summary(res) -> list[str]:
    lines = ["\nAdaptive solvers: NFE and SW2/floor (mean over seeds)"]
    for prob, r in res.items():
        for row in r["ode"]:
            cells = [f"{k.split()[0]}: {v['nfe']:.0f} NFE, {v['ratio']:.2f}×" for k, v in row.items() if isinstance(v, dict)]
            lines.append(f"  {prob:12s} rtol {row['rtol']:<5g} atol {row['atol']:<6g} " + " | ".join(cells))
        for row in r["sde"]:
            lines.append(f"  {prob:12s} adaptive SDE abs {row['abs_tol']:<6g} rel {row['rel_tol']:<5g}: {row['nfe']:.0f} NFE, "
                         f"{row['ratio']:.2f}×")
    return lines


# --- overhead -----------------------------------------------------------------------------------------------
def overhead_part(n=10_000, nfe=20, repeats=3) -> dict:
    path = make_sde("vp")
    gm = make_target("ring")
    model = gm.model(path)
    x_T = path.prior_sample((n, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.full((n,), 0.5, dtype=torch.float64)

    def score_time():
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(10):
                model.x0(x_T, t)
            best = min(best, (time.perf_counter() - t0) / 10)
        return best

    runners = {label: (lambda x, label=label: _run_sde_lab(label, model, x, nfe, 0)) for label in SDE_LAB}
    if have_diffusers():
        for label in ("d:dpmpp_2m", "d:unipc_2", "d:deis_3", "d:euler_ancestral"):
            runners[label] = lambda x, label=label: _run_diffusers(label, model, x, nfe, 0, False)
    if peers.k_diffusion_sampling() is not None:
        for label in ("k:dpmpp_2m", "k:dpmpp_3m", "k:euler_ancestral", "k:dpmpp_2m_sde"):
            runners[label] = lambda x, label=label: _run_k(label, model, x, nfe, 0, "karras")
    out = {"n": n, "nfe": nfe, "rows": {}}
    for label, run in runners.items():
        best, used = float("inf"), None
        for _ in range(repeats):
            st = score_time()
            t0 = time.perf_counter()
            _, used = run(x_T)
            best = min(best, (time.perf_counter() - t0) / (used * st))
        out["rows"][label] = {"overhead": best, "nfe": used}
    return out


# --- MNIST --------------------------------------------------------------------------------------------------
def mnist_part(minutes: float, n_fid: int, budgets, workdir: Path, overwrite: bool = False) -> dict:
    from mnist_sdes import train_for
    from paths import SAME_NET

    from sde_lab.classifier import default_classifier_path, load_classifier
    from sde_lab.config import apply_overrides, load_config
    from sde_lab.data import get_dataset
    from sde_lab.metrics import ClassifierFeatures, FeatureStats, frechet_distance_from_features

    clf, meta = load_classifier(default_classifier_path("mnist"))
    feats = ClassifierFeatures(clf, centered=bool(meta.get("centered", False)))
    ref = FeatureStats.from_features(feats(get_dataset("mnist", split="test").x))
    train = get_dataset("mnist", split="train")
    real = train.x[torch.randperm(len(train.x), generator=torch.Generator().manual_seed(0))[:n_fid]]
    floor = frechet_distance_from_features(feats(real), ref)
    config = load_config(ROOT / "configs" / "vp" / "mnist.py")
    apply_overrides(config, ["device='cpu'", "training.tensorboard=False", "seed=0", "optim.warmup=200",
                             "training.snapshot_freq=0", "training.keep_checkpoints=2"] + SAME_NET)
    model, steps, _, train_s, _ = train_for(config, workdir / "vp", minutes, 10, overwrite)
    model.eval()
    print(f"MNIST VP: {steps} steps in {train_s:.0f} s; FID-LeNet floor {floor:.2f}", flush=True)
    shape = (n_fid, 1, 28, 28)
    x_T = model.path.prior_sample(shape, torch.Generator().manual_seed(1), dtype=torch.float64)

    def fid(x):
        x = x.float()
        x = ((x.clamp(-1, 1) + 1) / 2) if config.data.centered else x.clamp(0, 1)
        return frechet_distance_from_features(feats(x), ref) if torch.isfinite(x).all() else float("inf")

    rows: dict = {}
    labels = ["dpm++2m", "dpm++3m", "unipc-2", "unipc-3", "deis-3", "heun", "dpm++2m-sde", "euler-ancestral"]
    peer_labels = (["d:dpmpp_2m", "d:unipc_2", "d:deis_3"] if have_diffusers() else []) + \
                  (["k:dpmpp_2m", "k:dpmpp_3m", "k:dpmpp_2m_sde"] if peers.k_diffusion_sampling() is not None else [])
    for label in labels + peer_labels:
        rows[label] = {}
        for k in budgets:
            if label in SDE_LAB:
                x, used = _run_sde_lab(label, model, x_T, k, 0)
            elif label.startswith("d:"):
                x, used = _run_diffusers(label, model, x_T, k, 0, False)
            else:
                x, used = _run_k(label, model, x_T, k, 0, "karras")
            rows[label][str(k)] = {"fid": fid(x), "nfe": used}
            print(f"  MNIST {label:16s} NFE {used:3d}: FID-LeNet {rows[label][str(k)]['fid']:.2f}", flush=True)
    return {"floor": floor, "steps": steps, "minutes": minutes, "n_fid": n_fid, "rows": rows}


def plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    cols = 3
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for label, pts in results[name]["curves"].items():
            pts = [p for p in pts or [] if math.isfinite(p["ratio"])]
            if not pts:
                continue
            style = ":" if label.startswith("k:") else "--" if label.startswith("d:") else "-"
            ax.plot([p["nfe"] for p in pts], [p["ratio"] for p in pts], style, marker="o", ms=2.5, lw=1, label=label)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(1.5, color="k", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(0.8, 30)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("NFE")
        ax.set_ylabel("SW2 / floor")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=5.5, ncol=2)
    fig.suptitle("sde_lab (solid) vs diffusers (dashed) vs k-diffusion (dotted), exact scores", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["oracle", "adaptive", "overhead"],
                    choices=["oracle", "adaptive", "overhead", "mnist"])
    ap.add_argument("--targets", nargs="+", default=["ring", "gmm16"])
    ap.add_argument("--sdes", nargs="+", default=["ve", "vp", "subvp"])
    ap.add_argument("--n", type=int, default=2000, help="samples per run (and the reference set)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer NFE, one peer setting, one seed (smoke run)")
    ap.add_argument("--minutes", type=float, default=4.0, help="MNIST training time")
    ap.add_argument("--overwrite", action="store_true", help="move a previous MNIST run in runs/solver_race aside and train afresh")
    ap.add_argument("--n-fid", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="+", metavar="CURVE", help="oracle part: run only these curves (merge the JSON after)")
    ap.add_argument("--out", default=str(FIG / "solver_race"))
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="merge earlier runs' JSON files into --out and re-plot")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.merge:
        data: dict = {}
        for f in args.merge:
            for k, v in json.loads(Path(f).read_text()).items():
                if k == "oracle" and isinstance(data.get(k), dict):
                    for prob, res in v.items():  # later files replace curves, problem by problem
                        if prob in data[k]:
                            data[k][prob]["curves"].update(res["curves"])
                        else:
                            data[k][prob] = res
                elif isinstance(v, dict) and isinstance(data.get(k), dict):
                    data[k].update(v)
                else:
                    data[k] = v
        _write(data, out)
        if data.get("oracle"):
            print("\n".join(summary(data["oracle"])))
            print("\n".join(headline(data["oracle"])))
        if data.get("adaptive"):
            print("\n".join(adaptive_summary(data["adaptive"])))
        return 0
    if not have_diffusers():
        print("note: diffusers is not installed (pip install -e '.[bench]'): its schedulers are skipped")
    if peers.k_diffusion_sampling() is None:
        print("note: k-diffusion is not installed (pip install --no-deps k-diffusion): its samplers are skipped")
    nfes = [5, 10, 20] if args.quick else NFES
    seeds = 1 if args.quick else args.seeds
    start = time.perf_counter()
    data = {"args": vars(args), "nfes": nfes}
    if "oracle" in args.parts:
        data["oracle"] = {}
        for target in args.targets:
            for sde_name in args.sdes:
                t0 = time.perf_counter()
                data["oracle"][f"{target}/{sde_name}"] = race_problem(target, sde_name, args.n, seeds, nfes, args.quick,
                                                                           args.only)
                print(f"[{target}/{sde_name}] {time.perf_counter() - t0:.0f} s", flush=True)
        print("\n".join(summary(data["oracle"])))
    if "adaptive" in args.parts:
        data["adaptive"] = adaptive_part(args.targets, args.sdes, args.n, seeds)
        print("\n".join(adaptive_summary(data["adaptive"])))
    if "overhead" in args.parts:
        data["overhead"] = overhead_part()
        print(f"\nOverhead at {data['overhead']['n']} points, {data['overhead']['nfe']} NFE: wall / (NFE × model evaluation)")
        for label, r in data["overhead"]["rows"].items():
            print(f"  {label:18s} {r['overhead']:.2f}")
    if "mnist" in args.parts:
        data["mnist"] = mnist_part(args.minutes, args.n_fid, [5, 10, 20], ROOT / "runs" / "solver_race", args.overwrite)
    data["runtime_s"] = round(time.perf_counter() - start, 1)
    _write(data, out)
    print(f"\nruntime {data['runtime_s']} s -> {out}.json, {out}.png")
    return 0


def _write(data, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str))
    if data.get("oracle"):
        plot(data["oracle"], out.with_suffix(".png"))


if __name__ == "__main__":
    raise SystemExit(main())
