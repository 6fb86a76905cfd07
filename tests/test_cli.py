"""End-to-end CLI paths that cross modules: train → sample --ckpt, classifier guidance from the CLI."""

import numpy as np
import pytest

from sde_lab import make_target
from sde_lab.cli import main


def test_sample_with_class_guidance_hits_the_component(tmp_path):
    out = tmp_path / "s"
    assert main(["sample", "--target", "ring", "--class", "2", "--solver", "ode", "--n", "400",
                 "--out", str(out), "--quiet"]) == 0
    x = np.load(out / "samples.npz")["samples"]
    mu = make_target("ring").means[2].numpy()
    # the exact conditional is the component N(μ_2, 0.2² I): mean within 5 s.e., every sample nearest μ_2
    assert np.all(np.abs(x.mean(0) - mu) < 5 * 0.2 / np.sqrt(len(x)))
    d = np.linalg.norm(x[:, None, :] - make_target("ring").means.numpy()[None], axis=-1)
    assert (d.argmin(1) == 2).mean() > 0.99


def test_train_then_sample_from_checkpoint(tmp_path, capsys):
    work = tmp_path / "w"
    assert main(["train", "--sde", "subvp", "--config", "configs/vp/toy2d.py", "--workdir", str(work),
                 "--set", "training.n_iters=5"]) == 0
    out = tmp_path / "s"
    assert main(["sample", "--ckpt", str(work), "--solver", "pc", "--steps", "20", "--n", "16",
                 "--out", str(out), "--quiet"]) == 0
    assert "SubVPSDE" in capsys.readouterr().out
    x = np.load(out / "samples.npz")["samples"]
    assert x.shape == (16, 2) and np.isfinite(x).all()
    # the checkpoint brings its SDE: a contradicting --sde is refused, and so are two sources
    assert main(["sample", "--ckpt", str(work), "--sde", "ve", "--n", "4", "--out", str(out)]) == 2
    assert main(["sample", "--ckpt", str(work), "--target", "ring", "--n", "4", "--out", str(out)]) == 2
    assert "either --target or --ckpt" in capsys.readouterr().err


@pytest.mark.parametrize("argv,msg", [
    (["sample", "--n", "4", "--out", "X"], "no score source"),
    (["sample", "--ckpt", "/nonexistent/ckpt.pt", "--n", "4", "--out", "X"], "nonexistent"),
    (["sample", "--target", "ring", "--class", "9", "--n", "4", "--out", "X"], "out of range"),
])
def test_sample_errors(argv, msg, capsys, tmp_path):
    argv = [a if a != "X" else str(tmp_path / "o") for a in argv]
    assert main(argv) == 2
    assert msg in capsys.readouterr().err
