"""``sde-lab likelihood``: exact log-likelihood (nats/dim, bits/dim) through the probability-flow ODE.

Two sources, one code path: ``--target NAME`` evaluates the exact score of an analytic oracle on its own
samples and also prints the oracle's exact ``log p_eps(x)`` and the error; ``--ckpt PATH --dataset NAME``
evaluates a trained model on 8-bit data with uniform dequantization. The score function and the data
come from two small functions each (:func:`target_source`, :func:`checkpoint_source`), so only those know
where they come from.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from tqdm import tqdm

from ..likelihood import ODE_METHODS, PROBES, LikelihoodError, bits_per_dim, log_likelihood, mean_and_stderr
from ..registry import DIVERGENCES, SDES, TARGETS
from ..sde import LIKELIHOOD_EPS, SDE
from ._common import add_threads, check_device, n_parameters, set_threads


@dataclass
class Source:
    """What the command evaluates: an SDE and its score, and batches of data.

    ``batches()`` yields continuous data (``pixels=False``) or integer pixels (``pixels=True``, evaluated
    with dequantization through ``scaler``). ``exact_log_prob(x)``, when known, is the true ``log p_eps(x)``.
    """

    description: str
    sde: SDE
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    batches: Callable[[], Iterator[torch.Tensor]]
    n_batches: int
    pixels: bool = False
    scaler: object = None
    exact_log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None
    compute_dtype: torch.dtype = torch.float64
    levels: int = 256
    data: torch.Tensor | None = None  # every example, for the sharded mode (--out)


def add_parser(sub):
    p = sub.add_parser(
        "likelihood",
        help="exact log-likelihood / bits-per-dim through the probability-flow ODE",
        description=(
            "Integrate the probability-flow ODE jointly with the divergence of its drift (Song et al. 2021, "
            "Sec. 4.3, App. D) and report mean +- standard error of the NLL in nats/dim and bits/dim. With "
            "--target the exact value from the analytic oracle and the error are printed too (continuous data: "
            "bits/dim = nats/dim / log 2, no dequantization). With --ckpt/--dataset, 8-bit data are uniformly "
            "dequantized and the scaler's offset is applied (docs/likelihood.md)."
        ),
    )
    src = p.add_argument_group("source (one of)")
    src.add_argument("--target", choices=sorted(TARGETS), help="analytic oracle target (exact score and log-density)")
    src.add_argument("--ckpt", metavar="PATH", help="trained model checkpoint (an sde-lab run or export; a published "
                     "score_sde checkpoint together with --config)")
    src.add_argument("--config", metavar="FILE", default=None, help="config of a published score_sde checkpoint")
    src.add_argument("--dataset", metavar="NAME",
                     help="dataset to evaluate the checkpoint on (default: the one it was trained on)")
    src.add_argument("--split", default="test", help="dataset split (default: test)")
    p.add_argument("--sde", choices=sorted(SDES), default=None, help="path for --target (default: vp)")
    p.add_argument("--n", type=int, default=None, help="number of examples (default: 512 for --target, all for --dataset)")
    p.add_argument("--repeats", type=int, default=1, help="dequantization / probe repeats per example (default: 1)")
    p.add_argument("--divergence", choices=sorted(DIVERGENCES), default="hutchinson", help="default: hutchinson")
    p.add_argument("--probe", choices=list(PROBES), default="rademacher", help="Hutchinson probe (default: rademacher)")
    p.add_argument("--n-probes", type=int, default=1, help="Hutchinson probes per example, solved jointly (default: 1)")
    p.add_argument("--batch-size", type=int, default=128, help="examples per ODE solve (default: 128)")
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--eps", type=float, default=LIKELIHOOD_EPS, help=f"start time (default: {LIKELIHOOD_EPS})")
    p.add_argument("--method", choices=list(ODE_METHODS), default="RK45", help="scipy solve_ivp method")
    p.add_argument("--seed", type=int, default=0, help="seed for data, dequantization and probes (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--no-ema", action="store_true", help="evaluate the raw training weights instead of the EMA weights")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write every example's value to DIR (sharded by --batch-size, resumable; needed under torchrun, "
                        "where the batches are split across the processes and the result equals one process's)")
    p.add_argument("--overwrite", action="store_true", help="with --out: redo a folder holding another run's values")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_threads(p)
    return p


def _positive_int(name: str, value: int) -> None:
    if value is not None and value < 1:
        raise ValueError(f"--{name} must be a positive integer, got {value}")


def _check_n(args, have: int, want: int) -> None:
    if have < want:
        raise ValueError(f"--n {want}: the {args.split} split of {args.dataset!r} has only {have} examples; "
                         f"pass --n {have} or less (or drop --n to use them all)")


def target_source(args, generator: torch.Generator) -> Source:
    """The exact score of an oracle target under ``--sde`` and ``--n`` samples from the target."""
    from ..analytic import make_target
    from ..registry import make_sde

    gm = make_target(args.target)
    sde = make_sde(args.sde or "vp")
    n = 512 if args.n is None else args.n
    x = gm.sample(n, generator, dtype=torch.float64).to(args.device)
    chunks = list(torch.split(x, args.batch_size))

    def exact(xb: torch.Tensor) -> torch.Tensor:
        return gm.marginal_log_prob(sde, xb, torch.full((xb.shape[0],), args.eps, dtype=xb.dtype, device=xb.device))

    return Source(
        data=x,
        description=f"target {args.target!r} (D={gm.dim}), {type(sde).__name__}, {n} samples",
        sde=sde,
        score_fn=gm.score_fn(sde),
        batches=lambda: iter(chunks),
        n_batches=len(chunks),
        exact_log_prob=exact,
    )


def checkpoint_source(args, generator: torch.Generator) -> Source:
    """A trained model's EMA score (from ``--ckpt``) and integer pixels of ``--dataset``/``--split``.

    The SDE, the network and the data scaler come from the config stored in the checkpoint
    (:func:`sde_lab.config.load_checkpoint_score`); the pixels are the raw integers of
    :func:`sde_lab.data.get_pixels` at the model's resolution, dequantized with the data set's own number
    of levels.
    """
    from ..config import data_shape
    from ..data import dataset_info, get_pixels, make_scaler

    if getattr(args, "config", None):
        from ..checkpoints import load_official_checkpoint
        from ..config import load_config

        config = load_config(args.config)
        model = load_official_checkpoint(args.ckpt, config, device=args.device, use_ema=not args.no_ema)
    else:
        from ..export import load_run_model

        model, config = load_run_model(args.ckpt, map_location=args.device, ema=not args.no_ema)
    if args.dataset is None:
        args.dataset = config.data.dataset
    set_threads(args, n_parameters(model))
    shape = data_shape(config)
    info = dataset_info(args.dataset)
    sde = model.sde
    if args.sde is not None:
        print("note: --sde is ignored with --ckpt; the SDE comes from the checkpoint's config", file=sys.stderr)
    compute_dtype = next(model.parameters()).dtype
    desc = f"checkpoint {args.ckpt} (trained on {config.data.dataset}) on {args.dataset}/{args.split}, {type(sde).__name__}"

    if not info.is_image:  # continuous points: nats/dim, and the exact value when the set is an oracle target
        from ..analytic import TARGETS as ORACLES
        from ..analytic import make_target
        from ..data import get_dataset

        n = 512 if args.n is None else args.n
        exact = None
        if args.dataset in ORACLES:
            gm = make_target(args.dataset)
            x = gm.sample(n, generator, dtype=torch.float64)

            def exact(xb):
                return gm.marginal_log_prob(sde, xb, torch.full((xb.shape[0],), args.eps, dtype=xb.dtype, device=xb.device))
        else:
            x = get_dataset(args.dataset, split=args.split, n=n, labels=False).x.to(torch.float64)
            _check_n(args, len(x), n)
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"{args.dataset!r} items have shape {tuple(x.shape[1:])}, the checkpoint's model expects {shape}")
        chunks = list(torch.split(x.to(args.device), args.batch_size))
        return Source(desc + f", {len(x)} points", sde, model, lambda: iter(chunks), len(chunks),
                      exact_log_prob=exact, compute_dtype=compute_dtype, data=x.to(args.device))

    if info.levels < 2 or len(shape) != 3:
        raise ValueError(f"the checkpoint models {shape}-shaped data; {args.dataset!r} holds {info.shape} images")
    pixels, _ = get_pixels(args.dataset, args.split, image_size=shape[-1], n=args.n)
    if args.n is not None:
        _check_n(args, len(pixels), args.n)
        pixels = pixels[: args.n]
    if tuple(pixels.shape[1:]) != shape:
        raise ValueError(
            f"{args.dataset!r} pixels have shape {tuple(pixels.shape[1:])} but the checkpoint's model expects {shape} "
            f"(trained on {config.data.dataset!r})"
        )
    chunks = list(torch.split(pixels.to(args.device), args.batch_size))
    levels = info.levels
    return Source(
        description=desc + f", {len(pixels)} images of shape {shape}, {levels} levels",
        sde=sde,
        score_fn=model,
        batches=lambda: iter(chunks),
        n_batches=len(chunks),
        pixels=True,
        scaler=make_scaler(bool(config.data.get("centered", False))),
        levels=levels,
        compute_dtype=compute_dtype,
        data=pixels.to(args.device),
    )


def _batch_nats(args, source, xb, generator, ode):
    """``(repeats, B)`` nats/dim of one batch, its NFE and the end times used."""
    if source.pixels:
        res = bits_per_dim(source.sde, source.score_fn, xb, source.scaler, repeats=args.repeats, levels=source.levels,
                           generator=generator, **ode)
        return res.nats_per_dim, res.nfe, {r.info["t_end"] for r in res.runs}
    D = xb[0].numel()
    rows, nfe, t_ends = [], 0, set()
    for _ in range(args.repeats):
        r = log_likelihood(source.sde, source.score_fn, xb, generator=generator, **ode)
        rows.append(-r.log_prob.cpu() / D)
        nfe += r.nfe
        t_ends.add(r.info["t_end"])
    return torch.stack(rows), nfe, t_ends


def _run_sharded(args, source, ode) -> int:
    """Per-example values in ``--out`` (chunks of ``--batch-size``; chunk k's dequantization and probes from
    (seed, k)), split across the ranks under torchrun; mean ± standard error from all of them."""
    import os

    import numpy as np
    import torch.distributed as dist

    from ..sharded import chunk_seed, sample_sharded
    from ..workdir import check_output_dir
    from . import CLIError

    if args.out is None:
        raise CLIError("under torchrun, likelihood writes every example's value: pass --out DIR")
    out = check_output_dir(args.out, flag="--out", overwrite=args.overwrite)
    data, chunk = source.data, args.batch_size
    created = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        from ..training.distributed import init_distributed

        init_distributed(torch.device(args.device))
        created = True

    def compute(lo, hi):
        g = torch.Generator().manual_seed(chunk_seed(args.seed, lo // chunk))
        table, nfe, _ = _batch_nats(args, source, data[lo:hi], g, ode)
        return table.T.contiguous().double(), nfe  # (B, repeats)

    fp = {"source": source.description, "ckpt": args.ckpt, "target": args.target, "dataset": args.dataset, "split": args.split,
          "n": len(data), "repeats": args.repeats, "seed": args.seed, "chunk": chunk, "ode": {k: str(v) for k, v in ode.items()}}
    try:
        sample_sharded(compute, out=out, n=len(data), chunk=chunk, fingerprint=fp, overwrite=args.overwrite,
                                 progress=not args.no_progress, final="likelihood.npz", dtype=np.float64, desc="likelihood")
    except LikelihoodError as e:
        raise ValueError(str(e)) from None
    finally:
        rank = dist.get_rank() if dist.is_initialized() else 0
        if created and dist.is_initialized():
            dist.destroy_process_group()
    if rank != 0:
        return 0
    with np.load(out / "likelihood.npz") as z:
        table = torch.from_numpy(z["samples"]).T  # (repeats, n)
    mean, se = mean_and_stderr(table)
    ln2 = math.log(2)
    kind = f"uniformly dequantized {source.levels}-level data" if source.pixels else "continuous data, no dequantization"
    print(f"likelihood: {source.description}")
    print(f"  {table.shape[1]} examples in {out / 'likelihood.npz'} (per example: samples[i] = nats/dim per repeat)")
    print(f"  model NLL : {mean:.5f} ± {se:.5f} nats/dim   {mean / ln2:.5f} ± {se / ln2:.5f} bits/dim  ({kind})")
    return 0


def run(args) -> int:
    if (args.target is None) == (args.ckpt is None):
        raise ValueError("give either --target NAME or --ckpt PATH (optionally with --dataset NAME), not both")
    if args.target is not None and args.dataset is not None:
        raise ValueError("--dataset applies to --ckpt; --target evaluates the oracle on its own samples")
    for name in ("n", "repeats", "n_probes", "batch_size"):
        _positive_int(name.replace("_", "-"), getattr(args, name))
    args.device = str(check_device(args.device, default="cpu"))
    if args.target is not None:
        set_threads(args, 0)
    generator = torch.Generator().manual_seed(args.seed)
    source = target_source(args, generator) if args.target is not None else checkpoint_source(args, generator)
    ode = dict(
        divergence=args.divergence,
        probe=args.probe if args.divergence == "hutchinson" else "rademacher",
        n_probes=args.n_probes if args.divergence == "hutchinson" else 1,
        rtol=args.rtol,
        atol=args.atol,
        eps=args.eps,
        method=args.method,
        compute_dtype=source.compute_dtype,
    )
    if args.divergence != "hutchinson" and (args.n_probes != 1 or args.probe != "rademacher"):
        print("note: --probe/--n-probes apply only to --divergence hutchinson; ignored", file=sys.stderr)

    if args.out is not None or int(__import__("os").environ.get("WORLD_SIZE", "1")) > 1:
        return _run_sharded(args, source, ode)

    nats, exact_nats, nfes, t_ends = [], [], [], set()  # nats: (repeats, B) per batch
    try:
        for xb in tqdm(source.batches(), total=source.n_batches, desc="likelihood", unit="batch",
                       disable=args.no_progress, file=sys.stderr):
            if source.pixels:
                res = bits_per_dim(source.sde, source.score_fn, xb, source.scaler, repeats=args.repeats,
                                   levels=source.levels, generator=generator, **ode)
                nats.append(res.nats_per_dim)
                nfes.append(res.nfe / args.repeats)
                t_ends.update(r.info["t_end"] for r in res.runs)
            else:
                D = xb[0].numel()
                rows = []
                for _ in range(args.repeats):
                    r = log_likelihood(source.sde, source.score_fn, xb, generator=generator, **ode)
                    rows.append(-r.log_prob.cpu() / D)
                    nfes.append(r.nfe)
                    t_ends.add(r.info["t_end"])
                nats.append(torch.stack(rows))
                if source.exact_log_prob is not None:
                    exact_nats.append(-source.exact_log_prob(xb).cpu() / D)
    except LikelihoodError as e:
        raise ValueError(str(e)) from None

    table = torch.cat(nats, dim=1)  # (repeats, n)
    mean, se = mean_and_stderr(table)
    ln2 = math.log(2)
    probe = f", probe={args.probe} x{args.n_probes}" if args.divergence == "hutchinson" else ""
    print(f"likelihood: {source.description}")
    print(f"  divergence={args.divergence}{probe}, method={args.method}, rtol={args.rtol:g}, atol={args.atol:g}, "
          f"eps={args.eps:g}, t_end={'/'.join(f'{t:g}' for t in sorted(t_ends))}, repeats={args.repeats}, "
          f"mean NFE per solve={sum(nfes) / len(nfes):.1f}")
    kind = f"uniformly dequantized {source.levels}-level data" if source.pixels else "continuous data, no dequantization"
    print(f"  model NLL : {mean:.5f} ± {se:.5f} nats/dim   {mean / ln2:.5f} ± {se / ln2:.5f} bits/dim  ({kind})")
    if exact_nats:
        exact = torch.cat(exact_nats)
        e_mean, e_se = mean_and_stderr(exact[None])
        err_mean, err_se = mean_and_stderr(table - exact[None])
        print(f"  exact NLL : {e_mean:.5f} ± {e_se:.5f} nats/dim   {e_mean / ln2:.5f} ± {e_se / ln2:.5f} bits/dim  "
              "(oracle -log p_eps(x) / D)")
        print(f"  error     : {err_mean:+.2e} ± {err_se:.2e} nats/dim   {err_mean / ln2:+.2e} ± {err_se / ln2:.2e} bits/dim  "
              "(model - exact)")
    return 0
