"""Every Gaussian path as one family: rectified flow, the cosine schedule, EDM's path and a path from two user
functions sample, score and train like VE, VP and sub-VP — against the oracle's exact answers.

* every solver on every path passes the oracle check (a halved score fails it);
* the probability-flow likelihood with the exact divergence equals the exact log-density on every path
  (rectified flow integrated to its singular end t = 1, where the prior is exact);
* each objective is weighted DSM with its stated λ(t) (an identity on a random network), is minimised by the
  exact model, and a perturbed model scores higher by E[λ ‖δ‖²] (common random numbers);
* a model of one path used on another (change of variables through σ̃) equals that path's exact model.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from problems import floor, gen, passes, quality
from sde_lab import VPSDE, SubVPSDE, log_likelihood, make_target, sample
from sde_lab.losses import (
    EDMWeighting,
    FlowMatchingWeighting,
    MinSNRWeighting,
    SigmaSquaredWeighting,
    VPredictionWeighting,
    dsm_loss,
)
from sde_lab.model import EDMPreconditioning, Model, change_path
from sde_lab.predictors import ProbabilityFlowEuler
from sde_lab.correctors import NoCorrector
from sde_lab.grids import uniform_time_grid
from sde_lab.sampling import PredictorCorrector
from sde_lab.sde import AffinePath, CosineVP, EDMPath, RectifiedFlow

pytestmark = pytest.mark.usefixtures("one_thread")

TRIG = AffinePath(lambda t: torch.cos(0.5 * math.pi * t), lambda t: torch.sin(0.5 * math.pi * t), t_start=0.995,
                  name="trigonometric")
FAMILIES = {"rectified_flow": RectifiedFlow(), "cosine": CosineVP(), "edm": EDMPath(), "trig": TRIG}
GM = make_target("aniso")
N = 1500

SOLVERS = [
    ("pc", {"steps": 200}),
    ("pc", {"steps": 200, "predictor": "euler_maruyama", "corrector": "none"}),
    ("pc", {"steps": 200, "predictor": "ancestral", "corrector": "none"}),
    ("pc", {"steps": 200, "predictor": "probability_flow", "corrector": "none"}),
    ("ald", {"steps": 600}),
    ("ode", {}),
    ("sdeint", {"steps": 200}),
    ("heun", {"steps": 30}),
    ("dpm_solver", {"steps": 24}),
    ("dpm_solver_pp", {"steps": 24}),
    ("adaptive", {"abs_tol": 0.03, "rel_tol": 0.1}),
]


@pytest.fixture(scope="module")
def floor_n():
    return floor(GM, N)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("solver,opts", SOLVERS, ids=[f"{s}-{o.get('predictor', '')}" for s, o in SOLVERS])
def test_every_solver_on_every_path(family, solver, opts, floor_n):
    path = FAMILIES[family]
    if family == "edm" and solver == "sdeint":  # EDM's time is σ: torchsde's uniform steps in σ need ~2000 steps
        opts = {"adaptive": True, "rtol": 1e-2, "atol": 1e-2}
    res = sample(GM.model(path), (N, 2), solver=solver, generator=gen(3), **opts)
    assert passes(res.samples, GM, floor_n), (family, solver, quality(res.samples, GM, floor_n))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_wrong_score_fails_on_every_path(family, floor_n):
    path = FAMILIES[family]
    bad = sample(path, lambda x, t: 0.5 * GM.marginal_score(path, x, t), (N, 2), steps=200, generator=gen(3))
    assert not passes(bad.samples, GM, floor_n)


def test_rectified_flow_starts_at_its_singular_end_with_the_velocity():
    """Euler on the velocity from t = 1 exactly (x_1 = ε), as flow-matching samplers do; the SDE solvers refuse
    that start with a message naming t_max."""
    rf, fl = RectifiedFlow(), floor(GM, N)
    x1 = torch.randn(N, 2, generator=gen(4), dtype=torch.float64)
    res = PredictorCorrector(ProbabilityFlowEuler(), NoCorrector(), "none")(GM.model(rf), x1, uniform_time_grid(100, 0.0, 1.0))
    assert passes(res.samples, GM, fl), quality(res.samples, GM, fl)
    with pytest.raises(ValueError, match="singular at the grid's first time.*t_max"):
        sample(GM.model(rf), (8, 2), solver="pc", t_max=1.0, grid="uniform", steps=10)


@pytest.mark.parametrize("family", list(FAMILIES) + ["vp", "subvp"])
def test_likelihood_on_every_path(family):
    """Exact divergence, rtol = atol = 1e-6: the bias against the oracle's log p_eps is below 0.002 nats/dim."""
    path = FAMILIES.get(family) or {"vp": VPSDE(), "subvp": SubVPSDE()}[family]
    x = GM.sample(128, gen(5), dtype=torch.float64)
    eps = 1e-4 * path.T
    res = log_likelihood(GM.model(path), x, divergence="exact", eps=eps, rtol=1e-6, atol=1e-6)
    exact = GM.marginal_log_prob(path, x, torch.full((128,), eps, dtype=torch.float64))
    bias = (res.log_prob - exact).mean().item() / 2
    assert abs(bias) < 2e-3, bias
    wrong = log_likelihood(make_target("ring").model(path), x, divergence="exact", eps=eps, rtol=1e-4, atol=1e-4)
    assert (wrong.log_prob - exact).abs().mean().item() / 2 > 0.1  # teeth: another target's model


