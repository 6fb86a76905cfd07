"""``sde-lab sample``: draw samples with any solver and save them (``samples.npz``) with a plot (``samples.png``).

The score function comes from one place, :func:`_score_fn_from_args`: an analytic oracle target
(``--target NAME``, exact score; its true samples are overlaid on the plot), a checkpoint written by
``sde-lab train`` (``--ckpt PATH``, file or workdir; the SDE and data shape come from its stored config),
or a published score_sde checkpoint (``--ckpt checkpoint_26.pth --config configs/vp/cifar10_ddpmpp_continuous.py``).
``--class K`` samples class K: with classifier-free guidance when the checkpoint is a class-conditional
model (``model.num_classes > 0``, trained with label dropout; ``--guidance`` is the weight ``w``, default 0:
the model's conditional), else with classifier guidance (``--guidance`` is the scale γ, default 1;
``--classifier PATH`` from ``sde-lab train-classifier --noise-conditional``, or the exact classifier of an
oracle target).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

from ..analytic import make_target
from ..config import sample
from ..registry import CORRECTORS, GRIDS, PREDICTORS, SDES, SOLVERS, TARGETS, make_sde
from ..sde import SAMPLING_EPS, SDE
from ..workdir import atomic_write, check_output_dir
from ._common import add_overwrite, add_threads, check_device, n_parameters, set_threads

OUTPUTS = ("samples.npz", "samples.png")


class ScoreSource(NamedTuple):
    """What :func:`_score_fn_from_args` builds: the score, one sample's shape, and (if known) true samples."""

    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    event_shape: tuple[int, ...]
    description: str
    true_samples: Callable[[int, torch.Generator], torch.Tensor] | None = None


def add_parser(sub):
    p = sub.add_parser(
        "sample",
        help="draw samples (predictor-corrector, probability-flow ODE, torchsde, annealed Langevin, ...)",
        description="Sample from the reverse process of an SDE and write samples.npz and samples.png to --out. Runs "
                    "under torchrun too (the samples are split across the processes); each finished chunk is written to "
                    "--out/shards at once, and the same command run again resumes where it stopped.",
    )
    src = p.add_argument_group("score source (one of)")
    src.add_argument("--target", choices=sorted(TARGETS), help="analytic oracle target (exact score)")
    src.add_argument("--ckpt", metavar="PATH", help="trained model: an sde-lab checkpoint file or workdir, an "
                     "`sde-lab export` folder, a diffusers model folder or hf://org/name, or a published score_sde "
                     "checkpoint together with --config")
    p.add_argument("--config", metavar="FILE", help="ml-collections config of a published score_sde checkpoint")
    guide = p.add_argument_group("class-conditional sampling (classifier-free or classifier guidance)")
    guide.add_argument("--class", dest="label", type=int, default=None, metavar="K", help="class to sample")
    guide.add_argument("--guidance", type=float, default=None,
                       help="class-conditional checkpoint: classifier-free weight w (default 0 = the model's conditional; "
                            "(1+w) s(x,t,y) - w s(x,t,null)); otherwise the classifier-guidance scale (default 1 = exact conditional)")
    guide.add_argument("--classifier", metavar="PATH", help="noise-conditional classifier (sde-lab train-classifier "
                       "--noise-conditional); oracle targets use their exact classifier")

    p.add_argument("--sde", choices=sorted(SDES), default=None, help="forward SDE for --target (default: vp); "
                   "a checkpoint brings its own")
    p.add_argument("--solver", choices=sorted(SOLVERS), default="pc", help="sampler (default: pc)")
    p.add_argument("--steps", type=int, default=1000, help="time steps / noise levels (default: 1000)")
    p.add_argument("--grid", choices=sorted(GRIDS), default=None,
                   help="time grid (default: the solver's own: log-SNR for pc, karras for heun, ...; uniform = v1's pc grid)")
    p.add_argument("--predictor", choices=sorted(PREDICTORS), default=None, help="pc predictor (default: reverse_diffusion)")
    p.add_argument("--corrector", choices=sorted(CORRECTORS), default=None, help="pc corrector (default: langevin)")
    p.add_argument("--snr", type=float, default=None,
                   help="corrector signal-to-noise ratio, for pc and ald (default: 0.16 for pc's Langevin, 0.35 for ald)")
    p.add_argument("--n-corrector-steps", type=int, default=None, help="corrector steps per time step, pc and ald (default: 1)")
    p.add_argument("--eps", type=float, default=SAMPLING_EPS, help=f"final time (default: {SAMPLING_EPS})")
    p.add_argument("--no-denoise", action="store_true", help="skip the final Tweedie denoising step")
    p.add_argument("--rtol", type=float, default=None, help="ode / sdeint relative tolerance (default: 1e-5)")
    p.add_argument("--atol", type=float, default=None, help="ode / sdeint absolute tolerance (default: 1e-5)")
    p.add_argument("--method", default=None, help="ode method (scipy: RK45, ...; default RK45) or sdeint method "
                   "(euler, milstein, srk; default euler)")
    p.add_argument("--solver-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="any other option of the solver, e.g. order=3, eta=0.5, variant=bh1, lower_order_final=False "
                        "(repeatable; `sde-lab solvers` lists each solver's options)")
    p.add_argument("--noise", choices=("batch", "per_sample"), default="batch",
                   help="batch (default): chunk k of --batch-size samples is drawn from one generator seeded by "
                        "(seed, k); per_sample: sample i depends on (seed, i) only, whatever the batch size. Either way "
                        "1, 2 or 8 processes draw the same set")
    p.add_argument("--num-samples", "--n", dest="n", type=int, default=1000,
                   help="number of samples (default: 1000); under torchrun use --num-samples (torchrun abbreviates --n)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples per solver call and per shard file (default: min(num-samples, 1000)); keep it the same "
                        "to resume a run or to compare runs across process counts")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (checked before sampling: a new or "
                   "writable folder, not a training workdir; existing samples are kept unless --overwrite)")
    add_overwrite(p, "samples.npz / samples.png already in --out")
    p.add_argument("--no-ema", action="store_true", help="sample with the raw training weights instead of the EMA weights")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads(p)
    return p


