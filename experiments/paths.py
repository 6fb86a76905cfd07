"""Every Gaussian path side by side: VE, VP, sub-VP, cosine, EDM and rectified flow.

Three parts, each optional:

* **oracle** — the exact model of an analytic target (2-D ``ring`` and 16-D ``gmm16``) under each path,
  sampled by Heun, DPM-Solver++(2M), Euler on the probability-flow ODE (``pc`` with the ``probability_flow``
  predictor, no corrector) and the PC sampler (reverse diffusion + Langevin) at NFE 5…200; quality is SW2 to a
  fixed true set as a ratio to the noise floor (``experiments/fast_solvers.py``'s quality function, averaged
  over ``--seeds`` prior draws). Plus each path's likelihood bias against the exact log-density (exact
  divergence, RK45 at ``--ll-tol``).
* **reference** — where the ``bench`` extra is installed (``pip install -e .[bench]``): Meta's
  ``flow_matching`` (its ``ODESolver``, torchdiffeq's dopri5) and ``torchcfm`` (its conditional flow
  matchers and torchdyn's ODE) on the *same* exact rectified-flow velocity: ODE samples from the same noise
  at equal tolerance, the log-likelihood, and the training targets. Their time runs from noise (0) to data
  (1): ``t_theirs = 1 − t``, ``v_theirs(x, t) = −u(x, 1 − t)``.
* **mnist** — one network per path (the same small DDPM++ for every family; each family's own
  parametrization, time label and objective from ``configs/<family>/mnist.py``) trained on MNIST for the
  same CPU budget (``--minutes`` each), then FID-LeNet of ``--n-fid`` samples at about 10 and 20 NFE for
  each solver, test bits/dim (Hutchinson, ``--bpd-tol``) and the training loss curves. FID-LeNet needs the
  classifier of ``sde-lab train-classifier --dataset mnist``. The budget is wall time: give the run the
  machine to itself.

    python experiments/paths.py                       # all three parts (~45 min on 2 cores: 5 + 40)
    python experiments/paths.py --parts oracle reference
    python experiments/paths.py --quick               # smoke run (minutes)
    python experiments/paths.py --merge a.json b.json # combine runs (later files win, MNIST family by family)

Writes figures/paths.json and figures/paths.png (oracle curves; MNIST FID and loss curves when run); prints
tables and the runtime.
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
from fast_solvers import _one, nfe_to_floor, oracle_problem  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["ve", "vp", "subvp", "cosine", "edm", "rectified_flow"]
NFE = [5, 10, 15, 20, 30, 50, 100, 200]
# label -> (solver name, NFE -> options (None: not at this NFE)); every state in float64, so all solvers start
# from the same prior draws (a float32 draw from the same generator is another sample, and SW2 at n = 2000
# moves by ±0.4 of the floor between draws)
F64 = {"dtype": torch.float64}
SOLVERS = {
    "heun": ("heun", lambda nfe: {"steps": (nfe + 1) // 2, **F64}),
    "dpm_solver_pp": ("dpm_solver_pp", lambda nfe: {"steps": nfe - 1, **F64}),
    "euler": ("pc", lambda nfe: {"steps": nfe - 1, "predictor": "probability_flow", "corrector": "none", **F64}),
    "pc": ("pc", lambda nfe: {"steps": (nfe - 1) // 2, **F64} if nfe >= 5 else None),
}


# --- oracle -----------------------------------------------------------------------------------------------


def oracle_part(targets, families, n, seeds, quick, ll_tol, ll_n) -> dict:
    from sde_lab import log_likelihood
    from sde_lab.analytic import make_target
    from sde_lab.registry import make_sde

    out: dict = {"curves": {}, "nfe_to_floor": {}, "likelihood": {}}
    grid = NFE[::2] if quick else NFE
    for target in targets:
        for fam in families:
            t0 = time.time()
            prob = oracle_problem(target, fam, n)
            key = f"{target}/{fam}"
            curves = {}
            for label, (solver, make) in SOLVERS.items():
                pts = [_one(prob, solver, make(k), 0, seeds) for k in grid if make(k) is not None]
                for p in pts:
                    p["ratio"] = p["sw2"] / prob.floor
                curves[label] = pts
            out["curves"][key] = {"floor": prob.floor, "curves": curves}
            out["nfe_to_floor"][key] = {lab: nfe_to_floor(c, prob.floor, 1.5) for lab, c in curves.items()}

            gm, path = make_target(target), make_sde(fam)
            x = gm.sample(ll_n, torch.Generator().manual_seed(7), dtype=torch.float64)
            eps = 1e-5 * path.T
            res = log_likelihood(gm.model(path), x, divergence="exact", eps=eps, rtol=ll_tol, atol=ll_tol)
            exact = gm.marginal_log_prob(path, x, torch.full((ll_n,), eps, dtype=torch.float64))
            err = (res.log_prob - exact) / gm.dim
            out["likelihood"][key] = {"bias": err.mean().item(), "stderr": err.std().item() / math.sqrt(ll_n),
                                      "max_abs": err.abs().max().item(), "nfe": res.nfe, "t_end": res.info["t_end"]}
            print(f"  {key:22s} {time.time() - t0:5.1f} s", flush=True)
    return out


def print_oracle(res: dict) -> list[str]:
    lines = ["NFE to reach SW2 <= 1.5 x floor with the exact model (— = not within 200)",
             f"{'target/path':24s} " + " ".join(f"{s:>14s}" for s in SOLVERS) + f" {'NLL bias':>10s} {'ODE NFE':>8s}"]
    for key, d in res["nfe_to_floor"].items():
        ll = res["likelihood"][key]
        lines.append(f"{key:24s} " + " ".join(f"{'—' if d[s] is None else d[s]:>14}" for s in SOLVERS)
                     + f" {ll['bias']:+10.1e} {ll['nfe']:8d}")
    lines.append("SW2 / floor at 10 and 20 NFE (heun: 9 / 19)")
    for key, d in res["curves"].items():
        row = f"{key:24s} "
        for s in SOLVERS:
            pts = {p["nfe"]: p["ratio"] for p in d["curves"][s]}
            near = [min(pts, key=lambda k: abs(k - target)) for target in (10, 20)] if pts else []
            row += f" {s}: " + " / ".join(f"{pts[k]:.2f}" for k in near)
        lines.append(row)
    return lines


# --- reference implementations ---------------------------------------------------------------------------


def reference_part(n: int, tols) -> dict:
    """The same exact rectified-flow velocity in sde_lab, Meta's flow_matching and torchcfm/torchdyn."""
    from sde_lab import log_likelihood, sample
    from sde_lab.analytic import make_target
    from sde_lab.sampling import ProbabilityFlowODE
    from sde_lab.sde import RectifiedFlow

    out: dict = {}
    rf, gm = RectifiedFlow(), make_target("gmm16")
    model = gm.model(rf)
    z = torch.randn(n, gm.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x_data = gm.sample(n, torch.Generator().manual_seed(4), dtype=torch.float64)
    eps = 1e-5

    calls = [0]

    def theirs(x, t):  # noise (t = 0) -> data (t = 1); torchdiffeq's first-step probe may look past t = 1
        calls[0] += 1
        t = t.reshape(-1)
        tt = (1 - t).expand(x.shape[0]) if t.numel() == 1 else 1 - t
        return -model.velocity(x, tt.to(x.dtype).clamp(0.0, 1.0))

    def ours(tol):
        return sample(model, (n, gm.dim), solver=ProbabilityFlowODE(rtol=tol, atol=tol, denoise=False),
                      grid=torch.tensor([1.0, eps], dtype=torch.float64), x_init=z.clone())

    exact_ref = ours(1e-10).samples  # a tight solution of the same ODE
    exact_lp = gm.marginal_log_prob(rf, x_data, torch.full((n,), eps, dtype=torch.float64))
    rows = []
    try:
        from flow_matching.solver import ODESolver
    except ImportError:
        print("flow_matching not installed (pip install -e .[bench]): skipping Meta's flow_matching", flush=True)
        ODESolver = None
    for tol in tols:
        a = ours(tol)
        row = {"tol": tol, "sde_lab_nfe": a.nfe, "sde_lab_err": (a.samples - exact_ref).abs().max().item()}
        ll = log_likelihood(model, x_data, divergence="exact", eps=eps, rtol=tol, atol=tol)
        row["sde_lab_ll_err"] = ((ll.log_prob - exact_lp) / gm.dim).abs().max().item()
        row["sde_lab_ll_mean_err"] = ((ll.log_prob - exact_lp) / gm.dim).mean().item()
        row["sde_lab_ll_nfe"] = ll.nfe
        if ODESolver is not None:
            solver = ODESolver(velocity_model=lambda x, t: theirs(x, t))
            calls[0] = 0
            b = solver.sample(x_init=z.clone(), method="dopri5", step_size=None, atol=tol, rtol=tol,
                              time_grid=torch.tensor([0.0, 1.0 - eps], dtype=torch.float64))
            row["meta_nfe"] = calls[0]
            row["meta_err"] = (b - exact_ref).abs().max().item()
            row["sde_lab_vs_meta"] = (a.samples - b).abs().max().item()
            row["sde_lab_vs_meta_mean"] = (a.samples - b).abs().mean().item()

            def log_p0(x):
                return -0.5 * (x**2).sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi)

            _, lp = solver.compute_likelihood(x_1=x_data.clone(), log_p0=log_p0, method="dopri5", step_size=None,
                                              atol=tol, rtol=tol, exact_divergence=True,
                                              time_grid=torch.tensor([1.0, 0.0], dtype=torch.float64))
            exact0 = gm.marginal_log_prob(rf, x_data, torch.zeros(n, dtype=torch.float64))
            row["meta_ll_err"] = ((lp - exact0) / gm.dim).abs().max().item()
            row["ll_sde_lab_vs_meta"] = ((ll.log_prob - lp) / gm.dim).abs().max().item()
            row["ll_sde_lab_vs_meta_mean"] = ((ll.log_prob - lp) / gm.dim).mean().item()
        rows.append(row)
    out["flow_matching"] = rows

    try:
        import torchcfm.conditional_flow_matching as cfm
        from torchdyn.core import NeuralODE
    except ImportError:
        print("torchcfm not installed (pip install -e .[bench]): skipping torchcfm", flush=True)
        return out
    from sde_lab.model import VelocityTarget, Coefficients

    # training targets on the same draws: torchcfm's (x_t, u_t) against rectified flow's x_t and velocity target
    g = torch.Generator().manual_seed(5)
    x1, x0 = gm.sample(n, g, dtype=torch.float64), torch.randn(n, gm.dim, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    fm = cfm.ConditionalFlowMatcher(sigma=0.0)
    xt_c, ut_c = fm.compute_mu_t(x0, x1, t), fm.compute_conditional_flow(x0, x1, t, None)
    a, s = rf.marginal(1 - t)
    xt_ours = a[:, None] * x1 + s[:, None] * x0
    u_ours = VelocityTarget().target(x1, x0, xt_ours, Coefficients(rf, 1 - t, 2))
    out["torchcfm_targets"] = {"x_t": (xt_c - xt_ours).abs().max().item(), "u_t": (ut_c + u_ours).abs().max().item()}

    class _Field(torch.nn.Module):
        def forward(self, t, x, *args, **kwargs):
            return theirs(x, torch.as_tensor(t, dtype=x.dtype))

    node = NeuralODE(_Field(), solver="dopri5", sensitivity="adjoint", atol=1e-7, rtol=1e-7)
    with torch.no_grad():
        traj = node.trajectory(z.clone(), t_span=torch.tensor([0.0, 1.0 - eps], dtype=torch.float64))
    out["torchdyn"] = {"tol": 1e-7, "err": (traj[-1] - exact_ref).abs().max().item()}
    return out


def print_reference(res: dict) -> list[str]:
    lines = ["Rectified flow, gmm16, exact velocity: max |x - x_tight| of ODE samples (noise -> t = 1e-5) and max "
             "|log-likelihood error| per dim"]
    for r in res.get("flow_matching", []):
        line = (f"  tol {r['tol']:.0e}: sde_lab err {r['sde_lab_err']:.1e} ({r['sde_lab_nfe']} NFE), ll err "
                f"{r['sde_lab_ll_err']:.1e}")
        if "meta_err" in r:
            line += (f"; flow_matching err {r['meta_err']:.1e} ({r['meta_nfe']} NFE), ll err {r['meta_ll_err']:.1e}; "
                     f"sde_lab - flow_matching: samples max {r['sde_lab_vs_meta']:.1e} mean {r['sde_lab_vs_meta_mean']:.1e}, "
                     f"ll max {r['ll_sde_lab_vs_meta']:.1e} mean {r['ll_sde_lab_vs_meta_mean']:+.1e} nats/dim")
        lines.append(line)
    if "torchcfm_targets" in res:
        d = res["torchcfm_targets"]
        lines.append(f"  torchcfm ConditionalFlowMatcher(sigma=0) vs sde_lab: x_t {d['x_t']:.1e}, u_t {d['u_t']:.1e}; "
                     f"torchdyn dopri5 at 1e-7: err {res['torchdyn']['err']:.1e}")
    return lines


# --- MNIST ------------------------------------------------------------------------------------------------

SAME_NET = ["model.nf=16", "model.ch_mult=(1,2,4)", "model.num_res_blocks=1", "model.attn_resolutions=()",
            "model.resblock_type='ddpm'", "model.dropout=0.0", "model.fir=False", "model.progressive_input='none'",
            "optim.lr=1e-3"]
MNIST_SOLVERS = {  # label -> (solver name, NFE budget -> options)
    "heun": ("heun", lambda nfe: {"steps": nfe // 2}),
    "dpm_solver_pp": ("dpm_solver_pp", lambda nfe: {"steps": nfe - 1}),
    "euler": ("pc", lambda nfe: {"steps": nfe - 1, "predictor": "probability_flow", "corrector": "none"}),
    "em": ("pc", lambda nfe: {"steps": nfe - 1, "predictor": "euler_maruyama", "corrector": "none"}),
    "pc": ("pc", lambda nfe: {"steps": nfe // 2}),
}


def mnist_part(families, minutes, n_fid, n_test, bpd_tol, budgets, workdir: Path, quick: bool, overwrite: bool = False) -> dict:
    from mnist_sdes import train_for

    from sde_lab import sample
    from sde_lab.classifier import default_classifier_path, load_classifier
    from sde_lab.config import apply_overrides, load_config
    from sde_lab.data import get_dataset, get_pixels, make_scaler
    from sde_lab.likelihood import bits_per_dim, mean_and_stderr
    from sde_lab.metrics import ClassifierFeatures, FeatureStats, frechet_distance_from_features

    clf, meta = load_classifier(default_classifier_path("mnist"))  # says how to train one when missing
    feats = ClassifierFeatures(clf, centered=bool(meta.get("centered", False)))
    ref = FeatureStats.from_features(feats(get_dataset("mnist", split="test").x))
    train = get_dataset("mnist", split="train")
    real = train.x[torch.randperm(len(train.x), generator=torch.Generator().manual_seed(0))[:n_fid]]
    floor = frechet_distance_from_features(feats(real), ref)
    pixels, _ = get_pixels("mnist", "test", n=n_test)
    print(f"MNIST: FID-LeNet floor ({n_fid} real training images) {floor:.2f}", flush=True)
    out: dict = {"fid_floor": floor, "n_fid": n_fid, "minutes": minutes, "rows": [], "curves": {}, "net": SAME_NET}
    for fam in families:
        config = load_config(ROOT / "configs" / fam / "mnist.py")
        apply_overrides(config, ["device='cpu'", "training.tensorboard=False", "seed=0", "optim.warmup=200",
                                 "training.snapshot_freq=0", "training.keep_checkpoints=2"] + SAME_NET)
        model, steps, losses, train_s, ckpt = train_for(config, workdir / fam, minutes, 10, overwrite)
        model.eval()
        print(f"[{fam}] {steps} steps in {train_s:.0f} s; {sum(p.numel() for p in model.parameters())} parameters", flush=True)
        row = {"family": fam, "steps": steps, "train_s": round(train_s, 1), "fid": {}, "nfe": {}}
        for label, (solver, make) in MNIST_SOLVERS.items():
            for budget in budgets:
                res = sample(model, (n_fid, 1, 28, 28), solver=solver, generator=torch.Generator().manual_seed(1),
                             **make(budget))
                x = ((res.samples.float().clamp(-1, 1) + 1) / 2) if config.data.centered else res.samples.float().clamp(0, 1)
                fid = frechet_distance_from_features(feats(x), ref) if torch.isfinite(x).all() else float("inf")
                row["fid"][f"{label}@{budget}"] = fid
                row["nfe"][f"{label}@{budget}"] = int(res.nfe)
                print(f"[{fam}] {label:14s} NFE {res.nfe:3d}: FID-LeNet {fid:7.2f}", flush=True)
        t0 = time.time()
        scaler = make_scaler(bool(config.data.centered))
        bpds, nfe = [], 0
        for lo in range(0, len(pixels), 32):
            r = bits_per_dim(model.path, model, pixels[lo:lo + 32], scaler, generator=torch.Generator().manual_seed(2 + lo),
                             divergence="hutchinson", rtol=bpd_tol, atol=bpd_tol, compute_dtype=torch.float32)
            bpds.append(r.bpd)
            nfe += r.nfe
        mean, se = mean_and_stderr(torch.cat(bpds, 1))
        row.update(bpd=mean, bpd_stderr=se, bpd_nfe=nfe, bpd_s=round(time.time() - t0, 1),
                   t_end=r.runs[0].info["t_end"], checkpoint=str(ckpt))
        print(f"[{fam}] bits/dim {mean:.3f} ± {se:.3f} ({n_test} test images, {nfe} NFE, {row['bpd_s']} s)", flush=True)
        out["rows"].append(row)
        out["curves"][fam] = losses
    return out


def print_mnist(res: dict, budgets) -> list[str]:
    cols = [f"{s}@{b}" for s in MNIST_SOLVERS for b in budgets]
    lines = [f"MNIST, {res['minutes']:g} min of training per path, same network; FID-LeNet of {res['n_fid']} samples "
             f"(floor {res['fid_floor']:.2f})",
             f"{'path':15s} {'steps':>6s} " + " ".join(f"{c:>17s}" for c in cols) + f" {'bits/dim':>14s}"]
    for r in res["rows"]:
        lines.append(f"{r['family']:15s} {r['steps']:6d} "
                     + " ".join(f"{r['fid'][c]:10.2f} ({r['nfe'][c]:3d})" for c in cols)
                     + f" {r['bpd']:7.3f} ± {r['bpd_stderr']:.3f}")
    for b in budgets:
        best = min(((r["fid"][f"{s}@{b}"], r["family"], s) for r in res["rows"] for s in MNIST_SOLVERS))
        lines.append(f"best at ~{b} NFE: {best[1]} with {best[2]} (FID-LeNet {best[0]:.2f})")
    if res["rows"]:
        b = min(res["rows"], key=lambda r: r["bpd"])
        lines.append(f"best bits/dim: {b['family']} {b['bpd']:.3f} ± {b['bpd_stderr']:.3f}")
    return lines


# --- figure -----------------------------------------------------------------------------------------------


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    oracle, mnist = results.get("oracle"), results.get("mnist")
    targets = sorted({k.split("/")[0] for k in oracle["curves"]}) if oracle else []
    n_rows = len(targets) + (1 if mnist else 0)
    fig, axes = plt.subplots(max(n_rows, 1), len(SOLVERS), figsize=(3.6 * len(SOLVERS), 3.0 * max(n_rows, 1)), squeeze=False)
    colors = dict(zip(FAMILIES, plt.cm.tab10.colors))
    for i, target in enumerate(targets):
        for j, s in enumerate(SOLVERS):
            ax = axes[i, j]
            for key, d in oracle["curves"].items():
                tg, fam = key.split("/")
                if tg != target:
                    continue
                pts = [(p["nfe"], p["ratio"]) for p in d["curves"][s] if p["nfe"] and math.isfinite(p["ratio"])]
                if pts:
                    ax.plot(*zip(*pts), "o-", ms=3, label=fam, color=colors.get(fam))
            ax.axhline(1.5, color="k", lw=0.6, ls="--")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{target}: {s}", fontsize=9)
            ax.set_xlabel("NFE")
            if j == 0:
                ax.set_ylabel("SW2 / noise floor")
    if targets:
        axes[0, 0].legend(fontsize=7)
    if mnist:
        r = n_rows - 1
        ax = axes[r, 0]
        for fam, c in mnist["curves"].items():
            if c:
                steps, loss = zip(*c)
                k = max(1, len(loss) // 50)
                sm = [sum(loss[i:i + k]) / len(loss[i:i + k]) for i in range(0, len(loss), k)]
                ax.plot(steps[::k][:len(sm)], [v / sm[-1] for v in sm], label=fam, color=colors.get(fam))
        ax.set_yscale("log")
        ax.set_title("MNIST training loss / final loss", fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        for j, s in enumerate(list(MNIST_SOLVERS)[: len(SOLVERS) - 1]):
            ax = axes[r, j + 1]
            for row in mnist["rows"]:
                pts = sorted((row["nfe"][k], v) for k, v in row["fid"].items() if k.startswith(s + "@") and math.isfinite(v))
                if pts:
                    ax.plot(*zip(*pts), "o-", ms=3, label=row["family"], color=colors.get(row["family"]))
            ax.axhline(mnist["fid_floor"], color="k", lw=0.6, ls="--")
            ax.set_yscale("log")
            ax.set_title(f"MNIST FID-LeNet: {s}", fontsize=9)
            ax.set_xlabel("NFE")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge(paths: list[str], budgets) -> dict:
    """Combine runs: later files replace earlier ones part by part, and MNIST rows family by family."""
    results: dict = {"merged_from": paths}
    for p in paths:
        d = json.loads(Path(p).read_text())
        for part in ("oracle", "reference"):
            if part in d:
                results[part] = d[part]
        if "mnist" in d:
            m = results.setdefault("mnist", {**d["mnist"], "rows": [], "curves": {}})
            for key in ("fid_floor", "n_fid", "minutes", "net"):
                if m.get(key) != d["mnist"].get(key):
                    raise ValueError(f"{p}: MNIST {key} {d['mnist'].get(key)!r} differs from {m.get(key)!r}; runs don't compare")
            rows = {r["family"]: r for r in m["rows"]}
            rows.update({r["family"]: r for r in d["mnist"]["rows"]})
            m["rows"] = [rows[f] for f in FAMILIES if f in rows]
            m["curves"].update(d["mnist"]["curves"])
    lines = []
    if "oracle" in results:
        lines += print_oracle(results["oracle"]) + [""]
    if "reference" in results:
        lines += print_reference(results["reference"]) + [""]
    if "mnist" in results:
        lines += print_mnist(results["mnist"], budgets)
    results["summary"] = lines
    return results


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--parts", nargs="+", default=["oracle", "reference", "mnist"], choices=["oracle", "reference", "mnist"])
    ap.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    ap.add_argument("--targets", nargs="+", default=["ring", "gmm16"])
    ap.add_argument("--n", type=int, default=2000, help="oracle samples per run (and reference set size)")
    ap.add_argument("--seeds", type=int, default=2, help="prior draws averaged per oracle point")
    ap.add_argument("--ll-tol", type=float, default=1e-5, help="rtol = atol of the oracle likelihood")
    ap.add_argument("--ll-n", type=int, default=256, help="points for the oracle likelihood")
    ap.add_argument("--minutes", type=float, default=4.0, help="MNIST training wall time per path")
    ap.add_argument("--n-fid", type=int, default=500, help="MNIST samples per FID-LeNet")
    ap.add_argument("--n-test", type=int, default=32, help="MNIST test images for bits/dim")
    ap.add_argument("--bpd-tol", type=float, default=1e-5)
    ap.add_argument("--budgets", nargs="+", type=int, default=[10, 20], help="MNIST NFE budgets")
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "paths"))
    ap.add_argument("--overwrite", action="store_true", help="move previous MNIST runs in --workdir aside and train afresh")
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer points, tiny budgets")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "figures" / "paths"))
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="only combine earlier runs' JSON files into --out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.merge:
        results = merge(args.merge, args.budgets)
        out = Path(args.out)
        print("\n".join(results["summary"]))
        out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
        figure(results, out.with_suffix(".png"))
        print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
        return results
    if args.quick:
        args.n, args.seeds, args.ll_n, args.minutes, args.n_fid, args.n_test, args.bpd_tol = 500, 1, 32, 0.2, 50, 4, 1e-3
    start, results, lines = time.time(), {"args": vars(args)}, []
    if "oracle" in args.parts:
        print("oracle:", flush=True)
        results["oracle"] = oracle_part(args.targets, args.families, args.n, args.seeds, args.quick, args.ll_tol, args.ll_n)
        lines += print_oracle(results["oracle"]) + [""]
    if "reference" in args.parts:
        print("reference implementations:", flush=True)
        results["reference"] = reference_part(500 if args.quick else 2000, [1e-5, 1e-7, 1e-9])
        lines += print_reference(results["reference"]) + [""]
    if "mnist" in args.parts:
        results["mnist"] = mnist_part(args.families, args.minutes, args.n_fid, args.n_test, args.bpd_tol, args.budgets,
                                      Path(args.workdir), args.quick, args.overwrite)
        lines += print_mnist(results["mnist"], args.budgets)
    print("\n" + "\n".join(lines))
    results["summary"] = lines
    results["runtime_s"] = round(time.time() - start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    if "oracle" in results or "mnist" in results:
        figure(results, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}; runtime {results['runtime_s']:.0f} s")
    return results


if __name__ == "__main__":
    main()
