"""``sde-lab train-classifier``: train the small classifier behind FID-LeNet / IS-LeNet, or a
noise-conditional one (``--noise-conditional --sde vp``) for classifier guidance."""

from __future__ import annotations

import json
import time

import torch

from ..classifier import Classifier, default_classifier_path, evaluate_classifier, save_classifier, train_classifier
from ..data import dataset_info, get_dataset
from ..registry import DATASETS, SDES, make_sde
from ..sde import SAMPLING_EPS


def add_parser(sub):
    image_sets = sorted(n for n in DATASETS if dataset_info(n).is_image and dataset_info(n).n_classes != 0)
    p = sub.add_parser(
        "train-classifier",
        help="train a LeNet-style classifier (FID-LeNet / IS-LeNet features, or noise-conditional for guidance)",
        description="Train sde_lab.classifier.Classifier on a labelled image set and save it with its metadata.",
    )
    p.add_argument("--dataset", required=True, choices=image_sets, help="labelled image set")
    p.add_argument("--out", default=None, help="output file (default: ~/.cache/sde_lab/classifiers/<dataset>....pt, where eval looks)")
    p.add_argument("--data-root", default=None, help="data root (default: $SDE_LAB_DATA or ~/.cache/sde_lab/data; imagefolder: the folder)")
    p.add_argument("--download", action="store_true", help="let torchvision download the data (needs network)")
    p.add_argument("--image-size", type=int, default=None, help="resize images (default: native size)")
    p.add_argument("--centered", action="store_true", help="train on data in [-1, 1] instead of [0, 1]")
    p.add_argument("--epochs", type=int, default=3, help="default: 3")
    p.add_argument("--batch-size", type=int, default=128, help="default: 128")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate, cosine decay (default: 2e-3)")
    p.add_argument("--width", type=int, default=32, help="channels of the first convs (default: 32)")
    p.add_argument("--n", type=int, default=None, help="train on the first N images only")
    p.add_argument("--noise-conditional", action="store_true", help="time input; train on x_t = alpha x + sigma z, t ~ U(eps, 1)")
    p.add_argument("--sde", choices=sorted(SDES), default="vp", help="SDE perturbing the data with --noise-conditional (default: vp)")
    p.add_argument("--eps", type=float, default=SAMPLING_EPS, help=f"smallest training time (default: {SAMPLING_EPS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="replace an existing classifier at --out (refused by default)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def run(args) -> int:
    from ..workdir import check_output_file
    from ._common import check_device

    args.device = str(check_device(args.device, default="cpu"))
    out = args.out or default_classifier_path(args.dataset, image_size=args.image_size, time_conditional=args.noise_conditional, sde_name=args.sde)
    out = check_output_file(out, flag="--out", overwrite=args.overwrite, suffixes=(".pt",))  # before the training
    info = dataset_info(args.dataset)
    common = dict(root=args.data_root, centered=args.centered, image_size=args.image_size, download=args.download)
    train = get_dataset(args.dataset, split=info.splits[0], n=args.n, **common)
    test_split = "test" if "test" in info.splits else None
    test = get_dataset(args.dataset, split=test_split, **common) if test_split else None
    x0 = train[0][0]
    n_classes = info.n_classes if info.n_classes > 0 else train.info.n_classes
    torch.manual_seed(args.seed)  # the CLI edge seeds weight initialisation; the library never does
    model = Classifier(x0.shape[0], n_classes, x0.shape[-1], time_conditional=args.noise_conditional, width=args.width)
    sde = make_sde(args.sde) if args.noise_conditional else None
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    history = train_classifier(model, train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, sde=sde, eps=args.eps,
                               generator=gen, device=args.device, progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    acc = {}
    if test is not None:
        if args.noise_conditional:
            for t in (args.eps, 0.25, 0.5, 0.75, 1.0):
                acc[f"t={t:g}"] = evaluate_classifier(model, test, t=t, sde=sde, generator=gen, device=args.device)
        else:
            acc["clean"] = evaluate_classifier(model, test, device=args.device)
    meta = dict(dataset=args.dataset, image_size=x0.shape[-1], centered=args.centered, time_conditional=args.noise_conditional,
                sde=args.sde if args.noise_conditional else None, eps=args.eps, epochs=args.epochs, test_accuracy=acc, n_train=len(train))
    save_classifier(out, model.cpu(), **meta)
    print(f"trained {args.epochs} epochs on {len(train)} {args.dataset} images in {elapsed:.1f} s; final loss {history[-1]:.4f}")
    print("test accuracy: " + json.dumps({k: round(v, 4) for k, v in acc.items()}))
    print(f"saved {out}")
    return 0
