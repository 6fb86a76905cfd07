"""sde_lab's solvers against the published reference implementations at equal grids and equal noise.

diffusers' schedulers (``DPMSolverMultistepScheduler`` 2M / 3M / SDE, ``UniPCMultistepScheduler``,
``DEISMultistepScheduler``) on VP-type paths, and k-diffusion's samplers (DPM-Solver++(2M), (3M), (2M) SDE,
Euler-ancestral, Heun) on every path through the σ-form denoiser (``experiments/peers.py``). The peers
come with the test extra (``make test`` installs them; k-diffusion's samplers without its training stack).
diffusers works in float32 (its σ tables and coefficients), so agreement there is to ~1e-6; k-diffusion runs
in the state's dtype, float64 here, and agrees to rounding.
"""

import sys
from pathlib import Path

import pytest
import torch

from sde_lab import VESDE, VPSDE, CosineVP, SubVPSDE, make_target
from sde_lab.fast_samplers import Heun
from sde_lab.multistep import DEIS, DPMSolverPP, DPMSolverPPSDE, EulerAncestral, UniPC

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import peers  # noqa: E402

from problems import ListNoise, gen  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers on numpy 2

VP_TYPE = [VPSDE(), CosineVP()]
VP_IDS = ["vp", "cosine"]


def _diffusers_grid(name, path, steps, to_zero=True):
    sch, _ = peers.diffusers_scheduler(name, path)
    sch.set_timesteps(steps)
    sig = sch.sigmas.double()
    if to_zero:  # the last step goes to σ = 0: sde_lab's denoising step
        assert sig[-1] == 0
        sig = sig[:-1]
    return path.t_from_sigma_tilde(sig).clamp(0.0, min(float(path.T), float(path.t_max)))


DIFFUSERS_CASES = [  # (scheduler, sde_lab solver for a given lower_order_final, ends at σ = 0, atol)
    ("d:dpmpp_2m", lambda lof: DPMSolverPP(order=2, lower_order_final=lof), True, 1e-5),
    ("d:dpmpp_3m", lambda lof: DPMSolverPP(order=3, third_order="reference", lower_order_final=lof), True, 1e-5),
    ("d:unipc_2", lambda lof: UniPC(order=2, lower_order_final=True), True, 1e-5),  # diffusers' UniPC always lowers
    ("d:unipc_3", lambda lof: UniPC(order=3, lower_order_final=True), True, 1e-5),
    # diffusers' DEIS computes its weights in float32 from logs of neighbouring σ: ~1e-4 at 20 steps
    ("d:deis_2", lambda lof: DEIS(order=2, variable="logrho", lower_order_final=lof, denoise=False), False, 5e-4),
    ("d:deis_3", lambda lof: DEIS(order=3, variable="logrho", lower_order_final=lof, denoise=False), False, 5e-4),
]


@pytest.mark.parametrize("path", VP_TYPE, ids=VP_IDS)
@pytest.mark.parametrize("steps", [6, 20])
@pytest.mark.parametrize("case", DIFFUSERS_CASES, ids=[c[0] for c in DIFFUSERS_CASES])
def test_equals_diffusers_at_equal_timesteps(path, steps, case):
    pytest.importorskip("diffusers")
    name, make, to_zero, atol = case
    model = make_target("aniso").model(path)
    x = path.prior_sample((32, 2), gen(0), dtype=torch.float64)
    ref, nfe = peers.run_diffusers(name, model, x, steps)
    lof = steps < 15  # diffusers' DPMSolverMultistep / DEIS rule
    got = make(lof)(model, x, _diffusers_grid(name, path, steps, to_zero))
    assert got.nfe == nfe == steps
    torch.testing.assert_close(got.samples, ref.double(), rtol=0, atol=atol)
    if name == "d:dpmpp_3m":  # sde_lab's default 3M (the exact quadratic) is a different, third-order method
        exact = DPMSolverPP(order=3, lower_order_final=lof)(model, x, _diffusers_grid(name, path, steps))
        assert (exact.samples - ref).abs().max() > 1e-4


@pytest.mark.parametrize("path", VP_TYPE, ids=VP_IDS)
def test_dpm_solver_pp_sde_equals_diffusers_with_the_same_noise(path):
    pytest.importorskip("diffusers")
    steps = 10
    model = make_target("aniso").model(path)
    x = path.prior_sample((32, 2), gen(0), dtype=torch.float64)
    draws = [torch.randn(32, 2, generator=gen(10 + k), dtype=torch.float64) for k in range(steps)]
    sch, _ = peers.diffusers_scheduler("d:dpmpp_2m_sde", path)
    sch.set_timesteps(steps)
    y = x.clone()
    for i, ts in enumerate(sch.timesteps):
        t = path.t_from_sigma_tilde(sch.sigmas.double()[i].reshape(1)).clamp(0, path.t_max).expand(32)
        y = sch.step(model.eps(y, t), ts, y, variance_noise=draws[i], return_dict=False)[0]
    got = DPMSolverPPSDE(eta=1.0, lower_order_final=True)(model, x, _diffusers_grid("d:dpmpp_2m_sde", path, steps),
                                                            noise=ListNoise(draws))
    torch.testing.assert_close(got.samples, y.double(), rtol=0, atol=1e-5)


PATHS = [VESDE(), VPSDE(), SubVPSDE()]
IDS = ["ve", "vp", "subvp"]


def _k(path, n):
    sig = peers.k_sigmas(path, n, 1e-3)
    return sig, path.t_from_sigma_tilde(sig[:-1]).clamp(0.0, float(path.T))


K_CASES = [  # (k-diffusion sampler, kwargs, sde_lab solver, stochastic)
    ("k:dpmpp_2m", {}, DPMSolverPP(order=2, lower_order_final=False), False),
    ("k:dpmpp_2m_sde", {"eta": 1.0}, DPMSolverPPSDE(eta=1.0, lower_order_final=False), True),
    ("k:dpmpp_2m_sde", {"eta": 0.5, "solver_type": "heun"},
     DPMSolverPPSDE(eta=0.5, solver_type="heun", lower_order_final=False), True),
    ("k:euler_ancestral", {"eta": 1.0}, EulerAncestral(eta=1.0), True),
    ("k:euler_ancestral", {"eta": 0.3}, EulerAncestral(eta=0.3), True),
    ("k:heun", {}, Heun(), False),
]


@pytest.mark.parametrize("path", PATHS, ids=IDS)
@pytest.mark.parametrize("case", K_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(K_CASES)])
def test_equals_k_diffusion_on_every_path(path, case):
    ks = peers.k_diffusion_sampling()
    if ks is None:
        pytest.skip("k-diffusion is not installed (pip install --no-deps k-diffusion)")
    name, kw, solver, stochastic = case
    n = 8
    model = make_target("aniso").model(path)
    x = path.prior_sample((32, 2), gen(0), dtype=torch.float64)
    sig, grid = _k(path, n)
    draws = [torch.randn(32, 2, generator=gen(20 + k), dtype=torch.float64) for k in range(n)]
    den = peers.KDenoiser(model)
    fn, extra, _ = peers.K_SAMPLERS[name]
    args = {**extra, **kw}
    if stochastic:
        args["noise_sampler"] = ListNoise(draws)
    alpha0 = float(path.marginal(grid[:1])[0])
    ref = getattr(ks, fn)(den, x / alpha0, sig, disable=True, **args)
    got = solver(model, x, grid, noise=ListNoise(draws) if stochastic else None)
    assert got.nfe == den.nfe
    torch.testing.assert_close(got.samples, ref, rtol=1e-9, atol=1e-9)
