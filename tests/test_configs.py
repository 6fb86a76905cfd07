"""Every config file builds, trains one step and samples one step; the demo runs end to end.

For each ``configs/<sde>/<name>.py`` (``configs/default.py`` is the shared base, not a config): the config
is imported by path (:func:`sde_lab.train.load_config`), its SDE, network (:func:`sde_lab.nets.build_network`)
and score model are built, and on a tiny batch (CIFAR-10 networks shrunk to ``nf=16`` at 16×16 through the
config itself):

* the σ²-weighted DSM loss of the freshly initialised network — whose output layer starts at zero, as in
  the paper — equals its closed form at a zero score, ``σ² ‖0 + z/σ‖² = ‖z‖²`` summed (or averaged with
  ``training.reduce_mean``) for the same draws: a wrong weighting, reduction or perturbation fails;
* one optimizer step of the library's :class:`sde_lab.train.Trainer` changes the weights and gives a finite loss;
* one step of the config's sampler gives finite samples of the data shape with exactly the NFE its predictor
  and corrector declare.

The demo (``experiments/demo.py --quick``) runs as a subprocess and must reproduce the oracle's exact
log-density through the probability-flow ODE.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sde_lab.nets import build_network
from sde_lab.registry import CORRECTORS, PREDICTORS, SDES, lookup
from sde_lab.config import build_objective, build_sde, build_trainer, data_shape, load_config, sample_from_config
from sde_lab.utils import append_dims

ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(p for p in (ROOT / "configs").glob("**/*.py") if p.name != "default.py")


pytestmark = pytest.mark.usefixtures("one_thread")


def _id(p: Path) -> str:
    return str(p.relative_to(ROOT / "configs"))


def test_config_tree_covers_every_sde():
    assert CONFIG_FILES, "no config files found under configs/"
    sdes = {load_config(p).training.sde for p in CONFIG_FILES}
    assert sdes == set(SDES), f"configs cover SDEs {sorted(sdes)}, expected {sorted(SDES)}"


def _tiny(config):
    """Shrink a config in place so its network runs in well under a second on a CPU."""
    config.device = "cpu"
    config.training.batch_size = 2
    if "tensorboard" in config.training:
        config.training.tensorboard = False
    if config.model.name != "mlp" and int(config.data.image_size) > 28:  # the 62M-parameter CIFAR-10 networks
        config.data.image_size = 16
        config.model.nf = 16
        config.model.num_res_blocks = 1
    return config


def _data(config, n: int, generator: torch.Generator) -> torch.Tensor:
    """Data-like inputs in the config's range ([-1, 1] if centred images, [0, 1] otherwise; N(0, I) for points)."""
    shape = data_shape(config)
    if len(shape) == 1:
        return torch.randn((n, *shape), generator=generator)
    x = torch.rand((n, *shape), generator=generator)
    return 2 * x - 1 if config.data.get("centered", False) else x


