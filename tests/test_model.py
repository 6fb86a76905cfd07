"""The parametrization adapter against exact answers.

An "oracle network" outputs, for each prediction target, the value the target takes under the oracle's exact
posterior (computed here from the paper formulas, independently of sde_lab.model): wrapping it in a Model must
give back the oracle's exact score, ε, x0 and velocity to 1e-10 in float64 — on every path, including two
defined by α and σ alone. Losses written on the network's own target must equal weighted DSM with their
stated λ(t) (an identity, checked with a non-exact network). Time inputs give the published labels.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from problems import COSINE, PATHS, RF, gen
from sde_lab import VESDE, VPSDE, SubVPSDE, make_target, sample
from sde_lab.losses import ImportanceLikelihoodWeighting, LikelihoodWeighting, SigmaSquaredWeighting, dsm_loss
from sde_lab.model import PARAMETRIZATIONS, EDMPreconditioning, Model, as_model, make_time_input

GM = make_target("aniso")
TARGETS = ["score", "scaled_score", "eps", "x0", "v", "velocity", "edm"]
ALL_PATHS = {**PATHS, "rf": RF}


def _truth(path, x, t):
    """(x0, ε, α, σ, α', σ') of the oracle at (x, t), from the mixture's posterior (independent of Model)."""
    x0 = GM.posterior_mean(path, x, t)
    alpha, sigma = (v[:, None] for v in path.marginal(t))
    eps = (x - alpha * x0) / sigma
    da, ds = (v[:, None] for v in path.marginal_derivatives(t))
    return x0, eps, alpha, sigma, da, ds


def _target_value(target, path, x, t, sigma_data=0.5):
    """The paper's definition of each target."""
    x0, eps, a, s, da, ds = _truth(path, x, t)
    if target == "score":
        return -eps / s
    if target == "scaled_score":
        return -eps
    if target == "eps":
        return eps
    if target == "x0":
        return x0
    if target == "v":
        return a * eps - s * x0  # Salimans & Ho 2022
    if target == "velocity":
        return da * x0 + ds * eps  # flow matching
    st = s / a  # EDM (Karras et al. 2022, Table 1) on x̃ = x/α:  D = c_skip x̃ + c_out F
    c_skip = sigma_data**2 / (st**2 + sigma_data**2)
    c_out = st * sigma_data / torch.sqrt(st**2 + sigma_data**2)
    return (x0 - c_skip * x / a) / c_out


class OracleNet(nn.Module):
    """Outputs the exact target, reading t back from the label through the given inverse."""

    def __init__(self, path, target, label_to_t):
        super().__init__()
        self.path, self.target, self.label_to_t = path, target, label_to_t
        self.w = nn.Parameter(torch.zeros(()))  # a parameter so the model has a dtype
        self.seen = None

    def forward(self, xin, labels):
        self.seen = (xin, labels)
        t = self.label_to_t(labels)
        x = self._x
        return _target_value(self.target, self.path, x, t).to(xin.dtype) + 0 * self.w


def _points(n=64, seed=0):
    x = 1.3 * GM.sample(n, gen(seed), dtype=torch.float64) + 0.1
    t = torch.rand(n, generator=gen(seed + 1), dtype=torch.float64) * 0.9 + 0.05
    return x, t


@pytest.mark.parametrize("path_name", list(ALL_PATHS))
@pytest.mark.parametrize("target", TARGETS)
def test_every_target_converts_to_the_exact_predictions(path_name, target):
    path = ALL_PATHS[path_name]
    x, t = _points()
    net = OracleNet(path, target, lambda label: label).double()
    net._x = x
    model = Model(net, path, target=target, time_input="t")
    exact = GM.model(path)
    for method in ("score", "eps", "x0", "velocity"):
        torch.testing.assert_close(getattr(model, method)(x, t), getattr(exact, method)(x, t), rtol=1e-10, atol=1e-10,
                                   msg=f"{target} -> {method}")
    # the loss target is the output the network gives for the true pair, and s − s* = c (out − out*)
    x0, eps, *_ = _truth(path, x, t)
    torch.testing.assert_close(model.output_target(x0, eps, x, t), _target_value(target, path, x, t), rtol=1e-10, atol=1e-10)
    # teeth: the same network read as another target is not the exact score
    other = TARGETS[(TARGETS.index(target) + 1) % len(TARGETS)]
    wrong = Model(net, path, target=other, time_input="t").score(x, t)
    assert (wrong - exact.score(x, t)).abs().max() > 1e-3


def test_edm_network_sees_c_in_x_and_c_noise():
    path = VESDE(sigma_max=20.0)
    x, t = _points()
    net = OracleNet(path, "edm", lambda label: path.t_from_sigma_tilde(torch.exp(4 * label))).double()
    net._x = x
    model = Model(net, path, target=EDMPreconditioning(sigma_data=0.5))
    torch.testing.assert_close(model.x0(x, t), GM.posterior_mean(path, x, t), rtol=1e-10, atol=1e-10)
    xin, labels = net.seen
    sig = path.sigma_tilde(t)
    torch.testing.assert_close(labels, 0.25 * torch.log(sig))  # c_noise = ¼ log σ
    torch.testing.assert_close(xin, x / torch.sqrt(sig**2 + 0.25)[:, None])  # c_in x