def _score_fn_from_args(args, sde: SDE) -> ScoreSource:
    """The score function the command samples with — the ONE place that knows where it comes from."""
    if getattr(args, "target", None):
        gm = make_target(args.target)
        return ScoreSource(
            gm.score_fn(sde), gm.event_shape, f"oracle target {args.target!r} (exact score)",
            lambda n, g: gm.sample(n, g),
        )
    if getattr(args, "ckpt", None):
        model = _load_model(args)
        return ScoreSource(model, _model_shape(model, args), f"checkpoint {args.ckpt}")
    raise ValueError("no score source: give --target NAME (analytic oracle; valid targets: "
                     + ", ".join(sorted(TARGETS)) + ") or --ckpt PATH (trained model)")


def _load_model(args):
    """A ScoreModel from an sde-lab checkpoint, or from a published score_sde checkpoint when --config is given."""
    device = check_device(args.device)
    ema = not getattr(args, "no_ema", False)
    if args.config:
        from ..checkpoints import load_official_checkpoint
        from ..config import load_config

        config = load_config(args.config)
        model = load_official_checkpoint(args.ckpt, config, device=device, use_ema=ema)
        model._sde_lab_config = config
        return model
    from ..interop import is_diffusers_folder, load_diffusers

    if str(args.ckpt).startswith("hf://") or is_diffusers_folder(args.ckpt):
        model = load_diffusers(args.ckpt, device=device)
        model._sde_lab_config = None
        return model
    from ..export import load_run_model

    model, config = load_run_model(args.ckpt, map_location=device, ema=ema)
    model._sde_lab_config = config
    return model


def _model_shape(model, args) -> tuple[int, ...]:
    from ..config import data_shape

    if model._sde_lab_config is None:
        return tuple(model.event_shape)
    return data_shape(model._sde_lab_config)


def _resolve_sde(args, model_sde: SDE | None) -> SDE:
    if model_sde is None:
        return make_sde(args.sde or "vp")
    if args.sde is not None and make_sde(args.sde) != model_sde:
        raise ValueError(f"--sde {args.sde} contradicts the checkpoint's SDE {model_sde}; drop --sde")
    return model_sde


