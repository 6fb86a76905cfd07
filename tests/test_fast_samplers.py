"""Fast samplers (Heun, DPM-Solver, DPM-Solver++, adaptive SDE) against exact answers.

Known answers: the σ-form change of variables against ``sde.probability_flow_drift`` (chain rule) and
against the oracle's exact posterior mean; a tight scipy DOP853 solution of the probability-flow ODE with
the exact oracle score (convergence order and agreement); the exact target distribution (SW2 against
the noise floor, with a wrong score that must fail); exact NFE accounting.
"""

import math

import pytest
import torch
from scipy.integrate import solve_ivp

from sde_lab import VESDE, VPSDE, GaussianMixture, SubVPSDE, make_target
from sde_lab.fast_samplers import (
    adaptive_sample,
    dpm_solver_orders,
    dpm_solver_pp_sample,
    dpm_solver_sample,
    heun_sample,
    log_snr_time_grid,
    scaled_denoiser,
    sigma_form_ode,
    sigma_tilde_grid,
)
from sde_lab.metrics import noise_floor, sliced_wasserstein
from sde_lab.sampling import CountingScore
from sde_lab import sample
from sde_lab.utils import append_dims

from problems import gen

SDES = [VESDE(), VPSDE(), SubVPSDE()]
IDS = ["ve", "vp", "subvp"]

# A smooth 2-D mixture: the probability-flow ODE is gentle enough that asymptotic orders show early.
SMOOTH = GaussianMixture(
    torch.tensor([0.6, 0.4]), torch.tensor([[-1.0, 0.5], [1.0, -0.5]]), torch.tensor([[0.5, 0.4], [0.4, 0.6]])
)


_gen = gen


def _pf_ode_reference(sde, score_fn, x_T, eps, tol=1e-9):
    """x_eps from x_T by scipy DOP853 on sde.probability_flow_drift with the exact score, float64."""
    shape = x_T.shape

    def f(t, y):
        x = torch.from_numpy(y).reshape(shape)
        tt = torch.full((shape[0],), t, dtype=torch.float64)
        return sde.probability_flow_drift(x, tt, score_fn(x, tt)).reshape(-1).numpy()

    sol = solve_ivp(f, (sde.T, eps), x_T.reshape(-1).numpy(), method="DOP853", rtol=tol, atol=tol)
    assert sol.status == 0
    return torch.from_numpy(sol.y[:, -1].copy()).reshape(shape)


