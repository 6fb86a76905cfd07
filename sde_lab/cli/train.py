"""``sde-lab train``: train a score model from an ml-collections config file.

    sde-lab train --sde vp --config configs/vp/toy2d.py --workdir runs/vp_ring --set training.n_iters=2000
    torchrun --nproc_per_node 8 -m sde_lab train --sde vp --config configs/vp/cifar10_ddpmpp_continuous.py ...

``--sde`` overrides ``config.training.sde``; ``--set key=value`` overrides any existing key (values are
Python literals); ``--resume`` continues from the workdir's latest checkpoint. SIGINT/SIGTERM save a
checkpoint and exit cleanly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..registry import SDES


def add_parser(sub):
    p = sub.add_parser("train", help="train a score model (single process or under torchrun)")
    p.add_argument("--config", required=True, help="config file with get_config(), e.g. configs/vp/toy2d.py")
    p.add_argument("--sde", choices=sorted(SDES), default=None, help="overrides config.training.sde")
    p.add_argument("--workdir", default=None, help="checkpoints, TensorBoard logs (default runs/<config name>_<sde>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.n_iters=2000 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --workdir")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    return p


def run(args) -> int:
    from ..config import apply_overrides, load_config, train
    from ..training import TrainingDiverged

    config = load_config(args.config)
    if args.sde is not None:
        config.training.sde = args.sde
    apply_overrides(config, args.overrides)
    workdir = Path(args.workdir or f"runs/{Path(args.config).stem}_{config.training.sde}")
    import torch.distributed as dist

    try:
        result = train(config, workdir, resume=args.resume, progress=not args.no_progress)
    except TrainingDiverged as e:
        print(f"sde-lab train: {e}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    status = "interrupted" if result.interrupted else "finished"
    print(f"{status} at step {result.step}; checkpoint: {result.checkpoint}")
    if result.interrupted:
        print(f"resume with: sde-lab train --config {args.config} --sde {config.training.sde} --workdir {workdir} --resume")
    return 0
