"""Dataset sources: every source yields uint8 images in NCHW plus int64 labels.

Sources (the registry below is the one list of them):

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images; no files needed; the default).
- ``mnist`` / ``fashion-mnist``: the raw IDX files under ``<root>/MNIST/raw`` etc. (torchvision's
  layout), read here with numpy; ``.gz`` copies of them are read too. torchvision is used only to
  download them (``download=True``).
- ``cifar10``: ``<root>/CIFAR10-jpeg/{train,test}/<class>/*.jpg`` (ImageFolder) or torchvision's
  ``<root>/cifar-10-batches-py``.
- ``imagefolder:PATH``: ``PATH/{train,test}/<class>/*`` or ``PATH/<class>/*``.
- ``npz:PATH``: arrays ``x_train``, ``y_train`` and optionally ``x_test``, ``y_test``, ``classes``.

Every dataset :func:`load_dataset` returns has passed :func:`validate_dataset`; anything else is
a :class:`~metaerr_edge.errors.DataError` that names the file or field, what was found and what
was expected. The rules:

- images: N x C x H x W uint8 with C = 1 or 3 and H, W >= 1; the test split has the training
  split's C x H x W; no split is empty; as many labels as images.
- labels: integers ``0..K-1`` where K = the number of class names. Float labels are accepted
  only when every value is a whole number (``0.0``, ``1.0``: a common side effect of pandas or
  MATLAB); ``1.5`` or NaN is refused. Negative labels (``-1`` for "unlabelled") are refused.
- every class name has at least one training image. A class no training image carries cannot be
  learned, and it is almost always a labelling mistake: non-contiguous labels (``0..8`` and
  ``1000``), a class-name list longer than the labels, or a test-only ImageFolder class.
- class names: at least two, non-empty strings, unique.
- ``npz:``: float images are finite and in ``[0, 1]`` (scaled to 0-255); integer images are
  0-255 levels; object, structured, string, complex and bool arrays are refused; ``classes`` is a
  1-D array of strings; the file must be an ``np.savez`` archive (a ``.npy``, a text file or a
  corrupt zip is named as such).
- MNIST-style IDX: magic ``0x00000803`` (unsigned-byte images, 3 dims) or ``0x00000801`` (labels,
  1 dim), big-endian sizes, a payload exactly as long as the header says, as many images as labels,
  labels 0-9.
- ImageFolder: the test folder has exactly the training folder's classes; no class folder is
  empty; every image decodes; hidden folders (``.ipynb_checkpoints``) are not classes and hidden
  files (macOS ``._x.jpg``) are not images.

The ImageFolder cache (decoded arrays under ``$METAERR_EDGE_CACHE``, default
``~/.cache/metaerr_edge``) is keyed on the SHA-256 of every image's bytes (plus its relative path,
class and the channel count), so an image edited in place comes back with its new pixels whatever
its size or mtime. Hashing reads every file (about 1 s for the 60,000 small CIFAR-10 JPEGs, against
about 10 s to decode them). A cache file that is unreadable or does not match the folder is rebuilt
with a one-line warning; a cache location that is not a writable folder (say
``$METAERR_EDGE_CACHE`` names a file) gives a one-line warning and the images are decoded without
a cache: the cache only saves time, so it never stops a run. Cache files are written atomically.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metaerr_edge.console import warn
from metaerr_edge.errors import ConfigError, DataError, MetaErrError
from metaerr_edge.io import atomic_write_bytes

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm")
_CACHE_FORMAT = "metaerr-edge imagefolder cache v2"
# What reading a user's file can raise when the file is not what it claims to be.
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, IndexError, zipfile.BadZipFile, zlib.error,
                NotImplementedError)


def _few(values: np.ndarray | Sequence, n: int = 6) -> str:
    """The distinct values of ``values``, sorted; past ``n`` of them the smallest and the largest:
    ``[-1, 1000]``, ``[0, 1, 2, 3, ..., 8, 1000] (10 distinct)``."""
    arr = np.asarray(values)
    if arr.size == 0:
        return "[]"
    u = np.unique(arr.ravel())
    text = lambda vs: ", ".join(repr(v.item()) if isinstance(v.item(), str) else str(v.item()) for v in vs)  # noqa: E731
    if len(u) <= n:
        return f"[{text(u)}]"
    return f"[{text(u[: n - 2])}, ..., {text(u[-2:])}] ({len(u)} distinct)"


def _names(items: Sequence[str], n: int = 6) -> str:
    """Up to ``n`` names, in the order given: ``['cat', 'dog', ... (12)]``."""
    items = list(items)
    shown = ", ".join(repr(s) for s in items[:n])
    return f"[{shown}, ... ({len(items)} in all)]" if len(items) > n else f"[{shown}]"


@dataclass(frozen=True)
class ImageArrays:
    """Images (uint8, N x C x H x W) and their labels (int64, N).

    Labels of another integer dtype are stored as int64; float, bool or multi-dimensional labels
    are refused (loaders turn whole-number floats into integers before they get here).
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype != np.uint8:
            got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            raise DataError(f"images must be uint8 with shape N x C x H x W, got {got}")
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(f"labels must be a 1-D array of integer class indexes, got {labels.dtype} {labels.shape}")
        if labels.dtype.kind == "u" and labels.size and int(labels.max()) > np.iinfo(np.int64).max:
            raise DataError(f"labels must be class indexes 0..K-1, got values up to {int(labels.max())}")
        if labels is not self.labels or labels.dtype != np.int64:
            object.__setattr__(self, "labels", labels.astype(np.int64))
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "ImageArrays":
        return ImageArrays(self.images[index], self.labels[index])


