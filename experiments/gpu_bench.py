"""One prepared benchmark for a CUDA machine: training, sampling and likelihood speed of DDPM++ on CIFAR-10.

    python experiments/gpu_bench.py                  # on a GPU: a few minutes
    python experiments/gpu_bench.py --reduced        # what runs on a CPU (also the default without CUDA)

On CUDA it measures, with the paper's DDPM++ (cont., VP; ``configs/vp/cifar10_ddpmpp_continuous.py``, 61.8M
parameters) on random CIFAR-shaped data (the speed does not depend on the pixels):

* training steps/s at batch 128 in fp32, in bf16 autocast, and with ``torch.compile`` (bf16);
* sampling throughput in images/s at batch 256 for PC (reverse diffusion + Langevin, timed over 20 of its
  1000 steps and scaled to the full sampler) and for DPM-Solver++(2M) at 20 steps (timed whole);
* likelihood wall time per image through the probability-flow ODE (Hutchinson, RK45 at 1e-5, batch 16).

Without CUDA (or with ``--reduced``) it runs the same measurements on the digits U-Net at small batches and
says so in the table and the JSON: those numbers are a smoke test of the script, not GPU figures. Writes
``figures/gpu_bench.json`` (or ``--out``) next to the printed table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int, warmup: int = 2) -> float:
    """Seconds per call: ``warmup`` untimed calls, then the median of ``repeats`` timed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def main(argv=None) -> dict:
    from sde_lab import bits_per_dim, sample
    from sde_lab.config import apply_overrides, build_trainer, data_shape, load_config
    from sde_lab.data import make_scaler

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reduced", action="store_true", help="the CPU version (default without CUDA)")
    ap.add_argument("--out", default=str(ROOT / "figures" / "gpu_bench.json"))
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.reduced
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        cfg_path, train_batch, sample_batch, ll_batch, reps = "configs/vp/cifar10_ddpmpp_continuous.py", 128, 256, 16, 10
    else:
        cfg_path, train_batch, sample_batch, ll_batch, reps = "configs/vp/digits.py", 32, 32, 4, 3
    config = load_config(ROOT / cfg_path)
    apply_overrides(config, [f"training.batch_size={train_batch}", "training.tensorboard=False", "training.snapshot_freq=0",
                             f"device={device.type!r}"])
    shape = data_shape(config)
    data = torch.rand(max(1024, 4 * train_batch), *shape) * 2 - 1
    rows: list[dict] = []
    label = "GPU" if cuda else "CPU (reduced: not GPU figures)"
    print(f"{label}: {torch.cuda.get_device_name(0) if cuda else platform.processor() or 'cpu'}; torch {torch.__version__}; "
          f"config {cfg_path}", flush=True)

    # --- training ------------------------------------------------------------------------------------
    for name, sets in (("fp32", []), ("bf16", ["training.bf16=True"]), ("bf16 + compile", ["training.bf16=True", "training.compile=True"])):
        if "compile" in name and not cuda:
            rows.append({"what": f"train {name}", "skipped": "torch.compile measured on CUDA only here"})
            continue
        c = load_config(ROOT / cfg_path)
        apply_overrides(c, [f"training.batch_size={train_batch}", "training.tensorboard=False", "training.snapshot_freq=0",
                            f"device={device.type!r}"] + sets)
        trainer = build_trainer(c, None, dataset=data, progress=False)
        n_params = sum(p.numel() for p in trainer.model.parameters())
        s = timed(trainer.step, device, reps, warmup=3 if "compile" in name else 2)
        rows.append({"what": f"train {name}", "batch": train_batch, "steps_per_s": 1 / s, "params": n_params})
        print(f"  train {name:15s} batch {train_batch}: {1 / s:7.2f} steps/s", flush=True)
        del trainer

    # --- sampling ------------------------------------------------------------------------------------
    from sde_lab.config import build_model

    model = build_model(config).to(device).eval().requires_grad_(False)
    path = model.path
    pc_steps, full = 20, 1000
    s_pc = timed(lambda: sample(model, (sample_batch, *shape), solver="pc", steps=pc_steps, device=device,
                                generator=torch.Generator().manual_seed(0)), device, max(2, reps // 3), warmup=1)
    per_image = s_pc * full / pc_steps / sample_batch
    rows.append({"what": "sample pc 1000 steps", "batch": sample_batch, "images_per_s": 1 / per_image,
                 "timed_steps": pc_steps, "nfe": 2 * full + 1})
    print(f"  sample PC (1000 steps, from {pc_steps}) batch {sample_batch}: {1 / per_image:8.2f} images/s", flush=True)
    s_dpm = timed(lambda: sample(model, (sample_batch, *shape), solver="dpm_solver_pp", steps=20, device=device,
                                 generator=torch.Generator().manual_seed(0)), device, max(2, reps // 3), warmup=1)
    rows.append({"what": "sample dpm_solver_pp 20 steps", "batch": sample_batch, "images_per_s": sample_batch / s_dpm, "nfe": 20})
    print(f"  sample DPM-Solver++(2M) 20 steps batch {sample_batch}: {sample_batch / s_dpm:8.2f} images/s", flush=True)

    # --- likelihood ----------------------------------------------------------------------------------
    pixels = torch.randint(0, 256, (ll_batch, *shape), dtype=torch.uint8)
    t0 = time.perf_counter()
    res = bits_per_dim(path, model, pixels.to(device), make_scaler(bool(config.data.centered)), rtol=1e-5, atol=1e-5,
                       generator=torch.Generator().manual_seed(0), compute_dtype=torch.float32)
    sync(device)
    ll = (time.perf_counter() - t0) / ll_batch
    rows.append({"what": "likelihood ode rk45 1e-5", "batch": ll_batch, "seconds_per_image": ll, "nfe": res.nfe})
    print(f"  likelihood (ODE, RK45 1e-5) batch {ll_batch}: {ll:8.2f} s/image (NFE {res.nfe})", flush=True)

    print(f"\n{'measurement':34s} {'batch':>6s} {'value':>12s}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['what']:34s} {'':>6s} {'skipped':>12s}")
            continue
        key = next(k for k in ("steps_per_s", "images_per_s", "seconds_per_image") if k in r)
        unit = {"steps_per_s": "steps/s", "images_per_s": "images/s", "seconds_per_image": "s/image"}[key]
        print(f"{r['what']:34s} {r['batch']:6d} {r[key]:9.3g} {unit}")
    result = {"device": label, "gpu": torch.cuda.get_device_name(0) if cuda else None, "torch": torch.__version__,
              "config": cfg_path, "reduced": not cuda, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"-> {out}")
    return result


if __name__ == "__main__":
    main()