def test_likelihood_stops_below_a_singular_end_for_a_score_model():
    """A score / ε output gives the velocity through 1/α, undefined where α(T) = 0: the likelihood integrates to
    ``t_max`` with the prior N(0, σ(t_max)² I) — still within 0.002 nats/dim of the exact log-density — while a
    velocity model and the oracle reach T. A network with an ε output on the cosine path stays finite."""
    from sde_lab.model import ScoreFunctionModel

    x = GM.sample(128, gen(5), dtype=torch.float64)
    for path in (CosineVP(), RectifiedFlow()):
        score_model = ScoreFunctionModel(path, GM.score_fn(path))
        res = log_likelihood(score_model, x, divergence="exact", rtol=1e-6, atol=1e-6)
        assert res.info["t_end"] == path.t_max < path.T
        exact = GM.marginal_log_prob(path, x, torch.full((128,), res.eps, dtype=torch.float64))
        assert abs((res.log_prob - exact).mean().item() / 2) < 2e-3
        assert log_likelihood(GM.model(path), x[:4], divergence="exact").info["t_end"] == path.T
    assert log_likelihood(ScoreFunctionModel(VPSDE(), GM.score_fn(VPSDE())), x[:4], divergence="exact").info["t_end"] == 1.0
    net = Model(_Net(), CosineVP(), target="eps")
    res = log_likelihood(net, x[:16], divergence="exact")
    assert res.info["t_end"] == 0.995 and torch.isfinite(res.log_prob).all()
    assert log_likelihood(Model(_Net(), RectifiedFlow(), target="velocity"), x[:4]).info["t_end"] == 1.0
    with pytest.raises(ValueError, match="t_end must lie"):
        log_likelihood(net, x[:4], t_end=1.5)


# --- objectives ---------------------------------------------------------------------------------------------


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 2))

    def forward(self, x, labels):
        return self.f(torch.cat([x, labels[:, None]], 1))


OBJECTIVES = [  # (weighting, path, the network's target, the loss written as the paper writes it)
    ("flow_matching", FlowMatchingWeighting(), RectifiedFlow(), "velocity",
     lambda m, x0, z, xt, t, p: ((m.velocity(xt, t) - (z - x0)) ** 2).sum(1)),
    ("flow_matching_logit_normal", FlowMatchingWeighting("logit_normal"), RectifiedFlow(), "velocity",
     lambda m, x0, z, xt, t, p: ((m.velocity(xt, t) - (z - x0)) ** 2).sum(1)),
    ("edm", EDMWeighting(), EDMPath(), EDMPreconditioning(0.5),
     lambda m, x0, z, xt, t, p: ((t**2 + 0.25) / (t * 0.5) ** 2) * ((m.x0(xt, t) - x0) ** 2).sum(1)),
    ("v", VPredictionWeighting(), VPSDE(), "v",
     lambda m, x0, z, xt, t, p: ((m.output(xt, t) - _v(p, x0, z, t)) ** 2).sum(1)),
    ("min_snr", MinSNRWeighting(5.0), CosineVP(), "eps",
     lambda m, x0, z, xt, t, p: (_snr(p, t).clamp(max=5.0) / _snr(p, t)) * ((m.eps(xt, t) - z) ** 2).sum(1)),
]


