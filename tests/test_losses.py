"""Score adapter and DSM losses against the analytic oracle (exact scores of Gaussian mixtures)."""

import math

import pytest
import torch
from torch import nn

from sde_lab import VESDE, VPSDE, SubVPSDE, make_target
from sde_lab.losses import (
    ImportanceLikelihoodWeighting,
    LikelihoodWeighting,
    SigmaSquaredWeighting,
    ddpm_loss,
    dsm_loss,
    smld_loss,
)
from sde_lab.nets.mlp import MLPScoreNet
from sde_lab.model import ScoreModel
from sde_lab.sde import discrete_times

SDES = [VESDE(sigma_max=10.0), VPSDE(), SubVPSDE()]
IDS = ["ve", "vp", "subvp"]
GM = make_target("ring")


pytestmark = pytest.mark.usefixtures("one_thread")


class OracleNet(nn.Module):
    """A 'network' that outputs the exact score in a given parametrization, recovering t from its label.

    Written independently of ScoreModel: the conversions below are the paper's formulas.
    """

    def __init__(self, sde, prediction, label_to_t):
        super().__init__()
        self.sde, self.prediction, self.label_to_t = sde, prediction, label_to_t
        self.seen = None

    def forward(self, x, labels):
        self.seen = labels
        t = self.label_to_t(labels)
        s = GM.marginal_score(self.sde, x, t)
        sigma = self.sde.marginal(t)[1][:, None]
        return {"noise": -sigma * s, "score": s, "scaled_score": sigma * s}[self.prediction]


