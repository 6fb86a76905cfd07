"""Datasets: shapes, ranges, labels, reproducibility, offline MNIST/Fashion-MNIST with official md5s,
raw pixels, scalers, dequantization, flips and clear errors for missing files."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

from sde_lab import data as D
from sde_lab.analytic import make_target
from sde_lab.data import (
    CenteredScaler,
    RandomHorizontalFlip,
    ZeroOneScaler,
    dataset_info,
    get_dataset,
    get_pixels,
    make_scaler,
    prepare_idx_dataset,
    uniform_dequantize,
)

POINT_SETS = ["swiss_roll", "moons", "8gaussians", "checkerboard", "pinwheel", "spirals"]
MNIST_AVAILABLE = all((D.shared_data_dir() / "MNIST" / "raw" / f"{f}.gz").is_file() for f in D._IDX_MD5["mnist"])
FMNIST_AVAILABLE = all((D.SYSTEM_FASHION_MNIST_DIR / f"{f}.gz").is_file() for f in D._IDX_MD5["fashion_mnist"])
needs_mnist = pytest.mark.skipif(not MNIST_AVAILABLE, reason=f"shared MNIST files absent from {D.shared_data_dir() / 'MNIST' / 'raw'}")
needs_fmnist = pytest.mark.skipif(
    not FMNIST_AVAILABLE, reason=f"Fashion-MNIST absent from {D.SYSTEM_FASHION_MNIST_DIR}: apt-get install -y dataset-fashion-mnist"
)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


# --- 2-D sets and oracle targets ---------------------------------------------------------------


@pytest.mark.parametrize("name", POINT_SETS)
def test_point_sets_shape_labels_and_seeds(name):
    info = dataset_info(name)
    ds = get_dataset(name, n=2000)
    assert len(ds) == 2000 and ds.x.shape == (2000, 2) and ds.x.dtype == torch.float32
    assert torch.isfinite(ds.x).all() and 0.5 < ds.x.std().item() < 3.0  # unit scale, not collapsed
    item = ds[0]
    if info.n_classes:
        assert len(item) == 2 and set(ds.y.tolist()) == set(range(info.n_classes))
    else:
        assert len(item) == 1
    assert torch.equal(get_dataset(name, n=2000).x, ds.x)  # reproducible
    assert not torch.equal(get_dataset(name, n=2000, seed=1).x, ds.x)
    assert not torch.equal(get_dataset(name, n=2000, split="test").x, ds.x)  # splits differ


def test_point_set_geometry():
    """Each set lies where its definition puts it (teeth: a wrong generator breaks these)."""
    x, y = get_dataset("8gaussians", n=4000).x.double(), get_dataset("8gaussians", n=4000).y
    ang = y.double() * 2 * math.pi / 8
    centre = 2 * torch.stack([torch.cos(ang), torch.sin(ang)], 1)
    assert (x - centre).std().item() == pytest.approx(0.2, rel=0.1)
    cb = get_dataset("checkerboard", n=4000).x
    cell = (torch.floor(cb[:, 0] / 2) + torch.floor(cb[:, 1] / 2)) % 2
    assert cb.abs().max() <= 4 and (cell == 0).all()  # only the dark squares
    m = get_dataset("moons", n=4000)
    assert m.x[m.y == 0, 1].mean() > m.x[m.y == 1, 1].mean()  # upper moon above lower


@pytest.mark.parametrize("name", ["ring", "aniso", "gmm16", "gmm8x8"])
def test_oracle_targets_with_component_labels(name):
    gm = make_target(name)
    ds = get_dataset(name, n=4000)
    assert ds.x.shape == (4000, *gm.event_shape) and dataset_info(name).n_classes == gm.n_components
    x, k = ds.x.double().flatten(1), ds.y
    # labels are the generating components: samples sit at their component's mean
    err = (x - gm.means[k]) / gm.stds[k]
    assert err.mean().abs().item() < 0.05 and err.std().item() == pytest.approx(1.0, abs=0.05)


# --- digits ---------------------------------------------------------------------------------------


def test_digits_shapes_ranges_labels():
    tr, te, all_ = get_dataset("digits"), get_dataset("digits", split="test"), get_dataset("digits", split="all")
    assert len(tr) == 1500 and len(te) == 297 and len(all_) == 1797
    assert tr.x.shape == (1500, 1, 8, 8) and tr.x.min() == 0.5 / 17 and tr.x.max() == 16.5 / 17  # bin centres
    assert set(tr.y.tolist()) == set(range(10))
    from sklearn.datasets import load_digits

    raw = load_digits()
    assert torch.allclose(all_.x[:, 0].double(), (torch.from_numpy(raw.images) + 0.5) / 17)  # 0..16 → bin centres
    c = get_dataset("digits", centered=True)
    assert -1 < c.x.min() < -0.9 and 0.9 < c.x.max() < 1 and torch.allclose(CenteredScaler().inverse(c.x), tr.x)
    p = get_dataset("digits16")
    assert p.x.shape == (1500, 1, 16, 16) and torch.equal(p.x[:, :, 4:12, 4:12], tr.x)
    assert (p.x[:, :, :4] == 0.5 / 17).all()  # the padding is pixel 0
    px, py = get_pixels("digits", "train")
    assert px.dtype == torch.uint8 and px.max() == 16 and dataset_info("digits").levels == 17 and torch.equal(py, tr.y)


def test_disjoint_digit_splits():
    tr, te = get_dataset("digits").x.flatten(1), get_dataset("digits", split="test").x.flatten(1)
    assert len(torch.cat([tr, te]).unique(dim=0)) >= len(tr) + len(te) - 20  # (a few duplicate images exist)


def test_photo_patches_rgb_splits_are_disjoint_regions():
    photos = D.sample_photos()
    assert [tuple(p.shape) for p in photos] == [(3, 213, 320)] * 2 and all(p.dtype == torch.uint8 for p in photos)
    tr, te = get_dataset("photo_patches", centered=True), get_dataset("photo_patches", split="test", centered=True)
    assert tr.x.shape == (5700, 3, 16, 16) and te.x.shape == (1700, 3, 16, 16)
    assert -1 <= tr.x.min() < 0 < tr.x.max() <= 1 and torch.equal(tr.y.bincount(), torch.tensor([2850, 2850]))
    assert dataset_info("photo_patches").shape == (3, 16, 16) and dataset_info("photo_patches").levels == 256
    # the test patches come from the held-out right part: none of them occurs among the training patches
    px_tr, _ = get_pixels("photo_patches", "train")
    px_te, _ = get_pixels("photo_patches", "test")
    both = torch.cat([px_tr.flatten(1), px_te.flatten(1)])
    assert len(both.unique(dim=0)) == len(both)
    # and they are the photo's pixels: the first test patch of china starts at the split column
    cut = D.photo_split_column(photos[0])
    assert torch.equal(px_te[0], photos[0][:, :16, cut : cut + 16])
    # colour images: the channels differ (not grey replicated)
    assert (tr.x[:, 0] - tr.x[:, 2]).abs().mean() > 0.05


# --- MNIST / Fashion-MNIST offline ----------------------------------------------------------------


def _md5(p):
    return hashlib.md5(p.read_bytes()).hexdigest()


@needs_mnist
def test_mnist_offline_md5_and_counts(data_root):
    root = prepare_idx_dataset("mnist", data_root)
    raw = root / "MNIST" / "raw"
    for f, md5 in D._IDX_MD5["mnist"].items():
        assert _md5(raw / f) == md5
    assert D._IDX_MD5["mnist"]["t10k-images-idx3-ubyte"] == "2646ac647ad5339dbf082846283269ea"  # shared/data/README
    te = get_dataset("mnist", split="test", root=data_root)
    assert te.x.shape == (10_000, 1, 28, 28) and te.x.min() == 0.5 / 256 and te.x.max() == 255.5 / 256
    assert torch.bincount(te.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # official counts
    px, _ = get_pixels("mnist", "test", root=data_root)
    assert px.dtype == torch.uint8 and torch.equal((px.float() + 0.5) / 256, te.x)
    tr_pixels, tr_y = get_pixels("mnist", "train", root=data_root)
    assert tr_pixels.shape == (60_000, 1, 28, 28) and len(tr_y) == 60_000
    small = get_dataset("mnist", split="test", root=data_root, image_size=32, n=100, centered=True)
    assert small.x.shape == (100, 1, 32, 32) and small.x.min() >= -1 and small.x.max() <= 1


@needs_mnist
def test_mnist_corrupt_cache_is_repaired(data_root):
    root = prepare_idx_dataset("mnist", data_root)
    f = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    f.write_bytes(b"garbage")
    prepare_idx_dataset("mnist", data_root)
    assert _md5(f) == D._IDX_MD5["mnist"]["t10k-labels-idx1-ubyte"]


@needs_fmnist
def test_fashion_mnist_offline(data_root):
    te = get_dataset("fashion_mnist", split="test", root=data_root)
    assert te.x.shape == (10_000, 1, 28, 28) and torch.bincount(te.y).tolist() == [1000] * 10
    for f, md5 in D._IDX_MD5["fashion_mnist"].items():
        assert _md5(data_root / "FashionMNIST" / "raw" / f) == md5


# --- errors ---------------------------------------------------------------------------------------


def test_missing_files_say_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("SDE_LAB_SHARED_DATA", str(tmp_path / "no_shared"))
    monkeypatch.setattr(D, "SYSTEM_FASHION_MNIST_DIR", tmp_path / "no_system")
    with pytest.raises(FileNotFoundError, match=r"(?s)MNIST/raw.*shared.*download=True"):
        get_dataset("mnist", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"(?s)FashionMNIST/raw.*apt-get install -y dataset-fashion-mnist"):
        get_dataset("fashion_mnist", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"(?s)cifar-10-batches-py.*download=True"):
        get_dataset("cifar10", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"(?s)celeba.*img_align_celeba"):
        get_dataset("celeba", root=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images found"):
        get_dataset("imagefolder", root=tmp_path / "empty")


def test_bad_names_and_options_list_choices():
    with pytest.raises(ValueError, match="valid choices: .*mnist"):
        get_dataset("mnistt")
    with pytest.raises(ValueError, match="valid splits: train, test"):
        get_dataset("moons", split="val")
    with pytest.raises(ValueError, match="continuous point set"):
        get_dataset("moons", raw=True)


def test_image_folder(tmp_path):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            arr = torch.randint(0, 256, (40, 50, 3), generator=g, dtype=torch.uint8).numpy()
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
    ds = get_dataset("imagefolder", root=tmp_path, image_size=16, centered=True)
    assert len(ds) == 6 and ds.info.n_classes == 2 and ds.info.shape == (3, 16, 16)
    x, y = ds[4]
    assert x.shape == (3, 16, 16) and -1 <= x.min() and x.max() <= 1 and y == 1
    raw = get_dataset("imagefolder", root=tmp_path, image_size=16, raw=True)
    assert raw[0][0].dtype == torch.uint8 and torch.allclose(make_scaler(True)((raw[0][0].float() + 0.5) / 256), ds[0][0])
    grey = get_dataset("imagefolder", root=tmp_path, image_size=8, channels=1, labels=False, n=2)
    assert len(grey) == 2 and len(grey[0]) == 1 and grey[0][0].shape == (1, 8, 8)


# --- scalers, dequantization, flips ---------------------------------------------------------------


@pytest.mark.parametrize("scaler", [ZeroOneScaler(), CenteredScaler()])
def test_scalers_round_trip(scaler):
    x = torch.rand(64, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(scaler.inverse(scaler(x)), x, atol=1e-6)
    y = scaler(torch.tensor([0.0, 1.0]))
    assert y.tolist() == [scaler.low, scaler.high]


def test_uniform_dequantize_range_and_mean():
    g = torch.Generator().manual_seed(0)
    px = torch.randint(0, 256, (2000, 1, 4, 4), generator=g, dtype=torch.uint8)
    u = uniform_dequantize(px, generator=g)
    assert u.min() >= 0 and u.max() < 1
    off = u.double() * 256 - px.double()
    assert off.min() >= 0 and off.max() <= 1  # stays within its own bin (float32: upper edge may round up)
    assert ((u * 256 - px.float()).mean() - 0.5).abs() < 0.01
    with pytest.raises(ValueError, match="integer pixel values"):
        uniform_dequantize(px.float() / 255)
    d = get_pixels("digits", "train")[0]
    ud = uniform_dequantize(d, generator=g, levels=17)
    off = ud.double() * 17 - d.double()
    assert off.min() >= 0 and off.max() <= 1


def test_random_horizontal_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5).repeat(500, 1, 1, 1)
    out = RandomHorizontalFlip(0.5)(x, generator=g)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped | kept).all() and 0.4 < flipped.float().mean() < 0.6
    assert torch.equal(RandomHorizontalFlip(1.0)(x[0]), x[0].flip(-1)) and torch.equal(RandomHorizontalFlip(0.0)(x[0]), x[0])
    ds = get_dataset("digits", random_flip=True)
    assert ds[0][0].shape == (1, 8, 8)
    with pytest.raises(ValueError):
        RandomHorizontalFlip(1.5)


def test_one_pixel_scale_serves_training_and_the_likelihood():
    """Training data are the centres of the dequantization bins: E_u[(k + u)/L] = (k + ½)/L = the training value,
    for the 17 levels of the 8×8 digits as for 8-bit images (v1 trained on k/(L − 1), the bins' edges at k = 0
    and k = L − 1); samples map back to their pixel."""
    from sde_lab.data import get_pixels, pixels_to_unit, unit_to_pixels

    for levels in (17, 256):
        k = torch.arange(levels).repeat(2000)
        u_mean = uniform_dequantize(k, torch.Generator().manual_seed(0), levels=levels).double().reshape(2000, levels).mean(0)
        torch.testing.assert_close(u_mean, pixels_to_unit(torch.arange(levels), levels).double(), rtol=0, atol=0.02 / levels)
        assert torch.equal(unit_to_pixels(pixels_to_unit(torch.arange(levels), levels), levels).long(), torch.arange(levels))
        assert torch.equal(unit_to_pixels(uniform_dequantize(k.double(), levels=levels), levels).long(), k)
        assert not torch.allclose(pixels_to_unit(torch.arange(levels), levels), torch.arange(levels) / (levels - 1))
    x = get_dataset("digits", split="test", centered=False, labels=False).x
    pixels, _ = get_pixels("digits", "test")
    torch.testing.assert_close(x, pixels_to_unit(pixels, 17).reshape(x.shape))
