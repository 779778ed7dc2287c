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

Every dataset :func:`load_dataset` returns has passed
:func:`~metaerr_edge.data.arrays.validate_dataset`; each source's own checks live in its module
(:mod:`.idx`, :mod:`.imagefolder`, :mod:`.npz`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from metaerr_edge.data.arrays import DatasetArrays, ImageArrays, validate_dataset
from metaerr_edge.data.idx import FASHION_MNIST_CLASSES, MNIST_CLASSES, _idx_source, read_idx
from metaerr_edge.data.imagefolder import IMAGE_EXTENSIONS, _load_imagefolder_dataset, read_imagefolder
from metaerr_edge.data.npz import _load_npz
from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge.registry import Registry

__all__ = ["FASHION_MNIST_CLASSES", "IMAGE_EXTENSIONS", "MNIST_CLASSES", "DatasetArrays", "ImageArrays",
           "available_sources", "load_dataset", "read_idx", "read_imagefolder", "register_source",
           "validate_dataset"]

SourceLoader = Callable[[Path | None, bool], DatasetArrays]
#: The dataset sources, each ``fn(root, download) -> DatasetArrays``. A path-style source is
#: registered as ``"<prefix>:PATH"``: ``load_dataset("<prefix>:some/dir")`` calls it with
#: ``root=Path("some/dir")``. Metadata ``where`` names its data in messages (``"npz file"``) and
#: ``fields`` are :func:`validate_dataset`'s ``image_fields`` / ``label_fields`` for it.
SOURCES: Registry[SourceLoader] = Registry("dataset", positional=2)
register_source = SOURCES.register


def available_sources() -> list[str]:
    """The dataset names: the named sources sorted, then the path-style ones (``npz:PATH``)."""
    return sorted(SOURCES.available(), key=lambda n: (n.endswith(":PATH"), n))


def load_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False) -> DatasetArrays:
    """Load a dataset by name; what comes back has passed :func:`validate_dataset`.

    Example:
        >>> ds = load_dataset("digits")
        >>> ds.train.images.shape
        (1797, 1, 8, 8)
    """
    if not isinstance(name, str):
        raise ConfigError(f"dataset must be a name such as 'digits', 'npz:PATH' or 'imagefolder:PATH', got "
                          f"{type(name).__name__} {name!r}; expected one of {available_sources()}")
    prefix, sep, path = name.partition(":")
    if sep and f"{prefix}:PATH" in SOURCES:  # a path-style source: the path in the name is its root
        entry, root = SOURCES.entry(f"{prefix}:PATH"), path
    else:
        entry = SOURCES.entry(name)
    ds = SOURCES.create(entry.name, Path(root) if root is not None else None, download)
    if not isinstance(ds, DatasetArrays):
        raise DataError(f"the loader of dataset {name!r} returned {type(ds).__name__}; expected DatasetArrays")
    where = entry.meta.get("where")
    label = f"{where} {Path(root)}" if where else f"dataset {name!r}" + (f" under {root}" if root is not None else "")
    return validate_dataset(ds, label, **entry.meta.get("fields", {}))


@register_source("digits")
def _digits(root: Path | None, download: bool) -> DatasetArrays:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    return DatasetArrays("digits", ImageArrays(images, d.target.astype(np.int64)), None, tuple(str(i) for i in range(10)))


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


@register_source("imagefolder:PATH", where="imagefolder")
def _imagefolder(root: Path | None, download: bool) -> DatasetArrays:
    return _load_imagefolder_dataset(Path(root or "."))


@register_source("npz:PATH", where="npz file",
                 fields={"image_fields": ("x_train", "x_test"), "label_fields": ("y_train", "y_test")})
def _npz(root: Path | None, download: bool) -> DatasetArrays:
    return _load_npz(Path(root or "."))
