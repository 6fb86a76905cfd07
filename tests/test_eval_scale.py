"""Evaluation at scale: KID and precision/recall against known answers, the Fréchet distance against
pytorch-fid, statistics in the published layout, and 2 processes scoring exactly as 1."""

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from sde_lab.cli import main
from sde_lab.metrics import FeatureStats, frechet_distance, kernel_inception_distance, precision_recall, sharded_features

pytestmark = pytest.mark.usefixtures("one_thread")


def g(s):
    return torch.Generator().manual_seed(s)


def test_kid_is_unbiased_and_separates_distributions():
    d = 16
    # two independent sets from one distribution: the unbiased estimate averages to 0 (the biased
    # V-statistic would sit at ~ +2 E k(x,x)/m ≈ 0.02 here, 10+ standard errors away)
    vals = []
    for s in range(40):
        a, b = torch.randn(100, d, generator=g(2 * s), dtype=torch.float64), torch.randn(100, d, generator=g(2 * s + 1), dtype=torch.float64)
        vals.append(kernel_inception_distance(a, b, subsets=1, subset_size=100)[0])
    m, se = np.mean(vals), np.std(vals, ddof=1) / np.sqrt(len(vals))
    assert abs(m) < 3 * se + 1e-4, (m, se)
    # a mean shift δ in every coordinate: the population MMD² of the cubic kernel, by Monte Carlo on large sets
    a = torch.randn(2000, d, generator=g(100), dtype=torch.float64)
    b = torch.randn(2000, d, generator=g(101), dtype=torch.float64) + 0.5
    kid, std, stderr = kernel_inception_distance(a, b, subsets=20, subset_size=500, generator=g(0))
    full = kernel_inception_distance(a, b, subsets=1, subset_size=2000)[0]
    assert kid > 10 * stderr and abs(kid - full) < 4 * std / np.sqrt(20) + 1e-3
    assert std > 0 and abs(stderr - std / np.sqrt(20)) < 1e-12


def test_precision_recall_known_answers():
    real = torch.arange(100, dtype=torch.float64)[:, None]  # points 0..99: every k=3 ball has radius 3
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    assert precision_recall(real, real + 1000) == (0.0, 0.0)
    p, r = precision_recall(real, real[:50].clone())  # fake = the first half: its balls cover 0..52
    assert p == 1.0 and r == pytest.approx(53 / 100)
    with pytest.raises(ValueError, match="needs more than 3"):
        precision_recall(real[:3], real)


def test_frechet_distance_equals_pytorch_fid():
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    for s, d in ((0, 8), (1, 64)):
        a = torch.randn(500, d, generator=g(s), dtype=torch.float64)
        b = 1.3 * torch.randn(500, d, generator=g(s + 10), dtype=torch.float64) + 0.2
        sa, sb = FeatureStats.from_features(a), FeatureStats.from_features(b)
        ref = fid_score.calculate_frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
        assert frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma) == pytest.approx(ref, rel=1e-9, abs=1e-9)


def test_published_layout_statistics_load(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3) * 2
    np.savez(tmp_path / "ttur.npz", mu=mu, sigma=sigma)  # the TTUR / pytorch-fid files: mu and sigma only
    st = FeatureStats.load(tmp_path / "ttur.npz")
    assert np.array_equal(st.mu, mu) and np.array_equal(st.sigma, sigma) and st.n == 0
    np.savez(tmp_path / "bad.npz", m=mu)
    with pytest.raises(ValueError, match="need 'mu' and 'sigma'"):
        FeatureStats.load(tmp_path / "bad.npz")


@pytest.fixture(scope="module")
def digits_setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("evalscale")
    clf = base / "digits.pt"
    assert main(["train-classifier", "--dataset", "digits", "--epochs", "2", "--width", "8", "--out", str(clf), "--no-progress"]) == 0
    rng = np.random.default_rng(0)
    samples = base / "samples"
    samples.mkdir()
    np.savez(samples / "samples.npz", samples=rng.integers(0, 256, size=(150, 1, 8, 8), dtype=np.uint8))
    return base, clf, samples


def _eval_argv(clf, samples, json_out, stats=None):
    argv = ["eval", "--metric", "fid-lenet", "--samples", str(samples), "--dataset", "digits", "--split", "train",
            "--classifier", str(clf), "--also", "kid", "pr", "--kid-subsets", "10", "--kid-subset-size", "100",
            "--feature-batch", "40", "--json", str(json_out), "--no-progress", "--threads", "1", "--splits", "1"]
    return argv + (["--ref-stats", str(stats)] if stats else ["--ref-cache", str(Path(json_out).with_suffix(".stats.npz"))])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, base, clf, samples):
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        assert main(_eval_argv(clf, samples, Path(base) / "two.json")) == 0
        assert main(["fid-stats", "--dataset", "digits", "--split", "train", "--features", "lenet", "--classifier", str(clf),
                     "--batch-size", "100", "--out", str(Path(base) / "two_stats.npz"), "--no-progress"]) == 0
    finally:
        dist.destroy_process_group()


def test_two_processes_score_exactly_as_one(digits_setup):
    base, clf, samples = digits_setup
    assert main(_eval_argv(clf, samples, base / "one.json")) == 0
    assert main(["fid-stats", "--dataset", "digits", "--split", "train", "--features", "lenet", "--classifier", str(clf),
                 "--batch-size", "100", "--out", str(base / "one_stats.npz"), "--no-progress"]) == 0
    mp.spawn(_worker, args=(2, _free_port(), str(base), str(clf), str(samples)), nprocs=2, join=True)
    one, two = (json.loads((base / f"{k}.json").read_text()) for k in ("one", "two"))
    for key in ("value", "kid", "kid_std", "precision", "recall"):
        assert one[key] == pytest.approx(two[key], rel=1e-6, abs=1e-9), key
    assert one["value"] > 0 and 0 <= one["precision"] <= 1
    a, b = FeatureStats.load(base / "one_stats.npz"), FeatureStats.load(base / "two_stats.npz")
    assert a.n == b.n == 1500 and np.allclose(a.mu, b.mu, rtol=0, atol=1e-12) and np.allclose(a.sigma, b.sigma, rtol=0, atol=1e-12)
    # the fid-stats file is the reference eval computes itself, and loads as published statistics
    assert main(_eval_argv(clf, samples, base / "pub.json", stats=base / "one_stats.npz")) == 0
    pub = json.loads((base / "pub.json").read_text())
    assert pub["value"] == pytest.approx(one["value"], rel=1e-9)


def test_sharded_features_without_a_group_is_the_plain_extractor():
    x = torch.randn(23, 4, generator=g(0))
    f = sharded_features(lambda b: b * 2, x, batch_size=5)
    assert torch.equal(f, (x * 2).double())
