"""Interoperability: diffusers models and schedulers in, safetensors out and in, k-diffusion / EDM denoisers both ways.

A randomly initialised diffusers ``UNet2DModel`` stands in for a published checkpoint (the google/ddpm-cifar10-32
layout for the network check; a small one of the same family for the trajectories); with the same weights and
the same noise, diffusers' schedulers and sde_lab's solvers must take the same steps.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sde_lab import EDMPath, VESDE, VPSDE, make_target
from sde_lab.correctors import NoCorrector
from sde_lab.fast_samplers import Heun
from sde_lab.export import export_safetensors, load_exported
from sde_lab.interop import diffusers_alphas_cumprod, from_denoiser, from_diffusers, load_diffusers, to_k_diffusion
from sde_lab.multistep import DPMSolverPP
from sde_lab.predictors import Ancestral
from sde_lab.sampling import PredictorCorrector
from sde_lab.sde import DiscreteVP
from sde_lab.training import CheckpointError

diffusers = pytest.importorskip("diffusers")
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.usefixtures("one_thread")]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from problems import ListNoise  # noqa: E402

# google/ddpm-cifar10-32's unet/config.json
CIFAR10_UNET = dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=(128, 256, 256, 256),
                    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), dropout=0.1,
                    attention_head_dim=None, norm_num_groups=32, act_fn="silu", center_input_sample=False,
                    flip_sin_to_cos=False, freq_shift=1, time_embedding_type="positional", resnet_time_scale_shift="default",
                    downsample_padding=0, norm_eps=1e-6, add_attention=True, mid_block_scale_factor=1)
CIFAR10_SCHEDULER = {"_class_name": "DDPMScheduler", "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                     "num_train_timesteps": 1000, "clip_sample": True, "variance_type": "fixed_small", "trained_betas": None}
SMALL_UNET = dict(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
                  down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                  norm_num_groups=8)


def unet(cfg, seed=0):
    torch.manual_seed(seed)
    net = diffusers.UNet2DModel(**cfg).eval()
    with torch.no_grad():  # diffusers zero-initialises no layer here, but make every output depend on every weight
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return net.requires_grad_(False)


def g(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def small():
    return unet(SMALL_UNET)


# --------------------------------------------------------------------------------------------------
# the network and the parametrizations
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ptype", ["epsilon", "sample", "v_prediction"])
def test_cifar10_unet_output_equals_diffusers_for_every_prediction_type(ptype):
    net = unet(CIFAR10_UNET)
    model = from_diffusers(net, {**CIFAR10_SCHEDULER, "prediction_type": ptype})
    assert isinstance(model.path, DiscreteVP) and model.path.n == 1000
    x = torch.randn(2, 3, 32, 32, generator=g(1))
    steps = torch.tensor([999, 37])
    t = steps.double() / 999
    with torch.no_grad():
        ref = net(x, steps).sample
        out = model.output(x, t.float())
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
        # the prediction is read as diffusers' schedulers read it
        abar = diffusers.DDPMScheduler(**{k: v for k, v in CIFAR10_SCHEDULER.items() if k != "_class_name"}).alphas_cumprod
        a, s = (v.reshape(-1, 1, 1, 1).double() for v in (abar[steps].sqrt(), (1 - abar[steps]).sqrt()))
        x0 = {"epsilon": (x - s * ref) / a, "sample": ref.double(), "v_prediction": a * x - s * ref}[ptype]
        # diffusers' coefficients are float32 (√ᾱ rounded), and x0 = (x − σε)/α amplifies by 1/α = 157 at t = 1
        torch.testing.assert_close(model.x0(x.double(), t), x0.double(), rtol=1e-5, atol=1e-5)


def test_alphas_cumprod_equal_diffusers_for_every_schedule():
    for schedule in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        cfg = {"beta_schedule": schedule, "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000}
        sch = diffusers.DDPMScheduler(**cfg)
        ref = sch.alphas_cumprod.double()
        torch.testing.assert_close(diffusers_alphas_cumprod(cfg), ref, rtol=0, atol=0)
        # the path's chain gives back the scheduler's betas (float32 rounding of the cumulative product)
        torch.testing.assert_close(DiscreteVP(ref).betas, sch.betas.double(), rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="valid: linear"):
        diffusers_alphas_cumprod({"beta_schedule": "quartic"})


def test_discrete_vp_path_passes_through_the_chain():
    abar = diffusers_alphas_cumprod(CIFAR10_SCHEDULER)
    path = DiscreteVP(abar)
    i = torch.tensor([0, 1, 500, 998, 999])
    t = i.double() / 999
    torch.testing.assert_close(path.alpha(t) ** 2, abar[i], rtol=1e-12, atol=0)
    torch.testing.assert_close(path.t_from_sigma_tilde(path.sigma_tilde(t)), t, rtol=0, atol=1e-12)
    a, s = path.transition(t[1:2], t[2:3])
    torch.testing.assert_close(a**2, abar[500:501] / abar[1:2])
    # f and g from α, σ: the derived generic forms agree with the closed ones between the levels
    u = torch.tensor([0.1234, 0.777], dtype=torch.float64)
    from sde_lab.sde import _derivative

    torch.testing.assert_close(path.drift_coef(u), _derivative(lambda v: torch.log(path.alpha(v)), u))
    dsig2 = _derivative(lambda v: path.sigma(v) ** 2, u)
    torch.testing.assert_close(path.diffusion(u) ** 2, dsig2 - 2 * path.drift_coef(u) * path.sigma(u) ** 2)
    with pytest.raises(ValueError, match="strictly decreasing"):
        DiscreteVP(torch.tensor([0.9, 0.95]))


# --------------------------------------------------------------------------------------------------
# the schedulers' trajectories
# --------------------------------------------------------------------------------------------------
def float64_tables(sch):
    """diffusers' scheduler with its ᾱ tables in float64 (it computes them, and its steps, in float32)."""
    for name in ("alphas_cumprod", "alphas", "betas", "final_alpha_cumprod", "one"):
        if torch.is_tensor(getattr(sch, name, None)):
            setattr(sch, name, getattr(sch, name).double())
    return sch


