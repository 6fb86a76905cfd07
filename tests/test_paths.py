"""Paths from α(t) and σ(t): the base class derives f, g, σ̃, λ, their inverses and the time derivatives.

Known answers: closed forms (the cosine schedule's f and g² = −2f; VE/VP/sub-VP's own cancellation-free forms,
reproduced by a VP defined through α and σ only), the kernel ODEs dα/dt = fα and dσ²/dt = 2fσ² + g² by
autograd, and the oracle: a path defined in this repository's tests by α and σ alone runs through every
sampler and the likelihood and passes the same checks as VE/VP/sub-VP. Singular endpoints (α(T) = 0) give
infinities, never NaN, and the σ̃/λ grids say to start at t_max < T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from problems import COSINE, COSINE_T_MAX, PATHS, RF, floor, gen, passes, quality, wrong
from sde_lab import (
    SDE,
    VESDE,
    VPSDE,
    Ancestral,
    EulerMaruyama,
    Langevin,
    NoCorrector,
    PredictorCorrector,
    ProbabilityFlowEuler,
    ReverseDiffusion,
    karras_grid,
    log_likelihood,
    logsnr_grid,
    make_target,
    sample,
    uniform_time_grid,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class GenericVP(SDE):
    """VPSDE(0.1, 20) through α and σ only."""

    def _B(self, t):
        return 0.1 * t + 0.5 * 19.9 * t**2

    def alpha(self, t):
        return torch.exp(-0.5 * self._B(t))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(-self._B(t)))


def test_cosine_coefficients_match_closed_forms():
    t = torch.linspace(1e-5, COSINE_T_MAX, 200, dtype=torch.float64)
    torch.testing.assert_close(COSINE.drift_coef(t), COSINE.exact_drift_coef(t), rtol=1e-10, atol=0)
    torch.testing.assert_close(COSINE.diffusion(t) ** 2, COSINE.exact_diffusion2(t), rtol=1e-10, atol=0)
    torch.testing.assert_close(COSINE.t_from_sigma_tilde(COSINE.sigma_tilde(t)), t, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(COSINE.t_from_log_snr(COSINE.log_snr(t)), t, rtol=1e-10, atol=1e-14)
    # teeth: the cosine's f differs from a linear-β VP's at the same t
    assert (COSINE.drift_coef(t) - VPSDE().drift_coef(t)).abs().max() > 1.0


KERNEL_PATHS = {**PATHS, "rf": RF, "ve-small": VESDE(sigma_min=0.1, sigma_max=5.0), "vp-constant-beta": VPSDE(1.0, 1.0),
                "generic-vp": GenericVP()}


@pytest.mark.parametrize("name", list(KERNEL_PATHS))
def test_kernel_odes_by_autograd(name):
    """dα/dt = f α and dσ²/dt = 2 f σ² + g² for every path (the base class's derivations or the closed forms)."""
    path = KERNEL_PATHS[name]
    t = torch.linspace(1e-3, 0.95, 41, dtype=torch.float64, requires_grad=True)
    alpha, sigma = path.marginal(t)
    dalpha = torch.autograd.grad(alpha.sum(), t, retain_graph=True)[0] if alpha.requires_grad else torch.zeros_like(t)
    dvar = torch.autograd.grad((sigma**2).sum(), t)[0]
    t = t.detach()
    f, g = path.drift_coef(t), path.diffusion(t)
    torch.testing.assert_close(dalpha, f * alpha.detach(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(dvar, 2 * f * sigma.detach() ** 2 + g**2, rtol=1e-9, atol=1e-10)
    da, ds = path.marginal_derivatives(t)
    torch.testing.assert_close(da, dalpha, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(2 * sigma.detach() * ds, dvar, rtol=1e-9, atol=1e-10)


def test_generic_derivations_equal_the_closed_forms_at_small_t():
    """A VP written with α and σ only matches VPSDE's cancellation-free closed forms, down to t = 1e-5."""
    g, v = GenericVP(), VPSDE()
    t = torch.tensor([1e-5, 1e-4, 1e-3, 0.1, 0.5, 1.0], dtype=torch.float64)
    for name in ("drift_coef", "diffusion", "log_snr", "sigma_tilde"):
        torch.testing.assert_close(getattr(g, name)(t), getattr(v, name)(t), rtol=1e-10, atol=0, msg=name)
    for a, b in zip(g.marginal_derivatives(t), v.marginal_derivatives(t)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=0)
    torch.testing.assert_close(g.t_from_sigma_tilde(v.sigma_tilde(t)), t, rtol=1e-10, atol=0)
    a, s = g.transition(t[:-1], t[1:])
    a2, s2 = v.transition(t[:-1], t[1:])
    torch.testing.assert_close(a, a2, rtol=1e-12, atol=0)
    torch.testing.assert_close(s, s2, rtol=1e-8, atol=0)
    assert g.prior_std == pytest.approx(1.0, abs=1e-4)


def test_singular_endpoint_gives_infinities_not_nan():
    T = torch.tensor([1.0], dtype=torch.float64)
    assert RF.sigma_tilde(T).item() == math.inf and RF.log_snr(T).item() == -math.inf
    assert RF.t_from_sigma_tilde(torch.tensor([math.inf], dtype=torch.float64)).item() == 1.0
    da, ds = RF.marginal_derivatives(T)
    assert (da.item(), ds.item()) == (-1.0, 1.0)
    assert RF.prior_std == 1.0
    with pytest.raises(ValueError, match="t_max < T"):
        karras_grid(RF, 10)
    with pytest.raises(ValueError, match="t_max < T"):
        logsnr_grid(RF, 10)
    g = karras_grid(RF, 10, t_max=0.999)
    assert g[0].item() == 0.999 and (g.diff() < 0).all()
    # the oracle's posterior mean at α = 0 is the data mean, and its velocity is finite there
    gm = make_target("aniso")
    x = torch.randn(8, 2, generator=gen(0), dtype=torch.float64)
    m = gm.model(RF)
    x0 = m.x0(x, T.expand(8))
    torch.testing.assert_close(x0, gm.moments()[0].expand(8, 2))
    v = m.velocity(x, T.expand(8))
    torch.testing.assert_close(v, x - x0)  # u = α' x0 + σ' ε = ε − x0, and ε = x at t = 1


# --- the cosine path (α and σ only) through every sampler ----------------------------------------------

N = 1500
GM = make_target("aniso")


@pytest.fixture(scope="module")
def floor_aniso():
    return floor(GM, N)


def _model():
    return GM.model(COSINE)


PC = [
    (ReverseDiffusion(), Langevin()),
    (EulerMaruyama(), NoCorrector()),
    (Ancestral(), NoCorrector()),
    (ProbabilityFlowEuler(), NoCorrector()),
]


@pytest.mark.parametrize("combo", PC, ids=lambda c: f"{type(c[0]).__name__}+{type(c[1]).__name__}")
def test_cosine_path_pc(combo, floor_aniso):
    solver = PredictorCorrector(*combo)
    x = COSINE.prior_sample((N, 2), gen(1), dtype=torch.float32)
    res = solver(_model(), x, uniform_time_grid(200, 1e-3, COSINE_T_MAX), noise=gen(2))
    assert passes(res.samples, GM, floor_aniso), quality(res.samples, GM, floor_aniso)


NAMED = [
    ("ode", {}),
    ("sdeint", {"steps": 200}),
    ("ald", {"steps": 600}),
    ("heun", {"steps": 20}),
    ("dpm_solver", {"steps": 24}),
    ("dpm_solver_pp", {"steps": 24}),
    ("adaptive", {"abs_tol": 0.03, "rel_tol": 0.1}),
]


@pytest.mark.parametrize("solver,opts", NAMED, ids=[n for n, _ in NAMED])
def test_cosine_path_every_named_solver(solver, opts, floor_aniso):
    res = sample(COSINE, _model(), (N, 2), solver=solver, t_max=COSINE_T_MAX, generator=gen(3), **opts)
    assert passes(res.samples, GM, floor_aniso), (solver, quality(res.samples, GM, floor_aniso))


def test_cosine_path_teeth(floor_aniso):
    """The same checks fail with a halved score (PC) and a 1.25x score (DPM-Solver++)."""
    bad = sample(COSINE, wrong(_model(), "halved"), (N, 2), steps=200, t_max=COSINE_T_MAX, generator=gen(3))
    assert not passes(bad.samples, GM, floor_aniso)
    bad = sample(COSINE, lambda x, t: 1.25 * GM.marginal_score(COSINE, x, t), (N, 2), solver="dpm_solver_pp",
                 steps=24, t_max=COSINE_T_MAX, generator=gen(3))
    assert not passes(bad.samples, GM, floor_aniso)


def test_cosine_path_likelihood_matches_exact_log_density():
    """Exact divergence: the ODE likelihood of the cosine path's exact model is the oracle's log p_eps."""
    x = GM.sample(128, gen(4), dtype=torch.float64)
    eps = 1e-4
    # the cosine path is integrated up to t_max, where it is not yet the N(0, 1) prior: use a path cut there
    cut = _CutCosine()
    res = log_likelihood(GM.model(cut), x, divergence="exact", eps=eps, rtol=1e-7, atol=1e-7)
    exact = GM.marginal_log_prob(cut, x, torch.full((128,), eps, dtype=torch.float64))
    err = (res.log_prob - exact).abs().mean().item() / 2
    assert err < 2e-3, err  # nats/dim; the prior term at T = 0.99 carries α(T)² Var(x0) ≈ 6e-4
    wrong_res = log_likelihood(make_target("ring").model(cut), x, divergence="exact", eps=eps)  # teeth: another target
    assert (wrong_res.log_prob - exact).abs().mean().item() / 2 > 10 * err


@dataclass(frozen=True)
class _CutCosine(SDE):
    """The cosine path on [0, 0.99] rescaled to [0, 1] (time change t → 0.99 t): α and σ only again."""

    def alpha(self, t):
        return COSINE.alpha(COSINE_T_MAX * t)

    def sigma(self, t):
        return COSINE.sigma(COSINE_T_MAX * t)