def _points(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return GM.sample(n, g, dtype=torch.float64), g


@pytest.mark.parametrize("sde", SDES, ids=IDS)
@pytest.mark.parametrize("prediction", ["noise", "score", "scaled_score"])
@pytest.mark.parametrize("time_label", ["t", "999t"])
def test_score_model_conversion_is_exact(sde, prediction, time_label):
    x, g = _points()
    t = torch.rand(x.shape[0], generator=g, dtype=torch.float64) * 0.99 + 0.01
    inv = {"t": lambda l: l, "999t": lambda l: l / 999.0}[time_label]
    net = OracleNet(sde, prediction, inv)
    model = ScoreModel(net, sde, prediction=prediction, time_label=time_label)
    torch.testing.assert_close(model(x, t), GM.marginal_score(sde, x, t), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(net.seen, t if time_label == "t" else 999 * t, rtol=0, atol=1e-12)
    # teeth: the same network read with the wrong parametrization is not the score
    wrong = {"noise": "score", "score": "scaled_score", "scaled_score": "noise"}[prediction]
    bad = ScoreModel(net, sde, prediction=wrong, time_label=time_label)(x, t)
    assert (bad - GM.marginal_score(sde, x, t)).abs().max() > 1e-2


def test_sigma_label_and_output_target():
    """VE convention of score_sde (label σ(t), net predicts σ s); the output target of the DSM pair (x0, z) is the
    output whose score is −z/σ, and the gain c(t) of s = a x + c out is what turns ‖s − s*‖² into ‖out − out*‖²."""
    sde = SDES[0]
    x, g = _points()
    t = torch.rand(x.shape[0], generator=g, dtype=torch.float64)
    net = OracleNet(sde, "scaled_score", lambda l: sde.t_from_sigma_tilde(l))
    model = ScoreModel(net, sde, prediction="scaled_score", time_label="sigma")
    torch.testing.assert_close(model(x, t), GM.marginal_score(sde, x, t), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(net.seen, sde.marginal(t)[1])
    alpha, sigma = (v[:, None] for v in sde.marginal(t))
    x0 = GM.sample(x.shape[0], g, dtype=torch.float64)
    z = torch.randn(x.shape, generator=g, dtype=torch.float64)
    xt = alpha * x0 + sigma * z
    for pred in ["noise", "score", "scaled_score"]:
        m = ScoreModel(net, sde, prediction=pred, time_label="sigma")
        tgt = m.output_target(x0, z, xt, t)
        torch.testing.assert_close(tgt, {"noise": z, "score": -z / sigma, "scaled_score": -z}[pred])
        c = m.parametrization.score_gain(m.coefficients(xt, t))
        out = torch.randn(x.shape, generator=g, dtype=torch.float64)
        s = m.parametrization.score(out, xt, m.coefficients(xt, t))
        torch.testing.assert_close(s - (-z / sigma), c * (out - tgt))  # s − s* = c (out − out*)


def test_discrete_labels_follow_score_sde():
    """score_sde's get_score_fn(continuous=False): VP label t (N−1) (not rounded) with the std √(1−ᾱ) at
    ⌊t (N−1)⌋; VE (NCSN ordering, σ_max first) label round((T − t)(N−1)) with the SMLD level of that index."""
    N = 10
    sde = VPSDE()
    ti = discrete_times(N)
    x = torch.zeros(N, 2, dtype=torch.float64)
    rec = OracleNet(sde, "score", lambda l: ti[l.round().long()])
    ScoreModel(rec, sde, prediction="score", time_label="index", n_discrete=N)(x, ti)
    torch.testing.assert_close(rec.seen, torch.arange(N, dtype=torch.float64), rtol=0, atol=1e-12)
    ScoreModel(rec, sde, prediction="score", time_label="reversed_index", n_discrete=N)(x, ti)
    assert torch.equal(rec.seen, torch.arange(N - 1, -1, -1, dtype=torch.float64))
    # off the levels: the label is t (N−1) and the std is indexed by truncation (labels.long())
    t = torch.tensor([0.03, 0.149, 0.5, 0.999], dtype=torch.float64)
    sig = (1 - sde.ddpm_schedule(N).alphas_cumprod).sqrt()
    m = ScoreModel(rec, sde, prediction="noise", time_label="index", n_discrete=N, sigmas=sig)
    got = m.parametrization.score_gain(m.coefficients(x[:4], t)).flatten()
    torch.testing.assert_close(got, -1 / sig[(t * (N - 1)).long()], rtol=1e-14, atol=0)
    assert torch.allclose(m.labels(t), t * (N - 1))
    with pytest.raises(ValueError, match="n_discrete"):
        ScoreModel(rec, sde, time_label="index")
    with pytest.raises(ValueError, match="valid choices"):
        ScoreModel(rec, sde, prediction="epsilon")


WEIGHTINGS = [SigmaSquaredWeighting(), LikelihoodWeighting(), ImportanceLikelihoodWeighting()]
WIDS = ["sigma2", "likelihood", "importance"]


@pytest.mark.parametrize("sde", SDES, ids=IDS)
@pytest.mark.parametrize("weighting", WEIGHTINGS, ids=WIDS)
def test_dsm_minimised_by_true_score_and_equals_explicit_sm_plus_constant(sde, weighting):
    """L(s) - L(s*) = E λ‖s - s*‖² > 0 (Vincent 2011), checked with common random numbers."""
    x0, g = _points(8000, seed=1)
    t = weighting.sample(sde, x0.shape[0], generator=g, dtype=torch.float64)
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    oracle = GM.score_fn(sde)

    def perturbed(x, tt):  # a plausible but wrong score: shrunk and shifted
        return 0.8 * oracle(x, tt) + 0.1

    l_true = dsm_loss(oracle, sde, x0, weighting=weighting, t=t, z=z)
    l_pert = dsm_loss(perturbed, sde, x0, weighting=weighting, t=t, z=z)
    diff = l_pert - l_true
    se = diff.std() / math.sqrt(len(diff))
    assert diff.mean() > 5 * se  # strictly larger beyond MC error

    # explicit score-matching error E λ‖s - ∇log p_t‖² on the same x_t
    alpha, sigma = sde.marginal(t)
    xt = alpha[:, None] * x0 + sigma[:, None] * z
    w = weighting.weight(sde, t)
    esm = w * ((perturbed(xt, t) - oracle(xt, t)) ** 2).sum(1)
    resid = diff - esm  # zero-mean cross term
    assert abs(resid.mean()) < 4 * resid.std() / math.sqrt(len(resid)) + 1e-12
    assert abs(resid.mean()) < 0.1 * esm.mean()


@pytest.mark.parametrize("sde", SDES[1:], ids=IDS[1:])
def test_importance_sampling_is_unbiased_and_follows_g2_over_sigma2(sde):
    """Importance-sampled t has density ∝ g²/σ², and both estimators agree on the likelihood-weighted loss."""
    w = ImportanceLikelihoodWeighting()
    g = torch.Generator().manual_seed(3)
    t = w.sample(sde, 200_000, generator=g, dtype=torch.float64)
    assert t.min() >= w.eps and t.max() <= 1.0
    # probability of [a, b] under g²/σ², by quadrature, vs the empirical frequency
    for a, b in [(1e-5, 1e-3), (1e-3, 0.05), (0.05, 0.5), (0.5, 1.0)]:
        u = torch.logspace(math.log10(a), math.log10(b), 4001, dtype=torch.float64)
        f = sde.diffusion(u) ** 2 / sde.marginal(u)[1] ** 2
        uall = torch.logspace(-5, 0, 20001, dtype=torch.float64)
        fall = sde.diffusion(uall) ** 2 / sde.marginal(uall)[1] ** 2
        p = torch.trapezoid(f, u) / torch.trapezoid(fall, uall)
        emp = ((t >= a) & (t < b)).double().mean()
        assert abs(emp - p) < 5 * math.sqrt(p * (1 - p) / len(t)) + 2e-3

    x0, g = _points(20000, seed=4)
    oracle = GM.score_fn(sde)
    li = dsm_loss(oracle, sde, x0, weighting=w, generator=g)
    lu = dsm_loss(oracle, sde, x0, weighting=LikelihoodWeighting(), generator=g)
    se = math.sqrt(li.var() / len(li) + lu.var() / len(lu))
    assert abs(li.mean() - lu.mean()) < 4 * se
    assert li.std() < lu.std()  # the point of importance sampling


def test_discrete_losses():
    """SMLD at level i equals σ²-weighted DSM at t_i (VE: σ_i = σ(t_i)); DDPM is exactly ‖ε_θ - z‖²."""
    sde = VESDE(sigma_max=10.0)
    N = 50
    x0, g = _points(512, seed=5)
    idx = torch.randint(0, N, (512,), generator=g)
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    oracle = GM.score_fn(sde)
    ls = smld_loss(oracle, sde, x0, sde.smld_sigmas(N), index=idx, z=z)
    ld = dsm_loss(oracle, sde, x0, t=discrete_times(N)[idx], z=z)
    torch.testing.assert_close(ls, ld, rtol=1e-10, atol=1e-12)

    vp = VPSDE()
    sched = vp.ddpm_schedule(N)
    const = torch.tensor([0.3, -0.7], dtype=torch.float64)

    class ConstNet(nn.Module):
        def forward(self, x, labels):
            return const.expand_as(x)

    model = ScoreModel(ConstNet(), vp, prediction="noise", time_label="index", n_discrete=N,
                       sigmas=(1 - sched.alphas_cumprod).sqrt())
    l = ddpm_loss(model, vp, x0, sched, index=idx, z=z, reduce="mean")
    torch.testing.assert_close(l, ((const - z) ** 2).mean(1), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="reduce"):
        ddpm_loss(model, vp, x0, sched, reduce="avg")


def test_mlp_any_shape_and_errors():
    net = MLPScoreNet(64, hidden=16, layers=2, embedding="sinusoidal")
    x = torch.randn(3, 1, 8, 8)
    assert net(x, torch.rand(3)).shape == x.shape
    assert net(x.double(), torch.rand(3)).dtype == torch.float64
    with pytest.raises(ValueError, match="64 elements"):
        net(torch.randn(3, 2), torch.rand(3))
    with pytest.raises(ValueError, match="valid choices"):
        MLPScoreNet(2, embedding="rope")


def test_mlp_linear_skip_extrapolates_linearly_and_starts_from_the_plain_net():
    torch.manual_seed(0)
    plain = MLPScoreNet(2, hidden=32, layers=2)
    torch.manual_seed(0)
    skip = MLPScoreNet(2, hidden=32, layers=2, linear_skip=True)
    # the skip branch is created last and zero-initialised: same parameters elsewhere, same output at init
    missing = skip.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["skip.bias", "skip.weight"]
    with torch.no_grad():  # give the MLP branch a non-zero output layer, the same in both
        plain.out.weight.normal_()
        skip.out.weight.copy_(plain.out.weight)
    x, t = torch.randn(5, 2), torch.rand(5)
    torch.testing.assert_close(skip(x, t), plain(x, t))
    with torch.no_grad():
        skip.skip.bias.fill_(1.0)  # gain G(label) = 1: out = mlp(x) + x
    # the LayerNorm bounds the plain network far out; the skip makes it grow like x
    far = 1e4 * x
    assert plain(far, t).abs().max() < 1e2
    torch.testing.assert_close(skip(far, t) / far, torch.ones_like(far), atol=1e-2, rtol=0)
