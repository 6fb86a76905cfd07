"""Samplers against the analytic oracle: every solver draws from the true distribution with the exact
score (moments and sliced Wasserstein-2 within tolerances set by the noise floor) and FAILS the same check
with a deliberately wrong score; NFE equals the counted score calls; the same code serves points and images."""

from __future__ import annotations


import pytest
import torch

from sde_lab import cli
from sde_lab.analytic import make_target
from sde_lab.correctors import AnnealedLangevin, Langevin, NoCorrector
from sde_lab.metrics import sliced_wasserstein
from sde_lab.model import as_model
from sde_lab.grids import uniform_time_grid

from problems import five_modes, floor, gen, mode_stats, passes, quality, wrong
from sde_lab.predictors import Ancestral, EulerMaruyama, NoPredictor, ProbabilityFlowEuler, ReverseDiffusion
from sde_lab.registry import CORRECTORS, PREDICTORS, SOLVERS
from sde_lab.sampling import CountingScore, ald_sample, denoise_step, ode_encode, ode_sample, pc_sample, sdeint_sample
from sde_lab import sample
from sde_lab.sde import VESDE, VPSDE, SubVPSDE

SDES = {"ve": VESDE(), "vp": VPSDE(), "subvp": SubVPSDE()}
N = 2000
PC_STEPS = 200
GM = make_target("aniso")


_gen = gen
_quality, _passes, _wrong = quality, passes, wrong


@pytest.fixture(scope="module")
def floor2d():
    """Mean SW2 between independent true sets of size N (what a perfect sampler scores)."""
    return floor(GM, N, seed=123, repeats=4)


PC_COMBOS = [
    (ReverseDiffusion(), Langevin()),
    (EulerMaruyama(), NoCorrector()),
    (Ancestral(), NoCorrector()),
    (ProbabilityFlowEuler(), NoCorrector()),
]


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("combo", PC_COMBOS, ids=lambda c: f"{type(c[0]).__name__}+{type(c[1]).__name__}")
def test_pc_matches_oracle(sde_name, combo, floor2d):
    sde = SDES[sde_name]
    predictor, corrector = combo
    counter = CountingScore(GM.score_fn(sde))
    res = pc_sample(sde, counter, (N, 2), predictor=predictor, corrector=corrector, steps=PC_STEPS, generator=_gen(1))
    assert res.nfe == counter.nfe == PC_STEPS * (predictor.nfe_per_step + corrector.nfe_per_step) + 1
    # one sample set's SW2 ratio to the floor spreads from ~0.5 to ~2 (8 seeds of sub-VP RD+Langevin: 0.51-2.08), and
    # pooling sets does not narrow it (the floor shrinks with n too): average the ratios of independent sets
    sets = [res.samples] + [pc_sample(sde, GM.score_fn(sde), (N, 2), predictor=predictor, corrector=corrector, steps=PC_STEPS,
                                      generator=_gen(seed)).samples for seed in (2, 3)]
    ratios = [_quality(x, GM, floor2d)[0] for x in sets]
    assert sum(ratios) / 3 < 1.6, ratios
    assert all(_passes(x, GM, 1e9) for x in sets), [_quality(x, GM, floor2d) for x in sets]  # moments of every set


@pytest.mark.parametrize(
    "sde_name, kind, combo",
    [("ve", "flipped", 0), ("subvp", "flipped", 0), ("ve", "halved", 0), ("subvp", "halved", 0), ("vp", "halved", 1)],
)
def test_pc_check_has_teeth(sde_name, kind, combo, floor2d):
    """The same sampler and check as test_pc_matches_oracle, with a sign-flipped or halved score: fails."""
    sde = SDES[sde_name]
    predictor, corrector = PC_COMBOS[combo]
    try:
        res = pc_sample(sde, _wrong(GM.score_fn(sde), kind), (N, 2), predictor=predictor, corrector=corrector,
                        steps=PC_STEPS, generator=_gen(1))
    except FloatingPointError:
        return  # a diverging sampler fails the check too
    assert not _passes(res.samples, GM, floor2d)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_ode_matches_oracle_and_teeth(sde_name, floor2d):
    sde = SDES[sde_name]
    counter = CountingScore(GM.score_fn(sde))
    res = ode_sample(sde, counter, (N, 2), generator=_gen(2))
    assert _passes(res.samples, GM, floor2d), _quality(res.samples, GM, floor2d)
    assert res.nfe == counter.nfe and res.info["status"] == 0
    bad = ode_sample(sde, _wrong(GM.score_fn(sde), "halved"), (N, 2), generator=_gen(2), rtol=1e-3, atol=1e-3)
    assert not _passes(bad.samples, GM, floor2d)


