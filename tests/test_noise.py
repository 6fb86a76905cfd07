"""Noise objects: per-sample counter-based noise (sample i from (seed, i) alone) and Brownian trees.

Known answers: the moments of a standard normal; bitwise equality of sample i across batch sizes and
offsets for every stochastic solver; strong convergence of refined reverse-SDE solves on one Brownian path.
"""

import math

import pytest
import torch

from sde_lab import VESDE, VPSDE, PerSampleNoise, make_target, sample
from sde_lab.correctors import AnnealedLangevin, Langevin, NoCorrector
from sde_lab.fast_samplers import AdaptiveSDE, Heun
from sde_lab.grids import geometric_noise_grid, karras_grid, logsnr_grid, uniform_time_grid
from sde_lab.multistep import DPMSolverPPSDE, EulerAncestral
from sde_lab.predictors import Ancestral, EulerMaruyama, ReverseDiffusion
from sde_lab.sampling import AnnealedLangevinDynamics, PredictorCorrector, ReverseSDE

from problems import gen


def test_per_sample_noise_is_standard_normal_and_independent():
    noise = PerSampleNoise(0)
    z = noise.randn_like(torch.empty(200_000, 4, dtype=torch.float64))
    z2 = noise.randn_like(torch.empty(200_000, 4, dtype=torch.float64))  # the second draw of the same samples
    se = 1 / math.sqrt(z.numel())
    assert abs(z.mean().item()) < 5 * se and abs(z.var().item() - 1) < 5 * math.sqrt(2) * se
    assert abs((z**4).mean().item() - 3) < 0.05 and abs((z**3).mean().item()) < 0.03
    assert abs(torch.corrcoef(torch.stack([z[:, 0], z[:, 1], z2[:, 0]]))[0, 1:].abs().max().item()) < 5 * math.sqrt(4 / z.numel())
    tail = (z.abs() > 4).double().mean().item()  # P(|Z| > 4) = 6.33e-5
    assert 3e-5 < tail < 1.1e-4


def test_per_sample_noise_depends_on_seed_index_and_draw_only():
    a = PerSampleNoise(7).randn_like(torch.empty(10, 3))
    b = PerSampleNoise(7, start=4).randn_like(torch.empty(6, 3))
    torch.testing.assert_close(a[4:], b, rtol=0, atol=0)
    c = PerSampleNoise(8).randn_like(torch.empty(10, 3))
    assert (a - c).abs().min() > 0
    n = PerSampleNoise(7)
    first = n.randn_like(torch.empty(10, 3))
    rows = torch.tensor([2, 5])
    sub = n.randn_like(torch.empty(2, 3), rows=rows)  # draw 1 of samples 2 and 5 only
    rest = n.randn_like(torch.empty(10, 3))  # draw 1 of the others, draw 2 of samples 2 and 5
    fresh = PerSampleNoise(7)
    fresh.randn_like(torch.empty(10, 3))
    second = fresh.randn_like(torch.empty(10, 3))
    torch.testing.assert_close(first, a, rtol=0, atol=0)
    torch.testing.assert_close(sub, second[rows], rtol=0, atol=0)
    torch.testing.assert_close(rest[[0, 1, 3]], second[[0, 1, 3]], rtol=0, atol=0)
    assert (rest[rows] - second[rows]).abs().min() > 0
    with pytest.raises(ValueError, match="seed"):
        PerSampleNoise(1.5)
    with pytest.raises(ValueError, match="rows"):
        n.randn_like(torch.empty(3, 2), rows=torch.tensor([0, 1]))


VP, VE = VPSDE(), VESDE()
STOCHASTIC = {
    "pc-reverse-diffusion+langevin(per-sample norms)": (VP, PredictorCorrector(ReverseDiffusion(), Langevin(norm="per_sample")),
                                                        logsnr_grid(VP, 20, 1e-3)),
    "pc-euler-maruyama": (VP, PredictorCorrector(EulerMaruyama(), NoCorrector()), uniform_time_grid(20, 1e-3)),
    "pc-ancestral+annealed-langevin": (VP, PredictorCorrector(Ancestral(), AnnealedLangevin()), uniform_time_grid(20, 1e-3)),
    "ald": (VE, AnnealedLangevinDynamics(), geometric_noise_grid(VE, 10, 1e-3)),
    "heun-churn": (VP, Heun(s_churn=10.0), karras_grid(VP, 10, 1e-3)),
    "sdeint-interval": (VP, ReverseSDE(), uniform_time_grid(20, 1e-3)),
    "sdeint-tree": (VP, ReverseSDE(brownian="tree"), uniform_time_grid(20, 1e-3)),
    "adaptive-sde-per-sample": (VP, AdaptiveSDE(error_norm="per_sample"), torch.tensor([1.0, 1e-3], dtype=torch.float64)),
    "dpm++2m-sde": (VP, DPMSolverPPSDE(eta=1.0), karras_grid(VP, 10, 1e-3)),
    "euler-ancestral": (VE, EulerAncestral(eta=1.0), karras_grid(VE, 10, 1e-3)),
}


