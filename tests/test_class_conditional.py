"""Class-conditional score networks and classifier-free guidance end to end: nets, losses, training, CLI.

The networks take class labels as a learned embedding added to the time embedding, with one extra row for
the null label ∅ = ``num_classes``; the trainer drops labels with ``training.label_dropout``; the trained
model then drives :class:`~sde_lab.conditional.ClassifierFreeGuidance`. The oracle checks the result: a
CFG sample of class ``k`` of the 8-mode ring must sit on component ``k``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sde_lab import make_target, sample
from sde_lab.conditional import ClassifierFreeGuidance
from sde_lab.losses import dsm_loss
from sde_lab.nets import build_network
from sde_lab.config import apply_overrides, build_score_model, build_trainer, load_checkpoint_score, load_config

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _config(path="configs/vp/toy2d.py", **overrides):
    config = load_config(ROOT / path)
    apply_overrides(config, ["device='cpu'", "training.tensorboard=False"] + [f"{k}={v!r}" for k, v in overrides.items()])
    return config


def _image_config(name: str):
    """A tiny image config of each network family, class-conditional with 4 classes."""
    if name == "mlp":
        c = _config()
    else:
        c = _config("configs/vp/mnist_cfg.py") if name == "ncsnpp" else _config("configs/vp/mnist.py")
        if name == "ddpm":
            c.model.name = "ddpm"
        c.model.update(dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=()))
        c.data.image_size = 8
    c.model.num_classes = 4
    return c


@pytest.mark.parametrize("name", ["mlp", "ncsnpp", "ddpm"])
def test_class_conditional_networks(name):
    """Labels change the output, ``y=None`` is the null label, labels are validated, unconditional nets refuse them."""
    config = _image_config(name)
    torch.manual_seed(0)
    net = build_network(config).eval()  # eval: no dropout
    with torch.no_grad():  # zero-initialised output layers would hide every input: perturb all weights
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    shape = (3, 2) if name == "mlp" else (3, 1, 8, 8)
    x, labels = torch.randn(shape), torch.full((3,), 0.5)
    a, b = net(x, labels, torch.tensor([0, 0, 0])), net(x, labels, torch.tensor([1, 1, 1]))
    assert not torch.allclose(a, b)
    assert torch.equal(net(x, labels), net(x, labels, torch.tensor([4, 4, 4])))  # None = null label 4
    assert torch.equal(net(x, labels, 2), net(x, labels, torch.tensor([2, 2, 2])))  # an int broadcasts
    with pytest.raises(ValueError, match="out of range"):
        net(x, labels, torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match=r"\(3,\) integer"):
        net(x, labels, torch.tensor([0.0, 1.0, 2.0]))
    config.model.num_classes = 0
    plain = build_network(config)
    assert not any("class_embed" in k for k in plain.state_dict())  # unconditional state dicts are unchanged
    with pytest.raises(ValueError, match="unconditional"):
        plain(x, labels, torch.tensor([0, 0, 0]))


def test_score_model_and_loss_take_labels():
    config = _image_config("mlp")
    model = build_score_model(config)
    assert model.num_classes == 4
    x, t = torch.randn(5, 2), torch.full((5,), 0.3)
    with torch.no_grad():
        model.net.class_embed.embedding.weight.mul_(50)
        model.net.out.weight.normal_()
    y = torch.tensor([0, 1, 2, 3, 4])
    assert not torch.allclose(model(x, t, y), model(x, t))
    la, lb = (dsm_loss(model, model.sde, x, t=t, z=torch.ones_like(x), y=yy) for yy in (y, torch.zeros_like(y)))
    assert not torch.allclose(la, lb)
    config.model.num_classes = 0
    with pytest.raises(ValueError, match="unconditional model"):
        build_score_model(config)(x, t, y)


class _LabelledPoints(torch.utils.data.Dataset):
    """Points whose first coordinate encodes their label, so the trainer's pairing of x and y can be checked."""

    def __init__(self, n=256):
        self.y = torch.arange(n) % 4
        self.x = torch.stack([self.y.float(), torch.zeros(n)], 1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


@pytest.mark.parametrize("as_tensors", [True, False])
def test_trainer_pairs_labels_and_drops_them(tmp_path, as_tensors):
    """Each x keeps its own label, and a fraction ``label_dropout`` of labels becomes the null label."""
    config = _config(**{"training.batch_size": 64, "training.n_iters": 12, "training.snapshot_freq": 1000,
                        "model.hidden": 16, "model.layers": 1, "training.label_dropout": 0.3})
    config.model.num_classes = 4
    ds = _LabelledPoints()
    trainer = build_trainer(config, tmp_path, dataset=(ds.x, ds.y) if as_tensors else ds, progress=False)
    seen = []
    forward = trainer.model.net.forward
    trainer.model.net.forward = lambda x, labels, y=None: (seen.append((x.detach().clone(), y.clone())), forward(x, labels, y))[1]
    trainer.fit()
    assert len(seen) == 12
    null = torch.cat([y == 4 for _, y in seen])
    assert 0.2 < null.float().mean() < 0.4  # 768 labels, p = 0.3: s.e. 0.017
    kept = torch.cat([y for _, y in seen])[~null]
    assert torch.equal(torch.bincount(kept, minlength=4) > 0, torch.ones(4, dtype=torch.bool))
    x0, y0 = trainer._batch(3)  # the net sees x_t, not x0: check the pairing on the batch itself
    assert torch.equal(x0[:, 0].long(), y0)


def test_conditional_training_needs_labels(tmp_path):
    config = _config(**{"training.batch_size": 16, "training.n_iters": 2})
    config.model.num_classes = 4
    with pytest.raises(ValueError, match="labelled data"):
        build_trainer(config, tmp_path, dataset=torch.randn(64, 2), progress=False)
    config.training.label_dropout = 1.5
    with pytest.raises(ValueError, match="label_dropout"):
        build_trainer(config, tmp_path, progress=False)


def test_classifier_free_guidance_of_a_trained_model_samples_the_class(tmp_path):
    """Train a class-conditional MLP on the 8-mode ring (labels = components) and sample with CFG.

    With w = 0 and w = 2, >= 90% of class-k samples lie nearest component k; the null label (the unconditional
    model learned by label dropout) spreads over all modes, so a network that ignored y would fail.
    """
    config = _config(**{"training.batch_size": 256, "training.n_iters": 600, "training.snapshot_freq": 600,
                        "optim.lr": 2e-3, "optim.warmup": 50, "model.ema_rate": 0.99})
    config.model.num_classes = 8
    config.training.label_dropout = 0.2
    result = build_trainer(config, tmp_path, progress=False).fit()
    model = load_checkpoint_score(tmp_path)  # the stored config rebuilds the class-conditional net
    assert model.num_classes == 8
    gm = make_target("ring")
    for k, w in ((1, 0.0), (6, 2.0)):
        cfg = ClassifierFreeGuidance(model, k, w, null_label=8)
        x = sample(model.sde, model, (300, 2), solver="dpm_solver_pp", steps=20, condition=cfg,
                   generator=torch.Generator().manual_seed(k)).samples.float()
        nearest = torch.cdist(x, gm.means.float()).argmin(1)
        assert (nearest == k).float().mean() > 0.9, (k, w)
    x = sample(model.sde, result.model, (400, 2), solver="dpm_solver_pp", steps=20, generator=torch.Generator().manual_seed(0)).samples.float()
    counts = torch.bincount(torch.cdist(x, gm.means.float()).argmin(1), minlength=8)
    assert (counts > 15).all()  # unconditional: every mode populated


def test_cli_sample_class_conditional_checkpoint(tmp_path, capsys):
    from sde_lab.cli import main

    config = _config(**{"training.batch_size": 32, "training.n_iters": 3, "training.snapshot_freq": 3,
                        "model.hidden": 16, "model.layers": 1})
    config.model.num_classes = 8
    build_trainer(config, tmp_path / "run", progress=False).fit()
    out = tmp_path / "s"
    assert main(["sample", "--ckpt", str(tmp_path / "run"), "--class", "3", "--guidance", "2", "--n", "16",
                 "--solver", "dpm_solver_pp", "--steps", "5", "--out", str(out), "--quiet"]) == 0
    assert (out / "samples.npz").is_file()
    assert main(["sample", "--ckpt", str(tmp_path / "run"), "--class", "8", "--n", "4", "--steps", "3", "--out", str(out), "--quiet",
                 "--overwrite"]) != 0
    assert "out of range" in capsys.readouterr().err
