"""Dataset sources: every source yields uint8 images in NCHW plus int64 labels.

Sources (the registry below is the one list of them):

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images; no files needed; the default).
- ``mnist`` / ``fashion-mnist``: torchvision's raw IDX layout under ``<root>/MNIST/raw`` etc.
- ``cifar10``: ``<root>/CIFAR10-jpeg/{train,test}/<class>/*.jpg`` (ImageFolder) or torchvision's
  ``<root>/cifar-10-batches-py``.
- ``imagefolder:PATH``: ``PATH/{train,test}/<class>/*`` or ``PATH/<class>/*``.
- ``npz:PATH``: arrays ``x_train``, ``y_train`` and optionally ``x_test``, ``y_test``, ``classes``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metaerr_edge.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm")


@dataclass(frozen=True)
class ImageArrays:
    """Images (uint8, N x C x H x W) and their labels (int64, N)."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise DataError(
                f"images must be uint8 with shape N x C x H x W, got {self.images.dtype} {self.images.shape}"
            )
        if len(self.images) != len(self.labels):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "ImageArrays":
        return ImageArrays(self.images[index], self.labels[index])


@dataclass(frozen=True)
class DatasetArrays:
    """A loaded dataset: the training pool, the official test split (if any) and class names."""

    name: str
    train: ImageArrays
    test: ImageArrays | None
    classes: tuple[str, ...]

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
    """Load a dataset by name.

    Example:
        >>> ds = load_dataset("digits")
        >>> ds.train.images.shape
        (1797, 1, 8, 8)
    """
    if name.startswith("imagefolder:"):
        return _load_imagefolder_dataset(Path(name.split(":", 1)[1]))
    if name.startswith("npz:"):
        return _load_npz(Path(name.split(":", 1)[1]))
    if name not in _SOURCES:
        raise ConfigError(
            f"unknown dataset {name!r}; expected one of {available_sources()}"
        )
    return _SOURCES[name](Path(root) if root is not None else None, download)


@register_source("digits")
def _digits(root: Path | None, download: bool) -> DatasetArrays:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    return DatasetArrays("digits", ImageArrays(images, d.target.astype(np.int64)), None, tuple(str(i) for i in range(10)))