@pytest.mark.parametrize("sde_name", [pytest.param("ve", marks=pytest.mark.slow), "vp", pytest.param("subvp", marks=pytest.mark.slow)])
def test_ald_matches_oracle(sde_name, floor2d):
    sde = SDES[sde_name]
    counter = CountingScore(GM.score_fn(sde))
    res = ald_sample(sde, counter, (N, 2), steps=600, generator=_gen(3))
    assert _passes(res.samples, GM, floor2d), _quality(res.samples, GM, floor2d)
    assert res.nfe == counter.nfe == 601
    if sde_name == "vp":
        bad = ald_sample(sde, _wrong(GM.score_fn(sde), "halved"), (N, 2), steps=600, generator=_gen(3))
        assert not _passes(bad.samples, GM, floor2d)


@pytest.mark.parametrize("method", ["euler", "milstein", "srk"])
def test_sdeint_matches_oracle(method, floor2d):
    sde = VPSDE()
    counter = CountingScore(GM.score_fn(sde))
    steps = PC_STEPS if method != "srk" else 50
    res = sdeint_sample(sde, counter, (N, 2), steps=steps, method=method, generator=_gen(4))
    assert _passes(res.samples, GM, floor2d), _quality(res.samples, GM, floor2d)
    assert res.nfe == counter.nfe
    if method == "euler":
        bad = sdeint_sample(sde, _wrong(GM.score_fn(sde), "halved"), (N, 2), steps=steps, generator=_gen(4))
        assert not _passes(bad.samples, GM, floor2d)


def test_sdeint_adaptive_ve():
    sde = VESDE()
    counter = CountingScore(GM.score_fn(sde))
    res = sdeint_sample(sde, counter, (100, 2), steps=20, adaptive=True, rtol=5e-2, atol=5e-2, generator=_gen(5))
    assert torch.isfinite(res.samples).all() and res.nfe == counter.nfe > 0


def test_images_same_code_path():
    """1x8x8 images (gmm8x8): PC and sdeint reproduce per-pixel moments; a halved score does not."""
    gm = make_target("gmm8x8")
    sde = VPSDE()
    g = _gen(11)
    floor = sum(sliced_wasserstein(gm.sample(400, g), gm.sample(400, g), generator=g) for _ in range(3)) / 3
    res = sample(sde, gm.score_fn(sde), (400, 1, 8, 8), steps=100, generator=_gen(6))
    assert res.samples.shape == (400, 1, 8, 8)
    sw_ratio, mean_err, _ = _quality(res.samples, gm, floor)
    assert sw_ratio < 1.5 and mean_err < 6.0
    bad = sample(sde, _wrong(gm.score_fn(sde), "halved"), (400, 1, 8, 8), steps=100, generator=_gen(6))
    assert _quality(bad.samples, gm, floor)[0] > 1.5
    sde_res = sample(sde, gm.score_fn(sde), (16, 1, 8, 8), solver="sdeint", steps=20, generator=_gen(6))
    assert sde_res.samples.shape == (16, 1, 8, 8) and torch.isfinite(sde_res.samples).all()