def test_time_inputs_give_the_published_labels():
    path = VESDE()
    t = torch.tensor([1e-3, 0.25, 0.5, 0.999], dtype=torch.float64)
    torch.testing.assert_close(make_time_input("999t")(path, t), 999 * t)
    torch.testing.assert_close(make_time_input("sigma")(path, t), path.marginal(t)[1])
    torch.testing.assert_close(make_time_input("sigma_tilde")(VPSDE(), t), VPSDE().sigma_tilde(t))
    torch.testing.assert_close(make_time_input("quarter_log_sigma")(path, t), 0.25 * torch.log(path.sigma_tilde(t)))
    idx = make_time_input("index", n_discrete=1000)
    torch.testing.assert_close(idx(path, t), t * 999)  # score_sde VP discrete: t (N − 1), not rounded
    assert idx.index(t).tolist() == [0, 249, 499, 998]  # the std is indexed by truncation
    rev = make_time_input("reversed_index", n_discrete=1000)
    assert rev(path, t).tolist() == [998.0, 749.0, 500.0, 1.0]  # round((T − t)(N − 1)): σ_max first
    assert make_time_input(lambda tt: 2 * tt)(path, t).tolist() == (2 * t).tolist()
    with pytest.raises(ValueError, match="valid choices"):
        make_time_input("seconds")


@pytest.mark.parametrize("target", ["eps", "x0", "v", "velocity", "edm", "score"])
@pytest.mark.parametrize("weighting", [SigmaSquaredWeighting(), LikelihoodWeighting(), ImportanceLikelihoodWeighting()],
                         ids=["sigma2", "likelihood", "importance"])
def test_loss_on_the_networks_target_is_weighted_dsm(target, weighting):
    """dsm_loss on the network's own output equals λ(t) ‖s_θ(x_t) + z/σ‖² (with the weighting's 1/p(t))."""
    path = VPSDE()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 2)).double()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = net

        def forward(self, x, labels):
            return self.body(torch.cat([x, labels[:, None]], 1))

    model = Model(Net(), path, target=target)
    x0 = GM.sample(256, gen(2), dtype=torch.float64)
    t = weighting.sample(path, 256, generator=gen(3), dtype=torch.float64)
    z = torch.randn(x0.shape, generator=gen(4), dtype=torch.float64)
    got = dsm_loss(model, path, x0, weighting=weighting, t=t, z=z)
    alpha, sigma = (v[:, None] for v in path.marginal(t))
    xt = alpha * x0 + sigma * z
    expected = weighting.weight(path, t) * ((model.score(xt, t) + z / sigma) ** 2).sum(1)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    if target == "eps" and isinstance(weighting, SigmaSquaredWeighting):  # DDPM's L_simple
        torch.testing.assert_close(got, ((model.eps(xt, t) - z) ** 2).sum(1), rtol=1e-9, atol=1e-12)


def test_a_model_is_refused_on_another_path():
    sub = GM.model(SubVPSDE())
    with pytest.raises(ValueError, match="belongs to the path"):
        sample(VPSDE(), sub, (4, 2), steps=2)
    with pytest.raises(ValueError, match="belongs to the path"):
        as_model(VPSDE(), Model(nn.Linear(2, 2), SubVPSDE()))
    assert as_model(SubVPSDE(), sub) is sub


def test_names_and_errors():
    assert set(PARAMETRIZATIONS) >= {"score", "scaled_score", "eps", "noise", "x0", "v", "velocity", "edm"}
    with pytest.raises(ValueError, match="valid choices"):
        Model(nn.Linear(2, 2), VPSDE(), target="epsilon")
    with pytest.raises(ValueError, match="n_discrete"):
        Model(nn.Linear(2, 2), VPSDE(), time_input="index")
    with pytest.raises(ValueError, match="nn.Module"):
        Model(lambda x, t: x, VPSDE())


def test_velocity_model_is_finite_at_the_singular_end():
    """A velocity network on rectified flow: x0 = x − t u, ε = x + (1 − t) u — finite at t = 1 (α = 0)."""
    x = torch.randn(16, 2, generator=gen(5), dtype=torch.float64)
    t = torch.ones(16, dtype=torch.float64)
    net = OracleNet(RF, "velocity", lambda label: label).double()
    net._x = x
    model = Model(net, RF, target="velocity")
    u = model.velocity(x, t)
    assert torch.isfinite(u).all() and torch.isfinite(model.x0(x, t)).all()
    torch.testing.assert_close(model.x0(x, t), x - u)
    assert math.isfinite(float(COSINE.alpha(torch.tensor(0.5))))