def _v(path, x0, z, t):
    a, s = (v[:, None] for v in path.marginal(t))
    return a * z - s * x0


def _snr(path, t):
    a, s = path.marginal(t)
    return (a / s) ** 2


@pytest.mark.parametrize("case", OBJECTIVES, ids=[c[0] for c in OBJECTIVES])
def test_each_objective_is_weighted_dsm_with_its_lambda(case):
    name, weighting, path, target, paper = case
    torch.manual_seed(0)
    model = Model(_Net(), path, target=target).double()
    x0 = GM.sample(512, gen(1), dtype=torch.float64)
    t = weighting.sample(path, 512, generator=gen(2), dtype=torch.float64)
    z = torch.randn(x0.shape, generator=gen(3), dtype=torch.float64)
    a, s = (v[:, None] for v in path.marginal(t))
    xt = a * x0 + s * z
    got = dsm_loss(model, path, x0, weighting=weighting, t=t, z=z)
    torch.testing.assert_close(got, paper(model, x0, z, xt, t, path), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(got, weighting.weight(path, t) * ((model.score(xt, t) + z / s) ** 2).sum(1), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("case", OBJECTIVES, ids=[c[0] for c in OBJECTIVES])
def test_the_exact_model_minimises_each_objective(case):
    """L(s* + δ) − L(s*) = E[λ ‖δ‖²] + a zero-mean cross term: measured on common random numbers."""
    name, weighting, path, *_ = case
    n = 20_000
    x0 = GM.sample(n, gen(4), dtype=torch.float64)
    t = weighting.sample(path, n, generator=gen(5), dtype=torch.float64)
    z = torch.randn(x0.shape, generator=gen(6), dtype=torch.float64)
    exact = GM.model(path)

    def delta(x, tt):
        return 0.3 * torch.ones_like(x) / path.marginal(tt)[1][:, None]  # a shift of the score, in units of 1/σ

    perturbed = lambda x, tt: exact.score(x, tt) + delta(x, tt)  # noqa: E731
    l_exact = dsm_loss(exact, path, x0, weighting=weighting, t=t, z=z)
    l_pert = dsm_loss(perturbed, path, x0, weighting=weighting, t=t, z=z)
    a, s = (v[:, None] for v in path.marginal(t))
    xt = a * x0 + s * z
    known = (weighting.weight(path, t) * (delta(xt, t) ** 2).sum(1))
    diff = l_pert - l_exact
    se = diff.std().item() / math.sqrt(n)
    assert diff.mean().item() > 0
    assert abs(diff.mean().item() - known.mean().item()) < 4 * se + 1e-3 * known.mean().item(), (diff.mean(), known.mean(), se)


def test_time_laws():
    n = 200_000
    t = FlowMatchingWeighting("logit_normal", mean=0.3, std=0.8).sample(RectifiedFlow(), n, generator=gen(7), dtype=torch.float64)
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean().item() - 0.3) < 4 * 0.8 / math.sqrt(n) and abs(logit.std().item() - 0.8) < 0.01
    t = EDMWeighting().sample(EDMPath(), n, generator=gen(8), dtype=torch.float64)
    inside = (t > 1e-4) & (t < 79)
    assert abs(torch.log(t[inside]).mean().item() + 1.2) < 0.01 and abs(torch.log(t[inside]).std().item() - 1.2) < 0.01
    tv = EDMWeighting().sample(VPSDE(), 1000, generator=gen(9), dtype=torch.float64)  # EDM's law on another path
    torch.testing.assert_close(VPSDE().sigma_tilde(tv).log().mean(), torch.tensor(-1.2, dtype=torch.float64), atol=0.15, rtol=0)


# --- schedule change after training ---------------------------------------------------------------------------


@pytest.mark.parametrize("pair", [("vp", "rectified_flow"), ("rectified_flow", "cosine"), ("cosine", "subvp"), ("edm", "trig")])
def test_a_model_of_one_path_is_exact_on_another(pair):
    paths = {**FAMILIES, "vp": VPSDE(), "subvp": SubVPSDE()}
    a, b = paths[pair[0]], paths[pair[1]]
    moved, exact = change_path(GM.model(a), b), GM.model(b)
    x = 1.3 * GM.sample(64, gen(10), dtype=torch.float64)
    t = (0.05 + 0.9 * torch.rand(64, generator=gen(11), dtype=torch.float64)) * b.T
    if pair[0] == "edm":
        t = t.clamp(max=0.9 * b.T)
    for method in ("score", "eps", "x0", "velocity"):
        torch.testing.assert_close(getattr(moved, method)(x, t), getattr(exact, method)(x, t), rtol=1e-9, atol=1e-9)


def test_sampling_a_vp_model_on_rectified_flows_grid():
    fl = floor(GM, N)
    moved = change_path(GM.model(VPSDE()), RectifiedFlow(t_max=0.99))
    res = sample(moved, (N, 2), solver="dpm_solver_pp", steps=24, generator=gen(12))
    assert passes(res.samples, GM, fl), quality(res.samples, GM, fl)
    from sde_lab.sde import VESDE

    with pytest.raises(ValueError, match="outside the range"):
        sample(change_path(GM.model(VESDE()), VPSDE()), (8, 2), solver="dpm_solver_pp", steps=5)


# --- conditional sampling and guidance on every path --------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
def test_inpainting_on_every_path(family):
    """``aniso``, observe x = -1.5: the completion matches the exact conditional's y-law; teeth: a halved score."""
    from sde_lab.conditional import inpaint
    from problems import sw_ratio

    path, n, mask = FAMILIES[family], 600, torch.tensor([1, 0])
    obs = torch.tensor([[-1.5, float("nan")]]).expand(n, 2).contiguous()
    res = inpaint(path, GM.score_fn(path), obs, mask, steps=300, generator=gen(5))
    assert torch.equal(res.samples[:, 0], obs[:, 0])
    cond = GM.condition(mask, torch.tensor([-1.5, 0.0]))
    sw, fl = sw_ratio(res.samples[:, 1:], cond)
    assert sw < 1.5 * fl, (sw, fl)
    bad = inpaint(path, lambda x, t: 0.5 * GM.marginal_score(path, x, t), obs, mask, steps=300, generator=gen(5))
    assert sw_ratio(bad.samples[:, 1:], cond)[0] > 1.5 * fl


@pytest.mark.parametrize("family", list(FAMILIES))
def test_guidance_on_every_path(family):
    """Classifier guidance with the exact classifier at scale 1 is the component's score pointwise, and
    classifier-free guidance with w = 0 samples the component (a neighbouring component fails the bound)."""
    from sde_lab import conditional_sample
    from sde_lab.conditional import ClassifierFreeGuidance, ClassifierGuidance
    from problems import sw_ratio

    path, gm = FAMILIES[family], make_target("ring")
    g = gen(0)
    t = path.T * (0.01 + 0.98 * torch.rand(64, generator=g, dtype=torch.float64)).clamp(max=path.t_max / path.T)
    x = 2 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    guided = ClassifierGuidance(gm.classifier_fn(path), 3, scale=1.0).score_fn(gm.score_fn(path))(x, t)
    assert torch.allclose(guided, gm.component(3).marginal_score(path, x, t), rtol=1e-6, atol=1e-6)

    def cond_score(x, t, y):
        out = gm.marginal_score(path, x, t)
        for k in range(gm.n_components):
            rows = y == k
            if rows.any():
                out[rows] = gm.component(k).marginal_score(path, x[rows], t[rows])
        return out

    res = conditional_sample(path, gm.score_fn(path), (600, 2), ClassifierFreeGuidance(cond_score, 3, 0.0, null_label=8),
                             steps=100, corrector="none", generator=gen(4))
    sw, fl = sw_ratio(res.samples, gm.component(3))
    assert sw < 1.5 * fl, (sw, fl)
    assert sw_ratio(res.samples, gm.component(2))[0] > 1.5 * fl
