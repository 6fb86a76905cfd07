"""Training loop: exact resume, DDP = single process, NaN stop, signals, checkpoints, config errors."""

import os
import shutil
import signal
import socket
from pathlib import Path

import pytest
import torch

from sde_lab import make_target
from sde_lab.losses import dsm_loss
from sde_lab.model import ScoreModel
from sde_lab.config import apply_overrides, build_trainer, load_checkpoint_score, load_config, train
from sde_lab.training import EMA, CheckpointError, Trainer, TrainingDiverged

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "vp" / "toy2d.py"


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**overrides):
    config = load_config(CONFIG)
    apply_overrides(
        config,
        [
            "training.batch_size=16",
            "training.n_iters=6",
            "training.snapshot_freq=3",
            "training.log_freq=1",
            "training.tensorboard=False",
            "model.hidden=16",
            "model.layers=2",
            "model.embed_dim=8",
            "optim.warmup=2",
            "device='cpu'",
        ]
        + [f"{k}={v!r}" for k, v in overrides.items()],
    )
    return config


def data(n=64, seed=0):
    return make_target("ring").sample(n, torch.Generator().manual_seed(seed))


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_resume_equals_uninterrupted_run(tmp_path):
    """3 steps + checkpoint + resume for 3 more == 6 uninterrupted steps (weights, EMA, optimizer)."""
    ds = data()
    full = build_trainer(tiny_config(), tmp_path / "full", dataset=ds, progress=False)
    full.fit(6)
    part = build_trainer(tiny_config(), tmp_path / "part", dataset=ds, progress=False)
    part.fit(3)
    resumed = build_trainer(tiny_config(), tmp_path / "part", dataset=ds, resume=True, progress=False)
    assert resumed.step_count == 3
    resumed.fit(6)
    for a, b in zip(_params(full.model), _params(resumed.model)):
        assert torch.equal(a, b)
    for a, b in zip(full.ema.shadow, resumed.ema.shadow):
        assert torch.equal(a, b)
    sa, sb = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)
    # teeth: a run with another seed differs
    other = build_trainer(tiny_config(seed=7), tmp_path / "other", dataset=ds, progress=False)
    other.fit(6)
    assert not all(torch.equal(a, b) for a, b in zip(_params(full.model), _params(other.model)))
    # checkpoint files: atomic names, latest pointer, EMA weights loaded by load_checkpoint_score
    ck = tmp_path / "part" / "checkpoints"
    assert sorted(p.name for p in ck.glob("*.pt")) == ["checkpoint_3.pt", "checkpoint_6.pt"]
    assert (ck / "latest").read_text() == "checkpoint_6.pt"
    sm = load_checkpoint_score(tmp_path / "part")
    assert isinstance(sm, ScoreModel) and sm.prediction == "noise" and sm.time_label == "999t"
    for a, b in zip(_params(sm), resumed.ema.shadow):
        assert torch.equal(a, b)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, workdir, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    trainer = build_trainer(tiny_config(**{"optim.grad_clip": 1e9}), workdir, dataset=data(), progress=False)
    trainer.step()
    if rank == 0:
        torch.save([p.grad for p in trainer.model.parameters()], out)
    dist.destroy_process_group()


