"""The Trainer takes objects: a user's own nn.Module trains without editing the library, and the loop's
randomness is a function of (seed, step, rank) that never touches the caller's global RNG state.

Regression tests for the v1 defects: the trainer seeded the global RNGs; every rank drew the same dropout
masks; random flips drawn inside data-loader workers were not replayed on resume; a stop signal reaching one
rank after the all-reduce stopped that rank alone (a deadlock); the importance-sampled likelihood weighting
drew t on the host every step; the DDPM loss trained the VP chain for a sub-VP model.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import time

import numpy as np
import pytest
import torch
from torch import nn

from problems import floor, gen
from sde_lab import SDE, VPSDE, DSMObjective, Model, SubVPSDE, Trainer, make_target, sample
from sde_lab.data import ArrayDataset
from sde_lab.losses import DDPMObjective, ImportanceLikelihoodWeighting
from sde_lab.metrics import sliced_wasserstein
from sde_lab.training import EMA, BatchStream, seeded, step_seed
from sde_lab.training.rng import STREAM_MODULE

pytestmark = pytest.mark.usefixtures("one_thread")


class TinyScoreNet(nn.Module):
    """A user's network, written here: any ``forward(x, t_label)`` works."""

    def __init__(self, dim=2, hidden=64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, dim))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], 1))


def test_a_user_defined_module_trains_and_samples():
    """The README example: Model(net, path, target) + DSMObjective + data → Trainer.fit → sample."""
    torch.manual_seed(0)
    gm = make_target("ring")
    model = Model(TinyScoreNet(), VPSDE(), target="eps")
    untrained = sample(model, (2000, 2), solver="dpm_solver_pp", steps=20, generator=gen(1)).samples
    trainer = Trainer(model, DSMObjective(reduce="mean"), gm, batch_size=256, lr=3e-3, warmup=100, seed=1,
                      ema=EMA(model, 0.99), progress=False)
    result = trainer.fit(1500)
    x = sample(result.model, (2000, 2), solver="dpm_solver_pp", steps=20, generator=gen(1)).samples
    ref, fl = gm.sample(2000, gen(2)), floor(gm, 2000)
    sw = sliced_wasserstein(x.float(), ref, generator=gen(3))
    assert sw < 4 * fl, (sw, fl)
    assert sliced_wasserstein(untrained.float(), ref, generator=gen(3)) > 10 * fl  # teeth: before training


@pytest.mark.parametrize("target", ["x0", "v", "velocity"])
def test_other_targets_train_too(target):
    """x0-, v- and velocity-networks train with the same objective: the excess loss over the exact model's (the
    minimum, by the DSM identity) shrinks, on common random numbers."""
    from sde_lab.losses import SigmaSquaredWeighting, dsm_loss

    torch.manual_seed(0)
    gm, path = make_target("ring"), VPSDE()
    model = Model(TinyScoreNet(), path, target=target)
    x0 = gm.sample(4096, gen(5))
    t = SigmaSquaredWeighting().sample(path, 4096, generator=gen(6))
    z = torch.randn(x0.shape, generator=gen(7))

    def loss(m):
        with torch.no_grad():
            return dsm_loss(m, path, x0, t=t, z=z, reduce="mean").mean().item()

    floor_loss, before = loss(gm.model(path)), loss(model)
    trainer = Trainer(model, DSMObjective(reduce="mean"), gm, batch_size=256, lr=3e-3, warmup=20, progress=False)
    trainer.fit(300)
    after = loss(model)
    assert after - floor_loss < 0.5 * (before - floor_loss), (floor_loss, before, after)


def test_the_trainer_leaves_the_global_rng_state_alone(tmp_path):
    from sde_lab.config import apply_overrides, build_trainer, load_config
    from pathlib import Path

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "vp" / "toy2d.py")
    apply_overrides(config, ["training.batch_size=16", "training.tensorboard=False", "model.hidden=16", "device='cpu'"])
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(6)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    trainer = build_trainer(config, tmp_path, dataset=make_target("ring").sample(64, gen(0)), progress=False)
    trainer.fit(4)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert (np.random.get_state()[1] == states[1]).all() and random.getstate() == states[2]


