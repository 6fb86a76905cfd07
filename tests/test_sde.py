"""The SDEs against their defining equations: kernel ODEs, Monte-Carlo simulation, discrete chains."""

import math

import mpmath
import pytest
import torch
import torchsde

from sde_lab import VESDE, VPSDE, SubVPSDE
from sde_lab.sde import discrete_index, discrete_times

SDES = [VESDE(), VPSDE(), SubVPSDE(), VESDE(sigma_min=0.1, sigma_max=5.0), VPSDE(beta_min=1.0, beta_max=1.0)]
IDS = ["ve", "vp", "subvp", "ve-small", "vp-constant-beta"]


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
def test_marginal_at_T_matches_prior(sde):
    """Unit-variance data pushed to T is (to < 1e-3 nats/dim of KL) the prior N(0, prior_std²)."""
    alpha, sigma = sde.marginal(torch.ones(1, dtype=torch.float64))
    var = alpha**2 + sigma**2
    prior_var = sde.prior_std**2
    kl = 0.5 * (var / prior_var - 1 - torch.log(var / prior_var))
    assert kl.item() < 1e-3


class _Forward(torch.nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, sde):
        super().__init__()
        self.sde = sde

    def f(self, t, y):
        return self.sde.drift(y, t.expand(y.shape[0]))

    def g(self, t, y):
        return self.sde.diffusion(t.expand(y.shape[0]))[:, None].expand_as(y)


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
def test_monte_carlo_forward_simulation(sde):
    """torchsde simulation from a fixed x_0 matches N(α x_0, σ²) within 4 standard errors."""
    n, dt = 8000, 2e-3
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([1.5, -0.5], dtype=torch.float64)
    alpha0, sigma0 = sde.marginal(torch.zeros(1, dtype=torch.float64))
    # σ(0) = σ_min for VE: the process starts at x_0 + σ(0) z (zero for VP and sub-VP).
    y0 = alpha0 * x0 + sigma0 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    ts = torch.tensor([0.0, 0.2, 0.6, 1.0], dtype=torch.float64)
    torch.manual_seed(1)  # torchsde draws its Brownian increments from the global generator
    ys = torchsde.sdeint(_Forward(sde), y0, ts, method="euler", dt=dt)
    alpha, sigma = sde.marginal(ts)
    for k in range(1, len(ts)):
        mean, std = ys[k].mean(0), ys[k].std(0)
        se_mean = sigma[k] / math.sqrt(n)
        se_std = sigma[k] / math.sqrt(2 * (n - 1))
        assert ((mean - alpha[k] * x0).abs() < 4 * se_mean).all(), (k, mean, alpha[k] * x0)
        # Euler's left-point rule adds an O(dt) variance bias; 4 s.e. plus that bias bound.
        bias = 0.5 * dt * sigma[k] * abs(2 * math.log(getattr(sde, "sigma_max", 1) / getattr(sde, "sigma_min", 1)) + 20)
        assert ((std - sigma[k]).abs() < 4 * se_std + bias).all(), (k, std, sigma[k])