@pytest.mark.parametrize("path", CONFIG_FILES, ids=_id)
def test_config_builds_trains_and_samples(path, tmp_path):
    config = _tiny(load_config(path))
    shape = data_shape(config)
    g = torch.Generator().manual_seed(0)

    sde = build_sde(config)
    assert type(sde) is lookup(SDES, config.training.sde, "SDE")
    net = build_network(config)
    assert isinstance(net, torch.nn.Module)
    data = _data(config, 4, g)
    if config.model.get("num_classes", 0):  # class-conditional configs train on (x, label) pairs
        data = (data, torch.arange(4) % config.model.num_classes)
    trainer = build_trainer(config, tmp_path, dataset=data, progress=False)
    model = trainer.model  # built by build_score_model from the same config
    assert type(model.net) is type(net) and type(model.sde) is type(sde)

    # the loss of the zero-initialised output layer, against its closed form for the same (t, z)
    x0 = _data(config, 2, g)
    objective = build_objective(config, sde)
    draws = objective.draw(sde, 2, shape, torch.Generator().manual_seed(1), torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        t = draws["t"] if "t" in draws else torch.full((2,), 0.5)  # discrete losses draw an index instead
        out = model.output(append_dims(sde.marginal(t)[0], x0.ndim) * x0 + append_dims(sde.marginal(t)[1], x0.ndim) * draws["z"], t)
        assert out.shape == x0.shape
        assert out.abs().max() < 1e-3, "the output layer of a fresh network should start at (almost) zero"
        loss = objective(model, x0, draws)
    if not config.training.get("likelihood_weighting", False):
        # the zero output's loss: ‖target‖² with the objective's weight on the network's own target (1 for
        # ε-MSE, flow matching's velocity MSE and EDM's preconditioned loss)
        z, weighting = draws["z"], config.training.get("weighting")
        if weighting == "flow_matching":  # rectified flow: u* = α' x0 + σ' ε = ε − x0
            target = z - x0
        elif weighting == "edm":  # F* = (x0 − c_skip x)/c_out at σ = t (α = 1)
            sig, sd = append_dims(t, x0.ndim), config.model.sigma_data
            x = x0 + sig * z
            target = (x0 - sd**2 / (sig**2 + sd**2) * x) / (sig * sd / torch.sqrt(sig**2 + sd**2))
        else:
            target = z
        t2 = target.flatten(1) ** 2
        expected = t2.mean(1) if config.training.get("reduce_mean", False) else t2.sum(1)
        torch.testing.assert_close(loss, expected, rtol=2e-3, atol=1e-3)

    # one optimizer step of the library's trainer
    before = [p.detach().clone() for p in trainer.model.parameters()]
    loss_v, grad_norm = trainer.step()
    assert math.isfinite(loss_v) and math.isfinite(grad_norm) and grad_norm > 0
    assert trainer.step_count == 1
    changed = sum(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert changed > 0, "an optimizer step left every parameter unchanged"

    # one step of the config's sampler
    sc = config.sampling
    res = sample_from_config(config, trainer.path, trainer.model.eval(), (2, *shape), generator=torch.Generator().manual_seed(2), steps=1)
    assert res.samples.shape == (2, *shape)
    assert torch.isfinite(res.samples).all()
    if sc.get("method", "pc") == "pc":
        pred = lookup(PREDICTORS, sc.predictor, "predictor")()
        corr = lookup(CORRECTORS, sc.corrector, "corrector")()
        assert res.nfe == pred.nfe_per_step + corr.nfe_per_step * int(sc.get("n_steps_each", 1)) + int(bool(sc.get("noise_removal", True)))


def test_demo_quick_runs_and_matches_the_oracle(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, str(ROOT / "experiments" / "demo.py"), "--quick", "--out", str(out), "--n-iters", "60"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    for f in summary["figures"]:
        assert Path(f).is_file() and Path(f).stat().st_size > 0
    assert {"samples.png", "loss.png", "solvers.png", "likelihood.png"} <= {Path(f).name for f in summary["figures"]}
    assert summary["n_iters"] == 60 and Path(summary["checkpoint"]).is_file()
    lik = summary["likelihood"]
    # the probability-flow ODE with the exact score reproduces the exact log-density of p_eps
    assert abs(lik["oracle_ode_nll"] - lik["exact_nll"]) < 0.05
    assert math.isfinite(lik["model_nll"])
    rows = {r["solver"]: r for r in summary["solvers"]}
    # the exact score through the config's sampler (VP, Euler-Maruyama, 40 steps) reaches the noise floor
    assert rows["pc_config"]["oracle_sw2"] < 2.0 * summary["noise_floor_sw2"]
    assert rows["pc_config"]["model_nfe"] == 40 + 1  # 40 predictor steps + the denoising step
    assert "figures:" in proc.stdout and "runtime" in proc.stdout


def test_zero_score_closed_form_has_teeth():
    """The closed-form check above fails for a network whose output is not zero (a wrong init or head)."""
    config = _tiny(load_config(ROOT / "configs" / "vp" / "toy2d.py"))
    sde = build_sde(config)
    from sde_lab.config import build_score_model

    model = build_score_model(config, sde).eval()
    with torch.no_grad():
        model.net.out.bias.fill_(0.3)
    objective = build_objective(config, sde)
    draws = objective.draw(sde, 2, (2,), torch.Generator().manual_seed(1), torch.device("cpu"))
    with torch.no_grad():
        loss = objective(model, torch.zeros(2, 2), draws)
    expected = (draws["z"] ** 2).mean(1)
    assert not torch.allclose(loss, expected, rtol=2e-3, atol=1e-3)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=_id)
def test_config_names_a_known_dataset_and_sde(path):
    """A config's data set and SDE are names the data module and registry resolve (no silent typos)."""
    from sde_lab.data import dataset_names
    from sde_lab.registry import SDES
    from sde_lab.config import load_config

    config = load_config(path)
    assert config.data.dataset in dataset_names(), (path.name, config.data.dataset)
    assert config.training.sde in SDES, (path.name, config.training.sde)
