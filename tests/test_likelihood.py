"""Probability-flow ODE likelihood against exact answers: the Gaussian-mixture oracle's log p_eps(x) and
the NLL of a 256-level discretized Gaussian (bits/dim offset and dequantization)."""

from __future__ import annotations

import io
import math
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

from sde_lab.analytic import GaussianMixture, make_target
from sde_lab.cli import main
from sde_lab.data import CenteredScaler, ZeroOneScaler, uniform_dequantize
from sde_lab.likelihood import (
    ExactDivergence,
    HutchinsonDivergence,
    LikelihoodError,
    bits_per_dim,
    dequantization_offset,
    log_likelihood,
)
from sde_lab.sde import VESDE, VPSDE, SubVPSDE

EPS = 1e-5
SDES = [VESDE(), VPSDE(), SubVPSDE()]
IDS = ["ve", "vp", "subvp"]


def _exact(gm, sde, x, eps=EPS):
    return gm.marginal_log_prob(sde, x, torch.full((x.shape[0],), eps, dtype=x.dtype))


def _prior_mismatch(gm, sde, z):
    """``log π(z) - log p_T(z)``: the ODE returns ``log p_eps(x)`` plus this (the prior is not exactly ``p_T``)."""
    return sde.prior_log_prob(z) - gm.marginal_log_prob(sde, z, torch.full((z.shape[0],), sde.T, dtype=z.dtype))