def _mp_sigma(sde, t):
    mpmath.mp.dps = 50
    t = mpmath.mpf(t)
    B = sde.beta_min * t + mpmath.mpf(sde.beta_max - sde.beta_min) / 2 * t**2
    one_minus = 1 - mpmath.e ** (-B)
    return float(mpmath.sqrt(one_minus)) if isinstance(sde, VPSDE) else float(one_minus)


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE()], ids=["vp", "subvp"])
@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 2e-6), (torch.float64, 1e-10)])
def test_sigma_accuracy_at_small_t(sde, dtype, rtol):
    for t in [1e-5, 1e-4, 1e-3]:
        tt = torch.tensor([float(torch.tensor(t, dtype=dtype))], dtype=dtype)
        _, sigma = sde.marginal(tt)
        exact = _mp_sigma(sde, float(tt))
        assert abs(sigma.item() - exact) / exact < rtol, (t, sigma.item(), exact)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_transitions_compose_to_the_marginal(sde):
    """Chaining x_{t_{i+1}} | x_{t_i} over a grid reproduces the kernel from t_0 (and s → u → t = s → t)."""
    grid = torch.linspace(0.0, 1.0, 201, dtype=torch.float64)
    scale, var = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    for s, t in zip(grid[:-1], grid[1:]):
        a, sd = sde.transition(s.reshape(1), t.reshape(1))
        scale, var = a * scale, a**2 * var + sd**2
    alpha0, sigma0 = sde.marginal(grid[:1])
    alpha1, sigma1 = sde.marginal(grid[-1:])
    torch.testing.assert_close(scale, alpha1 / alpha0, rtol=1e-10, atol=0)
    # variance of x_1 | x_0:  σ(1)² - (α(1)/α(0))² σ(0)²
    torch.testing.assert_close(var, sigma1**2 - (alpha1 / alpha0) ** 2 * sigma0**2, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
def test_transition_is_accurate_for_short_steps(sde):
    """float32 transition std over a 1e-5 step at small t agrees with the float64 value to 1e-4."""
    s = torch.tensor([1e-3])
    t = s + 1e-5
    _, sd32 = sde.transition(s, t)
    _, sd64 = sde.transition(s.double(), t.double())
    assert abs(sd32.item() - sd64.item()) / sd64.item() < 1e-3


def test_ddpm_chain_composes_to_alphas_cumprod():
    sde = VPSDE()
    N = 1000
    sched = sde.ddpm_schedule(N)
    torch.testing.assert_close(sched.alphas, 1 - sched.betas)
    torch.testing.assert_close(sched.betas[[0, -1]], torch.tensor([0.1, 20.0], dtype=torch.float64) / N)
    # compose x_i = sqrt(α_i) x_{i-1} + sqrt(β_i) z as affine-Gaussian maps
    mean_scale, var = 1.0, 0.0
    for b in sched.betas.tolist():
        mean_scale, var = math.sqrt(1 - b) * mean_scale, (1 - b) * var + b
    abar = sched.alphas_cumprod[-1].item()
    assert mean_scale**2 == pytest.approx(abar, rel=1e-12)
    assert var == pytest.approx(1 - abar, rel=1e-12)
    # and the chain discretizes the continuous kernel: log ᾱ_N → -B(1) as N grows
    alpha1, _ = sde.marginal(torch.ones(1, dtype=torch.float64))
    err = abs(math.log(abar) - 2 * math.log(alpha1.item()))
    err_coarse = abs(math.log(sde.ddpm_schedule(100).alphas_cumprod[-1].item()) - 2 * math.log(alpha1.item()))
    assert err < 0.02 * sde.beta_integral(torch.tensor(1.0)).item()
    assert err < err_coarse / 5  # first-order convergence in 1/N


def test_smld_ancestral_variances_telescope():
    sde = VESDE()
    N = 500
    sig = sde.smld_sigmas(N)
    assert sig[0].item() == pytest.approx(sde.sigma_min) and sig[-1].item() == pytest.approx(sde.sigma_max)
    ratios = sig[1:] / sig[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, ratios[0].item()))  # geometric
    t = discrete_times(N)
    _, step_std = sde.transition(t[:-1], t[1:])
    torch.testing.assert_close(step_std**2, sig[1:] ** 2 - sig[:-1] ** 2)
    assert (step_std**2).sum().item() == pytest.approx(sig[-1].item() ** 2 - sig[0].item() ** 2, rel=1e-10)


def test_discrete_index_maps_grid_times_to_their_index():
    N = 1000
    t = discrete_times(N)
    assert torch.equal(discrete_index(t, N), torch.arange(N))
    assert discrete_index(torch.tensor([0.0, 1.0, 0.5004]), N).tolist() == [0, 999, 500]


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
def test_sigma_tilde_and_log_snr_invert(sde):
    t = torch.linspace(1e-4, 1.0, 101, dtype=torch.float64)
    torch.testing.assert_close(sde.t_from_sigma_tilde(sde.sigma_tilde(t)), t, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=1e-9, atol=1e-12)
    assert (sde.log_snr(t).diff() < 0).all()  # λ decreases in t


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
@pytest.mark.parametrize("shape", [(4, 2), (4, 3, 5, 5)])
def test_any_shape_and_drifts(sde, shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    t = torch.rand(shape[0], generator=g)
    s = torch.randn(shape, generator=g)
    a = sde.drift_coef(t).reshape(-1, *[1] * (len(shape) - 1))
    gg = sde.diffusion(t).reshape(-1, *[1] * (len(shape) - 1)) ** 2
    torch.testing.assert_close(sde.drift(x, t), a * x)
    torch.testing.assert_close(sde.reverse_drift(x, t, s), a * x - gg * s)
    torch.testing.assert_close(sde.probability_flow_drift(x, t, s), a * x - 0.5 * gg * s)
    z = sde.prior_sample(shape, torch.Generator().manual_seed(1))
    assert z.shape == shape
    lp = sde.prior_log_prob(z)
    d = math.prod(shape[1:])
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(lp, ref)
    assert lp.shape == (shape[0],) and d > 0


def test_prior_sample_is_reproducible_with_a_generator():
    a = VPSDE().prior_sample((3, 2), torch.Generator().manual_seed(5))
    b = VPSDE().prior_sample((3, 2), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: VESDE(sigma_min=0.0), "sigma_min"),
        (lambda: VESDE(sigma_min=-1.0), "sigma_min"),
        (lambda: VESDE(sigma_min=1.0, sigma_max=1.0), "sigma_max"),
        (lambda: VPSDE(beta_min=1.0, beta_max=0.5), "beta_max"),
        (lambda: SubVPSDE(beta_min=float("nan")), "beta_min"),
        (lambda: VPSDE().marginal(torch.tensor([1.5])), "t must lie"),
        (lambda: VESDE().diffusion(torch.tensor([-0.1])), "t must lie"),
        (lambda: VPSDE().marginal(torch.tensor([float("nan")])), "t must lie"),
        (lambda: VPSDE().drift(torch.zeros(3, 2), torch.zeros(4)), "batch size"),
        (lambda: VPSDE().marginal(torch.zeros(2, 2)), r"shape \(B,\)"),
        (lambda: VPSDE().ddpm_schedule(1), "N must be"),
    ],
)
def test_bad_input_raises_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()
