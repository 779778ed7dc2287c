"""Dataset arrays, and the one validation every dataset passes (:func:`validate_dataset`).

Anything that breaks a rule is a :class:`~metaerr_edge.errors.DataError` that names the file or
field, what was found and what was expected. The rules (each source adds its own, in its module):

- images: N x C x H x W uint8 with C = 1 or 3 and H, W >= 1; the test split has the training
  split's C x H x W; no split is empty; as many labels as images.
- labels: integers ``0..K-1`` where K = the number of class names. Float labels are accepted
  only when every value is a whole number (``0.0``, ``1.0``: a common side effect of pandas or
  MATLAB); ``1.5`` or NaN is refused. Negative labels (``-1`` for "unlabelled") are refused.
- every class name has at least one training image. A class no training image carries cannot be
  learned, and it is almost always a labelling mistake: non-contiguous labels (``0..8`` and
  ``1000``), a class-name list longer than the labels, or a test-only ImageFolder class.
- class names: at least two, non-empty strings, unique.
"""

from __future__ import annotations

import zipfile
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from metaerr_edge.errors import DataError

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