def _guidance(args, sde: SDE, source_target, score_fn=None):
    """The guidance condition for --class (classifier-free for a class-conditional model), or None."""
    if args.label is None:
        if args.guidance is not None:
            raise ValueError("--guidance needs --class K (the class to sample)")
        return None
    from ..conditional import ClassifierFreeGuidance, ClassifierGuidance

    n_classes = int(getattr(score_fn, "num_classes", 0) or 0)
    if n_classes:
        if args.classifier:
            raise ValueError("this checkpoint is a class-conditional model (classifier-free guidance); drop --classifier")
        if not 0 <= args.label < n_classes:
            raise ValueError(f"--class {args.label} is out of range: the model has classes 0..{n_classes - 1}")
        w = 0.0 if args.guidance is None else args.guidance
        return ClassifierFreeGuidance(score_fn, args.label, w, null_label=n_classes)
    args.guidance = 1.0 if args.guidance is None else args.guidance

    if args.classifier:
        from ..classifier import load_classifier

        clf, _ = load_classifier(args.classifier)
        if not clf.time_conditional:
            raise ValueError(f"{args.classifier} is not noise-conditional; train one with "
                             "`sde-lab train-classifier --noise-conditional`")
        classifier = clf
    elif source_target is not None:
        classifier = source_target.classifier_fn(sde)
    else:
        raise ValueError("--class needs --classifier PATH (a noise-conditional classifier) for a trained model")
    return ClassifierGuidance(classifier, args.label, args.guidance)


def _pixel_fn(args, source: ScoreSource):
    """uint8 quantisation of image samples (the FID protocol), from the model's data scaling; None for points."""
    if len(source.event_shape) != 3:
        return None
    from ..data import make_scaler
    from ..sharded import to_pixels

    config = getattr(source.score_fn, "_sde_lab_config", None)
    centered = bool(config.data.get("centered", False)) if config is not None else True  # diffusers: [-1, 1]
    scaler = make_scaler(centered)
    return lambda x: to_pixels(scaler.inverse(x.float()).clamp(0, 1))


def _fingerprint(args, sde, source, options, chunk) -> dict:
    ckpt = None
    if args.ckpt:
        p = Path(args.ckpt).expanduser()
        from ..training.checkpoint import latest_checkpoint

        f = latest_checkpoint(p) if p.is_dir() and (p / "checkpoints").is_dir() else p
        ckpt = {"path": str(Path(f).resolve()) if f is not None and Path(f).exists() else str(args.ckpt),
                "bytes": Path(f).stat().st_size if f is not None and Path(f).is_file() else None}
    return {"source": source.description if not args.ckpt else "checkpoint", "ckpt": ckpt, "target": args.target,
            "sde": repr(sde), "options": {k: str(v) for k, v in sorted(options.items())}, "seed": args.seed, "n": args.n,
            "chunk": chunk, "noise": args.noise, "class": args.label, "guidance": args.guidance,
            "classifier": args.classifier, "no_ema": bool(getattr(args, "no_ema", False))}