def run_ddpm(small, sch, x, seed, f64):
    gd, y = g(seed), x.clone()
    for ts in sch.timesteps:
        eps = small(y.float(), ts).sample
        y = sch.step(eps.double() if f64 else eps, ts, y, generator=gd).prev_sample
    return y


@pytest.mark.parametrize("f64", [True, False], ids=["float64-tables", "as-shipped"])
def test_ddpm_ancestral_equals_diffusers_ddpm_scheduler(small, f64):
    sch = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    if f64:
        float64_tables(sch)
    sch.set_timesteps(100)
    model = from_diffusers(small, sch)
    x = torch.randn(4, 3, 8, 8, generator=g(0), dtype=torch.float64)
    y = run_ddpm(small, sch, x if f64 else x.float(), 5, f64)
    gs = g(5)  # the same draws, in the order diffusers makes them (one per step but the last)
    draws = [torch.randn(x.shape, generator=gs, dtype=y.dtype) for _ in range(len(sch.timesteps) - 1)]
    grid = sch.timesteps.double() / 999
    got = PredictorCorrector(Ancestral("posterior"), NoCorrector(), final="tweedie")(model, x, grid, noise=ListNoise(draws))
    assert got.nfe == len(sch.timesteps)  # one evaluation per timestep (the last one denoises)
    if f64:  # the same algorithm in the same precision: agreement to rounding
        tol = 1e-8
        torch.testing.assert_close(got.samples, y, rtol=0, atol=tol)
    else:  # diffusers' 100 float32 steps, on samples a random network grows to ~10^2-10^3: to 1e-4 relative
        torch.testing.assert_close(got.samples, y.double(), rtol=1e-4, atol=1e-5)
    if f64:  # the other DDPM variance (σ² = β) is told apart
        wrong = PredictorCorrector(Ancestral("forward"), NoCorrector())(model, x, grid, noise=ListNoise(draws))
        assert (wrong.samples - y).abs().max() > 1e4 * tol


