"""Training-loop overhead, peak memory, and the CIFAR-10 DDPM++ step time on CPU.

Overhead: the full loop (:meth:`Trainer.fit`: data fetch, per-step seeded noise, warm-up schedule, grad
clipping, EMA update, loss logging, TensorBoard scalars) against two hand-written baselines on a batch and
noise already in memory, all three on the Trainer's own model, optimizer and EMA, alternated in blocks
within one run:

* *bare*: forward + backward + Adam;
* *algorithm*: bare + gradient-norm clipping + the EMA update — the training algorithm of Song et al.
  (2021) itself, which any loop must run; the loop's own cost (data, seeds, schedule, logging) is the
  overhead over this one.

Each round times one block of each kind (in rotating order); ratios ``loop time / baseline time - 1`` are
taken within a round and the median over rounds is reported, which cancels the slow drifts of a shared
machine. What one ``fit()`` call costs whatever its length (opening the TensorBoard writer, copying out the
EMA model) is timed apart (``fit_call_fixed_ms``) and not spread over a block's steps. Target: <= 10%.
Times are the process's CPU time (single-threaded), which a machine shared with other jobs disturbs far
less than wall time.

    python experiments/train_bench.py [--steps 40] [--rounds 25] [--skip-cifar]

Writes figures/train_bench.json and figures/train_bench.png.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sde_lab.config import apply_overrides, build_objective, build_score_model, build_sde, build_trainer, data_shape, load_config
from sde_lab.training import EMA, make_optimizer

ROOT = Path(__file__).resolve().parents[1]


def bare_stepper(config, algorithm: bool = False):
    """forward + backward + Adam on a fixed in-memory batch (``algorithm``: + grad clipping + EMA, as the paper)."""
    torch.manual_seed(0)
    sde = build_sde(config)
    model = build_score_model(config, sde)
    objective = build_objective(config, sde)
    shape = data_shape(config)
    B = int(config.training.batch_size)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn((B, *shape), generator=g)
    draws = objective.draw(sde, B, shape, g, torch.device("cpu"))
    opt = make_optimizer(model.parameters(), config.optim)  # as the Trainer
    params = list(model.parameters())
    ema = EMA(model, float(config.model.get("ema_rate", 0.999)))
    return _stepper(lambda: objective(model, x0, draws), opt, params, ema, float(config.optim.get("grad_clip", 1.0)), algorithm)


def _stepper(loss_fn, opt, params, ema, clip: float, algorithm: bool):
    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn().mean()
        loss.backward()
        if algorithm:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        if algorithm:
            ema.update(params)
        return loss

    return step


def overhead(config_path: Path, sets: list[str], steps: int, rounds: int, workdir: Path) -> dict:
    """Loop vs the two baselines, all three on the Trainer's own model, optimizer and EMA.

    Sharing the parameters keeps memory layout and the values' magnitudes (denormals are slow on CPUs) the
    same for the three; each round runs one block of each, in rotating order, and the ratios are taken
    per round (paired) and summarised by their median.
    """
    config = load_config(config_path)
    apply_overrides(config, sets + ["training.snapshot_freq=0", "training.log_freq=10", "device='cpu'"])
    if config.data.dim is None:  # images: random data of the configured shape (the data pipeline is in memory)
        dataset = torch.rand(2048, *data_shape(config)) * 2 - 1
    else:
        dataset = None
    trainer = build_trainer(config, workdir, dataset=dataset, progress=False)
    x0, _ = trainer._batch(0)
    g = torch.Generator().manual_seed(0)
    draws = trainer.objective.draw(trainer.path, x0.shape[0], trainer.shape, g, trainer.device)
    loss_fn = lambda: trainer.loss_module(x0, draws)  # noqa: E731
    params, clip = trainer._param_list, trainer.grad_clip
    kinds = {
        "bare": _stepper(loss_fn, trainer.optimizer, params, trainer.ema, clip, algorithm=False),
        "algorithm": _stepper(loss_fn, trainer.optimizer, params, trainer.ema, clip, algorithm=True),
    }

    def loop_block():
        trainer.fit(trainer.step_count + steps, final_checkpoint=False)

    def block(fn):
        return lambda: [fn() for _ in range(steps)]

    runs = {"bare": block(kinds["bare"]), "algorithm": block(kinds["algorithm"]), "loop": loop_block}
    for run in runs.values():  # warm-up
        run()
    # what a fit() call costs once, whatever its length (TensorBoard writer, progress bar, the returned EMA
    # model's copy): a real run pays it once, so it is measured apart and not charged to each block's steps
    fixed = []
    for _ in range(5):
        t0 = time.process_time()
        trainer.fit(trainer.step_count, final_checkpoint=False)
        fixed.append(time.process_time() - t0)
    fit_fixed = statistics.median(fixed)
    times: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names[r % 3 :] + names[: r % 3]:
            t0 = time.process_time()
            runs[name]()
            times[name].append((time.process_time() - t0 - (fit_fixed if name == "loop" else 0.0)) / steps)
    ratio = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b])) - 1  # noqa: E731
    t0 = time.perf_counter()
    trainer.save()
    save_s = time.perf_counter() - t0  # wall: includes the fsync
    med = {k: statistics.median(v) for k, v in times.items()}
    return dict(checkpoint_save_s=save_s, config=str(config_path.relative_to(ROOT)), batch=int(config.training.batch_size),
                steps=steps, rounds=rounds, fit_call_fixed_ms=1e3 * fit_fixed, bare_ms=1e3 * med["bare"], algorithm_ms=1e3 * med["algorithm"], loop_ms=1e3 * med["loop"],
                overhead=ratio("loop", "bare"), overhead_vs_algorithm=ratio("loop", "algorithm"),
                overhead_quartiles=[q - 1 for q in statistics.quantiles([x / y for x, y in zip(times["loop"], times["bare"])], n=4)],
                clip_ema=ratio("algorithm", "bare"))


def cifar_step(batch: int, steps: int) -> dict:
    config = load_config(ROOT / "configs" / "vp" / "cifar10_ddpmpp_continuous.py")
    apply_overrides(config, [f"training.batch_size={batch}"])
    bare = bare_stepper(config)
    n_params = sum(p.numel() for p in build_score_model(config).parameters())
    bare()
    times = []
    for _ in range(steps):
        t0 = time.process_time()
        bare()
        times.append(time.process_time() - t0)
    return dict(config="configs/vp/cifar10_ddpmpp_continuous.py", batch=batch, params=n_params,
                step_s=sum(times) / len(times), steps=steps, threads=torch.get_num_threads())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40, help="steps per timing block (2-D MLP; scaled down for bigger models)")
    ap.add_argument("--rounds", type=int, default=25, help="rounds of one block of each kind")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-cifar", action="store_true")
    ap.add_argument("--cifar-steps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        # the smallest step is the noisiest ratio and the cheapest to repeat: 4x the rounds
        rows.append(overhead(ROOT / "configs/vp/toy2d.py", [], args.steps, 4 * args.rounds, Path(d) / "toy"))
        rows.append(overhead(ROOT / "configs/vp/toy2d.py", ["training.batch_size=4096", "model.hidden=256"],
                             max(args.steps // 10, 5), args.rounds, Path(d) / "toy_big"))
        rows.append(overhead(ROOT / "configs/vp/digits.py", [], max(args.steps // 4, 5), args.rounds, Path(d) / "digits"))
        rows.append(overhead(ROOT / "configs/vp/mnist.py", ["training.batch_size=16"], 2, args.rounds, Path(d) / "mnist"))
    print(f"{'config':34s} {'batch':>6s} {'bare ms':>9s} {'algo ms':>9s} {'loop ms':>9s} {'clip+EMA':>9s} {'vs bare':>8s} {'vs algo':>8s}")
    for r in rows:
        print(f"{r['config']:34s} {r['batch']:6d} {r['bare_ms']:9.2f} {r['algorithm_ms']:9.2f} {r['loop_ms']:9.2f} "
              f"{100 * r['clip_ema']:8.1f}% {100 * r['overhead']:7.1f}% {100 * r['overhead_vs_algorithm']:7.1f}%  "
              f"(vs bare, quartiles of the rounds: {100 * r['overhead_quartiles'][0]:.1f}% .. {100 * r['overhead_quartiles'][2]:.1f}%)")
    cifar = None
    if not args.skip_cifar:
        cifar = cifar_step(8, args.cifar_steps)
        print(f"\nCIFAR-10 DDPM++ ({cifar['params'] / 1e6:.1f}M params), batch 8, CPU, {cifar['threads']} thread(s): "
              f"{cifar['step_s']:.2f} s / step (forward + backward + Adam)")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mb:.0f} MB")
    runtime = time.time() - t_start
    out = ROOT / "figures"
    out.mkdir(exist_ok=True)
    if cifar is None and (out / "train_bench.json").exists():  # --skip-cifar: keep the last measured CIFAR row, marked
        previous = json.loads((out / "train_bench.json").read_text()).get("cifar")
        if previous:
            cifar = {**previous, "from_earlier_run": True}
    (out / "train_bench.json").write_text(json.dumps(dict(rows=rows, cifar=cifar, peak_rss_mb=peak_mb, threads=args.threads,
                                                         runtime_s=round(runtime, 1)), indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    labels = [f"{Path(r['config']).parent.name}/{Path(r['config']).stem}\nB={r['batch']}" for r in rows]
    import numpy as np

    pos = np.arange(len(rows))
    ax.bar(pos - 0.2, [100 * r["overhead"] for r in rows], 0.4, label="over bare step (fwd + bwd + Adam)")
    ax.bar(pos + 0.2, [100 * r["overhead_vs_algorithm"] for r in rows], 0.4, label="over the algorithm (+ clip + EMA)")
    ax.set_xticks(pos, labels)
    ax.axhline(10, color="r", ls="--", label="10% target")
    ax.set_ylabel("training-loop overhead (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "train_bench.png", dpi=100)
    print(f"wrote {out / 'train_bench.json'} and {out / 'train_bench.png'}; runtime {runtime:.1f}s")


if __name__ == "__main__":
    main()