# --- 1. the σ-form ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sde", SDES, ids=IDS)
@pytest.mark.parametrize("target", ["aniso", "gmm8x8"])
def test_sigma_form_ode_is_the_probability_flow_ode(sde, target):
    """d x/dt = (dα/dt) x̂ + α (dx̂/dσ̃)(dσ̃/dt) equals f − ½ g² s, dσ̃/dt by autograd; any data shape."""
    gm = make_target(target)
    score = gm.score_fn(sde)
    B = 16
    t = torch.linspace(0.02, 0.98, B, dtype=torch.float64)
    x = gm.sample(B, _gen(0), dtype=torch.float64) * 1.3 + 0.2
    tg = t.clone().requires_grad_(True)
    dsig = torch.autograd.grad(sde.sigma_tilde(tg).sum(), tg)[0]
    alpha = sde.marginal(t)[0]
    a = sde.drift_coef(t)
    sig = sde.sigma_tilde(t)
    x_hat = x / append_dims(alpha, x.ndim)
    rhs = sigma_form_ode(sde, score)(x_hat, sig)
    dxdt = append_dims(a * alpha, x.ndim) * x_hat + append_dims(alpha * dsig, x.ndim) * rhs
    torch.testing.assert_close(dxdt, sde.probability_flow_drift(x, t, score(x, t)), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_scaled_denoiser_is_the_exact_posterior_mean(sde):
    """D(x/α; σ̃) = E[x_0 | x_t], computed independently from the mixture's exact component posterior."""
    gm = make_target("aniso")
    B = 64
    t = torch.linspace(0.05, 0.95, B, dtype=torch.float64)
    x = 2.0 * torch.randn(B, 2, generator=_gen(1), dtype=torch.float64)
    alpha, sigma = sde.marginal(t)
    post = gm.posterior(sde, x, t)  # (B, K)
    a, s2 = alpha[:, None, None], sigma[:, None, None] ** 2
    var0 = gm.stds[None] ** 2
    # per component: E[x0 | xt, k] = μ + α v0 / (α² v0 + σ²) (xt − α μ)
    cond = gm.means[None] + a * var0 / (a**2 * var0 + s2) * (x[:, None] - a * gm.means[None])
    expected = (post[..., None] * cond).sum(1)
    got = scaled_denoiser(sde, gm.score_fn(sde))(x / alpha[:, None], sde.sigma_tilde(t))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    # teeth: the score of another target gives another denoiser
    wrong = scaled_denoiser(sde, make_target("ring").score_fn(sde))(x / alpha[:, None], sde.sigma_tilde(t))
    assert (wrong - expected).abs().max() > 1e-2


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_grids(sde):
    eps = 1e-3
    s_max, s_min = sde.sigma_tilde(torch.tensor([1.0, eps], dtype=torch.float64)).tolist()
    for schedule in ["karras", "uniform_t", "log_sigma"]:
        g = sigma_tilde_grid(sde, 12, eps, schedule=schedule)
        assert g.shape == (12,) and (g[1:] < g[:-1]).all()
        assert math.isclose(g[0].item(), s_max) and math.isclose(g[-1].item(), s_min)
    lg = torch.log(sigma_tilde_grid(sde, 9, eps, schedule="log_sigma"))
    torch.testing.assert_close(lg.diff(), torch.full((8,), lg.diff()[0].item(), dtype=torch.float64))
    for spacing in ["logsnr", "time"]:
        t = log_snr_time_grid(sde, 10, eps, spacing=spacing)
        assert t[0].item() == 1.0 and t[-1].item() == eps and (t.diff() < 0).all()
    lam = sde.log_snr(log_snr_time_grid(sde, 10, eps, spacing="logsnr"))
    torch.testing.assert_close(lam.diff(), torch.full((10,), lam.diff()[0].item(), dtype=torch.float64))


# --- 2. convergence order against a tight scipy solution -----------------------------------------------
# (solver, options, NFE pair in the asymptotic regime (eps = 1e-2, smooth target), theoretical order)
ORDER_CASES = [
    ("heun", heun_sample, {}, (32, 64), 2.0),
    ("dpm1", dpm_solver_sample, {"order": 1}, (32, 64), 1.0),
    ("dpm2", dpm_solver_sample, {"order": 2}, (64, 128), 2.0),
    ("dpm3", dpm_solver_sample, {"order": 3}, (96, 192), 3.0),
    ("dpm++2m", dpm_solver_pp_sample, {}, (32, 64), 2.0),
]


@pytest.fixture(scope="module")
def references():
    eps, B = 1e-2, 4
    out = {}
    for sde, name in zip(SDES, IDS):
        x_T = sde.prior_sample((B, 2), _gen(3), dtype=torch.float64)
        out[name] = (sde, x_T, _pf_ode_reference(sde, SMOOTH.score_fn(sde), x_T, eps), eps)
    return out


@pytest.mark.parametrize("sde_name", IDS)
@pytest.mark.parametrize("case", ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_convergence_order(references, sde_name, case):
    """log2(err(N)/err(2N)) at the final time matches the solver's order within ±0.3."""
    _, solver, opts, (n1, n2), order = case
    sde, x_T, ref, eps = references[sde_name]

    def err(n):
        steps = (n + 1) // 2 if solver is heun_sample else n
        r = solver(sde, SMOOTH.score_fn(sde), x_T.shape, steps=steps, eps=eps, x_init=x_T, denoise=False, **opts)
        return (r.samples - ref).pow(2).mean().sqrt().item()

    e1, e2 = err(n1), err(n2)
    measured = math.log2(e1 / e2)  # the step count doubles (Heun: 16 -> 32 steps for NFE 31 -> 63)
    assert abs(measured - order) <= 0.3, (e1, e2, measured)


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", IDS)
def test_every_solver_agrees_with_scipy_as_nfe_grows(references, sde_name):
    """Error to the scipy solution falls with NFE and is small at 80 NFE."""
    sde, x_T, ref, eps = references[sde_name]
    score = SMOOTH.score_fn(sde)
    solvers = {  # the grids and spacings not covered by test_convergence_order
        "heun-uniform_t": lambda n: heun_sample(sde, score, x_T.shape, steps=(n + 1) // 2, eps=eps, x_init=x_T,
                                                denoise=False, schedule="uniform_t"),
        "heun-log_sigma": lambda n: heun_sample(sde, score, x_T.shape, steps=(n + 1) // 2, eps=eps, x_init=x_T,
                                                denoise=False, schedule="log_sigma"),
        "dpm2-time": lambda n: dpm_solver_sample(sde, score, x_T.shape, steps=n, eps=eps, x_init=x_T, denoise=False,
                                                 order=2, spacing="time"),
        "dpm++2m-time": lambda n: dpm_solver_pp_sample(sde, score, x_T.shape, steps=n, eps=eps, x_init=x_T,
                                                       denoise=False, spacing="time"),
    }
    for name, run in solvers.items():
        errs = [(run(n).samples - ref).abs().max().item() for n in (20, 80)]
        assert errs[0] > 2 * errs[1], (name, errs)
        assert errs[1] < 2e-2, (name, errs)


# --- 3. DPM-Solver-1 is DDIM ------------------------------------------------------------------------------
@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_dpm_solver_1_is_ddim(sde):
    """x_t = α_t x̂0 + σ_t ε̂ with ε̂ = −σ_s s, x̂0 = (x_s − σ_s ε̂)/α_s (Song et al. 2021a, eq. (12), η = 0)."""
    gm = make_target("aniso")
    score = gm.score_fn(sde)
    x = sde.prior_sample((32, 2), _gen(4), dtype=torch.float64)
    ts = log_snr_time_grid(sde, 7, 1e-3).tolist()
    y = x.clone()
    for s, t in zip(ts[:-1], ts[1:]):
        ss, tt = torch.full((32,), s, dtype=torch.float64), torch.full((32,), t, dtype=torch.float64)
        (a_s,), (sg_s,) = sde.marginal(ss[:1])
        (a_t,), (sg_t,) = sde.marginal(tt[:1])
        e = -sg_s * score(y, ss)
        y = a_t * (y - sg_s * e) / a_s + sg_t * e
    r = dpm_solver_sample(sde, score, x.shape, steps=7, order=1, x_init=x, denoise=False)
    torch.testing.assert_close(r.samples, y, rtol=1e-10, atol=1e-10)
    assert r.nfe == 7


# --- 4. sample quality with the exact score, and a wrong score that must fail ----------------------------
def _quality_case(target, n):
    gm = make_target(target)
    ref = gm.sample(n, _gen(10), dtype=torch.float64)
    floor = noise_floor(lambda m, g: gm.sample(m, g, dtype=torch.float64), n, repeats=4, generator=_gen(11))
    return gm, ref, floor


def _sw(x, ref):
    return sliced_wasserstein(x, ref, generator=_gen(12))


FAST = [
    ("heun", {"steps": 15}),
    ("heun", {"steps": 30, "s_churn": 10.0, "s_tmin": 0.05, "s_tmax": 10.0}),
    ("dpm_solver", {"steps": 24, "order": 3}),
    ("dpm_solver", {"steps": 40, "order": 2}),
    ("dpm_solver_pp", {"steps": 24}),
]


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_exact_score_reaches_the_noise_floor(sde):
    """Every ODE solver through sample(): SW2 ≤ 1.5 × floor with the exact score; teeth: a 1.25× score fails."""
    n = 1500
    gm, ref, floor = _quality_case("aniso", n)
    for solver, opts in FAST:
        r = sample(sde, gm.score_fn(sde), (n, 2), solver=solver, generator=_gen(20), **opts)
        assert r.samples.shape == (n, 2)
        assert _sw(r.samples, ref) <= 1.5 * floor, (solver, opts, _sw(r.samples, ref), floor)
    wrong = sample(sde, lambda x, t: 1.25 * gm.marginal_score(sde, x, t), (n, 2), solver="dpm_solver_pp",
                   generator=_gen(20), steps=24)
    assert _sw(wrong.samples, ref) > 1.5 * floor, "wrong score passed"


@pytest.mark.parametrize("solver,opts", [FAST[0], FAST[2], FAST[4]], ids=["heun", "dpm3", "dpm++2m"])
def test_image_shaped_data(solver, opts):
    """1×8×8 data (gmm8x8, 64-D): right shape, and SW2 at the floor on VP with the exact score."""
    sde, n = VPSDE(), 400
    gm, ref, floor = _quality_case("gmm8x8", n)
    r = sample(sde, gm.score_fn(sde), (n, 1, 8, 8), solver=solver, generator=_gen(21), **opts)
    assert r.samples.shape == (n, 1, 8, 8) and r.samples.dtype == torch.float64
    assert _sw(r.samples, ref) <= 1.5 * floor, (_sw(r.samples, ref), floor)


@pytest.mark.slow
@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_adaptive_reaches_the_floor_and_tolerance_costs(sde):
    """Adaptive SDE solver: SW2 ≤ 1.5 × floor with the exact score, teeth with a 1.5× score (the reverse SDE
    forgives small score errors more than the ODE does); tighter tolerance → more NFE."""
    n = 500
    gm, ref, floor = _quality_case("aniso", n)
    kw = dict(generator=_gen(22), abs_tol=0.03, rel_tol=0.1)
    loose = adaptive_sample(sde, gm.score_fn(sde), (n, 2), **kw)
    assert _sw(loose.samples, ref) <= 1.5 * floor, (_sw(loose.samples, ref), floor)
    wrong = adaptive_sample(sde, lambda x, t: 1.5 * gm.marginal_score(sde, x, t), (n, 2), **kw)
    assert _sw(wrong.samples, ref) > 1.5 * floor
    tight = adaptive_sample(sde, gm.score_fn(sde), (n, 2), generator=_gen(22), abs_tol=0.015, rel_tol=0.05)
    assert tight.nfe > 1.5 * loose.nfe


def test_adaptive_per_sample_on_images():
    """Per-sample step control on 1×8×8 data: per-sample times, right shape, SW2 at the floor."""
    sde, n = VPSDE(), 200
    gm, ref, floor = _quality_case("gmm8x8", n)
    r = adaptive_sample(sde, gm.score_fn(sde), (n, 1, 8, 8), generator=_gen(23), error_norm="per_sample",
                        abs_tol=0.05, rel_tol=0.1)
    assert r.samples.shape == (n, 1, 8, 8)
    assert (r.info["accepted"] > 0).all() and r.info["nfe_per_sample"] <= r.nfe
    assert _sw(r.samples, ref) <= 1.5 * floor, (_sw(r.samples, ref), floor)


def test_adaptive_batch_rms_norm_costs_less_than_batch_max_at_the_floor():
    """``batch_rms`` controls the batch's RMS error instead of its worst sample: fewer NFE on a large batch,
    SW2 still at the floor; the same tolerance with a 1.5× score fails (teeth)."""
    sde, n = VESDE(), 1000
    gm, ref, floor = _quality_case("aniso", n)
    kw = dict(generator=_gen(24), abs_tol=0.03, rel_tol=0.1)
    rms = adaptive_sample(sde, gm.score_fn(sde), (n, 2), error_norm="batch_rms", **kw)
    worst = adaptive_sample(sde, gm.score_fn(sde), (n, 2), error_norm="batch_max", **kw)
    assert rms.nfe < 0.8 * worst.nfe, (rms.nfe, worst.nfe)
    assert _sw(rms.samples, ref) <= 1.5 * floor, (_sw(rms.samples, ref), floor)
    wrong = adaptive_sample(sde, lambda x, t: 1.5 * gm.marginal_score(sde, x, t), (n, 2), error_norm="batch_rms", **kw)
    assert _sw(wrong.samples, ref) > 1.5 * floor


# --- 5. exact NFE ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 2, 5, 10, 11])
def test_nfe_is_exact(steps):
    sde = SubVPSDE()
    score = make_target("aniso").score_fn(sde)

    def check(solver, expected, **opts):
        counter = CountingScore(score)
        r = solver(sde, counter, (8, 2), steps=steps, generator=_gen(0), **opts)
        assert r.nfe == counter.nfe == expected, (solver.__name__, opts, r.nfe, counter.nfe, expected)

    check(heun_sample, 2 * steps - 1)
    check(heun_sample, 2 * steps, denoise=False)  # every step a Heun step: Euler only at σ̃ = 0
    check(heun_sample, 2 * steps - 1, s_churn=5.0)
    for order in (1, 2, 3):
        check(dpm_solver_sample, steps + 1, order=order)
        check(dpm_solver_sample, steps, order=order, denoise=False)
        assert sum(dpm_solver_orders(steps, order)) == steps
    check(dpm_solver_pp_sample, steps + 1)
    check(dpm_solver_pp_sample, steps, denoise=False)
    counter = CountingScore(score)
    r = adaptive_sample(sde, counter, (8, 2), generator=_gen(0), denoise=False)
    attempts = int(r.info["accepted"].max() + r.info["rejected"].max())
    assert r.nfe == counter.nfe == 2 * r.info["attempts"] == 2 * attempts


def test_churn_is_reproducible_and_noisy():
    sde = VPSDE()
    score = make_target("aniso").score_fn(sde)
    kw = dict(steps=10, s_churn=20.0, s_tmin=0.01, s_tmax=50.0)
    a = heun_sample(sde, score, (64, 2), generator=_gen(5), **kw).samples
    b = heun_sample(sde, score, (64, 2), generator=_gen(5), **kw).samples
    c = heun_sample(sde, score, (64, 2), generator=_gen(5), steps=10).samples
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-3


def test_bad_options_raise_value_error():
    sde = VESDE()
    score = make_target("aniso").score_fn(sde)
    with pytest.raises(ValueError, match="karras"):
        heun_sample(sde, score, (4, 2), steps=3, schedule="cosine")
    with pytest.raises(ValueError, match="1, 2, 3"):
        dpm_solver_sample(sde, score, (4, 2), steps=3, order=4)
    with pytest.raises(ValueError, match="logsnr"):
        dpm_solver_pp_sample(sde, score, (4, 2), steps=3, spacing="quadratic")
    with pytest.raises(ValueError, match="per_sample"):
        adaptive_sample(sde, score, (4, 2), error_norm="mean")
    with pytest.raises(ValueError, match="steps"):
        heun_sample(sde, score, (4, 2), steps=0)
    with pytest.raises(ValueError, match="eps"):
        dpm_solver_sample(sde, score, (4, 2), steps=3, eps=0.0)
    with pytest.raises(ValueError, match="s_churn"):
        heun_sample(sde, score, (4, 2), steps=3, s_churn=-1.0)
    with pytest.raises(ValueError, match="heun"):
        sample(sde, score, (4, 2), solver="heunn")
    with pytest.raises(ValueError, match="rho"):  # an option of another solver
        sample(sde, score, (4, 2), solver="dpm_solver", rho=7.0)
