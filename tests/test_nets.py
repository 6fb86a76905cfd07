"""Image score networks (NCSN++ / DDPM++ / DDPM U-Net), FIR resampling and the official-checkpoint loader.

Exact answers used: the published state-dict layouts (every key, shape, dtype) in ../shared/reference,
scipy's 2-D convolution for ``upfirdn2d``, the zero response of the ``(1, 3, 3, 1)`` filter at the
Nyquist frequency, the algebraic identity of the fused and unfused FIR convolutions, per-sample
independence of GroupNorm networks, and the score conventions of the published models recomputed by hand.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import ml_collections
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.signal import convolve2d

from sde_lab.checkpoints import CheckpointError, load_official_checkpoint, score_model_from_config
from sde_lab.nets import NETWORKS, build_network
from sde_lab.nets import up_fir
from sde_lab.nets.ncsnpp import geometric_sigmas

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"
CONFIGS = {
    "vp": REPO / "configs" / "vp" / "cifar10_ddpmpp_continuous.py",
    "subvp": REPO / "configs" / "subvp" / "cifar10_ddpmpp_continuous.py",
    "ve": REPO / "configs" / "ve" / "cifar10_ncsnpp_continuous.py",
}
REFERENCE_FILES = {"vp": "official_ddpmpp_cifar10_state_dict.txt", "ve": "official_ncsnpp_cifar10_state_dict.txt"}


def load_config(name: str) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location(f"config_{name}", CONFIGS[name])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def read_reference(name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    path = REFERENCE / REFERENCE_FILES[name]
    if not REFERENCE.is_dir():
        pytest.skip(f"reference state-dict layouts not found: {REFERENCE} (expected ../shared/reference beside the repo)")
    out = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        out[key] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype)
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small convolutions run fastest single-threaded (and don't fight other processes for cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def big_nets():
    """The two published CIFAR-10 architectures, built once on the meta device (shapes, no storage)."""
    with torch.device("meta"):
        return {name: build_network(load_config(name)) for name in ("vp", "ve")}


# --- published layouts ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vp", "ve"])
def test_state_dict_matches_published_layout(name, big_nets):
    """Every key of the published checkpoint, in order, with its shape and dtype; nothing else."""
    ref = read_reference(name)
    ours = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in big_nets[name].state_dict().items()}
    assert [k for k in ref if k not in ours] == []
    assert [k for k in ours if k not in ref] == []
    assert [(k, ref[k], ours[k]) for k in ref if ref[k] != ours[k]] == []
    assert list(ours) == list(ref)  # registration order = order of the EMA list


@pytest.mark.parametrize("name, millions", [("vp", 61.8), ("ve", 62.8)])
def test_parameter_count_matches_published(name, millions, big_nets):
    """Parameter count equals the reference shapes' total (≈61.8M DDPM++, ≈62.8M NCSN++)."""
    ref = read_reference(name)
    expected = sum(math.prod(shape) for key, (shape, _) in ref.items() if key != "sigmas")  # sigmas is a buffer
    net = big_nets[name]
    assert sum(p.numel() for p in net.parameters()) == expected
    assert abs(expected / 1e6 - millions) < 0.05
    # The EMA list covers the trainable parameters only: all but the fixed Fourier features W.
    frozen = [k for k, p in net.named_parameters() if not p.requires_grad]
    assert frozen == (["all_modules.0.W"] if name == "ve" else [])


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_sigmas_buffer_is_geometric(name, big_nets):
    """``sigmas`` are the N=1000 geometric VE levels from σ_max down to σ_min (float64)."""
    cfg = load_config(name).model
    s = geometric_sigmas(cfg.sigma_min, cfg.sigma_max, cfg.num_scales)
    assert big_nets[name].sigmas.shape == s.shape and big_nets[name].sigmas.dtype == s.dtype
    assert s.dtype == torch.float64 and s.shape == (1000,)
    torch.testing.assert_close(s[[0, -1]], torch.tensor([50.0, 0.01], dtype=torch.float64))
    ratios = s[1:] / s[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, (0.01 / 50.0) ** (1 / 999)))