@pytest.mark.parametrize("shape", [(64, 2), (8, 1, 8, 8)])
def test_ode_encode_inverts_decode(shape):
    gm = make_target("aniso" if len(shape) == 2 else "gmm8x8")
    sde = VPSDE()
    z = torch.randn(shape, generator=_gen(8), dtype=torch.float64)
    x = ode_sample(sde, gm.score_fn(sde), shape, z=z, denoise=False, rtol=1e-6, atol=1e-6)
    back = ode_encode(sde, gm.score_fn(sde), x.samples, rtol=1e-6, atol=1e-6)
    assert back.samples.shape == shape
    assert (back.samples - z).abs().max() < 1e-3
    assert (x.samples - z).abs().max() > 0.1  # the map is not the identity


@pytest.mark.parametrize("solver", ["pc", "sdeint", "ald"])
def test_reproducible_with_generator(solver):
    sde = SubVPSDE()
    sf = GM.score_fn(sde)
    a = sample(sde, sf, (100, 2), solver=solver, steps=20, generator=_gen(9)).samples
    b = sample(sde, sf, (100, 2), solver=solver, steps=20, generator=_gen(9)).samples
    c = sample(sde, sf, (100, 2), solver=solver, steps=20, generator=_gen(10)).samples
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
@pytest.mark.parametrize("steps", [10, 20])
def test_few_steps_finite_every_combination(sde_name, steps):
    sde = SDES[sde_name]
    sf = GM.score_fn(sde)
    for p in PREDICTORS:
        for c in CORRECTORS:
            counter = CountingScore(sf)
            res = sample(sde, counter, (200, 2), steps=steps, predictor=p, corrector=c, generator=_gen(12))
            assert torch.isfinite(res.samples).all(), (p, c)
            assert res.nfe == counter.nfe


def test_nfe_matches_counter_for_every_solver():
    sde = VESDE()
    for name in ("pc", "ode", "sdeint", "ald"):
        counter = CountingScore(GM.score_fn(sde))
        res = sample(sde, counter, (50, 2), solver=name, steps=7, n_corrector_steps=2, generator=_gen(0)) if name in (
            "pc", "ald") else sample(sde, counter, (50, 2), solver=name, steps=7, generator=_gen(0))
        assert res.nfe == counter.nfe, name
    counter = CountingScore(GM.score_fn(sde))
    res = sample(sde, counter, (50, 2), steps=7, predictor="none", corrector="none", denoise=False, generator=_gen(0))
    assert res.nfe == counter.nfe == 0


SPREAD_CASES = [  # (path, scale, predictor, corrector, steps, tolerance on |within-mode RMS − 1|)
    (name, 1.0, pred, corr, steps, tol + (0.02 if isinstance(pred, Ancestral) else 0.0))
    for name in ("vp", "subvp")
    for pred, corr in ((EulerMaruyama(), NoCorrector()), (ReverseDiffusion(), Langevin()), (Ancestral(), NoCorrector()))
    for steps, tol in ((30, 0.13), (100, 0.06))
] + [("vp", 0.25, EulerMaruyama(), NoCorrector(), 30, 0.13), ("vp", 0.25, ReverseDiffusion(), Langevin(), 30, 0.15)]


def _spread(name, scale, pred, corr, steps, grid=None):
    gm, sde = five_modes(scale), {"vp": VPSDE(), "subvp": SubVPSDE()}[name]
    x = pc_sample(sde, gm.model(sde), (3000, 2), predictor=pred, corrector=corr, steps=steps, grid=grid,
                  generator=_gen(4)).samples
    return mode_stats(x, gm), gm


@pytest.mark.parametrize("case", SPREAD_CASES, ids=lambda c: f"{c[0]}-x{c[1]}-{type(c[2]).__name__}-{c[4]}")
def test_few_step_pc_keeps_the_within_mode_spread(case):
    """The PC sampler's default grid (uniform in log-SNR) at 30 and 100 steps on five separated modes: the RMS of
    (x − μ_k)/s_k stays near 1 (measured 0.90–1.11 at 30 steps, 0.95–1.03 at 100) and every mode keeps its
    weight. The ancestral predictor's posterior variance under-disperses slightly more (experiments/pc_study.py)."""
    name, scale, pred, corr, steps, tol = case
    (rms, weights), gm = _spread(name, scale, pred, corr, steps)
    assert abs(rms - 1) < tol, rms
    assert (weights - gm.weights).abs().max() < 0.04, weights