def test_ddp_two_gloo_processes_match_single_process_gradients(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "ddp_grads.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "ddp"), str(out)), nprocs=2, join=True)
    ddp = torch.load(out)
    single = build_trainer(tiny_config(**{"optim.grad_clip": 1e9}), tmp_path / "single", dataset=data(), progress=False)
    single.step()
    grads = [p.grad for p in single.model.parameters()]
    assert max((a - b).abs().max().item() for a, b in zip(ddp, grads)) < 1e-6
    assert max(g.abs().max().item() for g in grads) > 1e-3  # not trivially zero
    # teeth: gradients of half the batch (one rank alone) differ
    half = build_trainer(tiny_config(**{"optim.grad_clip": 1e9, "training.batch_size": 8}), tmp_path / "half", dataset=data(), progress=False)
    half.step()
    assert max((p.grad - b).abs().max().item() for p, b in zip(half.model.parameters(), grads)) > 1e-4


@pytest.mark.slow
def test_torchrun_cli_two_gloo_processes_equal_single_process_training(tmp_path):
    """End to end through the CLI: `torchrun --nproc_per_node 2 -m sde_lab train` on CPU (gloo) gives the
    parameters of a single-process run at the same global batch."""
    import subprocess
    import sys

    sets = ["training.n_iters=20", "training.snapshot_freq=20", "training.tensorboard=False", "device='cpu'",
            "training.batch_size=64", "training.log_freq=10"]
    args = ["-m", "sde_lab", "train", "--sde", "vp", "--config", str(CONFIG), "--no-progress"]
    args += [a for kv in sets for a in ("--set", kv)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *args, "--workdir", str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    single = subprocess.run([sys.executable, *args, "--workdir", str(tmp_path / "single")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    a = torch.load(tmp_path / "ddp" / "checkpoints" / "checkpoint_20.pt", weights_only=False)
    b = torch.load(tmp_path / "single" / "checkpoints" / "checkpoint_20.pt", weights_only=False)
    assert a["world_size"] == 2 and b["world_size"] == 1
    for pa, pb in ((list(a["model"].values()), list(b["model"].values())), (a["ema"]["shadow"], b["ema"]["shadow"])):
        assert len(pa) == len(pb) > 0
        assert max((x - y).abs().max().item() for x, y in zip(pa, pb)) < 1e-5
    # teeth: training moved the parameters away from the initialisation
    init = build_trainer(load_config(CONFIG), tmp_path / "init", dataset=data(512), progress=False).model.state_dict()
    assert max((init[k] - v).abs().max().item() for k, v in b["model"].items()) > 1e-3


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    good = [data(16, s) for s in range(3)]
    bad = torch.full((16, 2), float("nan"))
    config = tiny_config(**{"training.snapshot_freq": 2})
    with pytest.raises(TrainingDiverged, match=r"step 3.*checkpoint_2\.pt"):
        train(config, tmp_path, dataset=iter(good + [bad, bad]), progress=False)
    ck = tmp_path / "checkpoints"
    assert sorted(p.name for p in ck.glob("*.pt")) == ["checkpoint_2.pt"]
    sm = load_checkpoint_score(tmp_path)
    assert all(torch.isfinite(p).all() for p in sm.parameters())


def test_signal_saves_and_exits_cleanly(tmp_path):
    def batches():
        for i in range(100):
            if i == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            yield data(16, i)

    config = tiny_config(**{"training.n_iters": 100, "training.snapshot_freq": 1000})
    result = train(config, tmp_path, dataset=batches(), progress=False)
    assert result.interrupted and result.step == 3
    assert (tmp_path / "checkpoints" / "checkpoint_3.pt").is_file()


def test_loss_decreases(tmp_path):
    """The MLP's DSM loss on fixed draws falls well below that of the initial (zero-output) network."""
    config = tiny_config(**{"training.n_iters": 300, "training.batch_size": 128, "model.hidden": 64,
                            "optim.lr": 3e-3, "model.ema_rate": 0.9, "training.snapshot_freq": 10_000})
    trainer = build_trainer(config, tmp_path, progress=False)
    x0 = data(4000, 11)
    g = torch.Generator().manual_seed(5)
    t = 1e-5 + (1 - 1e-5) * torch.rand(4000, generator=g)
    z = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        before = dsm_loss(trainer.model, trainer.path, x0, t=t, z=z, reduce="mean").mean()
    result = trainer.fit()
    with torch.no_grad():
        after = dsm_loss(result.model, trainer.path, x0, t=t, z=z, reduce="mean").mean()
    assert after < 0.8 * before
    assert result.losses[-1][1] < result.losses[0][1]


def test_ema_store_restore_and_decay():
    m = torch.nn.Linear(2, 2)
    e = EMA(m, 0.5, warmup=False)
    w0 = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(2.0)
    e.update(m)
    torch.testing.assert_close(e.shadow[0], w0 + 1.0)
    with e.average_of(m):
        torch.testing.assert_close(m.weight, w0 + 1.0)
    torch.testing.assert_close(m.weight, w0 + 2.0)


def test_bad_configs_shapes_and_checkpoints_give_clear_errors(tmp_path):
    config = tiny_config()
    with pytest.raises(ValueError, match=r"unknown config key 'training\.n_iter'.*n_iters"):
        apply_overrides(config, ["training.n_iter=5"])
    with pytest.raises(ValueError, match="expects a number"):
        apply_overrides(config, ["training.n_iters=many"])
    with pytest.raises(ValueError, match="expects an integer"):
        apply_overrides(config, ["training.batch_size=1.5"])
    with pytest.raises(ValueError, match="unknown config section"):
        apply_overrides(config, ["trainig.n_iters=5"])
    with pytest.raises(ValueError, match=r"shape \(3,\).*expects \(2,\)"):
        train(config, tmp_path / "shape", dataset=torch.randn(64, 3), progress=False)
    with pytest.raises(ValueError, match="batch_size must be a positive"):
        build_trainer(tiny_config(**{"training.batch_size": 0}), tmp_path / "b", dataset=data(), progress=False)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint_score(tmp_path / "missing_dir")
    (tmp_path / "e" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load_checkpoint_score(tmp_path / "e")
    bad = tmp_path / "e" / "checkpoints" / "checkpoint_5.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint_score(tmp_path / "e")
    with pytest.raises(CheckpointError, match="corrupt"):
        build_trainer(tiny_config(), tmp_path / "e", dataset=data(), resume=True, progress=False)


def test_cli_train_and_errors(tmp_path, capsys):
    from sde_lab.cli import main

    args = ["train", "--sde", "subvp", "--config", str(CONFIG), "--workdir", str(tmp_path), "--no-progress",
            "--set", "training.n_iters=2", "--set", "training.batch_size=8", "--set", "model.hidden=8",
            "--set", "training.tensorboard=False", "--set", "device=cpu"]
    assert main(args) == 0
    sm = load_checkpoint_score(tmp_path / "checkpoints" / "checkpoint_2.pt")
    assert type(sm.sde).__name__ == "SubVPSDE"
    assert main(args + ["--set", "model.hiden=3"]) == 2
    assert "unknown config key 'model.hiden'" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "nope.py")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_make_optimizer_fused_adam_matches_foreach_adam():
    from sde_lab.training import make_optimizer

    optim = load_config(CONFIG).optim
    torch.manual_seed(0)
    a = torch.nn.Linear(8, 8)
    b = torch.nn.Linear(8, 8)
    b.load_state_dict(a.state_dict())
    w0 = a.weight.detach().clone()
    fused = make_optimizer(a.parameters(), optim)
    optim.fused = False
    plain = make_optimizer(b.parameters(), optim)
    assert fused.defaults["fused"] and not plain.defaults.get("fused")
    x = torch.randn(16, 8)
    for _ in range(5):
        for net, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert (a.weight - w0).abs().max() > 1e-3  # the steps moved the parameters
    plain.load_state_dict(fused.state_dict())  # checkpoints of one load into the other
    optim.optimizer = "SGD"
    with pytest.raises(ValueError, match="valid choices: Adam"):
        make_optimizer(a.parameters(), optim)


def test_sampler_batches_are_a_function_of_seed_and_step_and_split_across_ranks():
    """A sampler source is drawn several batches per call; batch ``step`` must not depend on the order of
    access, consecutive batches must differ, and two ranks' slices must make up the global batch."""
    from sde_lab.training import BatchStream as _Batches

    target = make_target("ring")
    one = _Batches(target, 32, seed=7, rank=0, world=1)
    assert one.per_chunk > 1  # the chunked path is the one under test
    forward = [one.get(s) for s in range(one.per_chunk + 3)]  # crosses a chunk boundary
    other = _Batches(target, 32, seed=7, rank=0, world=1)
    for s in (one.per_chunk + 2, 0, 5, one.per_chunk):  # random access, back and forth
        assert torch.equal(other.get(s), forward[s])
    assert all(not torch.equal(a, b) for a, b in zip(forward, forward[1:]))
    assert not torch.equal(_Batches(target, 32, seed=8, rank=0, world=1).get(0), forward[0])
    halves = [_Batches(target, 32, seed=7, rank=r, world=2).get(4) for r in (0, 1)]
    assert torch.equal(torch.cat(halves), forward[4])
    # the samples follow the target: mean radius of the ring
    r = torch.cat(forward).norm(dim=1).mean()
    assert abs(float(r) - 2.0) < 0.1


def test_sampler_without_a_stated_sample_size_is_drawn_one_batch_at_a_time():
    from sde_lab.training import BatchStream as _Batches

    calls = []

    class Source:
        def sample(self, n, generator):
            calls.append(n)
            return torch.randn(n, 3, generator=generator)

    b = _Batches(Source(), 8, seed=0, rank=0, world=1)
    b.get(0), b.get(1)
    assert calls == [8, 8]


def _linear_output_dtypes(model):
    seen = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append(o.dtype)) for m in model.modules()
             if isinstance(m, torch.nn.Linear)]
    return seen, hooks


def test_bf16_autocast_trains_in_bf16_and_tracks_the_float32_run(tmp_path):
    """``training.bf16``: the network's matmuls run in bfloat16, weights and optimizer stay float32, and the
    run follows the float32 one to bf16 accuracy (without the flag everything is float32)."""
    ds = data()
    runs = {}
    for bf16 in (False, True):
        trainer = build_trainer(tiny_config(**{"training.bf16": bf16}), tmp_path / str(bf16), dataset=ds, progress=False)
        seen, hooks = _linear_output_dtypes(trainer.model)
        result = trainer.fit(6)
        for h in hooks:
            h.remove()
        assert set(seen) == {torch.bfloat16 if bf16 else torch.float32}
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
        runs[bf16] = (_params(trainer.model), [loss for _, loss in result.losses])
    (p32, l32), (p16, l16) = runs[False], runs[True]
    assert all(abs(a - b) <= 0.05 * abs(a) for a, b in zip(l32, l16))
    diff = max(float((a - b).abs().max() / a.abs().max().clamp_min(1e-3)) for a, b in zip(p32, p16))
    assert 0 < diff < 0.05  # bf16 changes the numbers a little, not the training


@pytest.mark.slow
@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_loss_trains_like_eager(tmp_path):
    """``training.compile``: the compiled loss gives the same updates as eager mode (to float rounding)."""
    ds = data()
    params = {}
    for compiled in (False, True):
        trainer = build_trainer(tiny_config(**{"training.compile": compiled}), tmp_path / str(compiled), dataset=ds, progress=False)
        assert hasattr(trainer.loss_module, "_orig_mod") == compiled  # what torch.compile wraps
        trainer.fit(4)
        params[compiled] = _params(trainer.model)
    for a, b in zip(params[False], params[True]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("clip", [1e-3, 1e9])
def test_step_clips_the_gradient_to_the_configured_norm(tmp_path, clip):
    """The optimizer sees gradients of norm min(‖g‖, clip); the step reports the unclipped ‖g‖."""
    trainer = build_trainer(tiny_config(**{"optim.grad_clip": clip}), tmp_path, dataset=data(), progress=False)
    seen = []
    trainer.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append(float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in trainer.model.parameters()]))))
    )
    _, gn = trainer.step()
    assert gn > 1e-2  # so that clip=1e-3 is active
    assert seen[0] == pytest.approx(min(gn, clip), rel=1e-5)