def test_configs_reproduce_published_models():
    vp, subvp, ve = load_config("vp"), load_config("subvp"), load_config("ve")
    assert (vp.training.sde, subvp.training.sde, ve.training.sde) == ("vp", "subvp", "ve")
    assert vp.model.to_dict() == subvp.model.to_dict()  # same DDPM++ network for VP and sub-VP
    assert vp.model.embedding_type == "positional" and not vp.model.fir and vp.data.centered
    assert ve.model.embedding_type == "fourier" and ve.model.fir and ve.model.scale_by_sigma and not ve.data.centered
    for cfg in (vp, subvp, ve):
        for section in ("training", "data", "model", "optim", "sampling"):
            assert section in cfg


# --- FIR resampling -------------------------------------------------------------------------------
def _upfirdn_oracle(x: np.ndarray, k: np.ndarray, up: int, down: int, pad: tuple[int, int]) -> np.ndarray:
    """Definition, per image: insert zeros, zero-pad, full 2-D convolution (scipy), keep every down-th."""
    h, w = x.shape
    z = np.zeros((h * up, w * up))
    z[::up, ::up] = x
    z = np.pad(z, ((pad[0], pad[1]), (pad[0], pad[1])))
    return convolve2d(z, k, mode="valid")[::down, ::down]


@pytest.mark.parametrize("up, down, pad", [(1, 1, (1, 2)), (2, 1, (2, 1)), (1, 2, (1, 1)), (2, 2, (1, 0))])
def test_upfirdn2d_matches_convolution_definition(up, down, pad):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    k = torch.rand(3, 4, generator=g, dtype=torch.float64)  # asymmetric: a flip error would show
    out = up_fir.upfirdn2d(x, k, up=up, down=down, pad=pad)
    for b in range(2):
        for c in range(3):
            expected = _upfirdn_oracle(x[b, c].numpy(), k.numpy(), up, down, pad)
            np.testing.assert_allclose(out[b, c].numpy(), expected, rtol=1e-12, atol=1e-12)


def test_fir_with_box_kernel_is_average_pool_and_nearest():
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(up_fir.downsample_2d(x, (1, 1)), F.avg_pool2d(x, 2))
    torch.testing.assert_close(up_fir.upsample_2d(x, (1, 1)), F.interpolate(x, scale_factor=2, mode="nearest"))
    torch.testing.assert_close(up_fir.naive_downsample_2d(x), F.avg_pool2d(x, 2))
    torch.testing.assert_close(up_fir.naive_upsample_2d(x), F.interpolate(x, scale_factor=2, mode="nearest"))


def test_fir_kernel_preserves_constants_and_removes_nyquist():
    """(1,3,3,1)/8 has DC gain 1 and a zero at frequency π: a checkerboard downsamples to 0 (interior)."""
    ones = torch.ones(1, 1, 16, 16)
    torch.testing.assert_close(up_fir.downsample_2d(ones, (1, 3, 3, 1))[..., 1:-1, 1:-1], torch.ones(1, 1, 6, 6))
    torch.testing.assert_close(up_fir.upsample_2d(ones, (1, 3, 3, 1))[..., 2:-2, 2:-2], torch.ones(1, 1, 28, 28))
    i = torch.arange(16)
    checker = ((-1.0) ** (i[:, None] + i[None, :]))[None, None]
    interior = up_fir.downsample_2d(checker, (1, 3, 3, 1))[..., 1:-1, 1:-1]
    torch.testing.assert_close(interior, torch.zeros_like(interior))
    # teeth: plain subsampling aliases the checkerboard to a constant ±1
    assert checker[..., ::2, ::2].abs().min() == 1


def _compact(shape, gen):
    x = torch.zeros(shape, dtype=torch.float64)
    x[..., 3:-3, 3:-3] = torch.randn(*shape[:-2], shape[-2] - 6, shape[-1] - 6, generator=gen, dtype=torch.float64)
    return x


