"""``sde-lab train``: train a score model from an ml-collections config file.

    sde-lab train --sde vp --config configs/vp/toy2d.py --workdir runs/vp_ring --set training.n_iters=2000
    torchrun --nproc_per_node 8 -m sde_lab train --sde vp --config configs/vp/cifar10_ddpmpp_continuous.py ...

``--sde`` overrides ``config.training.sde``; ``--set key=value`` overrides any existing key (values are
Python literals); ``--resume`` continues from the workdir's latest checkpoint. SIGINT/SIGTERM save a
checkpoint and exit cleanly.

A workdir belongs to one run (:mod:`sde_lab.workdir`): a fresh run into a folder that holds checkpoints is
refused (``--resume`` continues it, ``--overwrite`` moves it to ``<workdir>.old-<time>``); ``--resume`` of a
folder without checkpoints is refused (``--resume-or-start`` starts there instead, for job schedulers), and
so is ``--resume`` with a config that changes anything but the schedule; a second process on the same
workdir is refused while the first one runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..registry import SDES
from ._common import add_threads, n_parameters, set_threads


def add_parser(sub):
    p = sub.add_parser("train", help="train a score model (single process or under torchrun)")
    p.add_argument("--config", required=True, help="config file with get_config(), e.g. configs/vp/toy2d.py")
    p.add_argument("--sde", choices=sorted(SDES), default=None, help="overrides config.training.sde")
    p.add_argument("--workdir", default=None, help="checkpoints, TensorBoard logs (default runs/<config name>_<sde>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.n_iters=2000 (repeatable)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --workdir "
                     "(refused if there is none, or if the config differs in more than the schedule)")
    how.add_argument("--resume-or-start", action="store_true",
                     help="continue if --workdir holds a checkpoint, else start a fresh run there")
    how.add_argument("--overwrite", action="store_true",
                     help="start afresh in a --workdir that holds a run, moving the old run to <workdir>.old-<time>")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    add_threads(p)
    return p


def run(args) -> int:
    from ..config import apply_overrides, build_trainer, load_config
    from ..training import TrainingDiverged

    config = load_config(args.config)
    if args.sde is not None:
        config.training.sde = args.sde
    apply_overrides(config, args.overrides)
    workdir = Path(args.workdir or f"runs/{Path(args.config).stem}_{config.training.sde}")
    import torch.distributed as dist

    resume = "auto" if args.resume_or_start else bool(args.resume)
    try:
        from ..training import resolve_device

        resolve_device(config.get("device", "auto") if hasattr(config, "get") else "auto")
    except ValueError as e:
        from ._common import available_devices

        raise ValueError(f"{e} (config key device; --set device=cpu); available here: {', '.join(available_devices())}") from None
    trainer = None
    try:
        trainer = build_trainer(config, workdir, resume=resume, progress=not args.no_progress, overwrite=args.overwrite)
        set_threads(args, n_parameters(trainer.model))
        result = trainer.fit()
    except TrainingDiverged as e:
        print(f"sde-lab train: {e}", file=sys.stderr)
        return 1
    finally:
        if trainer is not None:
            trainer.close()
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    status = "interrupted" if result.interrupted else "finished"
    print(f"{status} at step {result.step}; checkpoint: {result.checkpoint}")
    if result.interrupted:
        print(f"resume with: sde-lab train --config {args.config} --sde {config.training.sde} --workdir {workdir} --resume")
    return 0
