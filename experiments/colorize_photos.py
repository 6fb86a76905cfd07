"""Colorization of held-out photo regions with an unconditional RGB score model (Song et al. 2021, App. I.3).

The model is ``configs/vp/photo16.py``: a small DDPM++ trained on 16×16 patches from the left 75% of
scikit-learn's two sample photos (``photo_patches``; it ships with scikit-learn, so this runs offline).
The right 25% of each photo is never seen in training. It is cut into non-overlapping 16×16 tiles,
turned grey (the channel mean), and every tile is colorized independently by :func:`sde_lab.colorize`:
inpainting in the orthogonally decoupled colour space with the grey channel known, PC sampling.

Measured against the original colours (pixels in [0, 1]):

* RGB PSNR of one colorized sample per tile, of the mean of ``--samples`` colorizations (an estimate of
  the posterior mean, the estimate that minimises squared error — a single sample of an uncertain colour
  pays twice its posterior variance), of the grey tiles (no colour), and of the grey tiles plus the
  training set's mean colour (a global colour cast — the best colour-blind answer);
* chroma error: mean squared error of the two colour-difference channels, the part colorization fills in;
* colourfulness: RMS chroma of the colorized tiles over that of the originals (1 = as colourful);
* the grey constraint: max |mean_c(colorized) − grey| (exact up to float rounding).

    python experiments/colorize_photos.py [--workdir runs/photo16] [--steps 500]

Trains the model into ``--workdir`` first if it has no finished checkpoint (≈20 min on 2 cores;
``--n-iters`` to change). Writes figures/colorize_photos.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from sde_lab.conditional import colorize, couple_colors, decouple_colors
from sde_lab.data import get_dataset, photo_split_column, sample_photos
from sde_lab.config import apply_overrides, load_checkpoint_score, load_config, train
from sde_lab.training import latest_checkpoint, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "vp" / "photo16.py"
TILE = 16


def held_out_tiles(photo: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Non-overlapping 16×16 tiles of the held-out right part of a ``uint8 (3, H, W)`` photo, row-major,
    in [-1, 1]; and the tile grid (rows, cols)."""
    cut = photo_split_column(photo)
    region = photo[:, :, cut:].float() / 127.5 - 1.0
    rows, cols = region.shape[1] // TILE, region.shape[2] // TILE
    tiles = [region[:, r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] for r in range(rows) for c in range(cols)]
    return torch.stack(tiles), (rows, cols)