def test_fused_fir_convolutions_equal_unfused():
    """conv_downsample = downsample(conv(x)) and upsample_conv = conv(upsample(x)) away from the border."""
    g = torch.Generator().manual_seed(3)
    x = _compact((2, 3, 12, 12), g)
    w = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
    k = (1, 3, 3, 1)
    torch.testing.assert_close(up_fir.conv_downsample_2d(x, w, k), up_fir.downsample_2d(F.conv2d(x, w, padding=1), k))
    unfused_up = F.conv2d(up_fir.upsample_2d(x, k), w, padding=1)
    torch.testing.assert_close(up_fir.upsample_conv_2d(x, w, k), unfused_up)
    # teeth: the same fused op with the kernel's spatial orientation wrong does not match
    assert not torch.allclose(up_fir.upsample_conv_2d(x, w.flip(2, 3), k), unfused_up)


# --- tiny networks: every architecture option -------------------------------------------------------
def tiny_config(name="ncsnpp", image_size=8, **model) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.training = ml_collections.ConfigDict({"sde": "vp", "continuous": True})
    cfg.data = ml_collections.ConfigDict({"image_size": image_size, "num_channels": 3, "centered": True})
    base = dict(name=name, nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(image_size // 2,),
                dropout=0.1, resamp_with_conv=True, conditional=True, fir=False, fir_kernel=(1, 3, 3, 1),
                skip_rescale=True, resblock_type="biggan", progressive="none", progressive_input="none",
                progressive_combine="sum", embedding_type="positional", fourier_scale=16.0, init_scale=1.0,
                nonlinearity="swish", scale_by_sigma=False, sigma_min=0.01, sigma_max=50.0, num_scales=1000,
                beta_min=0.1, beta_max=20.0)
    base.update(model)
    cfg.model = ml_collections.ConfigDict(base)
    return cfg


ARCHS = {
    "ddpmpp": dict(),
    "ncsnpp": dict(embedding_type="fourier", fir=True, progressive_input="residual", init_scale=0.0),
    "ddpm-block-fir-outskip-inskip-cat": dict(resblock_type="ddpm", fir=True, progressive="output_skip",
                                              progressive_input="input_skip", progressive_combine="cat"),
    "ddpm-block-nofir-residual": dict(resblock_type="ddpm", progressive="residual", progressive_input="residual",
                                      embedding_type="fourier"),
    "biggan-fir-outskip-inskip-sum": dict(fir=True, progressive="output_skip", progressive_input="input_skip"),
    "biggan-fir-residual-inskip-cat": dict(fir=True, progressive="residual", progressive_input="input_skip",
                                           progressive_combine="cat", skip_rescale=False),
    "biggan-nofir-residual-3levels": dict(progressive="residual", progressive_input="residual", ch_mult=(1, 2, 2),
                                          attn_resolutions=(4,)),
    "unconditional": dict(conditional=False, fir=True, progressive_input="residual"),
    "ddpm-unet": dict(name="ddpm", attn_resolutions=(4,), init_scale=0.0),
}


def _labels(cfg, batch, gen):
    if cfg.model.get("embedding_type") == "fourier" and cfg.model.name == "ncsnpp":
        return 0.01 * 5000 ** torch.rand(batch, generator=gen)  # σ ∈ (0.01, 50)
    return 999 * torch.rand(batch, generator=gen)


@pytest.mark.parametrize("arch", list(ARCHS), ids=list(ARCHS))
def test_tiny_network_forward_backward(arch):
    """Shape in = shape out, finite, and every trainable parameter receives a gradient (none unused)."""
    torch.manual_seed(0)
    size = 16 if arch == "biggan-nofir-residual-3levels" else 8
    cfg = tiny_config(image_size=size, **ARCHS[arch])
    net = build_network(cfg)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 3, size, size, generator=g)
    out = net(x, _labels(cfg, 3, g))
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert no_grad == []