@pytest.mark.parametrize("f64", [True, False], ids=["float64-tables", "as-shipped"])
def test_ddim_equals_dpm_solver_1(small, f64):
    sch = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True)
    if f64:
        float64_tables(sch)
    sch.set_timesteps(25)
    model = from_diffusers(small, sch)
    x = torch.randn(4, 3, 8, 8, generator=g(2), dtype=torch.float64)
    y = x.clone() if f64 else x.float()
    for ts in sch.timesteps:
        eps = small(y.float(), ts).sample
        y = sch.step(eps.double() if f64 else eps, ts, y, eta=0.0).prev_sample
    got = DPMSolverPP(order=1)(model, x, sch.timesteps.double() / 999)
    assert got.nfe == 25
    if f64:
        torch.testing.assert_close(got.samples, y, rtol=0, atol=1e-8)
    else:
        torch.testing.assert_close(got.samples, y.double(), rtol=1e-5, atol=1e-5)
    two = DPMSolverPP(order=2)(model, x, sch.timesteps.double() / 999)
    assert (two.samples - y).abs().max() > 1e-3 * y.abs().max()


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction"])
def test_dpm_solver_multistep_equals_dpm_solver_pp_2m(small, ptype):
    sch = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear", solver_order=2,
                                                algorithm_type="dpmsolver++", prediction_type=ptype)
    sch.set_timesteps(12)
    model = from_diffusers(small, sch.config)
    x = torch.randn(4, 3, 8, 8, generator=g(3))
    y = x.clone()
    for ts in sch.timesteps:
        y = sch.step(small(y, ts).sample, ts, y).prev_sample
    assert sch.sigmas[-1] == 0  # the last step goes to σ = 0: sde_lab's denoising step
    got = DPMSolverPP(order=2, lower_order_final=True)(model, x.double(), sch.timesteps.double() / 999)
    # diffusers keeps its σ table in float32 (set_timesteps casts it): to 1e-5 relative
    torch.testing.assert_close(got.samples, y.double(), rtol=1e-5, atol=1e-5)
    one = DPMSolverPP(order=1)(model, x.double(), sch.timesteps.double() / 999)
    assert (one.samples - y).abs().max() > 1e-3 * y.abs().max()


def test_score_sde_ve_scheduler_becomes_ve_with_sigma_labels():
    cfg = {"_class_name": "ScoreSdeVeScheduler", "num_train_timesteps": 2000, "sigma_min": 0.01, "sigma_max": 50.0}
    seen = {}

    class Net(torch.nn.Module):  # the NCSN++ port returns the score (it divides by σ itself)
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x, timestep):
            seen["t"] = timestep
            return type("O", (), {"sample": -x * self.w / timestep.reshape(-1, 1) ** 2})()

    model = from_diffusers(Net(), cfg)
    assert model.path == VESDE(0.01, 50.0)
    t = torch.tensor([0.5, 1.0], dtype=torch.float64)
    x = torch.randn(2, 3, generator=g(0), dtype=torch.float64)
    s = model.score(x, t)
    torch.testing.assert_close(seen["t"].double(), model.path.sigma(t).float().double())
    torch.testing.assert_close(s, -x / model.path.sigma(t).reshape(-1, 1) ** 2, rtol=1e-6, atol=0)


def test_a_saved_pipeline_folder_loads_and_samples_through_the_cli(small, tmp_path, capsys):
    from sde_lab.cli import main

    folder = tmp_path / "ddpm"
    diffusers.DDPMPipeline(unet=small, scheduler=diffusers.DDPMScheduler(num_train_timesteps=1000)).save_pretrained(folder)
    model = load_diffusers(folder)
    assert model.event_shape == (3, 8, 8)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(model.output(x, torch.tensor([0.5, 0.25])), small(x, torch.tensor([499.5, 249.75])).sample)
    out = tmp_path / "s"
    assert main(["sample", "--ckpt", str(folder), "--solver", "dpm_solver_pp", "--steps", "5", "--n", "3", "--quiet",
                 "--out", str(out), "--threads", "1"]) == 0
    import numpy as np

    assert np.load(out / "samples.npz")["samples"].shape == (3, 3, 8, 8)
    with pytest.raises(ValueError, match="not a diffusers model folder"):
        load_diffusers(tmp_path)


