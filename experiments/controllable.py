"""Controllable generation on the analytic oracle (and on a trained MNIST model when one is given).

1. Inpainting / imputation (Song et al. 2021, Appendix I.2, and SMCDiff, Trippe et al. 2022):
   2-D targets with x observed and y imputed,
   and gmm8x8 with the top half of an image observed, for VE / VP / sub-VP with the PC sampler
   (reverse diffusion + Langevin, ``--steps``). Quality: SW2 of the imputed coordinates to the exact
   conditional (``GaussianMixture.condition``) over the SW2 noise floor, and the fraction of completions
   in each mixture component vs the exact conditional weights. A control run samples the missing
   coordinates with the *exact conditional score* and the same sampler: it separates sampler error
   from the approximation made by the replacement algorithm.
2. Class-conditional sampling with the exact noise-conditional classifier ``p_t(k | x)`` (classifier
   guidance) for several scales γ: mode proportions and per-coordinate spread of the samples vs the
   exact conditional (γ = 1: the component) and vs the tilted density ``∝ p(x) p(y | x)^γ`` at t = 0
   (computed by reweighting exact samples), which guidance with γ ≠ 1 is often said to sample.
3. MNIST (only with ``--checkpoint``, a training workdir or checkpoint file of an MNIST score model;
   ``--classifier`` a state dict of ``sde_lab.classifier.Classifier(1, 10, 28, time_conditional=True)``
   for class-guided grids): half-image inpainting grid and class-guided grid, written as PNG.

    python experiments/controllable.py [--quick] [--steps 1000] [--n 2000]
                                       [--checkpoint WORKDIR] [--classifier CLF.pt] [--guidance 2.0]

Writes figures/controllable.json and figures/controllable.png (+ controllable_mnist.png with a checkpoint);
prints tables and the runtime.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sde_lab.analytic import GaussianMixture, make_target
from sde_lab.conditional import ClassifierGuidance, Inpainting, inpaint, smc_inpaint
from sde_lab import conditional_sample
from sde_lab.metrics import noise_floor, sliced_wasserstein
from sde_lab.registry import make_sde
from sde_lab import sample

ROOT = Path(__file__).resolve().parents[1]
FIG = ROOT / "figures"
SDE_NAMES = ["ve", "vp", "subvp"]
EPS_T = 1e-3


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mode_fractions(gm: GaussianMixture, sde, x: torch.Tensor) -> list[float]:
    post = gm.posterior(sde, x.double(), torch.full((x.shape[0],), EPS_T, dtype=torch.float64))
    return (torch.bincount(post.argmax(1), minlength=gm.n_components).double() / x.shape[0]).tolist()


def _sw_ratio(x: torch.Tensor, target: GaussianMixture, floor: float, seed: int) -> float:
    g = _gen(seed)
    return sliced_wasserstein(x.flatten(1), target.sample(x.shape[0], g), generator=g) / floor


# --- 1. inpainting -------------------------------------------------------------------------------


INPAINT_CASES = [("ring", 0.0), ("ring", 1.414), ("ring", 2.0), ("aniso", -1.5), ("aniso", 1.4)]
SMC_PARTICLES = 32
UNION_N = 5000  # the class-{0,1} proportions are compared to within 2%: n = 1000 has a 1.5% standard error


def inpainting(n: int, steps: int) -> list[dict]:
    rows = []
    for target, x_obs in INPAINT_CASES:
        gm = make_target(target)
        mask = torch.tensor([1, 0])
        cond = gm.condition(mask, torch.tensor([x_obs, 0.0]))
        floor = noise_floor(lambda m, g: cond.sample(m, g), n, generator=_gen(11))
        # the exact component weights of the conditional, via the joint's components
        for sde_name in SDE_NAMES:
            sde = make_sde(sde_name)
            obs = torch.tensor([[x_obs, float("nan")]]).expand(n, 2).contiguous()
            t0 = time.perf_counter()
            res = inpaint(sde, gm.score_fn(sde), obs, mask, steps=steps, generator=_gen(1))
            wall = time.perf_counter() - t0
            ctrl = sample(sde, cond.score_fn(sde), (n, 1), steps=steps, generator=_gen(2))
            t0 = time.perf_counter()
            # n independent filters of SMC_PARTICLES particles, one completion each: independent draws, as the
            # floor assumes (the population of a single filter shares ancestors after resampling)
            smc = smc_inpaint(sde, gm.score_fn(sde), obs, mask, particles=SMC_PARTICLES, steps=steps, generator=_gen(3))
            wall_smc = time.perf_counter() - t0
            pop = smc.samples
            rows.append({
                "target": target, "x_obs": x_obs, "sde": sde_name, "steps": steps, "n": n, "nfe": res.nfe,
                "sw_over_floor": _sw_ratio(res.samples[:, 1:], cond, floor, 3),
                "control_exact_score_sw_over_floor": _sw_ratio(ctrl.samples, cond, floor, 3),
                "smc_sw_over_floor": _sw_ratio(pop[:, 1:], cond, floor, 3),
                "smc_mode_fractions": _mode_fractions(gm, sde, pop), "smc_nfe": smc.nfe, "smc_wall_s": wall_smc,
                "smc_min_ess": min(smc.info["ess"]),
                "floor": floor,
                "mode_fractions": _mode_fractions(gm, sde, res.samples),
                "exact_weights": cond.weights.tolist(),
                "wall_s": wall,
                "samples_y": res.samples[:, 1].tolist() if sde_name == "vp" else None,
            })
    # image-shaped: gmm8x8, top half observed from each component
    gm = make_target("gmm8x8")
    mask = torch.zeros(1, 8, 8)
    mask[:, :4] = 1
    n_img = max(200, n // 4)
    for k in range(gm.n_components):
        x0 = gm.component(k).sample(1, _gen(20 + k))
        cond = gm.condition(mask, x0[0])
        floor = noise_floor(lambda m, g: cond.sample(m, g), n_img, generator=_gen(12))
        for sde_name in SDE_NAMES:
            sde = make_sde(sde_name)
            t0 = time.perf_counter()
            res = conditional_sample(sde, gm.score_fn(sde), (n_img, 1, 8, 8), Inpainting(x0, mask), steps=steps,
                                     generator=_gen(4))
            wall = time.perf_counter() - t0
            missing = res.samples.flatten(1)[:, ~mask.flatten().bool()]
            rows.append({
                "target": f"gmm8x8[comp {k}, top half]", "x_obs": None, "sde": sde_name, "steps": steps, "n": n_img,
                "nfe": res.nfe, "sw_over_floor": _sw_ratio(missing, cond, floor, 5),
                "control_exact_score_sw_over_floor": None, "smc_sw_over_floor": None, "floor": floor,
                "mode_fractions": _mode_fractions(gm, sde, res.samples), "exact_weights": cond.weights.tolist(),
                "wall_s": wall, "samples_y": None,
            })
    return rows


# --- 2. guided sampling --------------------------------------------------------------------------


OVERLAP = GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[-0.5, 0.0], [0.5, 0.0]]), torch.tensor([0.5, 0.5]))
"""Two heavily overlapping classes: guidance with γ ≠ 1 visibly moves and sharpens the class-conditional."""


def guidance(n: int, steps: int, scales: list[float], gm: GaussianMixture, label: str) -> list[dict]:
    """Class y = component 0 of ``gm`` with its exact classifier, VP and VE, for each scale."""
    y = 0
    ref = gm.sample(200_000, _gen(30), dtype=torch.float64)
    log_post = torch.log_softmax(
        torch.stack([torch.log(gm.weights[k]) + gm.component(k).log_prob(ref) for k in range(gm.n_components)], 1), 1
    )
    log_post0, ref_modes = log_post[:, y], log_post.argmax(1)
    rows = []
    for sde_name in ["vp", "ve"]:
        sde = make_sde(sde_name)
        for scale in scales:
            t0 = time.perf_counter()
            res = conditional_sample(sde, gm.score_fn(sde), (n, 2), ClassifierGuidance(gm.classifier_fn(sde), y, scale),
                                     steps=steps, generator=_gen(5))
            wall = time.perf_counter() - t0
            fr = _mode_fractions(gm, sde, res.samples)
            # tilted target ∝ p(x) p(y|x)^γ at t = 0, by self-normalised reweighting of exact samples
            w = torch.softmax(scale * log_post0, 0)
            tilt_mode = torch.bincount(ref_modes, weights=w, minlength=3).tolist()
            tilt_mean = (w[:, None] * ref).sum(0)
            tilt_std = ((w[:, None] * (ref - tilt_mean) ** 2).sum(0)).sqrt()
            in_y = res.samples
            rows.append({
                "target": label, "sde": sde_name, "scale": scale, "steps": steps, "n": n, "nfe": res.nfe, "wall_s": wall,
                "mode_fractions": fr, "sample_std": in_y.double().std(0).tolist(),
                "sample_mean": in_y.double().mean(0).tolist(),
                "tilted_mode_fractions": tilt_mode, "tilted_std": tilt_std.tolist(), "tilted_mean": tilt_mean.tolist(),
                "component_std": gm.stds[y].tolist(),
            })
    return rows


def guidance_union(n: int, steps: int, scales: list[float]) -> list[dict]:
    """aniso with class 0 = components {0, 1}: exact proportions 0.625 / 0.375 / 0 for scale 1."""
    gm = make_target("aniso")
    rows = []
    sde = make_sde("vp")
    clf = lambda x, t: torch.stack(  # noqa: E731
        [torch.logsumexp(gm.log_posterior(sde, x, t)[:, [0, 1]], 1), gm.log_posterior(sde, x, t)[:, 2]], 1
    )
    n = max(n, UNION_N)
    for scale in scales:
        res = conditional_sample(sde, gm.score_fn(sde), (n, 2), ClassifierGuidance(clf, 0, scale), steps=steps,
                                 generator=_gen(6))
        rows.append({"sde": "vp", "class": "{0,1}", "scale": scale, "steps": steps, "n": n, "nfe": res.nfe,
                     "mode_fractions": _mode_fractions(gm, sde, res.samples), "exact_scale1": [0.625, 0.375, 0.0]})
    return rows


# --- 3. MNIST --------------------------------------------------------------------------------------


def mnist(checkpoint: str, classifier_path: str | None, guidance_scale: float, steps: int, out: Path) -> dict:
    """Inpainting (top half observed) and, with a classifier, class-guided samples from a trained model."""
    import matplotlib.pyplot as plt

    from sde_lab.data import dataset_tensors
    from sde_lab.config import dataset_from_config, load_checkpoint_score, config_from_dict
    from sde_lab.training import load_checkpoint

    model = load_checkpoint_score(checkpoint)
    config = config_from_dict(json.loads(load_checkpoint(checkpoint)["config"]))
    sde = model.sde
    x, _ = dataset_tensors(dataset_from_config(config, split="test"), 8)
    H = x.shape[-2]
    mask = torch.zeros(1, H, 1)
    mask[:, : H // 2] = 1
    obs = x.repeat_interleave(4, 0)
    with torch.no_grad():
        res = inpaint(sde, model, obs, mask, steps=steps, generator=_gen(7), progress=True)
    panels = [("observed (top half)", torch.where(mask.bool().expand_as(obs), obs, torch.zeros_like(obs))),
              ("inpainted", res.samples)]
    if classifier_path:
        from sde_lab.classifier import Classifier

        clf = Classifier(x.shape[1], 10, H, time_conditional=True)
        clf.load_state_dict(torch.load(classifier_path, map_location="cpu"))
        clf.eval().requires_grad_(False)
        labels = torch.arange(10).repeat_interleave(4)
        g = conditional_sample(sde, model, (40, *x.shape[1:]), ClassifierGuidance(clf, labels, guidance_scale),
                               steps=steps, generator=_gen(8), progress=True)
        panels.append((f"class-guided, scale {guidance_scale}", g.samples))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4))
    for ax, (title, imgs) in zip(list(axes) if len(panels) > 1 else [axes], panels):
        grid = imgs[:40].reshape(-1, 4, *imgs.shape[1:]).permute(2, 0, 3, 1, 4).reshape(imgs.shape[1], -1, 4 * imgs.shape[-1])
        ax.imshow(grid[0].clamp(-1, 1), cmap="gray")
        ax.set_title(title)
        ax.axis("off")
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return {"checkpoint": str(checkpoint), "steps": steps, "nfe_inpaint": res.nfe, "figure": str(out)}


# --- figure and tables -----------------------------------------------------------------------------


def plot(inp: list[dict], gd: list[dict], scales: list[float], path: Path) -> None:
    import matplotlib.pyplot as plt

    cases = [r for r in inp if r["samples_y"] is not None]
    fig, axes = plt.subplots(1, len(cases) + 1, figsize=(3.3 * (len(cases) + 1), 3.2))
    grid = torch.linspace(-3.5, 3.5, 600, dtype=torch.float64)
    for ax, r in zip(axes, cases):
        gm = make_target(r["target"])
        cond = gm.condition(torch.tensor([1, 0]), torch.tensor([r["x_obs"], 0.0]))
        ax.hist(r["samples_y"], bins=80, range=(-3.5, 3.5), density=True, alpha=0.5, label="inpainted (VP)")
        ax.plot(grid, cond.log_prob(grid[:, None]).exp(), "k", lw=1, label="exact p(y | x)")
        ax.set_title(f"{r['target']}, x = {r['x_obs']}: SW2/floor {r['sw_over_floor']:.1f}", fontsize=8)
        ax.set_xlabel("y")
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    for sde_name, marker in [("vp", "o"), ("ve", "s")]:
        rs = [r for r in gd if r.get("sde") == sde_name and r.get("target") == "overlap"]
        ax.plot([r["scale"] for r in rs], [r["sample_mean"][0] for r in rs], marker=marker, label=f"sample mean x ({sde_name})")
        ax.plot([r["scale"] for r in rs], [r["sample_std"][0] for r in rs], marker=marker, ls=":", label=f"sample std x ({sde_name})")
    rs = [r for r in gd if r.get("sde") == "vp" and r.get("target") == "overlap"]
    ax.plot([r["scale"] for r in rs], [r["tilted_mean"][0] for r in rs], "k--", label="mean of ∝ p(x)p(y|x)^γ")
    ax.plot([r["scale"] for r in rs], [r["tilted_std"][0] for r in rs], "k-.", label="std of ∝ p(x)p(y|x)^γ")
    ax.set_xlabel("guidance scale γ")
    ax.set_title("overlap (2 classes), exact classifier, class 0", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--quick", action="store_true", help="n=500, steps=200 (smoke run)")
    p.add_argument("--scales", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 4.0])
    p.add_argument("--checkpoint", default=None, help="MNIST score-model checkpoint / workdir (optional)")
    p.add_argument("--classifier", default=None, help="state dict of a time-conditional MNIST Classifier (optional)")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    n, steps = (500, 200) if args.quick else (args.n, args.steps)
    start = time.perf_counter()
    FIG.mkdir(exist_ok=True)

    inp = inpainting(n, steps)
    print(f"\nInpainting (PC: reverse diffusion + Langevin, {steps} steps); SW2/floor of the imputed coordinates")
    print(f"replacement = inpaint (Appendix I.2); SMC = smc_inpaint, one completion from each of n filters of {SMC_PARTICLES} particles; ctrl = PC sampler with the exact"
          " conditional score (sampler error alone)")
    print(f"{'target':26s} {'x':>6s} {'sde':6s} {'nfe':>5s} {'replacement':>11s} {'SMC':>5s} {'ctrl':>5s}  mode fractions (exact)")
    for r in inp:
        ctrl = r["control_exact_score_sw_over_floor"]
        smc = r["smc_sw_over_floor"]
        fr = " ".join(f"{v:.3f}" for v in r["mode_fractions"])
        ex = " ".join(f"{v:.3f}" for v in r["exact_weights"])
        xo = "" if r["x_obs"] is None else f"{r['x_obs']:.3f}"
        print(f"{r['target']:26s} {xo:>6s} {r['sde']:6s} {r['nfe']:5d} {r['sw_over_floor']:11.2f} "
              f"{'' if smc is None else f'{smc:.2f}':>5s} {'' if ctrl is None else f'{ctrl:.2f}':>5s}  {fr}  ({ex})")
        if smc is not None:
            print(f"{'':26s} {'':6s} {'':6s} {'':5s} {'SMC mode fractions:':>23s} "
                  + " ".join(f"{v:.3f}" for v in r["smc_mode_fractions"]) + f"  (min ESS {r['smc_min_ess']:.2f})")

    gd = guidance(n, steps, args.scales, make_target("aniso"), "aniso")
    gd += guidance(n, steps, args.scales, OVERLAP, "overlap")
    gd += guidance_union(n, steps, args.scales)
    print("\nClassifier guidance, class y = component 0, exact classifier p_t(k | x); 'tilted' = ∝ p(x) p(y|x)^γ at t=0")
    print(f"{'target':8s} {'sde':4s} {'scale':>5s} {'frac y':>7s} {'tilted':>7s} {'mean x':>7s} {'tilted':>7s} "
          f"{'std x':>6s} {'std y':>6s} {'tilted std':>14s}")
    for r in gd:
        if "class" in r:
            continue
        print(f"{r['target']:8s} {r['sde']:4s} {r['scale']:5.1f} {r['mode_fractions'][0]:7.3f} {r['tilted_mode_fractions'][0]:7.3f} "
              f"{r['sample_mean'][0]:7.3f} {r['tilted_mean'][0]:7.3f} {r['sample_std'][0]:6.3f} {r['sample_std'][1]:6.3f}  "
              f"({r['tilted_std'][0]:.3f}, {r['tilted_std'][1]:.3f})")
    print("component 0 (= the exact conditional, scale 1): aniso mean (-1.5, 0) std (0.6, 0.15); overlap mean (-0.5, 0) std (0.5, 0.5)")
    print(f"\nClass {{0,1}} of aniso (exact proportions 0.625 / 0.375 / 0 at scale 1), VP, n = {max(n, UNION_N)}")
    for r in gd:
        if "class" in r:
            print(f"  scale {r['scale']:4.1f}: " + " ".join(f"{v:.3f}" for v in r["mode_fractions"]))

    result = {"inpainting": inp, "guidance": gd, "n": n, "steps": steps}
    if args.checkpoint:
        result["mnist"] = mnist(args.checkpoint, args.classifier, args.guidance, steps, FIG / "controllable_mnist.png")
    else:
        print("\n(no --checkpoint: MNIST inpainting / class-conditional grids skipped)")
    plot(inp, gd, args.scales, FIG / "controllable.png")
    for r in inp:
        r.pop("samples_y", None)
    result["runtime_s"] = time.perf_counter() - start
    (FIG / "controllable.json").write_text(json.dumps(result, indent=1))
    print(f"\nwrote {FIG / 'controllable.json'} and {FIG / 'controllable.png'}; runtime {result['runtime_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