@dataclass(frozen=True)
class DatasetArrays:
    """A loaded dataset: the training pool, the official test split (if any) and class names.

    :func:`load_dataset` returns only datasets that passed :func:`validate_dataset`.
    """

    name: str
    train: ImageArrays
    test: ImageArrays | None
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.classes, tuple) or not all(isinstance(c, str) for c in self.classes):
            raise DataError(f"classes must be a tuple of str, got {self.classes!r:.200}")

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train.images.shape[2]), int(self.train.images.shape[3])

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the training pool, on the [0, 1] scale."""
        x = self.train.images[: 20000].astype(np.float32) / 255.0
        mean = tuple(float(v) for v in x.mean(axis=(0, 2, 3)))
        std = tuple(max(float(v), 1e-3) for v in x.std(axis=(0, 2, 3)))
        return mean, std


def validate_dataset(
    ds: DatasetArrays,
    source: str,
    *,
    image_fields: tuple[str, str] = ("train images", "test images"),
    label_fields: tuple[str, str] = ("train labels", "test labels"),
) -> DatasetArrays:
    """Check that ``ds`` can be trained on; return it, or raise :class:`DataError`.

    ``source`` names where the data came from (``"npz file data.npz"``); ``image_fields`` /
    ``label_fields`` name the train and test arrays in messages (``x_train``, ``y_train``...).
    The rules are listed in this module's docstring.

    Example:
        >>> validate_dataset(load_dataset("digits"), "digits").classes[:3]
        ('0', '1', '2')
    """
    classes = ds.classes
    if not isinstance(classes, tuple) or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{source}: class names must be strings, got {classes!r:.200}")
    empty_names = [i for i, c in enumerate(classes) if not c.strip()]
    if empty_names:
        raise DataError(f"{source}: class name(s) at index {empty_names[:6]} are empty; give every class a name")
    dups = sorted(c for c, n in Counter(classes).items() if n > 1)
    if dups:
        raise DataError(f"{source}: class names must be unique, {_names(dups)} appear more than once in {_names(classes)}")
    k = len(classes)
    splits = [(image_fields[0], label_fields[0], ds.train)]
    if ds.test is not None:
        splits.append((image_fields[1], label_fields[1], ds.test))
    for xf, yf, arr in splits:
        if not isinstance(arr, ImageArrays):
            raise DataError(f"{source}: {xf} must be ImageArrays, got {type(arr).__name__}")
        if len(arr) == 0:
            raise DataError(f"{source}: {xf}: 0 images; expected at least one image per class")
        n, c, h, w = arr.images.shape
        if c not in (1, 3):
            raise DataError(
                f"{source}: {xf} have {c} channels (shape N x C x H x W = {arr.images.shape}); expected 1 (gray) "
                "or 3 (RGB): drop an alpha channel or convert the images"
            )
        if h < 1 or w < 1:
            raise DataError(f"{source}: {xf} are {h}x{w} pixels; expected at least 1x1")
        labels = arr.labels
        bad = labels[(labels < 0) | (labels >= k)]
        if bad.size:
            hint = ""
            if (bad < 0).any():
                hint = " Negative labels (-1 often means 'unlabelled') are not classes: drop those images."
            elif k:
                hint = (
                    f" The labels need at least {int(bad.max()) + 1} class names but there are {k}"
                    " (more classes than class names): add the missing names or relabel."
                )
            raise DataError(
                f"{source}: {bad.size} label(s) in {yf} lie outside 0..{k - 1}: {_few(bad)}; expected integer class "
                f"indexes 0..{k - 1}, one per class name {_names(classes)}.{hint}"
            )
    if k < 2:
        raise DataError(
            f"{source}: {k} class(es) {_names(classes)}; a classifier and its failure score need at least 2 classes"
        )
    counts = np.bincount(ds.train.labels, minlength=k)
    unused = np.flatnonzero(counts == 0)
    if unused.size:
        raise DataError(
            f"{source}: {unused.size} of {k} classes have no training image: {_names([classes[i] for i in unused])} "
            f"(indexes {_few(unused)}; labels found in {label_fields[0]}: {_few(ds.train.labels)}). Every class needs at least "
            "one training image, so labels must run 0..K-1 without gaps: relabel them (np.unique(y, "
            "return_inverse=True)) or remove the unused class names."
        )
    if ds.test is not None and ds.test.images.shape[1:] != ds.train.images.shape[1:]:
        c, h, w = ds.test.images.shape[1:]
        c0, h0, w0 = ds.train.images.shape[1:]
        raise DataError(
            f"{source}: {image_fields[1]} are {c}x{h}x{w} (C x H x W) but {image_fields[0]} are {c0}x{h0}x{w0}; "
            "both splits must have the same channels and size: resize or convert one of them"
        )
    return ds


_SOURCES: dict[str, Callable[[Path | None, bool], DatasetArrays]] = {}


def register_source(name: str):
    """Decorator: add a dataset loader ``fn(root, download) -> DatasetArrays`` to the registry."""

    def wrap(fn):
        _SOURCES[name] = fn
        return fn

    return wrap


def available_sources() -> list[str]:
    return sorted(_SOURCES) + ["imagefolder:PATH", "npz:PATH"]


def load_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False) -> DatasetArrays:
    """Load a dataset by name; what comes back has passed :func:`validate_dataset`.

    Example:
        >>> ds = load_dataset("digits")
        >>> ds.train.images.shape
        (1797, 1, 8, 8)
    """
    if name.startswith("imagefolder:"):
        path = Path(name.split(":", 1)[1])
        return validate_dataset(_load_imagefolder_dataset(path), f"imagefolder {path}")
    if name.startswith("npz:"):
        path = Path(name.split(":", 1)[1])
        return validate_dataset(
            _load_npz(path), f"npz file {path}", image_fields=("x_train", "x_test"), label_fields=("y_train", "y_test")
        )
    if name not in _SOURCES:
        raise ConfigError(
            f"unknown dataset {name!r}; expected one of {available_sources()}"
        )
    ds = _SOURCES[name](Path(root) if root is not None else None, download)
    if not isinstance(ds, DatasetArrays):
        raise DataError(f"the loader of dataset {name!r} returned {type(ds).__name__}; expected DatasetArrays")
    return validate_dataset(ds, f"dataset {name!r}" + (f" under {root}" if root is not None else ""))


@register_source("digits")
def _digits(root: Path | None, download: bool) -> DatasetArrays:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    return DatasetArrays("digits", ImageArrays(images, d.target.astype(np.int64)), None, tuple(str(i) for i in range(10)))


# --------------------------------------------------------------------------------------------- IDX

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# torchvision's class names (torchvision.datasets.MNIST.classes / FashionMNIST.classes).
MNIST_CLASSES = ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six", "7 - seven",
                 "8 - eight", "9 - nine")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")


def _idx_file(raw: Path, name: str) -> Path | None:
    """``raw/name``, else ``raw/name.gz``, else None."""
    for p in (raw / name, raw / f"{name}.gz"):
        if p.is_file():
            return p
    return None


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (MNIST's format) with ``ndim`` dimensions; ``.gz`` is unpacked.

    The file must start with the magic number ``0x000008`` + ``ndim`` (``0x00000803`` for images,
    ``0x00000801`` for labels), then ``ndim`` big-endian uint32 sizes, then exactly their product
    in bytes. Anything else is a :class:`DataError` naming the file and what is wrong.

    Example:
        >>> read_idx("MNIST/raw/t10k-labels-idx1-ubyte", 1).shape  # doctest: +SKIP
        (10000,)
    """
    path = Path(path)
    kind = {3: "an image file", 1: "a label file"}.get(ndim, f"a {ndim}-D file")
    redo = "re-download it (or pass --download after deleting it)"
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} cannot be read as {'gzip-compressed ' if path.suffix == '.gz' else ''}IDX ({exc}); {redo}") from exc
    want = f"expected {kind} in IDX format (magic 0x{0x800 + ndim:08x}: unsigned bytes, {ndim} dimension(s))"
    if len(data) < 4:
        raise DataError(f"{path} holds {len(data)} bytes, too few for an IDX header; {want}; {redo}")
    if data[:2] == b"\x1f\x8b":
        raise DataError(f"{path} is gzip-compressed; {want}: gunzip it, or name it {path.name}.gz")
    if data[:2] != b"\x00\x00":
        raise DataError(f"{path} starts with bytes {data[:4].hex()}, not an IDX magic number; {want}; {redo}")
    if data[2] != 0x08:
        raise DataError(f"{path} holds IDX values of type code 0x{data[2]:02x}; {want}")
    nd = data[3]
    if nd != ndim:
        swapped = " (are the image and label files swapped?)" if {nd, ndim} == {1, 3} else ""
        raise DataError(f"{path} is an IDX file with {nd} dimension(s){swapped}; {want}")
    header = 4 + 4 * nd
    if len(data) < header:
        raise DataError(f"{path} is truncated inside its header ({len(data)} bytes, header needs {header}); {redo}")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(nd)]
    need, have = math.prod(dims), len(data) - header
    if need != have:
        what = "truncated" if have < need else "followed by extra bytes"
        raise DataError(
            f"{path} is {what}: its header says {' x '.join(map(str, dims))} = {need} values but it holds {have} "
            f"bytes after the header; {redo}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _read_idx_split(raw: Path, split: str, num_classes: int) -> ImageArrays:
    img_name, lab_name = _IDX_FILES[split]
    img_path, lab_path = _idx_file(raw, img_name), _idx_file(raw, lab_name)
    assert img_path is not None and lab_path is not None
    images, labels = read_idx(img_path, 3), read_idx(lab_path, 1)
    if len(images) != len(labels):
        raise DataError(
            f"{img_path} holds {len(images)} images but {lab_path} holds {len(labels)} labels; expected one label per "
            "image: the files are from different releases or one is damaged; re-download them"
        )
    bad = labels[labels >= num_classes]
    if bad.size:
        raise DataError(f"{lab_path} holds {bad.size} label(s) outside 0..{num_classes - 1}: {_few(bad)}; re-download it")
    return ImageArrays(images[:, None].copy(), labels.astype(np.int64))


def _idx_source(cls_name: str, folder: str, classes: tuple[str, ...]):
    def load(root: Path | None, download: bool) -> DatasetArrays:
        if root is None:
            raise DataError(
                f"{cls_name} needs a data root: pass --root DIR holding {folder}/raw/*-ubyte "
                "(or --download where a network exists)"
            )
        raw = root / folder / "raw"
        names = [n for pair in _IDX_FILES.values() for n in pair]
        missing = [n for n in names if _idx_file(raw, n) is None]
        if missing and download:
            _download_idx(cls_name, root, raw)
            missing = [n for n in names if _idx_file(raw, n) is None]
        if missing:
            raise DataError(
                f"no {cls_name} under {root}: expected {raw} with "
                "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                f"t10k-labels-idx1-ubyte (torchvision's raw layout; .gz copies are read too), missing {missing}. "
                "Fix --root or pass --download."
            )
        return DatasetArrays(
            cls_name.lower(), _read_idx_split(raw, "train", len(classes)), _read_idx_split(raw, "test", len(classes)),
            classes,
        )

    return load


def _download_idx(cls_name: str, root: Path, raw: Path) -> None:
    """Let torchvision download (and unpack) the IDX files into ``raw``; they are read by :func:`read_idx`."""
    from metaerr_edge.errors import require

    torchvision = require("torchvision", "metaerr-edge[train]", f"downloading {cls_name}")
    ds_cls = getattr(torchvision.datasets, cls_name)
    for train in (True, False):
        try:
            ds_cls(str(root), train=train, download=True)
        except (RuntimeError, OSError, ValueError, AssertionError, TypeError) as exc:
            raise DataError(f"could not download {cls_name} into {raw}: {exc}") from exc


register_source("mnist")(_idx_source("MNIST", "MNIST", MNIST_CLASSES))
register_source("fashion-mnist")(_idx_source("FashionMNIST", "FashionMNIST", FASHION_MNIST_CLASSES))


@register_source("cifar10")
def _cifar10(root: Path | None, download: bool) -> DatasetArrays:
    if root is None:
        raise DataError("cifar10 needs a data root: pass --root DIR holding CIFAR10-jpeg/{train,test}/<class>/")
    jpeg = root / "CIFAR10-jpeg"
    if (jpeg / "train").is_dir():
        tr, classes = read_imagefolder(jpeg / "train", channels=3)
        te, _ = read_imagefolder(jpeg / "test", channels=3, classes=classes, train_folder=jpeg / "train")
        return DatasetArrays("cifar10", tr, te, classes)
    if download or (root / "cifar-10-batches-py").is_dir():
        import pickle

        import torchvision

        try:
            tr = torchvision.datasets.CIFAR10(str(root), train=True, download=download)
            te = torchvision.datasets.CIFAR10(str(root), train=False, download=download)
        except (RuntimeError, OSError, ValueError, EOFError, KeyError, pickle.UnpicklingError) as exc:
            raise DataError(
                f"torchvision could not read CIFAR-10 under {root / 'cifar-10-batches-py'} ({type(exc).__name__}: "
                f"{exc}); delete the folder and pass --download, or use the CIFAR10-jpeg layout"
            ) from exc
        to = lambda d: ImageArrays(np.ascontiguousarray(d.data.transpose(0, 3, 1, 2)), np.asarray(d.targets, np.int64))  # noqa: E731
        return DatasetArrays("cifar10", to(tr), to(te), tuple(tr.classes))
    raise DataError(
        f"no CIFAR-10 under {root}: expected {jpeg}/train/<class>/*.jpg and {jpeg}/test/<class>/*.jpg "
        f"(ImageFolder) or {root}/cifar-10-batches-py (torchvision). Fix --root or pass --download."
    )


# ------------------------------------------------------------------------------------- ImageFolder

_CACHE_WARNED: set[str] = set()


def _cache_dir() -> Path:
    return Path(os.environ.get("METAERR_EDGE_CACHE") or Path.home() / ".cache" / "metaerr_edge")


def _warn_cache_once(where: Path, message: str) -> None:
    if str(where) not in _CACHE_WARNED:
        _CACHE_WARNED.add(str(where))
        warn(message)


def _usable_cache_dir() -> Path | None:
    """The cache folder, or None (with a one-line warning) when it exists but is not a folder."""
    d = _cache_dir()
    if d.exists() and not d.is_dir():
        _warn_cache_once(
            d,
            f"image cache location {d} (METAERR_EDGE_CACHE) is a file, not a folder; decoding images without a cache. "
            "Point METAERR_EDGE_CACHE at a folder to cache them.",
        )
        return None
    return d


def _content_key(folder: Path, files: list[tuple[Path, int]], classes: tuple[str, ...], channels: int) -> str:
    """SHA-256 over every image's bytes, relative path and class, the class names and channel count."""
    key = hashlib.sha256(f"{_CACHE_FORMAT}|{channels}|{classes!r}\n".encode())
    for p, idx in files:
        try:
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
        except OSError as exc:
            raise DataError(f"cannot read image {p} ({exc}); fix its permissions or remove it") from exc
        key.update(f"{p.relative_to(folder).as_posix()}|{idx}|{digest}\n".encode())
    return key.hexdigest()


def _read_cache(cache: Path, labels: np.ndarray, channels: int) -> ImageArrays | None:
    """The cached arrays, or None (with a warning when the file exists but is bad) to rebuild them."""
    if not cache.exists():
        return None
    try:
        z = np.load(cache, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError(f"a single {type(z).__name__}, not an .npz archive")
        with z:
            images, cached_labels = np.asarray(z["images"]), np.asarray(z["labels"])
    except _READ_ERRORS as exc:
        warn(f"image cache {cache} is unreadable ({type(exc).__name__}: {exc}); rebuilding it")
        return None
    ok = (images.dtype == np.uint8 and images.ndim == 4 and len(images) == len(labels) and images.shape[1] == channels
          and cached_labels.shape == labels.shape and np.array_equal(cached_labels, labels))
    if not ok:
        warn(f"image cache {cache} does not match its image folder ({images.dtype} {images.shape}); rebuilding it")
        return None
    return ImageArrays(images, labels)


def _write_cache(cache: Path, arrays: ImageArrays) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
            np.savez(fh, images=arrays.images, labels=arrays.labels)

    try:
        atomic_write_bytes(cache, write)
    except (OSError, MetaErrError) as exc:  # the cache only saves time: never stop a run for it
        _warn_cache_once(
            cache.parent,
            f"could not write the image cache {cache} ({type(exc).__name__}: {exc}); continuing without it. "
            "Point METAERR_EDGE_CACHE at a writable folder to cache decoded images.",
        )


def _decode(p: Path, mode: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(p) as im:
            return np.asarray(im.convert(mode))
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"cannot decode image {p} ({type(exc).__name__}: {exc}); expected a valid {'/'.join(IMAGE_EXTENSIONS)} "
            "image: replace or remove the file"
        ) from exc


def read_imagefolder(
    folder: Path, channels: int, classes: tuple[str, ...] | None = None, *, train_folder: Path | None = None
) -> tuple[ImageArrays, tuple[str, ...]]:
    """Read ``folder/<class>/*`` into uint8 arrays (sorted class names, like torchvision's ImageFolder).

    With ``classes`` (the training folder's, for a test folder), ``folder`` must hold exactly those
    class folders; ``train_folder`` only names the training folder in that error. Every class folder
    must hold at least one image; hidden folders and files are skipped. Decoded arrays are cached under
    ``$METAERR_EDGE_CACHE`` (default ``~/.cache/metaerr_edge``), keyed by the bytes of every image,
    so a second load skips decoding and an edited image is decoded again (see the module docstring).
    """
    folder = Path(folder)
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (gray) or 3 (RGB), got {channels!r}")
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; expected {folder}/<class>/<image files>")
    found = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not found:
        raise DataError(f"{folder} has no class sub-folders; expected {folder}/<class>/<image files>")
    if classes is not None:
        classes = tuple(classes)
        extra = [c for c in found if c not in classes]
        lacking = [c for c in classes if c not in found]
        if extra or lacking:
            ref = f"the training folder {train_folder}" if train_folder is not None else "the training split"
            parts = ([f"classes {_names(extra)} that {ref} lacks"] if extra else []) + (
                [f"no folder for classes {_names(lacking)} of {ref}"] if lacking else [])
            raise DataError(
                f"{folder} has {' and '.join(parts)}; expected the same class folders as {ref} "
                f"{_names(classes)}: rename, add or remove class folders so that both splits match"
            )
    else:
        classes = found
    files: list[tuple[Path, int]] = []
    empty: list[str] = []
    skipped: list[Path] = []
    for idx, cls in enumerate(classes):
        n = len(files)
        for p in sorted((folder / cls).iterdir()):
            if p.name.startswith("."):
                continue  # hidden: macOS "._x.jpg" resource forks, editor files
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                files.append((p, idx))
            else:
                skipped.append(p)
        if len(files) == n:
            empty.append(cls)
    if empty:
        raise DataError(
            f"{folder}: class folder(s) {_names(empty)} hold no images with extensions {IMAGE_EXTENSIONS}; "
            "add images to them or remove them"
        )
    if skipped:
        warn(f"{folder}: skipped {len(skipped)} entries that are not {'/'.join(IMAGE_EXTENSIONS)} images, e.g. {skipped[0]}")
    labels = np.array([i for _, i in files], np.int64)
    cache_dir = _usable_cache_dir()
    cache = None
    if cache_dir is not None:
        cache = cache_dir / f"imagefolder-{channels}-{_content_key(folder, files, classes, channels)[:32]}.npz"
        cached = _read_cache(cache, labels, channels)
        if cached is not None:
            return cached, classes

    mode = "L" if channels == 1 else "RGB"
    arrays = [_decode(p, mode) for p, _ in files]
    shapes: dict[tuple[int, ...], Path] = {}
    for a, (p, _) in zip(arrays, files):
        shapes.setdefault(a.shape[:2], p)
    if len(shapes) != 1:
        examples = ", ".join(f"{h}x{w} ({p.name})" for (h, w), p in list(shapes.items())[:4])
        raise DataError(f"{folder}: images differ in size: {examples}; resize them to one size first")
    images = np.stack(arrays)
    images = images[:, None] if channels == 1 else images.transpose(0, 3, 1, 2)
    out = ImageArrays(np.ascontiguousarray(images), labels)
    if cache is not None:
        _write_cache(cache, out)
    return out, classes


def _load_imagefolder_dataset(path: Path) -> DatasetArrays:
    layout = "PATH/<class>/* or PATH/{train,test}/<class>/*"
    if not path.is_dir():
        raise DataError(f"imagefolder root {path} does not exist or is not a folder; expected {layout}")
    if (path / "test").is_dir() and not (path / "train").is_dir():
        raise DataError(f"{path} has a test/ folder but no train/ folder; expected {layout}")
    from PIL import Image

    train_dir = path / "train" if (path / "train").is_dir() else path
    class_dirs = sorted(p for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    first = next(
        (p for d in class_dirs for p in sorted(d.iterdir())
         if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")),
        None,
    )
    if first is None:
        read_imagefolder(train_dir, 3)  # raises the DataError that says what is missing
        raise DataError(f"{train_dir} holds no images with extensions {IMAGE_EXTENSIONS}; expected {layout}")
    try:
        with Image.open(first) as im:
            channels = 1 if im.mode in ("L", "1", "I", "I;16", "F") else 3
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {first} ({type(exc).__name__}: {exc}); replace or remove the file") from exc
    tr, classes = read_imagefolder(train_dir, channels)
    te = None
    if (path / "test").is_dir():
        te = read_imagefolder(path / "test", channels, classes, train_folder=train_dir)[0]
    return DatasetArrays(path.name, tr, te, classes)


# --------------------------------------------------------------------------------------------- npz

_NPZ_LAYOUT = "expected an np.savez archive with arrays x_train, y_train (and optionally x_test, y_test, classes)"


def _npz_images(path: Path, field: str, x: np.ndarray) -> np.ndarray:
    """``x`` as uint8 N x C x H x W, or a DataError naming ``field``."""
    want = "expected uint8 0-255 or float in [0, 1], shaped N x H x W, N x C x H x W or N x H x W x C (C = 1 or 3)"
    kind = x.dtype.kind
    if x.dtype.names is not None or kind not in "iuf":
        raise DataError(f"{path}: {field} has dtype {x.dtype} (shape {x.shape}); {want}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[1] not in (1, 3):
            if x.shape[-1] in (1, 3):
                x = x.transpose(0, 3, 1, 2)
            else:
                raise DataError(
                    f"{path}: {field} has shape {x.shape}: neither axis 1 (N x C x H x W) nor axis 3 (N x H x W x C) "
                    f"holds 1 or 3 channels; {want}"
                )
    else:
        raise DataError(f"{path}: {field} has {x.ndim} dimension(s), shape {x.shape}; {want}")
    if len(x) == 0:
        raise DataError(f"{path}: {field} holds no images (shape {x.shape}); expected at least one")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise DataError(f"{path}: {field} images are {x.shape[2]}x{x.shape[3]} pixels (shape {x.shape}); {want}")
    if kind == "f":
        finite = np.isfinite(x)
        if not finite.all():
            raise DataError(
                f"{path}: {field} holds {int((~finite).sum())} NaN or infinite value(s); expected float pixels in [0, 1]"
            )
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1.0 + 1e-6:
            raise DataError(
                f"{path}: float images in {field} must lie in [0, 1] (or be uint8 0-255), got [{lo}, {hi}]: "
                "divide 0-255 floats by 255, or save them as uint8"
            )
        x = np.clip(np.round(x * 255), 0, 255).astype(np.uint8)
    elif x.dtype != np.uint8:
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise DataError(
                f"{path}: integer images in {field} must be 0-255 levels, got [{lo}, {hi}]: rescale them to 0-255 "
                "(uint8) or to floats in [0, 1]"
            )
        if hi <= 1:
            warn(f"{path}: {field} is {x.dtype} with values 0-1 only, read as 0-255 levels (nearly black); "
                 "save 0/1 images as float or scale them by 255")
        x = x.astype(np.uint8)
    return np.ascontiguousarray(x)


def _npz_labels(path: Path, field: str, y: np.ndarray, n_images: int, x_field: str) -> np.ndarray:
    """``y`` as int64 class indexes (whole-number floats accepted), or a DataError naming ``field``."""
    want = "expected one integer class index 0..K-1 per image, shape (N,)"
    kind = y.dtype.kind
    if y.dtype.names is not None or kind not in "iuf":
        raise DataError(f"{path}: {field} has dtype {y.dtype} (shape {y.shape}); {want}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        hint = " (one-hot rows? use y.argmax(axis=1))" if y.ndim == 2 else ""
        raise DataError(f"{path}: {field} has shape {y.shape}{hint}; {want}")
    if len(y) != n_images:
        raise DataError(f"{path}: {x_field} holds {n_images} images but {field} holds {len(y)} labels; {want}")
    if kind == "f":
        bad = y[~np.isfinite(y) | (y != np.round(y))]
        if bad.size:
            raise DataError(
                f"{path}: {field} holds {bad.size} non-integer label(s) {_few(bad)}; {want} (float labels are accepted "
                "only when all are whole numbers such as 0.0, 1.0)"
            )
    if y.size and (float(y.min()) < -(2**31) or float(y.max()) > 2**31):
        raise DataError(f"{path}: {field} holds label values {_few(y[(y < -(2**31)) | (y > 2**31)])}; {want}")
    return y.astype(np.int64)


def _npz_classes(path: Path, c: np.ndarray) -> tuple[str, ...]:
    want = "expected a 1-D array of class-name strings, e.g. classes=np.array(['cat', 'dog'])"
    if c.dtype.kind not in "US" or c.ndim != 1:
        raise DataError(f"{path}: classes has dtype {c.dtype} and shape {c.shape}; {want}")
    if c.dtype.kind == "S":
        try:
            return tuple(v.decode("utf-8") for v in c.tolist())
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: classes holds bytes that are not UTF-8 ({exc}); {want}") from exc
    return tuple(str(v) for v in c.tolist())


def _load_npz(path: Path) -> DatasetArrays:
    if path.is_dir():
        raise DataError(f"npz path {path} is a folder; {_NPZ_LAYOUT}")
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist; {_NPZ_LAYOUT}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise DataError(f"cannot read npz file {path} ({exc}); fix its permissions") from exc
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
        what = "an empty file" if not head else f"a file that starts with {head!r}"
        raise DataError(
            f"{path} is not a readable .npz archive: it is {what}, not a zip archive (which starts with b'PK\\x03\\x04'); "
            f"{_NPZ_LAYOUT}"
        )
    try:
        z = np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise DataError(f"{path} is not a readable .npz archive ({type(exc).__name__}: {exc}); {_NPZ_LAYOUT}") from exc
    if not isinstance(z, np.lib.npyio.NpzFile):
        shape = f" {z.dtype} {z.shape}" if isinstance(z, np.ndarray) else ""
        raise DataError(f"{path} is a single .npy array{shape}, not an .npz archive; {_NPZ_LAYOUT}")
    with z:
        names = set(z.files)
        if "x_train" not in names or "y_train" not in names:
            raise DataError(f"{path} has arrays {sorted(names)}; expected x_train and y_train (and optionally x_test, y_test, classes)")
        if ("x_test" in names) != ("y_test" in names):
            have, lack = ("x_test", "y_test") if "x_test" in names else ("y_test", "x_test")
            raise DataError(f"{path} has {have} but no {lack}; give both test arrays or neither")
        ignored = sorted(names - {"x_train", "y_train", "x_test", "y_test", "classes"})
        if ignored:
            warn(f"{path}: ignoring arrays {ignored}; only x_train, y_train, x_test, y_test and classes are read")

        def field(name: str) -> np.ndarray:
            try:
                return np.asarray(z[name])
            except _READ_ERRORS as exc:
                raise DataError(
                    f"{path}: array {name!r} cannot be read ({type(exc).__name__}: {exc}); expected a plain numeric "
                    "array saved without pickle (object arrays are refused): re-save the file with np.savez"
                ) from exc

        def split(xf: str, yf: str) -> ImageArrays:
            x = _npz_images(path, xf, field(xf))
            return ImageArrays(x, _npz_labels(path, yf, field(yf), len(x), xf))

        tr = split("x_train", "y_train")
        te = split("x_test", "y_test") if "x_test" in names else None
        if "classes" in names:
            classes = _npz_classes(path, field("classes"))
        else:
            top = max(int(tr.labels.max()), int(te.labels.max()) if te is not None else -1)
            classes = tuple(str(i) for i in range(max(top + 1, 1)))
    return DatasetArrays(path.stem, tr, te, classes)
