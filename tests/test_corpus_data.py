"""The bad-data corpus: every malformed dataset ends in a DataError that says what was expected, or
loads correctly. Tiny npz files, IDX files and image folders are built in tmp_path (the whole file
runs in a few seconds).

Each row of ``CORPUS`` is ``(id, build, expect)``: ``build(tmp_path)`` writes the input and returns
``(dataset_name, root)``; ``expect`` is a string (a ``DataError`` whose message contains it) or a
callable ``check(ds)`` (the dataset loads and ``check`` passes).
"""

from __future__ import annotations

import gzip
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from metaerr_edge.data import load_dataset
from metaerr_edge.data import imagefolder, sources
from metaerr_edge.errors import DataError

RNG = np.random.default_rng(0)

# ------------------------------------------------------------------------------------ builders

X8 = RNG.integers(0, 256, (12, 8, 8), dtype=np.uint8)
Y3 = np.arange(12) % 3


def npz(**arrays):
    """A builder writing ``d.npz`` from ``arrays`` (x_train/y_train default to a valid 3-class set)."""
    arrays = {"x_train": X8, "y_train": Y3, **arrays}
    arrays = {k: v for k, v in arrays.items() if v is not None}

    def build(tmp: Path):
        np.savez(tmp / "d.npz", **arrays)
        return f"npz:{tmp / 'd.npz'}", None

    return build


def raw_file(data: bytes | Callable[[], bytes], name: str = "d.npz"):
    """A builder writing ``data`` (or ``data()``) as the npz file."""

    def build(tmp: Path):
        (tmp / name).write_bytes(data() if callable(data) else data)
        return f"npz:{tmp / name}", None

    return build


