"""Data: named data sets behind one interface, scalers between pixel values and model space, dequantization.

``get_dataset(name, split=..., centered=..., image_size=...)`` returns a ``torch.utils.data.Dataset``
of ``(x,)`` or ``(x, y)`` items with ``x`` already in the model's range:

* 2-D point sets generated from a seed (swiss roll, two moons, 8 Gaussians, checkerboard, pinwheel,
  two spirals) and the analytic oracle targets (``ring``, ``aniso``, ``gmm16``, ``gmm8x8``; labels are
  mixture components);
* scikit-learn's 8×8 digits (``digits``; ``digits16`` zero-padded to 16×16; pixels 0..16 → [0, 1]);
* MNIST and Fashion-MNIST, offline from the project's shared data / the Debian package
  ``dataset-fashion-mnist`` (decompressed into the data root and md5-checked), or downloaded;
* CIFAR-10, CelebA and any image folder through torchvision, with centre-crop and resize.

``dataset_info(name)`` gives shape, classes and raw pixel levels; ``get_pixels(name, split)`` (or
``get_dataset(..., raw=True)``) gives integer pixels for likelihoods in bits/dim.

One definition of the pixel scale serves training, sampling and the likelihood: pixel ``k`` of ``L`` levels
owns the dequantization bin ``[k/L, (k+1)/L)`` of ``[0, 1]``; training data are the bin centres
``(k + ½)/L`` (:func:`pixels_to_unit`), the likelihood dequantizes ``(k + u)/L`` with ``u ~ U[0, 1)``
(:func:`uniform_dequantize`, whose mean over ``u`` is that centre), and samples map back to ``⌊y L⌋``
(:func:`unit_to_pixels`). (score_sde trains on ``k/255`` and dequantizes ``(k + u)/256``; for the 17 levels of
the 8×8 digits that mismatch put the extreme pixels on the edges of their bins.) A scaler maps data in
``[0, 1]`` to the model's range, and back. It is affine, ``y = scale * x + shift``, so its log-Jacobian per dimension is
``log |scale|``: the likelihood code uses it to convert densities between spaces instead of a
hard-coded constant.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.utils.data
import torchvision
import torchvision.transforms.functional as TF
from tqdm.auto import tqdm

from .analytic import TARGETS as _ANALYTIC_TARGETS
from .analytic import make_target
from .utils import append_dims

__all__ = [
    "DataScaler",
    "ZeroOneScaler",
    "CenteredScaler",
    "SCALERS",
    "make_scaler",
    "uniform_dequantize",
    "pixels_to_unit",
    "unit_to_pixels",
    "DatasetInfo",
    "ArrayDataset",
    "RandomHorizontalFlip",
    "DATASETS",
    "dataset_names",
    "dataset_info",
    "get_dataset",
    "get_pixels",
    "dataset_tensors",
    "prepare_idx_dataset",
    "default_data_root",
    "shared_data_dir",
    "swiss_roll",
    "two_moons",
    "eight_gaussians",
    "checkerboard",
    "pinwheel",
    "two_spirals",
    "sample_photos",
    "photo_split_column",
]


@dataclass(frozen=True)
class DataScaler:
    """Affine map ``[0, 1] → [low, high]``, ``y = scale x + shift``."""

    scale: float = 1.0
    shift: float = 0.0

    @property
    def low(self) -> float:
        return self.shift

    @property
    def high(self) -> float:
        return self.scale + self.shift

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.shift) / self.scale

    @property
    def log_abs_det_jacobian_per_dim(self) -> float:
        """``log |dy/dx|`` for one dimension."""
        return math.log(abs(self.scale))


def ZeroOneScaler() -> DataScaler:
    """Identity on ``[0, 1]`` (the score_sde default, ``data.centered = False``)."""
    return DataScaler(1.0, 0.0)


def CenteredScaler() -> DataScaler:
    """``[0, 1] → [-1, 1]`` (``data.centered = True``)."""
    return DataScaler(2.0, -1.0)


SCALERS = {"zero_one": (ZeroOneScaler, "[0, 1] (identity)"), "centered": (CenteredScaler, "[-1, 1]")}


def make_scaler(centered: bool) -> DataScaler:
    return CenteredScaler() if centered else ZeroOneScaler()


def _check_levels(levels) -> int:
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    return levels


def pixels_to_unit(pixels: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """Integer pixels ``k ∈ {0, …, levels-1}`` → ``(k + ½) / levels``, the centre of each pixel's dequantization bin."""
    _check_levels(levels)
    p = torch.as_tensor(pixels)
    return (p.to(torch.float64) + 0.5).div(levels).to(p.dtype if p.is_floating_point() else torch.float32)