@pytest.mark.parametrize("case", [("vp", 1.0, Ancestral(), NoCorrector(), 30, 0.15), ("vp", 1.0, Ancestral(), NoCorrector(), 100, 0.08),
                                  ("subvp", 1.0, ReverseDiffusion(), Langevin(), 30, 0.13),
                                  ("vp", 0.25, EulerMaruyama(), NoCorrector(), 30, 0.13)],
                         ids=["vp-anc-30", "vp-anc-100", "subvp-rd-30", "vp-narrow-em-30"])
def test_the_spread_check_fails_v1s_uniform_grid(case):
    """Teeth: the same check on v1's uniform-t grid fails (0.74 / 0.88 / 1.20 / 4.2 measured)."""
    name, scale, pred, corr, steps, tol = case
    (rms, _), _ = _spread(name, scale, pred, corr, steps, grid=uniform_time_grid(steps, 1e-3))
    assert abs(rms - 1) >= tol, rms


def test_predictor_formulas_match_papers():
    """Ancestral on VE is SMLD eq. (47); on VP its mean is DDPM's (x + β s)/√(1-β); reverse diffusion on VE
    is x + (σ_t² - σ_s²) s."""
    x = torch.randn(5, 2, generator=_gen(0), dtype=torch.float64)
    t, s = torch.full((5,), 0.6, dtype=torch.float64), torch.full((5,), 0.55, dtype=torch.float64)
    ve = VESDE()
    score = lambda y, tt: -y  # noqa: E731
    model = as_model(ve, score)
    st, ss = ve.marginal(t)[1][0], ve.marginal(s)[1][0]
    _, mean = Ancestral().step(model, x, t, s)
    assert torch.allclose(mean, x + (st**2 - ss**2) * score(x, t))
    z_std = (Ancestral().step(model, x, t, s, _gen(1))[0] - mean) / torch.randn(5, 2, generator=_gen(1), dtype=torch.float64)
    assert torch.allclose(z_std, (ss**2 * (st**2 - ss**2) / st**2).sqrt().expand_as(z_std))
    z_fwd = (Ancestral(variance="forward").step(model, x, t, s, _gen(1))[0] - mean) / torch.randn(5, 2, generator=_gen(1), dtype=torch.float64)
    assert torch.allclose(z_fwd, (st**2 - ss**2).sqrt().expand_as(z_fwd))
    _, rd_mean = ReverseDiffusion().step(model, x, t, s)
    assert torch.allclose(rd_mean, mean)
    vp = VPSDE()
    beta = 1 - torch.exp(-(vp.beta_integral(t) - vp.beta_integral(s)))
    _, mean = Ancestral().step(as_model(vp, score), x, t, s)
    assert torch.allclose(mean, (x + beta[:, None] * score(x, t)) / torch.sqrt(1 - beta)[:, None])


def test_denoise_is_tweedie_for_every_sde():
    """For Gaussian data N(m, c² I), E[x0 | x_t] is known in closed form; denoise_step must match it."""
    m, c = 0.7, 0.3
    for sde in SDES.values():
        t = torch.full((4,), 0.2, dtype=torch.float64)
        alpha, sigma = (v[:, None] for v in sde.marginal(t))
        score = lambda y, tt: -(y - alpha * m) / (alpha**2 * c**2 + sigma**2)  # noqa: E731
        x = torch.randn(4, 3, generator=_gen(0), dtype=torch.float64)
        expected = m + alpha * c**2 * (x - alpha * m) / (alpha**2 * c**2 + sigma**2)
        assert torch.allclose(denoise_step(sde, score, x, t), expected)


