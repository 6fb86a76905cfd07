"""sde_lab against published reference implementations (the optional ``test`` / ``bench`` extras).

Meta's ``flow_matching`` and ``torchcfm`` run time from noise (0) to data (1): with ``t' = 1 − t`` their
``(α, σ)`` are ours, their ``α', σ'`` ours negated, and their velocity ``v(x, t') = −u(x, 1 − t')``. Every
comparison below is an identity, so a wrong sign, time flip or schedule constant fails it.
"""

from __future__ import annotations

import math

import pytest
import torch

from problems import gen
from sde_lab import log_likelihood, make_target, sample
from sde_lab.model import Coefficients, DataTarget, NoiseTarget, VelocityTarget
from sde_lab.sampling import ProbabilityFlowODE
from sde_lab.sde import CosineVP, RectifiedFlow, VPSDE

pytestmark = pytest.mark.usefixtures("one_thread")


def _flip(t):
    return 1.0 - t


def _pairs():
    sched = pytest.importorskip("flow_matching.path.scheduler")
    return [(RectifiedFlow(), sched.CondOTScheduler()), (VPSDE(0.1, 20.0), sched.VPScheduler(0.1, 20.0)),
            (CosineVP(s=0.0), sched.CosineScheduler())]


def test_paths_are_flow_matchings_schedulers():
    t = torch.linspace(0.02, 0.98, 25, dtype=torch.float64)
    for path, sched in _pairs():
        out = sched(_flip(t))
        a, s = path.marginal(t)
        da, ds = path.marginal_derivatives(t)
        for ours, theirs in ((a, out.alpha_t), (s, out.sigma_t), (-da, out.d_alpha_t), (-ds, out.d_sigma_t)):
            assert torch.allclose(ours, theirs, rtol=1e-9, atol=1e-12), (path, sched)
        # σ̃ inverses agree: their snr = α/σ = 1/σ̃
        assert torch.allclose(_flip(sched.snr_inverse(a / s)), path.t_from_sigma_tilde(s / a), atol=1e-7)


def test_parametrizations_convert_to_the_velocity_as_flow_matching_does():
    pairs = _pairs()
    from flow_matching.path import AffineProbPath

    g = gen(0)
    for path, sched in pairs:
        t = 0.05 + 0.9 * torch.rand(64, generator=g, dtype=torch.float64)
        x = torch.randn(64, 3, generator=g, dtype=torch.float64)
        out = torch.randn(64, 3, generator=g, dtype=torch.float64)
        c = Coefficients(path, t, 2)
        fm, tt = AffineProbPath(sched), _flip(t)[:, None]  # its conversions take t shaped like x
        assert torch.allclose(DataTarget().velocity(out, x, c), -fm.target_to_velocity(out, x, tt), atol=1e-9)
        assert torch.allclose(NoiseTarget().velocity(out, x, c), -fm.epsilon_to_velocity(out, x, tt), atol=1e-9)
        assert torch.allclose(VelocityTarget().x0(-out, x, c), fm.velocity_to_target(out, x, tt), atol=1e-9)
        assert torch.allclose(VelocityTarget().eps(-out, x, c), fm.velocity_to_epsilon(out, x, tt), atol=1e-9)
        # the training pair: their x_t and dx_t from (noise, data) are our x_t and −(velocity target)
        x0, eps = torch.randn(64, 3, generator=g, dtype=torch.float64), torch.randn(64, 3, generator=g, dtype=torch.float64)
        ps = fm.sample(x_0=eps, x_1=x0, t=_flip(t))
        xt = c.alpha * x0 + c.sigma * eps
        assert torch.allclose(ps.x_t, xt, atol=1e-12)
        assert torch.allclose(ps.dx_t, -VelocityTarget().target(x0, eps, xt, c), atol=1e-9)


def test_ode_samples_and_likelihood_agree_with_flow_matching():
    """The exact rectified-flow velocity of ``aniso``: the same noise through sde_lab's scipy RK45 and
    flow_matching's torchdiffeq dopri5 at 1e-9 gives the same samples to 1e-5, and the same log-likelihood to
    1e-4 nats/dim (theirs is log p_0, ours log p_eps with eps = 1e-6)."""
    ODESolver = pytest.importorskip("flow_matching.solver").ODESolver

    gm, rf, n, eps = make_target("aniso"), RectifiedFlow(), 200, 1e-6
    model = gm.model(rf)

    def velocity(x, t):
        t = t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t
        return -model.velocity(x, (1 - t).clamp(0.0, 1.0).to(x.dtype))

    z = torch.randn(n, 2, generator=gen(1), dtype=torch.float64)
    ours = sample(model, (n, 2), solver=ProbabilityFlowODE(rtol=1e-9, atol=1e-9, denoise=False),
                  grid=torch.tensor([1.0, eps], dtype=torch.float64), x_init=z.clone()).samples
    solver = ODESolver(velocity_model=velocity)
    theirs = solver.sample(x_init=z.clone(), method="dopri5", step_size=None, rtol=1e-9, atol=1e-9,
                           time_grid=torch.tensor([0.0, 1.0 - eps], dtype=torch.float64))
    assert (ours - theirs).abs().max() < 1e-5
    x = gm.sample(64, gen(2), dtype=torch.float64)
    ll = log_likelihood(model, x, divergence="exact", eps=eps, rtol=1e-9, atol=1e-9).log_prob
    _, lp = solver.compute_likelihood(
        x_1=x.clone(), log_p0=lambda u: -0.5 * (u**2).sum(1) - math.log(2 * math.pi), method="dopri5", step_size=None,
        rtol=1e-9, atol=1e-9, exact_divergence=True, time_grid=torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert ((ll - lp) / 2).abs().max() < 1e-4
    # teeth: their time read without the flip gives other samples
    unflipped = ODESolver(velocity_model=lambda x, t: -model.velocity(x, t.reshape(-1).expand(x.shape[0]).clamp(0.0, 1.0)))
    wrong = unflipped.sample(x_init=z.clone(), method="dopri5", step_size=None, rtol=1e-6, atol=1e-6,
                             time_grid=torch.tensor([0.0, 1.0 - eps], dtype=torch.float64))
    assert (ours - wrong).abs().max() > 0.1


def test_flow_matching_targets_are_torchcfms():
    cfm = pytest.importorskip("torchcfm.conditional_flow_matching")
    g = gen(3)
    x1, x0 = torch.randn(64, 2, generator=g, dtype=torch.float64), torch.randn(64, 2, generator=g, dtype=torch.float64)
    t = torch.rand(64, generator=g, dtype=torch.float64)
    trig = CosineVP(s=0.0)
    for matcher, path in ((cfm.ConditionalFlowMatcher(sigma=0.0), RectifiedFlow()),
                          (cfm.VariancePreservingConditionalFlowMatcher(sigma=0.0), trig)):
        c = Coefficients(path, _flip(t), 2)
        xt = c.alpha * x1 + c.sigma * x0
        assert torch.allclose(matcher.compute_mu_t(x0, x1, t), xt, atol=1e-12)
        assert torch.allclose(matcher.compute_conditional_flow(x0, x1, t, xt), -VelocityTarget().target(x1, x0, xt, c),
                              atol=1e-9)