def unit_to_pixels(y: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """``[0, 1]`` data → the pixel whose bin holds it, ``⌊y levels⌋`` clamped to ``{0, …, levels-1}`` (uint8 for
    ``levels ≤ 256``); the inverse of :func:`pixels_to_unit` and of :func:`uniform_dequantize`."""
    _check_levels(levels)
    k = torch.floor(torch.as_tensor(y, dtype=torch.float64) * levels).clamp(0, levels - 1)
    return k.to(torch.uint8 if levels <= 256 else torch.long)


def uniform_dequantize(pixels: torch.Tensor, generator: torch.Generator | None = None, levels: int = 256) -> torch.Tensor:
    """Integer pixel values ``{0, ..., levels-1}`` → ``(pixels + u) / levels`` in ``[0, 1)``, ``u ~ U[0, 1)``.

    Raises ``ValueError`` if the input is not integer-valued in range (a common silent bug is passing
    data already scaled to ``[0, 1]``).
    """
    p = torch.as_tensor(pixels)
    pf = p.to(torch.float64)
    if p.numel() and (pf.min() < 0 or pf.max() > levels - 1 or not torch.equal(pf, pf.round())):
        raise ValueError(
            f"uniform_dequantize expects integer pixel values in [0, {levels - 1}], got values in "
            f"[{pf.min().item():.4g}, {pf.max().item():.4g}]; pass raw 8-bit pixels, not scaled data"
        )
    gen_device = generator.device if generator is not None else p.device
    u = torch.rand(p.shape, generator=generator, device=gen_device, dtype=torch.float64).to(p.device)
    return ((pf + u) / levels).to(torch.float32 if not p.is_floating_point() else p.dtype)

# ================================================================================================
# Datasets
# ================================================================================================
#
# One interface for every data set: ``get_dataset(name, ...)`` returns a ``torch.utils.data.Dataset``
# whose items are ``(x,)`` or ``(x, y)``, with ``x`` already in the model's range (images through a
# :class:`DataScaler`; 2-D point sets as generated). ``get_pixels(name, split)`` is the raw path for
# likelihoods: integer pixels ``{0, ..., levels - 1}`` (``levels = dataset_info(name).levels``), to be
# passed to :func:`uniform_dequantize` and then the scaler.


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a named data set.

    Attributes:
        name: registry name.
        shape: shape of one item ``x`` (at the native resolution; ``image_size`` changes ``H, W``).
        n_classes: number of label values (``0`` when items carry no label).
        kind: ``"points"`` (low-dimensional, not scaled), ``"image"`` (in-memory tensors) or
            ``"image-files"`` (decoded lazily from files).
        levels: number of integer pixel values of the raw data (256 for 8-bit images, 17 for sklearn
            digits, ``0`` for continuous point sets).
        splits: valid ``split`` values.
        description: one line.
    """

    name: str
    shape: tuple[int, ...]
    n_classes: int
    kind: str
    levels: int
    splits: tuple[str, ...]
    description: str

    @property
    def is_image(self) -> bool:
        return self.kind != "points"


class ArrayDataset(torch.utils.data.Dataset):
    """In-memory tensors ``x`` (and optional labels ``y``); items are ``(x_i,)`` or ``(x_i, y_i)``.

    ``transform`` (e.g. :class:`RandomHorizontalFlip`) is applied per item. The full tensors are
    available as ``.x`` / ``.y`` for vectorised use (metrics, reference statistics).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None = None, transform: Callable | None = None, info: DatasetInfo | None = None):
        if y is not None and len(y) != len(x):
            raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
        self.x, self.y, self.transform, self.info = x, y, transform, info

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i]
        if self.transform is not None:
            x = self.transform(x)
        return (x,) if self.y is None else (x, self.y[i])


class _MappedDataset(torch.utils.data.Dataset):
    """Wraps a file-backed dataset yielding ``(uint8 tensor (C,H,W), label)``; scales and transforms per item."""

    def __init__(self, base, scale: Callable[[torch.Tensor], torch.Tensor] | None, transform: Callable | None, labels: bool, info: DatasetInfo):
        self.base, self.scale, self.transform, self.labels, self.info = base, scale, transform, labels, info

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        if self.scale is not None:
            x = self.scale(x)
        if self.transform is not None:
            x = self.transform(x)
        return (x, y) if self.labels else (x,)