def test_hf_paths_offline_fail_with_a_clear_message(tmp_path):
    code = ("import sys\nfrom sde_lab.interop import load_diffusers\ntry:\n    load_diffusers('hf://google/ddpm-cifar10-32')\n"
            "except ValueError as e:\n    print(e); sys.exit(3)\n")
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "could not download 'google/ddpm-cifar10-32'" in r.stdout and "local folder" in r.stdout


def test_nothing_imports_the_peers_at_import_sde_lab():
    code = ("import sys, sde_lab, sde_lab.interop, sde_lab.cli; bad = [m for m in ('diffusers', 'safetensors', "
            "'huggingface_hub', 'k_diffusion') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


# --------------------------------------------------------------------------------------------------
# k-diffusion and EDM denoisers both ways
# --------------------------------------------------------------------------------------------------
def k_sampling():
    sys.path.insert(0, str(ROOT / "experiments"))
    import peers

    ks = peers.k_diffusion_sampling()
    if ks is None:
        pytest.skip("k-diffusion is not installed (make venv installs it)")
    return ks


@pytest.mark.parametrize("path", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_k_diffusion_dpmpp_2m_on_the_wrapped_model_equals_sde_labs(path):
    ks = k_sampling()
    model = make_target("aniso").model(path)
    D = to_k_diffusion(model)
    sigmas = ks.get_sigmas_karras(12, D.sigma_min * 10, D.sigma_max, rho=7.0, device="cpu").double()
    x = path.prior_sample((64, 2), g(0), dtype=torch.float64)
    t0 = D.t_of(sigmas[:1])
    alpha0 = path.marginal(t0)[0]
    ref = ks.sample_dpmpp_2m(D, x / alpha0, sigmas, disable=True)
    assert D.nfe == 12
    got = DPMSolverPP(order=2, lower_order_final=False)(model, x, D.t_of(sigmas[:-1]))
    torch.testing.assert_close(got.samples, ref, rtol=0, atol=1e-6)


def edm_algorithm_2(D, x, sigmas):
    """Karras et al. (2022), Algorithm 2 with S_churn = 0 (deterministic): Heun in σ, Euler on the last step to 0."""
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = (x - D(x, s)) / s
        x_next = x + (s_next - s) * d
        if s_next != 0:
            d2 = (x_next - D(x_next, s_next)) / s_next
            x_next = x + (s_next - s) * (0.5 * d + 0.5 * d2)
        x = x_next
    return x


def edm_denoiser(seed=0, sigma_data=0.5):
    """An EDM-preconditioned network with random weights: D(x, σ) = c_skip x + c_out F(c_in x, c_noise)."""
    torch.manual_seed(seed)
    F = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.SiLU(), torch.nn.Linear(32, 2)).double()

    def D(x, sigma):
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1).expand(x.shape[0], 1)
        c_skip = sigma_data**2 / (s**2 + sigma_data**2)
        c_out = s * sigma_data / (s**2 + sigma_data**2).sqrt()
        c_in = 1 / (s**2 + sigma_data**2).sqrt()
        with torch.no_grad():
            return c_skip * x + c_out * F(torch.cat([c_in * x, s.log() / 4], dim=1))

    return D


def test_heun_on_a_wrapped_edm_denoiser_equals_edm_algorithm_2():
    D = edm_denoiser()
    model = from_denoiser(D, sigma_min=0.002, sigma_max=80.0)
    rho, n = 7.0, 18  # EDM's 18-step schedule, σ from 80 to 0.002 (eq. 5), then 0
    i = torch.arange(n, dtype=torch.float64)
    grid = (80.0 ** (1 / rho) + i / (n - 1) * (0.002 ** (1 / rho) - 80.0 ** (1 / rho))) ** rho
    x = 80.0 * torch.randn(16, 2, generator=g(0), dtype=torch.float64)
    ref = edm_algorithm_2(D, x, torch.cat([grid, grid.new_zeros(1)]))
    got = Heun()(model, x, grid)
    torch.testing.assert_close(got.samples, ref, rtol=0, atol=1e-10)
    ks = k_sampling()
    kd = ks.sample_heun(lambda xx, s: D(xx, s), x, torch.cat([grid, grid.new_zeros(1)]), disable=True)
    torch.testing.assert_close(kd, ref, rtol=0, atol=1e-12)