def test_module_randomness_is_per_step_and_per_rank():
    def draw(rank, step):
        with seeded(step_seed(7, step, STREAM_MODULE + rank), torch.device("cpu")):
            return torch.rand(8)

    before = torch.get_rng_state()
    assert torch.equal(draw(0, 3), draw(0, 3))  # a resumed run replays it
    assert not torch.equal(draw(0, 3), draw(1, 3))  # ranks differ (v1: identical dropout masks)
    assert not torch.equal(draw(0, 3), draw(0, 4))
    assert torch.equal(torch.get_rng_state(), before)


def test_random_flips_are_replayed_for_any_number_of_workers():
    """Flips drawn from (seed, step) on the global batch: the same with 0 or 2 loader workers and on resume."""
    images = torch.arange(64 * 16, dtype=torch.float32).reshape(64, 1, 4, 4)
    ds = ArrayDataset(images)  # map-style: read through a DataLoader
    a = BatchStream(ds, 8, seed=3, num_workers=0, random_flip=True)
    b = BatchStream(ds, 8, seed=3, num_workers=2, random_flip=True)
    resumed = BatchStream(ds, 8, seed=3, num_workers=2, random_flip=True)
    for step in (0, 1, 9):
        assert torch.equal(a.get(step), b.get(step))
    assert torch.equal(resumed.get(9), a.get(9))
    plain = BatchStream(ds, 8, seed=3, num_workers=0)
    flipped = [not torch.equal(a.get(s), plain.get(s)) for s in range(4)]
    assert any(flipped)  # teeth: flips happen
    x = a.get(0)
    p = plain.get(0)
    assert all(torch.equal(xi, pi) or torch.equal(xi, pi.flip(-1)) for xi, pi in zip(x, p))
    del a, b, resumed  # shut the loader workers down now
    import gc

    gc.collect()


def test_importance_weighting_never_synchronises_with_the_host(monkeypatch):
    w, sde = ImportanceLikelihoodWeighting(), VPSDE()
    g = gen(0)
    w.sample(sde, 4, generator=g)  # builds the device table once

    def forbidden(*a, **k):
        raise AssertionError("host synchronisation inside the training step")

    # the paths' own range check reads values on CPU tensors only (never on CUDA): off, as on a GPU
    monkeypatch.setattr(SDE, "check_time", lambda self, t: torch.as_tensor(t))

    for name in ("cpu", "item", "tolist", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    t = w.sample(sde, 64, generator=g, device="cpu")
    wt = w.weight(sde, t)
    monkeypatch.undo()
    assert t.shape == (64,) and torch.isfinite(wt).all()


def test_the_ddpm_loss_refuses_a_path_that_does_not_preserve_variance():
    with pytest.raises(ValueError, match="does not preserve variance"):
        DDPMObjective(100).draw(SubVPSDE(), 4, (2,), gen(0), torch.device("cpu"))
    DDPMObjective(100).draw(VPSDE(), 4, (2,), gen(0), torch.device("cpu"))  # VP is fine
    from sde_lab.config import build_objective, load_config
    from pathlib import Path

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "subvp" / "toy2d.py")
    config.training.continuous = False
    with pytest.raises(ValueError, match="no discrete chain"):
        build_objective(config)


# --- a stop signal that reaches one rank after the all-reduce ----------------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _SignallingEMA(EMA):
    """Rank 0 signals itself during step 2's EMA update — after that step's all-reduce."""

    def __init__(self, model, rank):
        super().__init__(model, 0.9)
        self.rank = rank

    def update(self, model):
        super().update(model)
        if self.rank == 0 and self.num_updates == 2:
            os.kill(os.getpid(), signal.SIGTERM)


def _signal_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    torch.manual_seed(0)
    model = Model(TinyScoreNet(hidden=8), VPSDE())
    trainer = Trainer(model, DSMObjective(), make_target("ring"), batch_size=8, ema=_SignallingEMA(model, rank),
                      progress=False)
    result = trainer.fit(50)
    with open(f"{out}.{rank}", "w") as f:
        f.write(f"{result.step} {int(result.interrupted)}")
    dist.destroy_process_group()


def test_a_stop_signal_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "done")
    ctx = mp.start_processes(_signal_worker, args=(2, _free_port(), out), nprocs=2, join=False, start_method="spawn")
    deadline = time.time() + 120
    while not ctx.join(timeout=1):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the ranks deadlocked after a stop signal reached one of them")
    steps = [open(f"{out}.{r}").read() for r in range(2)]
    assert steps[0] == steps[1] == "3 1", steps  # both stop after the next step, whose all-reduce carries the flag
