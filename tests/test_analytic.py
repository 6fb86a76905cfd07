"""The Gaussian-mixture oracle against autograd, quadrature and sample moments."""

import math

import pytest
import torch

from sde_lab import VESDE, VPSDE, GaussianMixture, SubVPSDE, make_target
from sde_lab.analytic import target_names
from sde_lab.cli import main

SDES = {"ve": VESDE(), "vp": VPSDE(), "subvp": SubVPSDE()}


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("target", ["aniso", "gmm16", "gmm8x8"])
def test_score_is_the_gradient_of_the_log_density(sde_name, target):
    sde, gm = SDES[sde_name], make_target(target)
    g = torch.Generator().manual_seed(0)
    n = 64
    t = torch.rand(n, generator=g, dtype=torch.float64) * 0.999 + 1e-3
    alpha, sigma = sde.marginal(t)
    x0 = gm.sample(n, g, dtype=torch.float64)
    x = (alpha.reshape(-1, *[1] * (x0.ndim - 1)) * x0 + sigma.reshape(-1, *[1] * (x0.ndim - 1)) * torch.randn(x0.shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    lp = gm.marginal_log_prob(sde, x, t)
    grad = torch.autograd.grad(lp.sum(), x)[0]
    torch.testing.assert_close(gm.score_fn(sde)(x.detach(), t), grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("t", [0.0, 0.05, 0.3])
def test_density_integrates_to_one(sde_name, t):
    sde, gm = SDES[sde_name], make_target("aniso")
    alpha, sigma = sde.marginal(torch.tensor([t], dtype=torch.float64))
    half = 3.5 * alpha.item() + 6 * sigma.item() + 3.0
    m = 401
    u = torch.linspace(-half, half, m, dtype=torch.float64)
    X, Y = torch.meshgrid(u, u, indexing="ij")
    pts = torch.stack([X.reshape(-1), Y.reshape(-1)], 1)
    p = gm.marginal_log_prob(sde, pts, torch.full((pts.shape[0],), t, dtype=torch.float64)).exp()
    h = (u[1] - u[0]).item()
    assert p.sum().item() * h * h == pytest.approx(1.0, abs=2e-4)


def test_marginal_at_zero_is_the_data_density_for_vp():
    gm = make_target("ring")
    x = gm.sample(100, torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(gm.marginal_log_prob(VPSDE(), x, torch.zeros(100, dtype=torch.float64)), gm.log_prob(x))


def test_log_prob_matches_torch_distributions():
    gm = make_target("aniso")
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(gm.weights),
        torch.distributions.Independent(torch.distributions.Normal(gm.means, gm.stds), 1),
    )
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2
    torch.testing.assert_close(gm.log_prob(x), mix.log_prob(x))


@pytest.mark.parametrize("target", target_names())
def test_sample_moments(target):
    gm = make_target(target)
    n = 20000
    x = gm.sample(n, torch.Generator().manual_seed(1), dtype=torch.float64).reshape(n, -1)
    mean, cov = gm.moments()
    se = cov.diagonal().sqrt() / math.sqrt(n)
    assert ((x.mean(0) - mean).abs() < 5 * se).all()
    # variance: s.e. of the sample variance bounded via the fourth moment, generously 5 * var * sqrt(4/n)
    var = cov.diagonal()
    assert ((x.var(0) - var).abs() < 5 * var * math.sqrt(4 / n) + 1e-12).all()
    assert x.shape == (n, gm.dim)


def test_sampling_is_reproducible_and_labelled():
    gm = make_target("ring")
    a, la = gm.sample_with_labels(10, torch.Generator().manual_seed(7))
    b, lb = gm.sample_with_labels(10, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and torch.equal(la, lb)
    # each sample is nearest to its own component's mean (modes are well separated)
    d = torch.cdist(a.double(), gm.means)
    assert torch.equal(d.argmin(1), la)


def test_posterior_is_normalised_and_peaks_at_the_generating_mode():
    gm, sde = make_target("ring"), VPSDE()
    x, labels = gm.sample_with_labels(200, torch.Generator().manual_seed(0), dtype=torch.float64)
    post = gm.posterior(sde, x, torch.zeros(200, dtype=torch.float64))
    torch.testing.assert_close(post.sum(1), torch.ones(200, dtype=torch.float64))
    assert (post.argmax(1) == labels).float().mean() > 0.99


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(weights=[1.0], means=[[0.0, 0.0]], stds=[0.0]), "stds"),
        (dict(weights=[1.0, 1.0], means=[[0.0, 0.0]], stds=1.0), "weights"),
        (dict(weights=[-1.0], means=[[0.0]], stds=1.0), "weights"),
        (dict(weights=[1.0], means=[0.0, 1.0], stds=1.0), "means"),
        (dict(weights=[1.0], means=[[0.0, 1.0]], stds=1.0, event_shape=(3,)), "event_shape"),
    ],
)
def test_bad_mixture_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**kwargs)


def test_wrong_data_shape_raises():
    with pytest.raises(ValueError, match="x must have shape"):
        make_target("ring").marginal_score(VPSDE(), torch.zeros(3, 3), torch.zeros(3))


def test_unknown_target_lists_choices():
    with pytest.raises(ValueError, match="valid targets: aniso, gmm16"):
        make_target("nope")


def test_cli_targets_and_errors(capsys):
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    for name in target_names():
        assert name in out
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code != 0