@pytest.fixture(scope="module")
def aniso():
    gm = make_target("aniso")
    return gm, gm.sample(24, torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_exact_divergence_matches_oracle(sde, aniso):
    gm, x = aniso
    res = log_likelihood(sde, gm.score_fn(sde), x, divergence="exact")
    err = (res.log_prob - _exact(gm, sde, x)) / gm.dim
    assert abs(err.mean().item()) <= 2e-3
    # Per sample, the ODE is exact for the flow's own density: log p_eps(x) + log π(z) - log p_T(z).
    flow_err = (res.log_prob - _exact(gm, sde, x) - _prior_mismatch(gm, sde, res.z)) / gm.dim
    # (Solver error, shared through the joint error norm of the batch, stays within a few 1e-3 per sample.)
    assert flow_err.abs().max().item() <= 5e-3 and flow_err.abs().median().item() <= 1e-4
    assert res.success and res.solver_status == 0 and res.nfe > 0
    assert torch.equal(res.stderr, torch.zeros(x.shape[0], dtype=torch.float64))
    # The split into prior and divergence integral is the one the formula states.
    torch.testing.assert_close(res.log_prob, res.prior_log_prob + res.delta_log_prob)
    torch.testing.assert_close(res.prior_log_prob, sde.prior_log_prob(res.z))


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_perturbed_score_fails_the_same_check(sde, aniso):
    gm, x = aniso
    exact_score = gm.score_fn(sde)
    x = x[:12]
    res = log_likelihood(sde, lambda y, t: 1.2 * exact_score(y, t), x, divergence="exact", rtol=1e-4, atol=1e-4)
    err = (res.log_prob - _exact(gm, sde, x)) / gm.dim
    assert abs(err.mean().item()) > 2e-3


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_hutchinson_is_unbiased(sde, probe, aniso):
    gm, x = aniso
    x = x[:8]
    g = torch.Generator().manual_seed(1)
    res = log_likelihood(sde, gm.score_fn(sde), x, divergence="hutchinson", probe=probe, n_probes=32, generator=g)
    err = res.log_prob - _exact(gm, sde, x)
    se = res.stderr.pow(2).sum().sqrt() / x.shape[0]
    assert torch.isfinite(res.stderr).all() and (res.stderr > 0).all()
    assert abs(err.mean().item()) <= 4 * se.item() + 1e-3
    # The reported standard error is the spread of the per-probe estimates.
    torch.testing.assert_close(res.stderr, res.per_probe.std(1) / math.sqrt(32))


def test_rademacher_has_lower_variance_than_gaussian():
    gm = make_target("gmm16")
    sde = VPSDE()
    x = gm.sample(8, torch.Generator().manual_seed(2), dtype=torch.float64)
    spread = {}
    for probe in ("rademacher", "gaussian"):
        g = torch.Generator().manual_seed(3)
        r = log_likelihood(sde, gm.score_fn(sde), x, probe=probe, n_probes=16, generator=g, rtol=1e-3, atol=1e-3)
        spread[probe] = r.per_probe.var(1).mean().item()
    assert spread["rademacher"] < spread["gaussian"]


def test_image_shapes_and_any_shape_equivalence():
    flat = make_target("aniso")
    img = GaussianMixture(flat.weights, flat.means, flat.stds, event_shape=(1, 2, 1))
    sde = VPSDE()
    tol = dict(rtol=1e-3, atol=1e-3)
    x = flat.sample(5, torch.Generator().manual_seed(4), dtype=torch.float64)
    xi = x.reshape(5, 1, 2, 1)
    r_flat = log_likelihood(sde, flat.score_fn(sde), x, divergence="exact", **tol)
    r_img = log_likelihood(sde, img.score_fn(sde), xi, divergence="exact", **tol)
    assert r_img.log_prob.shape == (5,) and r_img.z.shape == xi.shape and r_img.per_probe.shape == (5, 1)
    torch.testing.assert_close(r_img.log_prob, r_flat.log_prob)
    torch.testing.assert_close(r_img.z.reshape(5, 2), r_flat.z)
    r_h = log_likelihood(sde, img.score_fn(sde), xi, n_probes=3, generator=torch.Generator().manual_seed(0), **tol)
    assert r_h.log_prob.shape == r_h.stderr.shape == (5,) and r_h.per_probe.shape == (5, 3)
    assert torch.isnan(log_likelihood(sde, img.score_fn(sde), xi, **tol).stderr).all()  # one probe: no spread
    # Probes are drawn from the generator: same seed, same answer.
    r_h2 = log_likelihood(sde, img.score_fn(sde), xi, n_probes=3, generator=torch.Generator().manual_seed(0), **tol)
    torch.testing.assert_close(r_h.log_prob, r_h2.log_prob)


def test_exact_divergence_chunking_is_invisible():
    gm = make_target("gmm16")
    sde = SubVPSDE()
    x = gm.sample(4, torch.Generator().manual_seed(5), dtype=torch.float64)
    t = torch.full((4,), 0.3, dtype=torch.float64)

    def drift(y, tt):
        return sde.probability_flow_drift(y, tt, gm.marginal_score(sde, y, tt))

    f1, d1 = ExactDivergence()(drift, x, t)
    f2, d2 = ExactDivergence(max_rows=12)(drift, x, t)  # 3 dimensions per pass
    jac = torch.autograd.functional.jacobian(lambda y: drift(y[None], t[:1])[0], x[0])
    torch.testing.assert_close(d1, d2)
    torch.testing.assert_close(f1, f2)
    torch.testing.assert_close(d1[0, 0], torch.trace(jac))


# --- bits/dim: a 256-level discretized Gaussian with a computable discrete NLL ---------------------


def _model_with_p_eps(sde, mean, std, D, eps=EPS):
    """An oracle whose perturbed marginal at ``eps`` is exactly ``N(mean, std² I)`` in model space."""
    alpha, sigma = sde.marginal(torch.tensor([eps], dtype=torch.float64))
    a, s = alpha.item(), sigma.item()
    var0 = (std**2 - s**2) / a**2
    assert var0 > 0
    return GaussianMixture(torch.ones(1), torch.full((1, D), mean / a), torch.full((1,), math.sqrt(var0)))


def _discretized_gaussian(n, D, m, S, generator):
    """Pixels ``k = floor(v)``, ``v ~ N(m, S²)`` (clamped to [0, 255]) and their exact ``log P(k)``, summed over D."""
    v = m + S * torch.randn(n, D, generator=generator, dtype=torch.float64)
    k = v.floor().clamp(0, 255)
    upper = torch.where(k == 255, torch.ones_like(k), torch.special.ndtr((k + 1 - m) / S))
    lower = torch.where(k == 0, torch.zeros_like(k), torch.special.ndtr((k - m) / S))
    return k, torch.log(upper - lower).sum(1)


@pytest.mark.parametrize(
    "sde, scaler", [(VESDE(), CenteredScaler()), (VPSDE(), ZeroOneScaler())], ids=["ve-centered", "vp-zero_one"]
)
def test_bits_per_dim_known_answer(sde, scaler):
    n, D, m, S, R = 32, 4, 120.0, 12.0, 2  # pixel-space mean and std (S ≫ 1 bin)
    k, log_P = _discretized_gaussian(n, D, m, S, torch.Generator().manual_seed(6))
    # The model: q(v) = N(m, S²) per dimension in pixel units, i.e. N(scale m/256 + shift, (scale S/256)²) in model space.
    gm = _model_with_p_eps(sde, scaler.scale * m / 256 + scaler.shift, abs(scaler.scale) * S / 256, D)
    res = bits_per_dim(sde, gm.score_fn(sde), k, scaler, repeats=R, divergence="exact",
                       generator=torch.Generator().manual_seed(7))
    assert res.bpd.shape == (R, n) and res.log_prob.shape == (R, n)
    assert res.offset == pytest.approx(math.log(256) - math.log(abs(scaler.scale)))

    # 1) Per sample and draw: the ODE bits/dim is -log2 q(k + u) / D at the same dequantized point, computed
    #    in pixel units without the scaler (same generator stream: dequantization is drawn first).
    g = torch.Generator().manual_seed(7)
    for r in range(R):
        v = 256 * uniform_dequantize(k, generator=g).double()
        log_q = (-0.5 * ((v - m) / S) ** 2 - 0.5 * math.log(2 * math.pi * S**2)).sum(1)
        log_q = log_q + _prior_mismatch(gm, sde, res.runs[r].z)  # the flow's density, see _prior_mismatch
        expected = -log_q / (D * math.log(2))
        torch.testing.assert_close(res.bpd[r], expected, atol=5e-4, rtol=0)  # a lost u would be off by ~0.05

    # 2) Against the discrete NLL: E_u[bpd] - (-log2 P(k) / D) is the Jensen gap, ≈ 1/(24 S²) nats/dim ≥ 0
    #    (plus the prior mismatch, whose mean -KL(p_T ‖ π) / D is below 1e-4 nats/dim here).
    diff = res.bpd.mean(0) - (-log_P / (D * math.log(2)))
    gap_bits = 1.0 / (24 * S**2) / math.log(2)
    se = diff.std().item() / math.sqrt(n)
    assert -3 * se - 2e-4 <= diff.mean().item() <= gap_bits + 3 * se + 2e-4
    # Teeth: a hard-coded offset (8 bits/dim whatever the scaler) or a forgotten scaler Jacobian is off by ≥ 1 bit
    # for the centered scaler; 1 bit is also far outside the tolerance above.
    assert 3 * se + gap_bits < 0.5


def test_dequantization_offset_values():
    assert dequantization_offset(ZeroOneScaler()) / math.log(2) == pytest.approx(8.0)
    assert dequantization_offset(CenteredScaler()) / math.log(2) == pytest.approx(7.0)
    assert dequantization_offset(ZeroOneScaler(), levels=32) / math.log(2) == pytest.approx(5.0)


# --- bad input ----------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(aniso):
    gm, x = aniso
    sde = VPSDE()
    s = gm.score_fn(sde)
    bad = [
        (dict(divergence="trace"), "exact"),
        (dict(probe="uniform"), "rademacher"),
        (dict(n_probes=0), "n_probes"),
        (dict(divergence="exact", n_probes=4), "n_probes"),
        (dict(divergence=HutchinsonDivergence(), probe="gaussian"), "HutchinsonDivergence"),
        (dict(eps=0.0), "eps"),
        (dict(eps=1.5), "eps"),
        (dict(rtol=-1.0), "rtol"),
        (dict(method="Euler"), "RK45"),
    ]
    for kwargs, word in bad:
        with pytest.raises(ValueError, match=word):
            log_likelihood(sde, s, x[:2], **kwargs)
    with pytest.raises(ValueError, match="bits_per_dim"):
        log_likelihood(sde, s, torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        log_likelihood(sde, s, torch.full((2, 2), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        log_likelihood(sde, s, torch.zeros(3))
    with pytest.raises(LikelihoodError, match="NaN"):
        log_likelihood(sde, lambda y, t: s(y, t) * float("nan"), x[:2], divergence="exact")

    pix = torch.tensor([[0, 17], [255, 3]])
    with pytest.raises(ValueError, match="0, 255"):
        bits_per_dim(sde, s, pix / 255.0, ZeroOneScaler())  # already scaled to [0, 1]
    with pytest.raises(ValueError, match="0, 255"):
        bits_per_dim(sde, s, pix + 1, ZeroOneScaler())  # 256 is outside 8 bits
    with pytest.raises(ValueError, match="0, 255"):
        bits_per_dim(sde, s, pix - 1, ZeroOneScaler())
    with pytest.raises(ValueError, match="repeats"):
        bits_per_dim(sde, s, pix, ZeroOneScaler(), repeats=0)
    with pytest.raises(ValueError, match="DataScaler"):
        bits_per_dim(sde, s, pix, "centered")


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_on_a_target():
    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(["likelihood", "--target", "aniso", "--sde", "subvp", "--n", "12", "--batch-size", "6",
                   "--divergence", "exact", "--no-progress", "--seed", "1"])
    text = out.getvalue()
    assert rc == 0
    lines = {ln.split(":")[0].strip(): ln for ln in text.splitlines() if ":" in ln}
    assert {"model NLL", "exact NLL", "error"} <= set(lines)
    model = float(lines["model NLL"].split(":", 1)[1].split()[0])
    exact = float(lines["exact NLL"].split(":", 1)[1].split()[0])
    err = float(lines["error"].split(":", 1)[1].split()[0])
    assert abs(model - exact) <= 2e-3 and abs(err) <= 2e-3
    assert "bits/dim" in lines["model NLL"]


def test_cli_rejects_ambiguous_source(capsys):
    assert main(["likelihood", "--target", "aniso", "--ckpt", "x.pt", "--dataset", "mnist"]) == 2
    assert "either --target" in capsys.readouterr().err


def test_cli_on_a_checkpoint(tmp_path, capsys):
    """The --ckpt path takes the SDE and score from the checkpoint (not --sde) and compares with the oracle."""
    from sde_lab.config import apply_overrides, load_config, train

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "vp" / "toy2d.py")
    apply_overrides(config, ["training.batch_size=16", "training.n_iters=2", "training.snapshot_freq=2",
                             "training.tensorboard=False", "model.hidden=8", "model.layers=1", "model.embed_dim=8",
                             "device='cpu'"])
    train(config, tmp_path, dataset=make_target("ring").sample(64, torch.Generator().manual_seed(0)), progress=False)
    rc = main(["likelihood", "--ckpt", str(tmp_path), "--dataset", "ring", "--sde", "ve", "--n", "6",
               "--divergence", "exact", "--rtol", "1e-3", "--atol", "1e-3", "--no-progress"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "VPSDE" in out.out and "--sde is ignored" in out.err
    lines = {ln.split(":")[0].strip(): ln for ln in out.out.splitlines() if ":" in ln}
    assert {"model NLL", "exact NLL", "error"} <= set(lines)
    assert math.isfinite(float(lines["model NLL"].split(":", 1)[1].split()[0]))
    # Images need integer pixels and a matching model: a 2-D model on an image set is refused clearly.
    assert main(["likelihood", "--ckpt", str(tmp_path), "--dataset", "digits", "--n", "2", "--no-progress"]) == 2
    assert "digits" in capsys.readouterr().err