def test_a_denoiser_gets_sde_labs_likelihood_and_solvers_on_any_path():
    from sde_lab import log_likelihood

    gm = make_target("aniso")
    oracle = gm.model(EDMPath(sigma_max=500.0))
    D = lambda x, s: oracle.x0(x, s.reshape(-1).expand(x.shape[0]))  # noqa: E731  the exact denoiser, σ-form
    model = from_denoiser(D, sigma_max=500.0)
    x = gm.sample(32, g(1), dtype=torch.float64)
    t = torch.full((32,), 0.7, dtype=torch.float64)
    torch.testing.assert_close(model.score(x, t), oracle.score(x, t), rtol=1e-10, atol=1e-12)
    on_vp = from_denoiser(D, path=VPSDE())  # the same denoiser read on another path through σ̃
    tv = torch.full((32,), 0.4, dtype=torch.float64)
    torch.testing.assert_close(on_vp.x0(x, tv), gm.model(VPSDE()).x0(x, tv), rtol=1e-9, atol=1e-10)
    res = log_likelihood(on_vp, x, divergence="exact", rtol=1e-6, atol=1e-6)
    exact = gm.marginal_log_prob(VPSDE(), x, torch.full((32,), 1e-5, dtype=torch.float64))
    assert (res.log_prob - exact).abs().mean() < 5e-3


# --------------------------------------------------------------------------------------------------
# safetensors out and in
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from sde_lab.cli import main

    wd = tmp_path_factory.mktemp("interop") / "run"
    assert main(["train", "--config", str(ROOT / "configs" / "vp" / "toy2d.py"), "--workdir", str(wd), "--no-progress",
                 "--set", "training.n_iters=20", "--set", "training.tensorboard=False", "--set", "model.hidden=16",
                 "--set", "model.layers=2", "--set", "device='cpu'", "--threads", "1"]) == 0
    return wd


def test_safetensors_export_loads_without_pickle_and_samples_identically(run, tmp_path, capsys):
    from sde_lab.cli import main
    from sde_lab.config import load_checkpoint_score

    out = tmp_path / "export"
    assert main(["export", "--ckpt", str(run), "--format", "safetensors", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "sde_lab.json"]
    meta = json.loads((out / "sde_lab.json").read_text())
    assert meta["weights"] == "ema" and meta["step"] == 20 and "VPSDE" in meta["path"]
    a, b = load_checkpoint_score(run), load_exported(out)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    for src, name in ((run, "a"), (out, "b")):
        assert main(["sample", "--ckpt", str(src), "--solver", "pc", "--steps", "20", "--n", "64", "--seed", "3",
                     "--out", str(tmp_path / name), "--quiet", "--threads", "1"]) == 0
    import numpy as np

    xa, xb = (np.load(tmp_path / n / "samples.npz")["samples"] for n in "ab")
    assert np.array_equal(xa, xb)
    assert main(["export", "--ckpt", str(run), "--format", "safetensors", "--out", str(out)]) == 2  # kept
    assert "--overwrite" in capsys.readouterr().err
    assert main(["likelihood", "--ckpt", str(out), "--dataset", "ring", "--n", "8", "--divergence", "exact",
                 "--no-progress", "--threads", "1"]) == 0  # eval and likelihood read the export as well
    assert "bits/dim" in capsys.readouterr().out


def test_a_tampered_export_is_refused_naming_the_tensor(run, tmp_path):
    from safetensors.torch import load_file, save_file

    out = export_safetensors(run, tmp_path / "e")
    state = load_file(str(out / "model.safetensors"))
    key = next(k for k in state if k.endswith("weight"))
    bad = dict(state)
    bad[key] = torch.zeros(3, 3)
    save_file(bad, str(out / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"shape mismatches.*{key}"):
        load_exported(out)
    bad = dict(state)
    del bad[key]
    save_file(bad, str(out / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"missing tensors.*{key}"):
        load_exported(out)
    (out / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_exported(out)