@dataclass(frozen=True)
class RandomHorizontalFlip:
    """Flip images left-right with probability ``p`` (the CIFAR-10/CelebA augmentation of Song et al. 2021).

    Works on one image ``(C, H, W)`` or a batch ``(B, C, H, W)`` (each sample flipped independently).
    Inside a ``Dataset`` it draws from torch's default generator, which ``DataLoader`` seeds per worker;
    call it on a batch with an explicit ``generator`` for reproducible flips.
    """

    p: float = 0.5

    def __post_init__(self):
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"flip probability p must lie in [0, 1], got {self.p!r}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim < 3:
            raise ValueError(f"RandomHorizontalFlip needs images (C, H, W) or (B, C, H, W), got shape {tuple(x.shape)}")
        if x.ndim == 3:
            return x.flip(-1) if torch.rand((), generator=generator).item() < self.p else x
        flip = torch.rand(x.shape[0], generator=generator) < self.p
        return torch.where(append_dims(flip.to(x.device), x.ndim), x.flip(-1), x)


# --- where files live ---------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Debian package ``dataset-fashion-mnist`` installs the four gzip files here.
SYSTEM_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def default_data_root() -> Path:
    """Where data sets are unpacked / downloaded: ``$SDE_LAB_DATA``, else ``~/.cache/sde_lab/data``."""
    env = os.environ.get("SDE_LAB_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sde_lab" / "data"


def shared_data_dir() -> Path:
    """The project's read-only offline data: ``$SDE_LAB_SHARED_DATA``, else ``<repo>/../shared/data``."""
    env = os.environ.get("SDE_LAB_SHARED_DATA")
    return Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "data"


# md5 of the *uncompressed* idx files. MNIST: the official files (also listed in shared/data/README.md).
# Fashion-MNIST: md5s of the upstream files after decompressing the archives whose md5s torchvision
# lists (FashionMNIST.resources); the Debian package recompresses the .gz, so only these can be checked.
_IDX_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
_TV_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _idx_sources(name: str) -> list[Path]:
    """Folders searched (in order) for ``*-ubyte.gz`` or uncompressed idx files of an MNIST-like set."""
    folder = _TV_FOLDER[name]
    sources = [shared_data_dir() / folder / "raw"]
    if name == "fashion_mnist":
        sources.append(SYSTEM_FASHION_MNIST_DIR)
    return sources


def prepare_idx_dataset(name: str, root: str | os.PathLike | None = None, *, download: bool = False) -> Path:
    """Make ``<root>/<MNIST|FashionMNIST>/raw/`` hold the four uncompressed idx files with official md5s.

    Offline sources, in order: files already in the root; ``<shared data>/MNIST/raw/*.gz`` (see
    :func:`shared_data_dir`); for Fashion-MNIST also ``/usr/share/datasets/fashion-mnist/`` (Debian
    package ``dataset-fashion-mnist``). Archives are decompressed into the root and every file is
    md5-checked. With ``download=True`` and no local copy, torchvision downloads instead. Returns the
    root to hand to ``torchvision.datasets.MNIST/FashionMNIST(root, download=False)``.
    """
    if name not in _IDX_MD5:
        raise ValueError(f"unknown idx dataset {name!r}; valid choices: {', '.join(sorted(_IDX_MD5))}")
    root = Path(root).expanduser() if root is not None else default_data_root()
    raw = root / _TV_FOLDER[name] / "raw"
    missing = [f for f, md5 in _IDX_MD5[name].items() if not ((raw / f).is_file() and _md5(raw / f) == md5)]
    if not missing:
        return root
    sources = _idx_sources(name)
    for fname in missing:
        md5 = _IDX_MD5[name][fname]
        src = next((s / c for s in sources for c in (fname + ".gz", fname) if (s / c).is_file()), None)
        if src is None:
            continue
        raw.mkdir(parents=True, exist_ok=True)
        tmp = raw / (fname + ".part")
        opener = gzip.open if src.suffix == ".gz" else open
        with opener(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        got = _md5(tmp)
        if got != md5:
            tmp.unlink()
            raise ValueError(f"{src} decompresses to md5 {got}, expected the official {md5} for {fname}; the file is corrupt")
        tmp.replace(raw / fname)
    still = [f for f, md5 in _IDX_MD5[name].items() if not (raw / f).is_file()]
    if still and download:
        cls = getattr(torchvision.datasets, _TV_FOLDER[name])
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
        still = [f for f in _IDX_MD5[name] if not (raw / f).is_file()]
    if still:
        how = (
            "the project ships MNIST in ../shared/data/MNIST/raw/ (set SDE_LAB_SHARED_DATA to its data folder)"
            if name == "mnist"
            else "install the Debian package: apt-get update && apt-get install -y dataset-fashion-mnist"
        )
        raise FileNotFoundError(
            f"{name}: missing {', '.join(still)} in {raw}; also searched {', '.join(map(str, sources))}. "
            f"To get them: {how}; or pass download=True (--download) when online."
        )
    return root


def _load_idx(name: str, split: str, root, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    root = prepare_idx_dataset(name, root, download=download)
    cls = getattr(torchvision.datasets, _TV_FOLDER[name])
    ds = cls(str(root), train=(split == "train"), download=False)
    return ds.data.unsqueeze(1).contiguous(), ds.targets.long()  # uint8 (N, 1, 28, 28), (N,)


# --- 2-D point sets ------------------------------------------------------------------------------
# Conventions (scales, noise levels) follow the FFJORD / "toy_data" sets used throughout the
# score-based and flow literature; every set has roughly unit scale and is generated from a seed.


def _rand(n, generator, *shape):
    return torch.rand((n, *shape), generator=generator, dtype=torch.float64)


def _randn(n, generator, *shape):
    return torch.randn((n, *shape), generator=generator, dtype=torch.float64)


def swiss_roll(n: int, generator: torch.Generator | None = None, noise: float = 0.5) -> torch.Tensor:
    """Swiss roll in the plane, ``t ~ 1.5π (1 + 2U)``, ``x = (t cos t, t sin t) / 5 + noise/5 · N(0, I)``."""
    t = 1.5 * math.pi * (1 + 2 * _rand(n, generator))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1)
    return (x + noise * _randn(n, generator, 2)) / 5.0


def two_moons(n: int, generator: torch.Generator | None = None, noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaving half circles (as ``sklearn.datasets.make_moons``), centred and scaled ×2; labels = moon."""
    y = (torch.rand(n, generator=generator) < 0.5).long()
    a = math.pi * _rand(n, generator)
    upper = torch.stack([torch.cos(a), torch.sin(a)], 1)
    lower = torch.stack([1 - torch.cos(a), 0.5 - torch.sin(a)], 1)
    x = torch.where(y[:, None].bool(), lower, upper) + noise * _randn(n, generator, 2)
    return 2.0 * (x - torch.tensor([0.5, 0.25], dtype=torch.float64)), y


def eight_gaussians(n: int, generator: torch.Generator | None = None, radius: float = 2.0, std: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """8 isotropic Gaussians (std ``std``) on a circle of radius ``radius``; labels = mode."""
    y = torch.randint(8, (n,), generator=generator)
    ang = y.double() * (2 * math.pi / 8)
    return radius * torch.stack([torch.cos(ang), torch.sin(ang)], 1) + std * _randn(n, generator, 2), y


def checkerboard(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform on the 8 dark squares of a 4×4 checkerboard over ``[-4, 4]²`` (unit squares ×2)."""
    x1 = 4 * _rand(n, generator) - 2
    x2 = _rand(n, generator) - torch.randint(2, (n,), generator=generator).double() * 2
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], 1) * 2


def pinwheel(n: int, generator: torch.Generator | None = None, n_arms: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Pinwheel of ``n_arms`` curved arms (Johnson et al. 2016): radial std 0.3, tangential 0.05, rate 0.25."""
    rads = torch.linspace(0, 2 * math.pi, n_arms + 1, dtype=torch.float64)[:-1]
    y = torch.randint(n_arms, (n,), generator=generator)
    f = _randn(n, generator, 2) * torch.tensor([0.3, 0.05], dtype=torch.float64) + torch.tensor([1.0, 0.0], dtype=torch.float64)
    ang = rads[y] + 0.25 * torch.exp(f[:, 0])
    c, s = torch.cos(ang), torch.sin(ang)
    x = torch.stack([c * f[:, 0] - s * f[:, 1], s * f[:, 0] + c * f[:, 1]], 1)
    return 2 * x, y


def two_spirals(n: int, generator: torch.Generator | None = None, noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved Archimedean spirals, radius ``∝ √U``; labels = spiral."""
    r = torch.sqrt(_rand(n, generator)) * 540 * (2 * math.pi) / 360
    y = (torch.rand(n, generator=generator) < 0.5).long()
    sign = 1 - 2 * y.double()
    x = torch.stack([-torch.cos(r) * r, torch.sin(r) * r], 1) * sign[:, None]
    return (x + noise * 3 * _randn(n, generator, 2)) / 3, y


_POINT_SETS: dict[str, tuple[Callable, int, str]] = {
    "swiss_roll": (swiss_roll, 0, "2-D swiss roll (t in [1.5π, 4.5π], noise 0.1)"),
    "moons": (two_moons, 2, "2-D two moons (noise 0.1, scaled ×2), labels = moon"),
    "8gaussians": (eight_gaussians, 8, "2-D 8 Gaussians on a circle of radius 2 (std 0.2), labels = mode"),
    "checkerboard": (checkerboard, 0, "2-D uniform checkerboard on [-4, 4]²"),
    "pinwheel": (pinwheel, 5, "2-D pinwheel with 5 arms, labels = arm"),
    "spirals": (two_spirals, 2, "2-D two interleaved spirals, labels = spiral"),
}
# Split seeds: the same (seed, split) always gives the same points, and train/test never coincide.
_SPLIT_OFFSET = {"train": 0, "test": 1_000_003}
_POINTS_DEFAULT_N = {"train": 50_000, "test": 10_000}


# --- image sets -----------------------------------------------------------------------------------


def _digits_pixels(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8×8 digits as integers 0..16, ``(N, 1, 8, 8)``; fixed split (seed 0): 1500 train / 297 test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype("uint8")).unsqueeze(1)
    y = torch.from_numpy(d.target).long()
    if split == "all":
        return x, y
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    idx = perm[:1500] if split == "train" else perm[1500:]
    return x[idx], y[idx]


PHOTO_PATCH = 16
PHOTO_STRIDE = 4
PHOTO_TRAIN_FRACTION = 0.75


def sample_photos() -> list[torch.Tensor]:
    """scikit-learn's two bundled photos (``china.jpg``, ``flower.jpg``) downsampled 2× (antialiased) to
    ``uint8 (3, 213, 320)`` each — the source of ``photo_patches``."""
    from sklearn.datasets import load_sample_images

    out = []
    for img in load_sample_images().images:
        photo = torch.from_numpy(img.copy()).permute(2, 0, 1).unsqueeze(0).float()
        h, w = photo.shape[-2] // 2, photo.shape[-1] // 2
        photo = torch.nn.functional.interpolate(photo, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        out.append(photo.round().clamp(0, 255).to(torch.uint8)[0])
    return out


def photo_split_column(photo: torch.Tensor) -> int:
    """First column of a photo's held-out (``test``) part: the right ``1 - PHOTO_TRAIN_FRACTION`` of it."""
    return int(round(PHOTO_TRAIN_FRACTION * photo.shape[-1]))


def _photo_patches_pixels(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """16×16 RGB patches of :func:`sample_photos`, cut on a stride-4 grid.

    ``train`` takes the patches inside the left 75% of the columns of each photo, ``test`` those inside
    the right 25%, so no test pixel is seen in training. Labels: 0 = china, 1 = flower. 5,700 / 1,700 patches.
    """
    xs, ys = [], []
    for label, photo in enumerate(sample_photos()):
        h, w = photo.shape[-2:]
        cut = photo_split_column(photo)
        lo, hi = {"train": (0, cut), "test": (cut, w), "all": (0, w)}[split]
        cols = range(lo, hi - PHOTO_PATCH + 1, PHOTO_STRIDE)
        rows = range(0, h - PHOTO_PATCH + 1, PHOTO_STRIDE)
        patches = [photo[:, r : r + PHOTO_PATCH, c : c + PHOTO_PATCH] for r in rows for c in cols]
        xs.append(torch.stack(patches))
        ys.append(torch.full((len(patches),), label, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


def _pad_center(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = size - h, size - w
    return torch.nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of a float batch ``(N, C, H, W)`` to ``size × size``."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _resize_uint(x: torch.Tensor, size: int, levels: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = [_resize(x[i : i + 4096].float(), size).round().clamp(0, levels - 1).to(x.dtype) for i in range(0, len(x), 4096)]
    return torch.cat(out)


def _cifar10_pixels(split: str, root, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    root = Path(root).expanduser() if root is not None else default_data_root()
    try:
        ds = torchvision.datasets.CIFAR10(str(root), train=(split == "train"), download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        raise FileNotFoundError(
            f"cifar10: no CIFAR-10 files in {root / 'cifar-10-batches-py'} ({e}). To get them: pass download=True "
            f"(--download) when online, or unpack cifar-10-python.tar.gz into {root}."
        ) from None
    return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets).long()


class _FileImages(torch.utils.data.Dataset):
    """PIL images from a torchvision file dataset → uint8 ``(C, H, W)``, centre-cropped and resized."""

    def __init__(self, base, image_size: int, crop: int | None, channels: int, label_fn: Callable = lambda y: y):
        self.base, self.image_size, self.crop, self.channels, self.label_fn = base, image_size, crop, channels, label_fn

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        img, y = self.base[i]
        img = img.convert("RGB" if self.channels == 3 else "L")
        crop = self.crop if self.crop is not None else min(img.size)
        img = TF.center_crop(img, [crop, crop])
        img = TF.resize(img, [self.image_size, self.image_size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        return TF.pil_to_tensor(img), self.label_fn(y)


def _celeba_files(split: str, root, download: bool, image_size: int) -> _FileImages:
    root = Path(root).expanduser() if root is not None else default_data_root()
    tv_split = {"train": "train", "test": "test", "valid": "valid", "all": "all"}[split]
    try:
        base = torchvision.datasets.CelebA(str(root), split=tv_split, target_type="attr", download=download)
    except RuntimeError as e:
        raise FileNotFoundError(
            f"celeba: no CelebA files in {root / 'celeba'} ({e}). To get them: download img_align_celeba.zip and "
            f"list_attr_celeba.txt, identity_CelebA.txt, list_bbox_celeba.txt, list_landmarks_align_celeba.txt, "
            f"list_eval_partition.txt from the CelebA site into {root / 'celeba'} (unzip the images there), or "
            f"pass download=True (--download) when online."
        ) from None
    # Song et al. 2021 / NCSN: centre crop 140×140 of the aligned 178×218 faces, then resize.
    return _FileImages(base, image_size, 140, 3, label_fn=lambda y: y.long())


def _folder_files(root, split: str, image_size: int, channels: int) -> _FileImages:
    """``<root>/<split>/<class>/*`` if that folder exists; else ``<root>/<class>/*`` for ``train``/``all``."""
    if root is None:
        raise ValueError("dataset 'imagefolder' needs root=<folder with one sub-folder of images per class>")
    root = Path(root).expanduser()
    if (root / split).is_dir():
        root = root / split
    elif split not in ("train", "all"):
        raise FileNotFoundError(f"imagefolder: split {split!r} needs the folder {root / split} (with class sub-folders)")
    try:
        base = torchvision.datasets.ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as e:
        raise FileNotFoundError(
            f"imagefolder: no images found under {root} ({e}). Expected <root>/<class name>/<image>.png|jpg|...; "
            f"put images in at least one sub-folder."
        ) from None
    return _FileImages(base, image_size, None, channels)


# name → (info, description). ``shape`` is at the native resolution (``image_size`` overrides H, W).
_IMAGE_SETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", (1, 8, 8), 10, "image", 17, ("train", "test", "all"), "scikit-learn 8×8 digits (1,797 images; 0..16 → [0, 1]); fixed 1500/297 split"),
    "digits16": DatasetInfo("digits16", (1, 16, 16), 10, "image", 17, ("train", "test", "all"), "scikit-learn digits zero-padded to 16×16"),
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, "image", 256, ("train", "test"), "MNIST 28×28 (60,000 / 10,000); offline from shared data"),
    "fashion_mnist": DatasetInfo("fashion_mnist", (1, 28, 28), 10, "image", 256, ("train", "test"), "Fashion-MNIST 28×28 (60,000 / 10,000); offline from Debian dataset-fashion-mnist"),
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), 10, "image", 256, ("train", "test"), "CIFAR-10 32×32 (50,000 / 10,000) via torchvision"),
    "photo_patches": DatasetInfo("photo_patches", (3, 16, 16), 2, "image", 256, ("train", "test", "all"), "16×16 RGB patches of scikit-learn's two sample photos (offline); left 75% of each photo train (5,700), right 25% test (1,700)"),
    "celeba": DatasetInfo("celeba", (3, 64, 64), 0, "image-files", 256, ("train", "valid", "test", "all"), "CelebA faces, centre crop 140, resized (default 64×64) via torchvision"),
    "imagefolder": DatasetInfo("imagefolder", (3, 64, 64), -1, "image-files", 256, ("train", "test", "valid", "all"), "any folder of class sub-folders (torchvision ImageFolder), centre-cropped and resized; root/<split>/ if present"),
}


def dataset_names() -> list[str]:
    """All built-in data set names (2-D sets, oracle targets, image sets)."""
    return sorted(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """Shape, channels, classes, raw pixel levels and splits of a named data set."""
    if name in _IMAGE_SETS:
        return _IMAGE_SETS[name]
    if name in _POINT_SETS:
        _, k, desc = _POINT_SETS[name]
        return DatasetInfo(name, (2,), k, "points", 0, ("train", "test"), desc)
    if name in _ORACLE_TARGETS:
        gm = make_target(name)
        return DatasetInfo(name, tuple(gm.event_shape), gm.n_components, "points", 0, ("train", "test"), _ORACLE_TARGETS[name][1] + "; labels = component")
    raise ValueError(f"unknown dataset {name!r}; valid choices: {', '.join(dataset_names())}")


def _check_split(info: DatasetInfo, split: str) -> None:
    if split not in info.splits:
        raise ValueError(f"dataset {info.name!r} has no split {split!r}; valid splits: {', '.join(info.splits)}")


def _point_generator(seed: int, split: str, generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(seed + _SPLIT_OFFSET[split])


def get_pixels(
    name: str, split: str = "train", *, root: str | os.PathLike | None = None, image_size: int | None = None, n: int | None = None, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Raw integer pixels of an in-memory image set: ``(uint8 (N, C, H, W), labels (N,) or None)``.

    Values lie in ``{0, ..., levels - 1}`` with ``levels = dataset_info(name).levels`` (256, or 17 for
    the sklearn digits). This is the path for likelihoods in bits/dim: ``uniform_dequantize(pixels,
    levels=levels)`` gives ``[0, 1)`` data, then the scaler. ``image_size`` resizes (bilinear, rounded
    back to integers) or, for the digits, zero-pads. File-backed sets (CelebA, image folders) are read
    with ``get_dataset(..., raw=True)`` instead.
    """
    info = dataset_info(name)
    if info.kind != "image":
        kind = "a point set (continuous, no pixels)" if info.kind == "points" else "file-backed; use get_dataset(name, raw=True)"
        raise ValueError(f"get_pixels needs an in-memory image set ({', '.join(k for k, v in _IMAGE_SETS.items() if v.kind == 'image')}); {name!r} is {kind}")
    _check_split(info, split)
    if name in ("digits", "digits16"):
        x, y = _digits_pixels(split)
        size = image_size or info.shape[-1]
        x = _pad_center(x, size) if size >= 8 else _resize_uint(x, size, info.levels)
    else:
        if name in ("mnist", "fashion_mnist"):
            x, y = _load_idx(name, split, root, download)
        elif name == "photo_patches":
            x, y = _photo_patches_pixels(split)
        else:
            x, y = _cifar10_pixels(split, root, download)
        if n is not None:
            x, y = x[:n], y[:n]
        if image_size is not None:
            x = _resize_uint(x, image_size, info.levels)
    if n is not None:
        x, y = x[:n], y[:n]
    return x, y


def get_dataset(
    name: str,
    *,
    split: str = "train",
    root: str | os.PathLike | None = None,
    centered: bool = False,
    image_size: int | None = None,
    n: int | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    download: bool = False,
    random_flip: bool = False,
    raw: bool = False,
    labels: bool = True,
    channels: int = 3,
) -> torch.utils.data.Dataset:
    """A named data set whose items are ``(x,)`` or ``(x, y)``, with ``x`` in the model's range.

    Args:
        name: a key of :data:`DATASETS` (see :func:`dataset_names`).
        split: ``"train"`` / ``"test"`` (see ``dataset_info(name).splits``).
        root: data root for file-backed sets (default :func:`default_data_root`); for ``imagefolder``
            the folder itself.
        centered: images in ``[-1, 1]`` (:class:`CenteredScaler`) instead of ``[0, 1]``; ignored for
            point sets, which are returned as generated.
        image_size: resize images to ``image_size²`` (bilinear, antialiased; digits are zero-padded).
        n: keep the first ``n`` items (point sets: generate ``n``; default 50,000 train / 10,000 test).
        seed, generator: randomness of generated point sets (a split-dependent seed by default, so
            ``train`` and ``test`` differ and every call is reproducible).
        download: let torchvision download MNIST/Fashion-MNIST/CIFAR-10/CelebA when online.
        random_flip: apply :class:`RandomHorizontalFlip` per item (training augmentation).
        raw: items carry integer pixels (uint8, unscaled) for likelihoods; see :func:`get_pixels`.
        labels: include labels when the set has them (items ``(x, y)``); ``False`` gives ``(x,)``.
        channels: 1 or 3 for ``imagefolder``.

    In-memory sets return an :class:`ArrayDataset` (full tensors on ``.x`` / ``.y``). Missing files
    raise ``FileNotFoundError`` naming the expected location and how to obtain them.
    """
    info = dataset_info(name)
    _check_split(info, split)
    if n is not None and n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if info.kind == "points":
        if raw or random_flip:
            raise ValueError(f"{name!r} is a continuous point set: raw pixels and random_flip do not apply")
        gen = _point_generator(seed, split, generator)
        count = n if n is not None else _POINTS_DEFAULT_N[split]
        if name in _POINT_SETS:
            out = _POINT_SETS[name][0](count, gen)
            x, y = out if isinstance(out, tuple) else (out, None)
        else:
            x, y = make_target(name).sample_with_labels(count, gen, dtype=torch.float64)
        return ArrayDataset(x.float(), y if labels else None, info=info)

    scaler = make_scaler(centered)
    transform = RandomHorizontalFlip() if random_flip else None
    if info.kind == "image":
        x, y = get_pixels(name, split, root=root, image_size=image_size, n=n, download=download)
        if not raw:
            x = scaler(pixels_to_unit(x, info.levels))
        return ArrayDataset(x, y if labels and info.n_classes > 0 else None, transform=transform, info=info)

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    size = image_size or info.shape[-1]
    if name == "celeba":
        files = _celeba_files(split, root, download, size)
        has_labels = False  # 40 binary attributes are not class labels; use the torchvision dataset for them
    else:
        files = _folder_files(root, split, size, channels)
        has_labels = True
    n_classes = len(files.base.classes) if name == "imagefolder" else info.n_classes
    if n is not None:
        files = torch.utils.data.Subset(files, range(min(n, len(files))))
    shape = (3 if name == "celeba" else channels, size, size)
    info = DatasetInfo(info.name, shape, n_classes, info.kind, info.levels, info.splits, info.description)
    scale = None if raw else (lambda p: scaler(pixels_to_unit(p, 256)))
    return _MappedDataset(files, scale, transform, labels and has_labels, info)


def dataset_tensors(ds: torch.utils.data.Dataset, n: int | None = None, *, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All (or the first ``n``) items of a dataset as stacked tensors ``(x, y or None)``."""
    if isinstance(ds, ArrayDataset) and ds.transform is None:
        return (ds.x[:n], None if ds.y is None else ds.y[:n])
    m = len(ds) if n is None else min(n, len(ds))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(m)), batch_size=256)
    xs, ys = [], []
    for batch in tqdm(loader, desc="loading", disable=not progress):
        xs.append(batch[0])
        if len(batch) > 1:
            ys.append(torch.as_tensor(batch[1]))
    return torch.cat(xs), (torch.cat(ys) if ys else None)


_ORACLE_TARGETS = _ANALYTIC_TARGETS


#: name → (``get_dataset`` bound to the name, description); the registry re-exports it.
DATASETS: dict[str, tuple[Callable[..., torch.utils.data.Dataset], str]] = {}
for _name in list(_POINT_SETS) + list(_ORACLE_TARGETS) + list(_IMAGE_SETS):
    DATASETS[_name] = (functools.partial(get_dataset, _name), _POINT_SETS[_name][2] if _name in _POINT_SETS else (_ORACLE_TARGETS[_name][1] + " (oracle target; labels = component)" if _name in _ORACLE_TARGETS else _IMAGE_SETS[_name].description))
del _name