@pytest.mark.parametrize("arch", ["ddpmpp", "ncsnpp", "ddpm-block-fir-outskip-inskip-cat", "ddpm-unet"])
def test_outputs_are_per_sample_and_time_conditional(arch):
    """Eval mode: sample i's output does not depend on the rest of the batch (GroupNorm, not BatchNorm),
    is deterministic, and changes with its time label."""
    torch.manual_seed(0)
    cfg = tiny_config(**ARCHS[arch])
    net = build_network(cfg).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # a "trained" network: no branch left at its (near-)zero initialisation
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    x, labels = torch.randn(4, 3, 8, 8, generator=g), _labels(cfg, 4, g)
    with torch.no_grad():
        full = net(x, labels)
        torch.testing.assert_close(net(x[1:2], labels[1:2]), full[1:2], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(net(x, labels), full, rtol=0, atol=0)
        other = net(x, labels.flip(0))
    assert (other - full).abs().amax(dim=(1, 2, 3)).min() > 1e-4


def test_unconditional_network_ignores_labels():
    torch.manual_seed(0)
    net = build_network(tiny_config(**ARCHS["unconditional"])).eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(net(x, torch.tensor([1.0, 2.0])), net(x, torch.tensor([30.0, 0.1])))


@pytest.mark.parametrize("arch", ["ncsnpp", "ddpm-unet"])
def test_uncentered_data_is_mapped_to_minus_one_one(arch):
    """centered=False: net(x) equals the centred network (same weights) at 2x - 1."""
    torch.manual_seed(0)
    cfg = tiny_config(**ARCHS[arch])
    centred = build_network(cfg).eval()
    cfg.data.centered = False
    uncentred = build_network(cfg).eval()
    uncentred.load_state_dict(centred.state_dict())
    g = torch.Generator().manual_seed(7)
    x, labels = torch.rand(2, 3, 8, 8, generator=g), _labels(cfg, 2, g)
    with torch.no_grad():
        torch.testing.assert_close(uncentred(x, labels), centred(2 * x - 1, labels))
        assert not torch.allclose(centred(x, labels), centred(2 * x - 1, labels), atol=1e-6)  # teeth


def test_bad_options_raise_with_choices():
    with pytest.raises(ValueError, match="progressive.*output_skip"):
        build_network(tiny_config(progressive="outputskip"))
    with pytest.raises(ValueError, match="resblock_type.*biggan"):
        build_network(tiny_config(resblock_type="resnet"))
    with pytest.raises(ValueError, match="nonlinearity.*swish"):
        build_network(tiny_config(nonlinearity="gelu2"))
    with pytest.raises(ValueError, match="unknown network 'unet'.*ncsnpp"):
        build_network(tiny_config(name="unet"))
    with pytest.raises(ValueError, match="divisible"):
        build_network(tiny_config(image_size=10, ch_mult=(1, 2, 2)))
    assert {"ncsnpp", "ddpm"} <= set(NETWORKS)
    net = build_network(tiny_config())
    with pytest.raises(ValueError, match="labels must have shape"):
        net(torch.zeros(2, 3, 8, 8), torch.zeros(3))


# --- official checkpoint loader ------------------------------------------------------------------------
def _write_official(path, net, *, ema_shift=0.1, prefix="module."):
    """A checkpoint in the published layout: DataParallel keys, positional EMA list, optimizer, step."""
    state = {prefix + k: v.clone() for k, v in net.state_dict().items()}
    trainable = [p for p in net.parameters() if p.requires_grad]
    shadow = [p.detach().clone() + ema_shift * torch.randn_like(p) for p in trainable]
    opt = torch.optim.Adam(trainable, lr=2e-4)
    ckpt = {"model": state, "ema": {"decay": 0.9999, "num_updates": 7, "shadow_params": shadow},
            "optimizer": opt.state_dict(), "step": 7}
    torch.save(ckpt, path)
    return ckpt


CONVENTIONS = {
    # config overrides, how the published models turn the network output into a score
    "vp-ddpmpp": (dict(), "vp"),
    "subvp-ddpmpp": (dict(), "subvp"),
    "ve-ncsnpp": (dict(embedding_type="fourier", fir=True, progressive_input="residual", scale_by_sigma=True), "ve"),
}


def _expected_score(net, sde_name, x, t):
    """score_sde's get_score_fn, recomputed by hand from the paper's marginals."""
    B = 0.1 * t + 0.5 * t**2 * (20.0 - 0.1)
    if sde_name == "ve":
        sigma = 0.01 * (50.0 / 0.01) ** t
        return net(x, sigma) / sigma[:, None, None, None]
    std = torch.sqrt(1 - torch.exp(-B)) if sde_name == "vp" else 1 - torch.exp(-B)
    return -net(x, 999 * t) / std[:, None, None, None]


@pytest.mark.parametrize("case", list(CONVENTIONS))
def test_loader_round_trip_uses_ema_weights(case, tmp_path):
    overrides, sde_name = CONVENTIONS[case]
    cfg = tiny_config(**overrides)
    cfg.training.sde = sde_name
    cfg.data.centered = sde_name != "ve"
    torch.manual_seed(0)
    trained = build_network(cfg)
    ckpt = _write_official(tmp_path / "checkpoint_26.pth", trained)

    model = load_official_checkpoint(tmp_path / "checkpoint_26.pth", cfg)
    assert not model.training  # eval mode: dropout off
    loaded = dict(model.net.named_parameters())
    trainable = [n for n, p in trained.named_parameters() if p.requires_grad]
    for name, ema in zip(trainable, ckpt["ema"]["shadow_params"]):
        assert torch.equal(loaded[name], ema), name
    for name, p in trained.named_parameters():
        if not p.requires_grad:  # Fourier W: from ckpt['model'], not in the EMA list
            assert torch.equal(loaded[name], p)
    assert torch.equal(model.net.sigmas, trained.sigmas)

    # The returned model is the score under the published conventions, with the EMA network.
    ema_net = build_network(cfg).eval()
    ema_net.load_state_dict({k[len("module."):]: v for k, v in ckpt["model"].items()})
    with torch.no_grad():
        for p, e in zip([p for p in ema_net.parameters() if p.requires_grad], ckpt["ema"]["shadow_params"]):
            p.copy_(e)
    # float64 throughout: the Fourier features of log σ (scale 16) amplify float32 rounding of σ(t).
    g = torch.Generator().manual_seed(8)
    x, t = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64), torch.tensor([0.05, 0.7], dtype=torch.float64)
    model, ema_net = model.double(), ema_net.double()
    with torch.no_grad():
        torch.testing.assert_close(model(x, t), _expected_score(ema_net, sde_name, x, t))
        # teeth: the raw (non-EMA) weights give a different score
        raw = load_official_checkpoint(tmp_path / "checkpoint_26.pth", cfg, use_ema=False).double()
        assert not torch.allclose(raw(x, t), model(x, t))
        torch.testing.assert_close(raw(x, t), _expected_score(trained.eval().double(), sde_name, x, t))