def test_validation_errors():
    sde = VPSDE()
    sf = GM.score_fn(sde)
    with pytest.raises(ValueError, match="valid choices.*pc"):
        sample(sde, sf, (10, 2), solver="nope")
    with pytest.raises(ValueError, match="valid choices.*ancestral"):
        sample(sde, sf, (10, 2), predictor="nope")
    with pytest.raises(ValueError, match="valid choices.*langevin"):
        sample(sde, sf, (10, 2), corrector="nope")
    with pytest.raises(ValueError, match="shape"):
        sample(sde, sf, [10, 2])
    with pytest.raises(ValueError, match="shape"):
        sample(sde, sf, (10,))
    with pytest.raises(ValueError, match="steps"):
        sample(sde, sf, (10, 2), steps=0)
    with pytest.raises(ValueError, match="eps"):
        sample(sde, sf, (10, 2), eps=1.5)
    with pytest.raises(ValueError, match="does not take option predictor"):
        sample(sde, sf, (10, 2), solver="ode", predictor="ancestral")
    with pytest.raises(ValueError, match="does not take option foo"):
        sample(sde, sf, (10, 2), solver="pc", foo=1)
    with pytest.raises(ValueError, match="snr"):
        Langevin(snr=-1.0)
    with pytest.raises(FloatingPointError, match="non-finite"):
        sample(sde, lambda x, t: x * float("nan"), (10, 2), steps=3)
    assert set(SOLVERS) >= {"pc", "ode", "sdeint", "ald"}


def test_contract_classes():
    for p in (EulerMaruyama(), ProbabilityFlowEuler(), ReverseDiffusion(), Ancestral(), NoPredictor()):
        assert isinstance(p.nfe_per_step, int)
    assert Langevin(n_steps=3).nfe_per_step == 3 and AnnealedLangevin(n_steps=2).nfe_per_step == 2
    assert NoCorrector().nfe_per_step == 0
    with pytest.raises(Exception):
        Langevin().snr = 0.3  # frozen


def test_cli_sample_smoke(tmp_path):
    out = tmp_path / "pts"
    rc = cli.main(["sample", "--sde", "subvp", "--steps", "20", "--target", "ring", "--n", "200", "--out", str(out), "--quiet"])
    assert rc == 0 and (out / "samples.npz").exists() and (out / "samples.png").exists()
    import numpy as np

    data = np.load(out / "samples.npz")
    assert data["samples"].shape == (200, 2) and int(data["nfe"]) == 2 * 20 + 1
    img = tmp_path / "img"
    rc = cli.main(["sample", "--sde", "ve", "--solver", "ode", "--target", "gmm8x8", "--n", "16", "--out", str(img), "--quiet"])
    assert rc == 0 and np.load(img / "samples.npz")["samples"].shape == (16, 1, 8, 8)
    assert cli.main(["sample", "--sde", "ve", "--out", str(tmp_path / "none")]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", list(SDES))
def test_all_combinations_1000_steps(sde_name):
    """Every predictor x corrector at 1000 steps, plus ald, on a 2-D and a 16-D target: within 2x the floor.

    The 1.5x figure is a benchmark target (experiments/solver_bench.py averages seeds); a single sample
    set's SW2 over the floor spreads from about 0.5 to 1.6 even for exact samples, so a test at 1.5x is a
    coin toss. 2x, as in the fast tests, is still failed by a halved or sign-flipped score by a wide margin.
    """
    sde = SDES[sde_name]
    for target in ("aniso", "gmm16"):
        gm = make_target(target)
        n = 4000
        g = _gen(5)
        floor = sum(sliced_wasserstein(gm.sample(n, g), gm.sample(n, g), generator=g) for _ in range(6)) / 6
        runs = [dict(predictor=p, corrector=c) for p in PREDICTORS if p != "none" for c in ("none", "langevin")]
        runs.append(dict(solver="ald"))
        for kw in runs:
            x = sample(sde, gm.score_fn(sde), (n, *gm.event_shape), steps=1000, generator=_gen(3), **kw).samples
            sw = sum(sliced_wasserstein(x.float(), gm.sample(n, g), generator=g) for _ in range(3)) / 3
            assert sw < 2.0 * floor, (target, kw, sw / floor)