@pytest.mark.parametrize("name", list(STOCHASTIC))
def test_sample_i_is_bitwise_identical_in_batches_of_1_7_and_64(name):
    """With PerSampleNoise (the prior draw included) sample i does not depend on the batch it is drawn in."""
    path, solver, grid = STOCHASTIC[name]
    model = make_target("ring").model(path)
    # The adaptive per-sample mode evaluates the model on a changing subset of the batch; the model's own
    # arithmetic then varies in the last bit with the subset's size (BLAS blocking), not the noise.
    tol = 1e-12 if name.startswith("adaptive") else 0.0
    rows = {B: sample(model, (B, 2), solver=solver, grid=grid, noise=PerSampleNoise(5)).samples for B in (1, 7, 64)}
    torch.testing.assert_close(rows[1][0], rows[7][0], rtol=0, atol=tol)
    torch.testing.assert_close(rows[1][0], rows[64][0], rtol=0, atol=tol)
    torch.testing.assert_close(rows[7], rows[64][:7], rtol=0, atol=tol)
    shifted = sample(model, (3, 2), solver=solver, grid=grid, noise=PerSampleNoise(5, start=4)).samples
    torch.testing.assert_close(shifted, rows[64][4:7], rtol=0, atol=tol)
    assert (rows[64][0] - rows[64][1]).abs().max() > 0  # samples differ from each other
    # teeth: the generator's batch noise gives sample 0 another value in another batch size
    g = [sample(model, (B, 2), solver=solver, grid=grid, generator=gen(5)).samples[0] for B in (1, 7)]
    assert not torch.equal(g[0], g[1])


def test_batch_langevin_norms_couple_samples():
    """The reference Langevin corrector averages norms over the batch, so only norm='per_sample' is batch-free."""
    model = make_target("ring").model(VP)
    solver = PredictorCorrector(ReverseDiffusion(), Langevin())
    grid = logsnr_grid(VP, 20, 1e-3)
    a, b = (sample(model, (B, 2), solver=solver, grid=grid, noise=PerSampleNoise(5)).samples[0] for B in (1, 7))
    assert not torch.equal(a, b)


def test_per_sample_noise_on_images_and_through_the_cli(tmp_path):
    model = make_target("gmm8x8").model(VP)
    grid = karras_grid(VP, 6, 1e-3)
    a = sample(model, (3, 1, 8, 8), solver=DPMSolverPPSDE(), grid=grid, noise=PerSampleNoise(1)).samples
    b = sample(model, (5, 1, 8, 8), solver=DPMSolverPPSDE(), grid=grid, noise=PerSampleNoise(1)).samples
    torch.testing.assert_close(a, b[:3], rtol=0, atol=0)
    import numpy as np

    from sde_lab.cli import main

    for n in (4, 9):
        assert main(["sample", "--target", "ring", "--solver", "dpm_solver_pp_sde", "--steps", "8", "--noise",
                     "per_sample", "--n", str(n), "--out", str(tmp_path / str(n)), "--quiet"]) == 0
    x4, x9 = (np.load(tmp_path / str(n) / "samples.npz")["samples"] for n in (4, 9))
    np.testing.assert_array_equal(x4, x9[:4])


def test_brownian_tree_gives_one_path_under_refinement():
    """Euler–Maruyama (torchsde) on 50, 100 and 400 steps of one seed: with the Brownian tree the solutions converge
    to each other (strong convergence on one path); BrownianInterval draws a new path per grid."""
    model = make_target("ring").model(VP)
    x = VP.prior_sample((200, 2), gen(0), dtype=torch.float64)
    out = {}
    for b in ("tree", "interval"):
        out[b] = [ReverseSDE(brownian=b, denoise=False)(model, x, uniform_time_grid(n, 1e-3), noise=gen(3)).samples
                  for n in (50, 100, 400)]
    rms = {b: [(o[k] - o[2]).pow(2).mean().sqrt().item() for k in (0, 1)] for b, o in out.items()}
    assert rms["tree"][1] < 0.7 * rms["tree"][0], rms
    assert rms["tree"][1] < 0.3 * rms["interval"][1], rms
    with pytest.raises(ValueError, match="Lévy area"):
        ReverseSDE(method="srk", brownian="tree")(model, x, uniform_time_grid(4, 1e-3), noise=gen(3))
    with pytest.raises(ValueError, match="interval, tree"):
        ReverseSDE(brownian="bridge")