def valid_npz_bytes() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x_train=X8, y_train=Y3)
    return buf.getvalue()


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    head = bytes([0, 0, type_code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + np.ascontiguousarray(arr, np.uint8).tobytes()


TR_X, TR_Y = RNG.integers(0, 256, (12, 5, 5), dtype=np.uint8), (np.arange(12) % 10).astype(np.uint8)
TE_X, TE_Y = RNG.integers(0, 256, (6, 5, 5), dtype=np.uint8), (np.arange(6) % 10).astype(np.uint8)
TRX, TRY, TEX, TEY = "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
IDX = {TRX: idx_bytes(TR_X), TRY: idx_bytes(TR_Y), TEX: idx_bytes(TE_X), TEY: idx_bytes(TE_Y)}


def mnist(folder: str = "MNIST", name: str = "mnist", **overrides):
    """A builder writing the four IDX files under ``<tmp>/<folder>/raw``; ``overrides`` replace (bytes),
    delete (None) or add files; keys use ``_`` for ``-`` and ``__gz`` for ``.gz``."""
    files = dict(IDX)
    for key, value in overrides.items():
        files[key.replace("__gz", ".gz").replace("_", "-")] = value

    def build(tmp: Path):
        raw = tmp / folder / "raw"
        raw.mkdir(parents=True)
        for fname, data in files.items():
            if isinstance(data, str) and data == "<dir>":
                (raw / fname).mkdir()
            elif data is not None:
                (raw / fname).write_bytes(data)
        return name, tmp

    return build


def img(h: int = 6, w: int = 6, c: int = 3, seed: int = 0) -> np.ndarray:
    shape = (h, w) if c == 1 else (h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_image(path: Path, value) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if value is None:  # an empty folder
        path.mkdir(parents=True, exist_ok=True)
    elif isinstance(value, bytes):
        path.write_bytes(value)
    else:
        Image.fromarray(value).save(path)


GOOD_FOLDER = {
    "train/cat/0.png": img(seed=1), "train/cat/1.png": img(seed=2),
    "train/dog/0.png": img(seed=3), "train/dog/1.png": img(seed=4),
    "test/cat/0.png": img(seed=5), "test/dog/0.png": img(seed=6),
}


def folder(spec: dict | None = None, drop: tuple[str, ...] = (), **extra):
    """A builder writing an ImageFolder under ``<tmp>/data`` (GOOD_FOLDER, minus ``drop``, plus ``spec``)."""
    layout = {k: v for k, v in GOOD_FOLDER.items() if not k.startswith(drop)} if drop else dict(GOOD_FOLDER)
    if spec is not None:
        layout.update(spec)

    def build(tmp: Path):
        for rel, value in layout.items():
            write_image(tmp / "data" / rel, value)
        (tmp / "data").mkdir(exist_ok=True)
        return f"imagefolder:{tmp / 'data'}", None

    return build


def cifar_jpeg(spec: dict):
    def build(tmp: Path):
        for rel, value in spec.items():
            write_image(tmp / "CIFAR10-jpeg" / rel, value)
        return "cifar10", tmp

    return build


def png_bytes(value: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(value).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------- checks


def labels_are(train, test=None, classes=None):
    def check(ds):
        np.testing.assert_array_equal(ds.train.labels, train)
        assert ds.train.labels.dtype == np.int64
        if test is not None:
            np.testing.assert_array_equal(ds.test.labels, test)
        if classes is not None:
            assert ds.classes == tuple(classes)

    return check


def images_are(train, test=None):
    def check(ds):
        assert ds.train.images.dtype == np.uint8
        np.testing.assert_array_equal(ds.train.images, train)
        if test is not None:
            np.testing.assert_array_equal(ds.test.images, test)

    return check


def shape_is(train, test=None, classes=None):
    def check(ds):
        assert ds.train.images.shape == train
        if test is not None:
            assert ds.test.images.shape == test
        if classes is not None:
            assert ds.classes == tuple(classes)

    return check


STRUCT = np.zeros((12, 8, 8), dtype=[("r", np.uint8), ("g", np.uint8)])
F01 = RNG.random((12, 8, 8)).astype(np.float32)
OBJ = np.empty(12, dtype=object)
OBJ[:] = [X8[i] for i in range(12)]

CORPUS = [
    # ---- npz: labels
    ("npz-label-minus-one", npz(y_train=np.r_[-1, Y3[1:]]), "Negative labels"),
    ("npz-label-minus-one-values-shown", npz(y_train=np.r_[-1, Y3[1:]]), "outside 0..2: [-1]"),
    ("npz-float-label-1.5", npz(y_train=np.r_[1.5, Y3[1:]].astype(float)), "non-integer label(s) [1.5]"),
    ("npz-float-label-nan", npz(y_train=np.r_[np.nan, Y3[1:]]), "non-integer label(s) [nan]"),
    ("npz-float-labels-whole-accepted", npz(y_train=Y3.astype(np.float64)), labels_are(Y3, classes="012")),
    ("npz-float-label-huge", npz(y_train=np.r_[1e30, Y3[1:]]), "label values"),
    ("npz-labels-0-8-and-1000", npz(y_train=np.r_[np.arange(9), 1000, 0, 1]), "991 of 1001 classes have no training image: ['9', '10'"),
    ("npz-labels-gap", npz(y_train=np.where(Y3 == 1, 3, Y3)), "1 of 4 classes have no training image: ['1'] (indexes [1]; labels found in y_train: [0, 2, 3])"),
    ("npz-more-classes-than-names", npz(classes=np.array(["a", "b"])), "more classes than class names"),
    ("npz-names-unused", npz(classes=np.array(["a", "b", "c", "d"])), "1 of 4 classes have no training image: ['d']"),
    ("npz-single-class", npz(y_train=np.zeros(12, int)), "at least 2 classes"),
    ("npz-bool-labels", npz(y_train=Y3 > 0), "y_train has dtype bool"),
    ("npz-string-labels", npz(y_train=np.array(["a", "b", "c"] * 4)), "y_train has dtype <U1"),
    ("npz-one-hot-labels", npz(y_train=np.eye(3)[Y3]), "one-hot"),
    ("npz-column-labels-accepted", npz(y_train=Y3[:, None]), labels_are(Y3)),
    ("npz-uint8-labels-accepted", npz(y_train=Y3.astype(np.uint8)), labels_are(Y3)),
    ("npz-labels-length", npz(y_train=Y3[:11]), "x_train holds 12 images but y_train holds 11 labels"),
    ("npz-test-label-beyond-names", npz(x_test=X8[:3], y_test=np.array([0, 1, 5]), classes=np.array(["a", "b", "c"])),
     "1 label(s) in y_test lie outside 0..2: [5]"),
    ("npz-test-only-class", npz(x_test=X8[:3], y_test=np.array([0, 1, 3])), "1 of 4 classes have no training image: ['3']"),
    # ---- npz: images
    ("npz-x-test-other-size", npz(x_test=X8[:4, :6, :6], y_test=Y3[:4]), "x_test are 1x6x6 (C x H x W) but x_train are 1x8x8"),
    ("npz-x-test-other-channels", npz(x_test=np.repeat(X8[:4, None], 3, 1), y_test=Y3[:4]), "x_test are 3x8x8"),
    ("npz-object-images", npz(x_train=OBJ), "object arrays are refused"),
    ("npz-object-labels", npz(y_train=np.array(list(Y3), dtype=object)), "'y_train' cannot be read"),
    ("npz-structured-images", npz(x_train=STRUCT), "x_train has dtype"),
    ("npz-complex-images", npz(x_train=X8.astype(np.complex64)), "x_train has dtype complex64"),
    ("npz-bool-images", npz(x_train=X8 > 128), "x_train has dtype bool"),
    ("npz-string-images", npz(x_train=np.array(["x"] * 12)), "x_train has dtype <U1"),
    ("npz-float-images-0-255", npz(x_train=X8.astype(np.float32)), "must lie in [0, 1]"),
    ("npz-float-images-negative", npz(x_train=F01 - 0.5), "must lie in [0, 1]"),
    ("npz-float-images-nan", npz(x_train=np.where(X8 > 250, np.nan, F01)), "NaN or infinite"),
    ("npz-float-images-inf", npz(x_train=np.where(X8 > 250, np.inf, F01)), "NaN or infinite"),
    ("npz-float-images-accepted", npz(x_train=F01), images_are(np.round(F01 * 255).astype(np.uint8)[:, None])),
    ("npz-float16-images-accepted", npz(x_train=F01.astype(np.float16)), shape_is((12, 1, 8, 8))),
    ("npz-int64-images-accepted", npz(x_train=X8.astype(np.int64)), images_are(X8[:, None])),
    ("npz-int-images-300", npz(x_train=X8.astype(np.int32) + 100), "must be 0-255 levels"),
    ("npz-nhwc-rgb-accepted", npz(x_train=RNG.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)), shape_is((12, 3, 8, 8))),
    ("npz-nchw-rgb-accepted", npz(x_train=RNG.integers(0, 256, (12, 3, 8, 8), dtype=np.uint8)), shape_is((12, 3, 8, 8))),
    ("npz-four-channels", npz(x_train=RNG.integers(0, 256, (12, 8, 8, 4), dtype=np.uint8)), "neither axis 1"),
    ("npz-2d-images", npz(x_train=X8.reshape(12, 64)), "x_train has 2 dimension(s)"),
    ("npz-5d-images", npz(x_train=X8.reshape(12, 1, 1, 8, 8)), "x_train has 5 dimension(s)"),
    ("npz-zero-pixel-images", npz(x_train=np.zeros((12, 0, 8), np.uint8)), "0x8 pixels"),
    ("npz-empty-train", npz(x_train=X8[:0], y_train=Y3[:0]), "x_train holds no images"),
    ("npz-empty-test", npz(x_test=X8[:0], y_test=Y3[:0]), "x_test holds no images"),
    # ---- npz: classes and arrays
    ("npz-classes-ints", npz(classes=np.arange(3)), "classes has dtype int64"),
    ("npz-classes-2d", npz(classes=np.array([["a", "b", "c"]])), "classes has dtype <U1 and shape (1, 3)"),
    ("npz-classes-duplicate", npz(classes=np.array(["a", "b", "a"])), "must be unique, ['a'] appear"),
    ("npz-classes-empty-name", npz(classes=np.array(["a", "", "c"])), "index [1] are empty"),
    ("npz-classes-object", npz(classes=np.array(["a", "b", "c"], dtype=object)), "'classes' cannot be read"),
    ("npz-classes-bytes-accepted", npz(classes=np.array([b"a", b"b", b"c"])), labels_are(Y3, classes="abc")),
    ("npz-classes-accepted", npz(classes=np.array(["cat", "dog", "owl"])), labels_are(Y3, classes=("cat", "dog", "owl"))),
    ("npz-extra-array-ignored", npz(x_val=X8), labels_are(Y3)),
    ("npz-no-y-train", npz(y_train=None), "expected x_train and y_train"),
    ("npz-x-test-without-y-test", npz(x_test=X8), "has x_test but no y_test"),
    ("npz-y-test-without-x-test", npz(y_test=Y3), "has y_test but no x_test"),
    # ---- npz: the file itself
    ("npz-text-file", raw_file(b"x_train,y_train\n1,2\n"), "is not a readable .npz archive"),
    ("npz-empty-file", raw_file(b""), "is not a readable .npz archive"),
    ("npz-is-npy", raw_file(lambda: (lambda b: (np.save(b, X8), b.getvalue())[1])(io.BytesIO())), "is a single .npy array"),
    ("npz-truncated-zip", raw_file(lambda: valid_npz_bytes()[: len(valid_npz_bytes()) // 2]), "is not a readable .npz archive"),
    ("npz-corrupt-member", raw_file(lambda: (lambda b: b[:200] + bytes(x ^ 0xFF for x in b[200:400]) + b[400:])(valid_npz_bytes())),
     "d.npz"),
    ("npz-pickle", raw_file(lambda: __import__("pickle").dumps({"x_train": X8})), "is not a readable .npz archive"),
    ("npz-path-is-folder", lambda tmp: (f"npz:{tmp}", None), "is a folder"),
    ("npz-missing-file", lambda tmp: (f"npz:{tmp / 'nope.npz'}", None), "does not exist"),
    ("npz-valid", npz(x_test=X8[:3], y_test=Y3[:3]), images_are(X8[:, None], X8[:3, None])),
    # ---- MNIST / Fashion-MNIST IDX files
    ("mnist-valid", mnist(), images_are(TR_X[:, None], TE_X[:, None])),
    ("mnist-valid-labels", mnist(), labels_are(TR_Y, TE_Y, sources.MNIST_CLASSES)),
    ("fashion-mnist-valid", mnist("FashionMNIST", "fashion-mnist"), labels_are(TR_Y, TE_Y, sources.FASHION_MNIST_CLASSES)),
    ("mnist-gz-accepted", mnist(train_images_idx3_ubyte=None, train_images_idx3_ubyte__gz=gzip.compress(IDX[TRX])),
     images_are(TR_X[:, None])),
    ("mnist-garbage-images", mnist(train_images_idx3_ubyte=RNG.integers(1, 256, 400, dtype=np.uint8).tobytes()),
     "not an IDX magic number"),
    ("mnist-truncated-images", mnist(t10k_images_idx3_ubyte=IDX[TEX][:-7]), "t10k-images-idx3-ubyte is truncated"),
    ("mnist-extra-bytes", mnist(train_labels_idx1_ubyte=IDX[TRY] + b"\0\0"), "followed by extra bytes"),
    ("mnist-swapped-files", mnist(train_images_idx3_ubyte=IDX[TRY], train_labels_idx1_ubyte=IDX[TRX]),
     "image and label files swapped"),
    ("mnist-float-labels-type", mnist(train_labels_idx1_ubyte=idx_bytes(TR_Y, 0x0D)), "type code 0x0d"),
    ("mnist-count-mismatch", mnist(train_labels_idx1_ubyte=idx_bytes(TR_Y[:11])), "holds 12 images but"),
    ("mnist-label-10", mnist(t10k_labels_idx1_ubyte=idx_bytes(np.r_[TE_Y[:-1], 10])), "outside 0..9: [10]"),
    ("mnist-empty-file", mnist(t10k_labels_idx1_ubyte=b""), "too few for an IDX header"),
    ("mnist-truncated-header", mnist(train_images_idx3_ubyte=IDX[TRX][:9]), "truncated inside its header"),
    ("mnist-gzip-under-plain-name", mnist(train_images_idx3_ubyte=gzip.compress(IDX[TRX])), "is gzip-compressed"),
    ("mnist-corrupt-gz", mnist(train_images_idx3_ubyte=None, train_images_idx3_ubyte__gz=gzip.compress(IDX[TRX])[:-20]),
     "cannot be read as gzip-compressed IDX"),
    ("mnist-missing-file", mnist(t10k_labels_idx1_ubyte=None), "missing ['t10k-labels-idx1-ubyte']"),
    ("mnist-file-is-folder", mnist(t10k_labels_idx1_ubyte="<dir>"), "missing ['t10k-labels-idx1-ubyte']"),
    ("mnist-test-other-size", mnist(t10k_images_idx3_ubyte=idx_bytes(TE_X[:, :4, :4])), "test images are 1x4x4"),
    ("mnist-empty-train", mnist(train_images_idx3_ubyte=idx_bytes(TR_X[:0]), train_labels_idx1_ubyte=idx_bytes(TR_Y[:0])),
     "train images: 0 images"),
    ("mnist-class-without-train-image", mnist(train_labels_idx1_ubyte=idx_bytes(TR_Y % 9)), "no training image: ['9 - nine']"),
    # ---- ImageFolder
    ("folder-valid", folder(), shape_is((4, 3, 6, 6), (2, 3, 6, 6), ("cat", "dog"))),
    ("folder-test-class-train-lacks", folder({"test/bird/0.png": img()}), "classes ['bird'] that the training folder"),
    ("folder-test-lacks-class", folder(drop=("test/dog",)), "no folder for classes ['dog']"),
    ("folder-empty-train-class", folder({"train/owl": None}), "class folder(s) ['owl'] hold no images"),
    ("folder-empty-test-class", folder({"test/dog/notes.txt": b"x"}, drop=("test/dog",)),
     "class folder(s) ['dog'] hold no images"),
    ("folder-garbage-image", folder({"train/dog/1.png": b"not a png at all"}), "cannot decode image"),
    ("folder-truncated-image", folder({"train/dog/1.png": png_bytes(img(seed=9))[:60]}), "cannot decode image"),
    ("folder-first-image-garbage", folder({"train/cat/0.png": b"\x89PNG garbage"}), "cannot decode image"),
    ("folder-sizes-differ", folder({"train/dog/1.png": img(7, 6)}), "images differ in size"),
    ("folder-test-other-size", folder({"test/cat/0.png": img(8, 8), "test/dog/0.png": img(8, 8)}),
     "test images are 3x8x8 (C x H x W) but train images are 3x6x6"),
    ("folder-single-class", folder(drop=("train/dog", "test/dog")), "at least 2 classes"),
    ("folder-hidden-folder-ignored", folder({"train/.ipynb_checkpoints": None, "test/.ipynb_checkpoints": None}),
     shape_is((4, 3, 6, 6), classes=("cat", "dog"))),
    ("folder-hidden-file-ignored", folder({"train/cat/._0.png": b"\0\5\26\7 resource fork"}), shape_is((4, 3, 6, 6))),
    ("folder-non-image-skipped", folder({"train/cat/notes.txt": b"hello"}), shape_is((4, 3, 6, 6))),
    ("folder-gray-accepted", folder({k: img(c=1, seed=i) for i, k in enumerate(GOOD_FOLDER)}), shape_is((4, 1, 6, 6))),
    ("folder-rgba-accepted", folder({k: img(c=4, seed=i) for i, k in enumerate(GOOD_FOLDER)}), shape_is((4, 3, 6, 6))),
    ("folder-flat-accepted", folder({k.split("/", 1)[1]: v for k, v in GOOD_FOLDER.items() if k.startswith("train/")},
                                    drop=("train", "test")), shape_is((4, 3, 6, 6), classes=("cat", "dog"))),
    ("folder-no-class-folders", folder({"0.png": img()}, drop=("train", "test")), "has no class sub-folders"),
    ("folder-test-without-train", folder({"test/cat/0.png": img()}, drop=("train", "test")), "has a test/ folder but no train/"),
    ("folder-missing-root", lambda tmp: (f"imagefolder:{tmp / 'nope'}", None), "does not exist"),
    # ---- cifar10 (its JPEG ImageFolder copy, and torchvision's pickles)
    ("cifar10-jpeg-test-class-missing", cifar_jpeg({"train/cat/0.png": img(), "train/dog/0.png": img(), "test/cat/0.png": img()}),
     "no folder for classes ['dog']"),
    ("cifar10-jpeg-test-extra-class", cifar_jpeg({"train/cat/0.png": img(), "train/dog/0.png": img(), "test/cat/0.png": img(),
                                                  "test/dog/0.png": img(), "test/emu/0.png": img()}), "classes ['emu'] that"),
    ("cifar10-jpeg-no-test", cifar_jpeg({"train/cat/0.png": img(), "train/dog/0.png": img()}), "test is not a folder"),
    ("cifar10-jpeg-valid", cifar_jpeg({"train/cat/0.png": img(), "train/dog/0.png": img(), "test/cat/0.png": img(),
                                       "test/dog/0.png": img()}), shape_is((2, 3, 6, 6), (2, 3, 6, 6), ("cat", "dog"))),
    ("cifar10-garbage-pickles", lambda tmp: ((tmp / "cifar-10-batches-py").mkdir() or
                                             (tmp / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"junk"),
                                             ("cifar10", tmp))[1], "torchvision could not read CIFAR-10"),
]


@pytest.mark.parametrize("build,expect", [pytest.param(b, e, id=i) for i, b, e in CORPUS])
def test_corpus(build, expect, tmp_path, monkeypatch):
    monkeypatch.setenv("METAERR_EDGE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "in").mkdir()
    name, root = build(tmp_path / "in")
    if callable(expect):
        expect(load_dataset(name, root))
    else:
        with pytest.raises(DataError) as info:
            load_dataset(name, root)
        assert expect in str(info.value), str(info.value)


def test_corpus_ids_are_unique_and_counted():
    ids = [i for i, _, _ in CORPUS]
    assert len(ids) == len(set(ids))
    errors = sum(isinstance(e, str) for _, _, e in CORPUS)
    assert errors >= 60 and len(CORPUS) - errors >= 20


def test_messages_name_the_file_and_what_was_expected(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=X8, y_train=np.r_[-1, Y3[1:]])
    with pytest.raises(DataError) as info:
        load_dataset(f"npz:{tmp_path / 'd.npz'}")
    msg = str(info.value)
    assert str(tmp_path / "d.npz") in msg and "y_train" in msg and "expected integer class indexes 0..2" in msg
    assert "\n" not in msg


# ------------------------------------------------------------------- damaged files never crash


@pytest.mark.parametrize("cut", [0, 1, 4, 22, 30, 60, 100, 150, 250, -100, -30, -22, -1])
def test_truncated_npz_is_a_data_error(tmp_path, cut):
    data = valid_npz_bytes()
    (tmp_path / "d.npz").write_bytes(data[:cut])
    with pytest.raises(DataError, match="d.npz"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}")


@pytest.mark.parametrize("seed", range(12))
def test_flipped_bytes_load_or_give_a_data_error(tmp_path, seed):
    """Random byte damage to an npz or an IDX file: a DataError, or (damage in pixels only) a load."""
    rng = np.random.default_rng(seed)
    data = bytearray(valid_npz_bytes())
    for pos in rng.integers(0, len(data), 3):
        data[pos] ^= int(rng.integers(1, 256))
    (tmp_path / "d.npz").write_bytes(bytes(data))
    try:
        load_dataset(f"npz:{tmp_path / 'd.npz'}")
    except DataError:
        pass
    name, root = mnist()(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    victim = raw / [TRX, TRY, TEX, TEY][seed % 4]
    b = bytearray(victim.read_bytes())
    b[int(rng.integers(0, min(len(b), 16)))] ^= 0x40  # in the header
    victim.write_bytes(bytes(b))
    with pytest.raises(DataError, match=victim.name):
        load_dataset(name, root)


# -------------------------------------------------------------------------- loads as before


def test_digits_load_exactly_as_before():
    from sklearn.datasets import load_digits

    d = load_digits()
    ds = load_dataset("digits")
    np.testing.assert_array_equal(ds.train.images, np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None])
    np.testing.assert_array_equal(ds.train.labels, d.target)
    assert ds.train.labels.dtype == np.int64 and ds.test is None and ds.classes == tuple("0123456789") and ds.name == "digits"


def test_valid_npz_loads_exactly_as_before(tmp_path):
    x = RNG.integers(0, 256, (20, 12, 12), dtype=np.uint8)
    np.savez(tmp_path / "toy.npz", x_train=x, y_train=np.arange(20) % 2, x_test=x[:5], y_test=np.arange(5) % 2,
             classes=np.array(["no", "yes"]))
    ds = load_dataset(f"npz:{tmp_path / 'toy.npz'}")
    assert ds.name == "toy" and ds.classes == ("no", "yes")
    np.testing.assert_array_equal(ds.train.images, x[:, None])
    np.testing.assert_array_equal(ds.test.images, x[:5, None])
    np.testing.assert_array_equal(ds.train.labels, np.arange(20) % 2)
    assert ds.train.images.flags.c_contiguous and ds.train.labels.dtype == np.int64


def test_mnist_download_goes_through_torchvision_then_our_reader(tmp_path, monkeypatch):
    import torchvision

    calls = []

    class FakeMNIST:  # what torchvision's download leaves behind: the raw IDX files
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            raw = Path(root) / "MNIST" / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            for fname, data in IDX.items():
                (raw / fname).write_bytes(data)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    ds = load_dataset("mnist", tmp_path, download=True)
    assert calls and all(c[2] for c in calls)
    np.testing.assert_array_equal(ds.train.images, TR_X[:, None])
    calls.clear()
    load_dataset("mnist", tmp_path, download=True)  # files present: no download
    assert calls == []


@pytest.mark.datasets
@pytest.mark.parametrize("name,cls", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_shared_idx_files_match_torchvision(shared_datasets, name, cls):
    import torchvision

    ds = load_dataset(name, shared_datasets)
    tv_cls = getattr(torchvision.datasets, cls)
    for split, train in (("train", True), ("test", False)):
        tv = tv_cls(str(shared_datasets), train=train, download=False)
        ours = getattr(ds, split)
        np.testing.assert_array_equal(ours.images, tv.data.numpy()[:, None])
        np.testing.assert_array_equal(ours.labels, tv.targets.numpy())
        assert ours.labels.dtype == np.int64
    assert ds.classes == tuple(tv.classes)


# --------------------------------------------------------------------------------- the cache


def _folder_with_bmp(tmp_path: Path) -> Path:
    from PIL import Image

    root = tmp_path / "data"
    for cls in ("cat", "dog"):
        for i in range(2):
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img(seed=10 * i + len(cls) + ord(cls[0]))).save(root / cls / f"{i}.bmp")
    return root


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("METAERR_EDGE_CACHE", str(d))
    return d


def test_image_edited_in_place_same_size_and_mtime_gives_new_pixels(tmp_path, cache_dir):
    from PIL import Image

    root = _folder_with_bmp(tmp_path)
    first = load_dataset(f"imagefolder:{root}")
    assert len(list(cache_dir.glob("*.npz"))) == 1
    target = root / "dog" / "1.bmp"
    st = target.stat()
    new = 255 - np.asarray(Image.open(target))
    Image.fromarray(new).save(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    second = load_dataset(f"imagefolder:{root}")
    np.testing.assert_array_equal(second.train.images[3], new.transpose(2, 0, 1))
    assert not np.array_equal(first.train.images[3], second.train.images[3])
    np.testing.assert_array_equal(first.train.images[:3], second.train.images[:3])


def test_second_load_comes_from_the_cache(tmp_path, cache_dir, monkeypatch):
    root = _folder_with_bmp(tmp_path)
    first = load_dataset(f"imagefolder:{root}")

    def no_decode(*_):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(imagefolder, "_decode", no_decode)
    np.testing.assert_array_equal(load_dataset(f"imagefolder:{root}").train.images, first.train.images)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "npy", "wrong-content", "folder"])
def test_bad_cache_file_is_rebuilt_with_a_warning(tmp_path, cache_dir, caplog, damage):
    root = _folder_with_bmp(tmp_path)
    first = load_dataset(f"imagefolder:{root}")
    (cache,) = cache_dir.glob("*.npz")
    data = cache.read_bytes()
    if damage == "truncate":
        cache.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        cache.write_bytes(b"\x00garbage" * 100)
    elif damage == "empty":
        cache.write_bytes(b"")
    elif damage == "npy":
        with open(cache, "wb") as fh:
            np.save(fh, first.train.images)
    elif damage == "wrong-content":
        with open(cache, "wb") as fh:
            np.savez(fh, images=first.train.images[:2], labels=first.train.labels[:2])
    else:
        cache.unlink()
        cache.mkdir()
    with caplog.at_level(logging.WARNING, logger="metaerr_edge"):
        again = load_dataset(f"imagefolder:{root}")
    np.testing.assert_array_equal(again.train.images, first.train.images)
    np.testing.assert_array_equal(again.train.labels, first.train.labels)
    assert any(str(cache) in r.getMessage() for r in caplog.records), caplog.text
    if damage != "folder":  # rebuilt: a valid cache file again, read without a warning
        with np.load(cache) as z:
            np.testing.assert_array_equal(z["images"], first.train.images)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="metaerr_edge"):
            load_dataset(f"imagefolder:{root}")
        assert not caplog.records


@pytest.mark.parametrize("where", ["is-a-file", "under-a-file"])
def test_cache_location_that_is_a_file_warns_and_loads_without_cache(tmp_path, monkeypatch, caplog, where):
    root = _folder_with_bmp(tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("keep me")
    monkeypatch.setenv("METAERR_EDGE_CACHE", str(blocker if where == "is-a-file" else blocker / "sub"))
    with caplog.at_level(logging.WARNING, logger="metaerr_edge"):
        ds = load_dataset(f"imagefolder:{root}")
    assert ds.train.images.shape == (4, 3, 6, 6)
    assert blocker.read_text() == "keep me"
    assert len(caplog.records) == 1 and "METAERR_EDGE_CACHE" in caplog.text and "\n" not in caplog.records[0].getMessage()


def test_failed_cache_write_leaves_no_partial_file(tmp_path, cache_dir, monkeypatch, caplog):
    root = _folder_with_bmp(tmp_path)

    def disk_full(fh, **_):
        fh.write(b"PK\x03\x04 half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with caplog.at_level(logging.WARNING, logger="metaerr_edge"):
        ds = load_dataset(f"imagefolder:{root}")
    assert ds.train.images.shape == (4, 3, 6, 6)
    left = [p.name for p in cache_dir.iterdir() if p.suffix in (".npz", ".tmp")]
    assert left == []  # neither a half-written cache nor a temporary file
    assert "No space left on device" in caplog.text
