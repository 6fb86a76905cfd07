"""A diffusers DDPM model through sde_lab: its samples with sde_lab's solvers and its likelihood in bits/dim.

    python experiments/interop_diffusers.py                                  # offline: random weights
    python experiments/interop_diffusers.py --model hf://google/ddpm-cifar10-32   # online: the published model
    python experiments/interop_diffusers.py --model path/to/saved/pipeline         # a local folder, hub layout

Offline the network is ``UNet2DModel`` in the google/ddpm-cifar10-32 layout (35.7M parameters) with random
weights and that model's scheduler config, so every step runs and the numbers show cost and agreement, not
quality. Reported: (1) diffusers' ``DPMSolverMultistepScheduler`` (2M, 20 steps) against sde_lab's
DPM-Solver++(2M) on the same weights, timesteps and prior draw (max difference); (2) sde_lab's UniPC-3 at 10
steps and the probability-flow ODE on the same model; (3) bits/dim through the ODE (Hutchinson, uniform
dequantization) of 32x32 RGB patches of scikit-learn's photos (CIFAR-10 is not available offline; online
with the real model pass ``--dataset cifar10``). Writes ``figures/interop_diffusers.{json,png}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CIFAR10_UNET = dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=(128, 256, 256, 256),
                    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), dropout=0.1,
                    norm_num_groups=32, act_fn="silu", flip_sin_to_cos=False, freq_shift=1, downsample_padding=0, norm_eps=1e-6)
CIFAR10_SCHEDULER = {"_class_name": "DDPMScheduler", "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                     "num_train_timesteps": 1000, "clip_sample": True, "variance_type": "fixed_small"}


def main(argv=None) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    import diffusers

    from sde_lab import bits_per_dim, sample
    from sde_lab.data import get_pixels, make_scaler
    from sde_lab.interop import from_diffusers, load_diffusers
    from sde_lab.multistep import DPMSolverPP

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="hf://org/name or a saved pipeline folder (default: random weights)")
    ap.add_argument("--dataset", default="photo_patches", help="images for bits/dim (default: photo_patches, resized to 32)")
    ap.add_argument("--n", type=int, default=8, help="samples (default 8)")
    ap.add_argument("--n-bpd", type=int, default=4, help="images for bits/dim (default 4)")
    ap.add_argument("--rtol", type=float, default=1e-4, help="likelihood ODE tolerance (default 1e-4)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "figures" / "interop_diffusers.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.model:
        model = load_diffusers(args.model)
        unet, source = model.net.unet, args.model
        sch_config = None
    else:
        torch.manual_seed(0)
        unet = diffusers.UNet2DModel(**CIFAR10_UNET).eval().requires_grad_(False)
        model = from_diffusers(unet, CIFAR10_SCHEDULER).eval()
        source = "random weights, google/ddpm-cifar10-32 layout"
        sch_config = CIFAR10_SCHEDULER
    n_params = sum(p.numel() for p in unet.parameters())
    shape = (3, int(unet.config.sample_size), int(unet.config.sample_size))
    print(f"model: {source}; {n_params / 1e6:.1f}M parameters; path {model.path!r}; target {model.parametrization!r}")
    rows = {}

    # (1) diffusers' DPM-Solver++(2M) scheduler vs sde_lab's, same weights, timesteps and x_T
    sch = diffusers.DPMSolverMultistepScheduler(**{k: v for k, v in (sch_config or dict(model.diffusers_config)).items()
                                                   if not k.startswith("_") and k not in ("variance_type", "clip_sample")},
                                                solver_order=2, algorithm_type="dpmsolver++")
    sch.set_timesteps(20)
    x_T = torch.randn(args.n, *shape, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    y = x_T.clone()
    with torch.no_grad():
        for ts in sch.timesteps:
            y = sch.step(unet(y, ts).sample, ts, y).prev_sample
    t_diffusers = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = DPMSolverPP(order=2, lower_order_final=True)(model, x_T.double(), sch.timesteps.double() / (model.path.n - 1))
    t_ours = time.perf_counter() - t0
    diff = float((ours.samples - y.double()).abs().max())
    rows["dpmpp_2m_20"] = {"max_abs_diff": diff, "max_abs": float(y.abs().max()), "nfe": ours.nfe,
                           "seconds_diffusers": t_diffusers, "seconds_sde_lab": t_ours}
    print(f"DPM-Solver++(2M), 20 steps: max |sde_lab - diffusers| = {diff:.2e} (samples up to {float(y.abs().max()):.3g}); "
          f"{t_ours:.1f} s vs diffusers {t_diffusers:.1f} s")

    # (2) other sde_lab solvers on the same model
    samples = {}
    for name, opts in (("unipc", dict(steps=10, order=3)), ("ode", dict(rtol=1e-3, atol=1e-3))):
        t0 = time.perf_counter()
        res = sample(model.path, model, (args.n, *shape), solver=name, generator=torch.Generator().manual_seed(1), **opts)
        rows[name] = {"nfe": res.nfe, "seconds": time.perf_counter() - t0, "finite": bool(torch.isfinite(res.samples).all())}
        samples[name] = res.samples
        print(f"{name}: NFE {res.nfe}, {rows[name]['seconds']:.1f} s")

    # (3) bits/dim through the probability-flow ODE
    pixels, _ = get_pixels(args.dataset, "test" if args.dataset != "photo_patches" else "train", image_size=shape[-1], n=args.n_bpd)
    t0 = time.perf_counter()
    res = bits_per_dim(model.path, model, pixels, make_scaler(True), generator=torch.Generator().manual_seed(0),
                       rtol=args.rtol, atol=args.rtol, compute_dtype=torch.float32)
    rows["bits_per_dim"] = {"mean": float(res.mean), "stderr": float(res.stderr), "n": int(res.bpd.shape[-1]), "nfe": res.nfe,
                            "seconds": time.perf_counter() - t0, "dataset": args.dataset, "rtol": args.rtol}
    print(f"bits/dim on {res.bpd.shape[-1]} {args.dataset} images: {res.mean:.3f} ± {res.stderr:.3f} (NFE {res.nfe}, "
          f"{rows['bits_per_dim']['seconds']:.0f} s)")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"model": source, "parameters": n_params, "path": repr(model.path), "rows": rows, "torch": torch.__version__,
              "diffusers": diffusers.__version__}
    out.write_text(json.dumps(result, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, min(args.n, 8), figsize=(min(args.n, 8) * 1.2, 2.6))
    for r, (name, x) in enumerate((("dpm++(2M) 20", ours.samples), ("unipc-3 10", samples["unipc"]))):
        for c in range(min(args.n, 8)):
            img = ((x[c].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
            axes[r, c].imshow(img)
            axes[r, c].axis("off")
        axes[r, 0].set_title(name, fontsize=7, loc="left")
    fig.suptitle(f"diffusers UNet2DModel via sde_lab ({source})", fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)
    print(f"-> {out}, {out.with_suffix('.png')}")
    return result


if __name__ == "__main__":
    main()
