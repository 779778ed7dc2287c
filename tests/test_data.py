"""Data sources and splits: determinism, layout errors, empty splits."""

from __future__ import annotations

import numpy as np
import pytest

from metaerr_edge.data import SplitConfig, load_dataset, make_splits
from metaerr_edge.errors import ConfigError, DataError


def test_digits_is_embedded_uint8_nchw():
    ds = load_dataset("digits")
    assert ds.train.images.shape == (1797, 1, 8, 8)
    assert ds.train.images.dtype == np.uint8 and ds.train.images.max() == 255
    assert ds.test is None and ds.classes == tuple("0123456789")


def test_splits_are_disjoint_deterministic_and_seeded():
    ds = load_dataset("digits")
    a, b = make_splits(ds, SplitConfig(seed=3)), make_splits(ds, SplitConfig(seed=3))
    c = make_splits(ds, SplitConfig(seed=4))
    for name in ("base_train", "meta_train", "calib", "test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.calib, c.calib)
    parts = [a.base_train, a.meta_train, a.calib, a.test]  # digits: test comes from the pool
    allidx = np.concatenate(parts)
    assert len(allidx) == len(np.unique(allidx)) == 1797
    sizes = a.sizes()
    assert sizes["test"] == round(0.2 * 1797) and sizes["calib"] == round(0.1 * (1797 - sizes["test"]))


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'.*digits"):
        load_dataset("imagenet")


def test_missing_root_names_the_expected_layout(tmp_path):
    with pytest.raises(DataError, match=r"MNIST/raw.*train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(DataError, match="needs a data root"):
        load_dataset("fashion-mnist", None)
    with pytest.raises(DataError, match=r"CIFAR10-jpeg/train/<class>"):
        load_dataset("cifar10", tmp_path)


def test_empty_split_is_a_clear_error():
    ds = load_dataset("digits")
    with pytest.raises(DataError, match=r"came out empty"):
        make_splits(ds, SplitConfig(max_pool=3))
    with pytest.raises(ConfigError, match="leaves no data"):
        SplitConfig(meta_fraction=0.6, calib_fraction=0.5)


def test_npz_and_imagefolder_sources(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 12, 12), dtype=np.uint8)
    np.savez(tmp_path / "toy.npz", x_train=x, y_train=np.arange(20) % 2)
    ds = load_dataset(f"npz:{tmp_path / 'toy.npz'}")
    assert ds.train.images.shape == (20, 1, 12, 12) and ds.classes == ("0", "1")
    for cls in ("cat", "dog"):
        (tmp_path / "folder" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(tmp_path / "folder" / cls / f"{i}.png")
    ds = load_dataset(f"imagefolder:{tmp_path / 'folder'}")
    assert ds.train.images.shape == (6, 3, 10, 10) and ds.classes == ("cat", "dog")
    np.testing.assert_array_equal(ds.train.labels, [0, 0, 0, 1, 1, 1])
    (tmp_path / "bad.npz").write_bytes(b"")
    np.savez(tmp_path / "bad.npz", images=x)
    with pytest.raises(DataError, match="expected x_train and y_train"):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")


@pytest.mark.datasets
def test_shared_mnist_and_cifar_layouts(shared_datasets):
    ds = load_dataset("mnist", shared_datasets)
    assert ds.train.images.shape == (60000, 1, 28, 28) and ds.test.images.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.test.labels).sum() == 10000


def test_cache_dir_honours_metaerr_edge_cache_then_xdg_then_home(tmp_path, monkeypatch):
    from metaerr_edge._fileio import cache_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("METAERR_EDGE_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "mine" and cache_dir("tensorrt") == tmp_path / "mine" / "tensorrt"
    monkeypatch.setenv("METAERR_EDGE_CACHE", "")  # empty counts as unset
    assert cache_dir("tensorrt") == tmp_path / "xdg" / "metaerr-edge" / "tensorrt"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec: a relative path is ignored
    assert cache_dir() == tmp_path / "home" / ".cache" / "metaerr-edge"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("METAERR_EDGE_CACHE")
    assert cache_dir("a", "b") == tmp_path / "home" / ".cache" / "metaerr-edge" / "a" / "b"
    assert not (tmp_path / "home").exists()  # a path only: nothing is created


def test_imagefolder_cache_lives_in_the_one_cache_dir(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.delenv("METAERR_EDGE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    rng = np.random.default_rng(1)
    for cls in ("cat", "dog"):
        (tmp_path / "folder" / cls).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(tmp_path / "folder" / cls / "0.png")
    ds = load_dataset(f"imagefolder:{tmp_path / 'folder'}")
    (cached,) = (tmp_path / "xdg" / "metaerr-edge").glob("imagefolder-3-*.npz")
    with np.load(cached) as z:
        np.testing.assert_array_equal(z["images"], ds.train.images)