def test_loader_accepts_unprefixed_keys(tmp_path):
    cfg = tiny_config()
    torch.manual_seed(0)
    net = build_network(cfg)
    _write_official(tmp_path / "ck.pth", net, prefix="")
    load_official_checkpoint(tmp_path / "ck.pth", cfg)


def _tamper(ckpt, how):
    state = ckpt["model"]
    if how == "missing":
        del state["module.all_modules.3.Conv_1.weight"]
    elif how == "unexpected":
        state["module.all_modules.3.extra.weight"] = torch.zeros(3)
    elif how == "shape":
        state["module.all_modules.3.Conv_0.bias"] = torch.zeros(17)
    elif how == "ema_length":
        ckpt["ema"]["shadow_params"] = ckpt["ema"]["shadow_params"][:-1]
    return ckpt


@pytest.mark.parametrize("how, pattern", [
    ("missing", r"missing keys \(1\): all_modules\.3\.Conv_1\.weight"),
    ("unexpected", r"unexpected keys \(1\): all_modules\.3\.extra\.weight"),
    ("shape", r"shape mismatches \(1\): all_modules\.3\.Conv_0\.bias: checkpoint \(17,\) vs network \(16,\)"),
    ("ema_length", r"EMA list has \d+ tensors but the network has \d+ trainable"),
])
def test_loader_is_strict(how, pattern, tmp_path):
    cfg = tiny_config()
    torch.manual_seed(0)
    ckpt = _write_official(tmp_path / "ck.pth", build_network(cfg))
    torch.save(_tamper(ckpt, how), tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=pattern):
        load_official_checkpoint(tmp_path / "bad.pth", cfg)