def _torchvision_idx(cls_name: str, folder: str, classes: tuple[str, ...] | None = None):
    def load(root: Path | None, download: bool) -> DatasetArrays:
        if root is None:
            raise DataError(
                f"{cls_name} needs a data root: pass --root DIR holding {folder}/raw/*-ubyte "
                "(or --download where a network exists)"
            )
        if not download and not (root / folder / "raw").is_dir():
            raise DataError(
                f"no {cls_name} under {root}: expected {root / folder / 'raw'} with "
                "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                "t10k-labels-idx1-ubyte (torchvision's raw layout). Fix --root or pass --download."
            )
        import torchvision

        ds_cls = getattr(torchvision.datasets, cls_name)
        try:
            tr = ds_cls(str(root), train=True, download=download)
            te = ds_cls(str(root), train=False, download=download)
        except RuntimeError as exc:
            raise DataError(f"torchvision could not read {cls_name} under {root}: {exc}") from exc
        names = classes or tuple(str(c) for c in tr.classes)
        return DatasetArrays(
            cls_name.lower(),
            ImageArrays(tr.data.numpy()[:, None].copy(), tr.targets.numpy().astype(np.int64)),
            ImageArrays(te.data.numpy()[:, None].copy(), te.targets.numpy().astype(np.int64)),
            names,
        )

    return load


register_source("mnist")(_torchvision_idx("MNIST", "MNIST"))
register_source("fashion-mnist")(_torchvision_idx("FashionMNIST", "FashionMNIST"))


@register_source("cifar10")
def _cifar10(root: Path | None, download: bool) -> DatasetArrays:
    if root is None:
        raise DataError("cifar10 needs a data root: pass --root DIR holding CIFAR10-jpeg/{train,test}/<class>/")
    jpeg = root / "CIFAR10-jpeg"
    if (jpeg / "train").is_dir():
        tr, classes = read_imagefolder(jpeg / "train", channels=3)
        te, _ = read_imagefolder(jpeg / "test", channels=3, classes=classes)
        return DatasetArrays("cifar10", tr, te, classes)
    if download or (root / "cifar-10-batches-py").is_dir():
        import torchvision

        tr = torchvision.datasets.CIFAR10(str(root), train=True, download=download)
        te = torchvision.datasets.CIFAR10(str(root), train=False, download=download)
        to = lambda d: ImageArrays(np.ascontiguousarray(d.data.transpose(0, 3, 1, 2)), np.asarray(d.targets, np.int64))  # noqa: E731
        return DatasetArrays("cifar10", to(tr), to(te), tuple(tr.classes))
    raise DataError(
        f"no CIFAR-10 under {root}: expected {jpeg}/train/<class>/*.jpg and {jpeg}/test/<class>/*.jpg "
        f"(ImageFolder) or {root}/cifar-10-batches-py (torchvision). Fix --root or pass --download."
    )


def _cache_dir() -> Path:
    return Path(os.environ.get("METAERR_EDGE_CACHE", Path.home() / ".cache" / "metaerr_edge"))


def read_imagefolder(
    folder: Path, channels: int, classes: tuple[str, ...] | None = None
) -> tuple[ImageArrays, tuple[str, ...]]:
    """Read ``folder/<class>/*`` into uint8 arrays (sorted class names, like torchvision's ImageFolder).

    Decoded arrays are cached under ``$METAERR_EDGE_CACHE`` (default ``~/.cache/metaerr_edge``), keyed
    by the file list and sizes, so a second load skips JPEG decoding.
    """
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; expected {folder}/<class>/<image files>")
    found = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir()))
    classes = classes or found
    if not classes:
        raise DataError(f"{folder} has no class sub-folders; expected {folder}/<class>/<image files>")
    files: list[tuple[Path, int]] = []
    for idx, cls in enumerate(classes):
        for p in sorted((folder / cls).glob("*")):
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                files.append((p, idx))
    if not files:
        raise DataError(f"{folder} holds no images with extensions {IMAGE_EXTENSIONS}")
    key = hashlib.sha256()
    for p, idx in files:
        key.update(f"{p}|{p.stat().st_size}|{idx}\n".encode())
    cache = _cache_dir() / f"imagefolder-{channels}-{key.hexdigest()[:20]}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            return ImageArrays(z["images"], z["labels"]), classes
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for p, _ in files:
        with Image.open(p) as im:
            arrays.append(np.asarray(im.convert(mode)))
    shapes = {a.shape[:2] for a in arrays}
    if len(shapes) != 1:
        raise DataError(f"{folder}: images differ in size {sorted(shapes)[:4]}; resize them to one size first")
    images = np.stack(arrays)
    images = images[:, None] if channels == 1 else images.transpose(0, 3, 1, 2)
    out = ImageArrays(np.ascontiguousarray(images), np.array([i for _, i in files], np.int64))
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, images=out.images, labels=out.labels)
        os.replace(tmp, cache)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out, classes


def _load_imagefolder_dataset(path: Path) -> DatasetArrays:
    if not path.is_dir():
        raise DataError(f"imagefolder root {path} does not exist; expected PATH/<class>/* or PATH/{{train,test}}/<class>/*")
    from PIL import Image

    train_dir = path / "train" if (path / "train").is_dir() else path
    first = next((p for p in train_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS), None)
    if first is None:
        raise DataError(f"{train_dir} holds no images with extensions {IMAGE_EXTENSIONS}")
    with Image.open(first) as im:
        channels = 1 if im.mode in ("L", "1", "I", "I;16") else 3
    tr, classes = read_imagefolder(train_dir, channels)
    te = read_imagefolder(path / "test", channels, classes)[0] if (path / "test").is_dir() else None
    return DatasetArrays(path.name, tr, te, classes)


def _load_npz(path: Path) -> DatasetArrays:
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist; expected arrays x_train, y_train[, x_test, y_test, classes]")
    with np.load(path, allow_pickle=False) as z:
        if "x_train" not in z or "y_train" not in z:
            raise DataError(f"{path} has arrays {sorted(z.files)}; expected x_train and y_train (and optionally x_test, y_test, classes)")

        def arrays(x: np.ndarray, y: np.ndarray) -> ImageArrays:
            if x.ndim == 3:
                x = x[:, None]
            elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
                x = x.transpose(0, 3, 1, 2)
            if x.dtype != np.uint8:
                if x.min() < 0 or x.max() > 1.0 + 1e-6:
                    raise DataError(f"{path}: float images must lie in [0, 1] (or be uint8 0-255), got [{x.min()}, {x.max()}]")
                x = np.round(x * 255).astype(np.uint8)
            return ImageArrays(np.ascontiguousarray(x), y.astype(np.int64))

        tr = arrays(z["x_train"], z["y_train"])
        te = arrays(z["x_test"], z["y_test"]) if "x_test" in z else None
        k = int(tr.labels.max()) + 1
        classes = tuple(str(c) for c in z["classes"]) if "classes" in z else tuple(str(i) for i in range(k))
    return DatasetArrays(path.stem, tr, te, classes)