def run(args) -> int:
    if args.n < 1:
        raise ValueError(f"--num-samples must be a positive integer, got {args.n}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.target and args.ckpt:
        raise ValueError("give either --target or --ckpt, not both")
    if args.config and not args.ckpt:
        raise ValueError("--config is for a published checkpoint: give it with --ckpt PATH")
    import os

    from ..training.distributed import init_distributed, resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = check_device(args.device)
    if world > 1 and device.type == "cuda":
        device = resolve_device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    out = check_output_dir(args.out, flag="--out", outputs=(), overwrite=args.overwrite)
    if args.ckpt:
        source = _score_fn_from_args(args, None)
        sde = _resolve_sde(args, source.score_fn.sde)
    else:
        sde = _resolve_sde(args, None)
        source = _score_fn_from_args(args, sde)
    condition = _guidance(args, sde, make_target(args.target) if args.target else None, source.score_fn)
    if condition is not None and args.target:
        gm = make_target(args.target)
        if not 0 <= args.label < gm.n_components:
            raise ValueError(f"--class {args.label} is out of range for target {args.target!r} with {gm.n_components} components")
        comp = gm.component(args.label)
        source = source._replace(true_samples=lambda n, g: comp.sample(n, g))
    options = sampler_options(args)
    set_threads(args, n_parameters(source.score_fn) if args.ckpt else 0)
    chunk = args.batch_size or min(args.n, 1000)
    import torch.distributed as dist

    created = not (dist.is_available() and dist.is_initialized())  # a caller's process group is left to the caller
    dist_info = init_distributed(device)
    rank = dist_info.rank
    from ..noise import PerSampleNoise
    from ..sharded import chunk_seed, sample_sharded

    single = (chunk >= args.n and dist_info.world == 1)

    def draw(lo: int, hi: int):
        if args.noise == "per_sample":
            generator, noise = None, PerSampleNoise(args.seed, start=lo)
        else:
            generator, noise = torch.Generator().manual_seed(chunk_seed(args.seed, lo // chunk)), None
        try:
            res = sample(sde, source.score_fn, (hi - lo, *source.event_shape), generator=generator, noise=noise,
                         device=device, condition=condition, progress=single and not args.quiet, **options)
        except FloatingPointError as e:
            raise ValueError(str(e)) from None
        return res.samples, res.nfe

    start = time.perf_counter()
    try:
        summary = sample_sharded(draw, out=out, n=args.n, chunk=chunk, fingerprint=_fingerprint(args, sde, source, options, chunk),
                                 pixels=_pixel_fn(args, source), overwrite=args.overwrite, progress=not args.quiet and not single)
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    if rank != 0 or summary["mode"] == "done":
        return 0
    with np.load(out / "samples.npz") as z:
        x = z["samples"]
    nfe = summary["nfe"][0] if summary["nfe"] and len(set(summary["nfe"])) == 1 else (summary["nfe"] or ["?"])[0]
    true = source.true_samples(args.n, torch.Generator().manual_seed(args.seed + 1)).cpu().numpy() if source.true_samples else None
    _plot(x if x.dtype != np.uint8 else x.astype(np.float32), true, out / "samples.png",
          f"{type(sde).__name__} / {args.solver} / {args.steps} steps / NFE {nfe}")
    how = f" on {summary['world']} processes" if summary.get("world", 1) > 1 else ""
    print(f"{args.n} samples from {source.description}: sde={type(sde).__name__} solver={args.solver} NFE={nfe} "
          f"time={elapsed:.2f}s{how} -> {out / 'samples.npz'}, {out / 'samples.png'}")
    return 0


def sampler_options(args) -> dict:
    """The sampling options the user gave (each one is passed on; a solver refuses options it does not take)."""
    options = dict(solver=args.solver, steps=args.steps, eps=args.eps)
    if getattr(args, "grid", None):
        options["grid"] = args.grid
    given = {"predictor": args.predictor, "corrector": args.corrector, "snr": args.snr,
             "n_corrector_steps": args.n_corrector_steps, "rtol": args.rtol, "atol": args.atol, "method": args.method}
    options.update({k: v for k, v in given.items() if v is not None})
    if args.no_denoise:
        options["denoise"] = False
    for item in getattr(args, "solver_opt", None) or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--solver-opt takes KEY=VALUE (e.g. order=3), got {item!r}")
        if key in options:
            raise ValueError(f"--solver-opt {key} is given twice (or also by its own flag)")
        options[key] = _literal(value.strip())
    return options


def _literal(text: str):
    """``3`` → 3, ``0.5`` → 0.5, ``True``/``false`` → bool, ``None`` → None, anything else the string itself."""
    import ast

    low = text.lower()
    if low in ("true", "false", "none"):
        return {"true": True, "false": False, "none": None}[low]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _plot(x: np.ndarray, true: np.ndarray | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x.ndim >= 3:  # images (B, C, H, W) or (B, H, W): a grid of the first 64
        imgs = x[:64]
        if imgs.ndim == 3:
            imgs = imgs[:, None]
        k = int(math.ceil(math.sqrt(len(imgs))))
        fig, axes = plt.subplots(k, k, figsize=(k, k))
        lo, hi = np.percentile(imgs, 1), np.percentile(imgs, 99)
        for ax in np.ravel(axes):
            ax.axis("off")
        for ax, img in zip(np.ravel(axes), imgs):
            img = np.clip((img - lo) / max(hi - lo, 1e-8), 0, 1)
            ax.imshow(img[0] if img.shape[0] == 1 else np.transpose(img[:3], (1, 2, 0)), cmap="gray")
        fig.suptitle(title, fontsize=8)
    else:  # points: scatter of the first two coordinates, true samples overlaid
        fig, ax = plt.subplots(figsize=(5, 5))
        if true is not None:
            ax.scatter(true[:, 0], true[:, 1], s=2, alpha=0.3, c="tab:gray", label="true")
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, c="tab:blue", label="samples")
        ax.set_aspect("equal")
        ax.legend(loc="upper right", markerscale=4)
        ax.set_title(title, fontsize=9)
        if x.shape[1] > 2:
            ax.set_xlabel("coordinate 0")
            ax.set_ylabel("coordinate 1")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, dpi=120, format="png"))
    plt.close(fig)