def test_loader_missing_and_corrupt_files(tmp_path):
    cfg = tiny_config()
    with pytest.raises(FileNotFoundError, match="not found.*download"):
        load_official_checkpoint(tmp_path / "nope.pth", cfg)
    (tmp_path / "garbage.pth").write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="corrupt.*download it again"):
        load_official_checkpoint(tmp_path / "garbage.pth", cfg)
    torch.manual_seed(0)
    _write_official(tmp_path / "good.pth", build_network(cfg))
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_official_checkpoint(tmp_path / "truncated.pth", cfg)
    torch.save({"weights": 1}, tmp_path / "layout.pth")
    with pytest.raises(CheckpointError, match="no 'model' entry"):
        load_official_checkpoint(tmp_path / "layout.pth", cfg)


def test_score_model_conventions_from_published_configs():
    """VP/sub-VP DDPM++: noise prediction at 999 t; VE NCSN++: σ-scaled score at σ(t)."""
    net = torch.nn.Identity()
    t = torch.tensor([0.3])
    for name, prediction, label in [("vp", "noise", "999t"), ("subvp", "noise", "999t"), ("ve", "scaled_score", "sigma")]:
        model = score_model_from_config(net, load_config(name))
        assert (model.prediction, model.time_label) == (prediction, label)
        B = 0.1 * 0.3 + 0.5 * 0.09 * 19.9
        expected_sigma = {"vp": math.sqrt(1 - math.exp(-B)), "subvp": 1 - math.exp(-B), "ve": 0.01 * 5000**0.3}[name]
        assert model.sde.marginal(t)[1].item() == pytest.approx(expected_sigma, rel=1e-6)
    cfg = load_config("ve")
    cfg.model.prediction = "score"  # contradicts scale_by_sigma=True
    with pytest.raises(ValueError, match="scale_by_sigma"):
        score_model_from_config(net, cfg)


def test_discrete_time_checkpoints_follow_score_sde_get_score_fn():
    """score_sde's get_score_fn(continuous=False), written out: VP ``labels = t (N − 1)``,
    ``score = −net(x, labels) / sqrt_1m_alphas_cumprod[labels.long()]``; VE ``labels = round((T − t)(N − 1))``,
    ``score = net(x, labels) / σ_desc[labels]`` (NCSN ordering, the network's scale_by_sigma). v1 divided by the
    continuous σ(t) instead (4.5% off at t = 1e-3 on VP)."""
    from sde_lab.config import load_config as load_file

    root = Path(__file__).resolve().parents[1] / "configs"
    seen = {}

    class Net(torch.nn.Module):
        def forward(self, x, labels):
            seen["labels"] = labels
            return x * (1.0 + labels[:, None, None, None] / 1000.0)

    x = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([1e-3, 0.2503, 0.5, 0.9999], dtype=torch.float64)

    vp = score_model_from_config(Net(), load_file(root / "vp" / "cifar10_ddpmpp.py"))
    N = 1000
    betas = torch.linspace(0.1 / N, 20.0 / N, N, dtype=torch.float64)  # score_sde's VPSDE.discrete_betas
    sqrt_1m = torch.sqrt(1.0 - torch.cumprod(1.0 - betas, 0))
    labels = t * (N - 1)
    expected = -Net()(x, labels) / sqrt_1m[labels.long()][:, None, None, None]
    torch.testing.assert_close(vp.score(x, t), expected, rtol=1e-10, atol=0)
    torch.testing.assert_close(seen["labels"], labels)
    continuous = -Net()(x, labels) / vp.path.marginal(t)[1][:, None, None, None]
    assert ((continuous / expected) - 1).abs().max() > 0.03  # the v1 conversion (4.5% off at t = 1e-3)

    ve = score_model_from_config(Net(), load_file(root / "ve" / "cifar10_ncsnpp.py"))
    sigmas_desc = torch.exp(torch.linspace(math.log(50.0), math.log(0.01), N, dtype=torch.float64))  # get_sigmas
    labels = torch.round((1.0 - t) * (N - 1)).long()
    expected = Net()(x, labels.double()) / sigmas_desc[labels][:, None, None, None]
    torch.testing.assert_close(ve.score(x, t), expected, rtol=1e-10, atol=0)
    assert torch.equal(seen["labels"], labels.double())