def mosaic(tiles: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    rows, cols = grid
    return tiles.reshape(rows, cols, 3, TILE, TILE).permute(2, 0, 3, 1, 4).reshape(3, rows * TILE, cols * TILE)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1], measured on the [0, 1] scale."""
    mse = (((a - b) / 2) ** 2).mean().item()
    return 10 * math.log10(1.0 / mse)


def chroma(x: torch.Tensor) -> torch.Tensor:
    """The two colour-difference channels of the decoupled colour space, on the [0, 1] scale."""
    return decouple_colors(x.double())[:, 1:] / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "photo16"))
    ap.add_argument("--n-iters", type=int, default=None, help="training steps (default: the config's)")
    ap.add_argument("--steps", type=int, default=500, help="PC steps of the colorization sampler")
    ap.add_argument("--snr", type=float, default=0.16)
    ap.add_argument("--samples", type=int, default=4, help="colorizations per tile (their mean is the MMSE estimate)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()

    config = load_config(CONFIG)
    sets = ["device='cpu'"] + ([f"training.n_iters={args.n_iters}"] if args.n_iters else [])
    apply_overrides(config, sets)
    ckpt = latest_checkpoint(args.workdir)
    done = load_checkpoint(ckpt)["step"] if ckpt is not None else 0
    if done < config.training.n_iters:
        print(f"training {CONFIG.name} in {args.workdir}: step {done} -> {config.training.n_iters}", flush=True)
        train(config, args.workdir, resume=ckpt is not None)
    model = load_checkpoint_score(args.workdir)
    step = load_checkpoint(latest_checkpoint(args.workdir))["step"]
    sde = model.sde

    photos = sample_photos()
    names = ["china", "flower"]
    tiles, grids = zip(*(held_out_tiles(p) for p in photos))
    x = torch.cat(tiles)
    grey = x.mean(1, keepdim=True)
    K = args.samples
    t0 = time.time()
    res = colorize(sde, model, grey.repeat(K, 1, 1, 1), steps=args.steps, snr=args.snr,
                   generator=torch.Generator().manual_seed(args.seed), progress=True)
    sample_s = time.time() - t0
    draws = res.samples.float().clamp(-1, 1).reshape(K, *x.shape)
    col, col_mean = draws[0], draws.mean(0)

    train_x = get_dataset("photo_patches", split="train", centered=True).x
    mean_chroma = decouple_colors(train_x.double()).mean((0, 2, 3))  # the training set's global colour cast
    u_grey = decouple_colors(grey.expand_as(x).double())
    u_cast = u_grey.clone()
    u_cast[:, 1:] += mean_chroma[1:, None, None]
    cast = couple_colors(u_cast).float().clamp(-1, 1)
    grey3 = grey.expand_as(x)

    rows, start = [], 0
    for name, t, grid in zip(names + ["both"], list(tiles) + [x], list(grids) + [None]):
        sl = slice(start, start + len(t)) if name != "both" else slice(0, len(x))
        if name != "both":
            start += len(t)
        o, c, cm, g, k = x[sl], col[sl], col_mean[sl], grey3[sl], cast[sl]
        ch_o, ch_c = chroma(o), chroma(c)
        rows.append(dict(
            photo=name, tiles=len(o),
            psnr_colorized=psnr(c, o), psnr_colorized_mean=psnr(cm, o), psnr_grey=psnr(g, o), psnr_mean_colour=psnr(k, o),
            chroma_mse_colorized=((ch_c - ch_o) ** 2).mean().item(),
            chroma_mse_colorized_mean=((chroma(cm) - ch_o) ** 2).mean().item(), chroma_mse_grey=(ch_o ** 2).mean().item(),
            chroma_mse_mean_colour=((chroma(k) - ch_o) ** 2).mean().item(),
            colourfulness=(ch_c.square().mean().sqrt() / ch_o.square().mean().sqrt()).item(),
            mean_chroma_original=ch_o.mean((0, 2, 3)).tolist(), mean_chroma_colorized=ch_c.mean((0, 2, 3)).tolist(),
        ))
    constraint = (res.samples.mean(1, keepdim=True) - grey.repeat(K, 1, 1, 1).double()).abs().max().item()

    print(f"model: {CONFIG.name}, {step} steps; colorization: PC {args.steps} steps, {res.nfe} NFE, {sample_s:.0f}s "
          f"for {K} x {len(x)} tiles; grey constraint max error {constraint:.1e}")
    print(f"PSNR [dB] and chroma MSE of: one sample, the mean of {K} samples, grey, grey + the training mean colour")
    print(f"{'photo':7s} {'tiles':>5s} {'PSNR 1':>7s} {f'mean{K}':>6s} {'grey':>6s} {'cast':>6s}   {'chroma 1':>8s} "
          f"{f'mean{K}':>8s} {'grey':>8s} {'cast':>8s} {'colourful':>9s}")
    for r in rows:
        print(f"{r['photo']:7s} {r['tiles']:5d} {r['psnr_colorized']:7.2f} {r['psnr_colorized_mean']:6.2f} {r['psnr_grey']:6.2f} "
              f"{r['psnr_mean_colour']:6.2f}   {r['chroma_mse_colorized']:8.5f} {r['chroma_mse_colorized_mean']:8.5f} "
              f"{r['chroma_mse_grey']:8.5f} {r['chroma_mse_mean_colour']:8.5f} {r['colourfulness']:9.2f}")

    out = ROOT / "figures"
    out.mkdir(exist_ok=True)
    runtime = time.time() - t_start
    meta = dict(config=str(CONFIG.relative_to(ROOT)), train_steps=step, steps=args.steps, snr=args.snr, samples=K, nfe=res.nfe,
                sample_s=round(sample_s, 1), grey_constraint_max_error=constraint, rows=rows, runtime_s=round(runtime, 1))
    (out / "colorize_photos.json").write_text(json.dumps(meta, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(photos), 5, figsize=(13, 7.5), gridspec_kw=dict(width_ratios=[2.2, 1, 1, 1, 1]))
    start = 0
    for i, (photo, name, grid) in enumerate(zip(photos, names, grids)):
        n = grid[0] * grid[1]
        sl = slice(start, start + n)
        start += n
        cut = photo_split_column(photo)
        full = photo.permute(1, 2, 0).numpy()
        axes[i, 0].imshow(full)
        axes[i, 0].axvline(cut - 0.5, color="w", lw=1.5, ls="--")
        axes[i, 0].set_title(f"{name}: training region | held out", fontsize=9)
        r = rows[i]
        for ax, imgs, title in ((axes[i, 1], grey3[sl], f"grey input\n{r['psnr_grey']:.1f} dB"),
                                (axes[i, 2], col[sl], f"one colorization\n{r['psnr_colorized']:.1f} dB"),
                                (axes[i, 3], col_mean[sl], f"mean of {K}\n{r['psnr_colorized_mean']:.1f} dB"),
                                (axes[i, 4], x[sl], "original")):
            ax.imshow(((mosaic(imgs, grid) + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy())
            ax.set_title(title, fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"Colorization of held-out 16x16 tiles, each independently (VP DDPM++ 0.27M, {step} steps; PC {args.steps})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "colorize_photos.png", dpi=110)
    print(f"wrote {out / 'colorize_photos.json'} and {out / 'colorize_photos.png'}; runtime {runtime:.0f}s")


if __name__ == "__main__":
    main()
