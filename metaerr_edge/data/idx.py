"""MNIST-style IDX files (``<root>/MNIST/raw/*-ubyte``, torchvision's layout), read and checked with
numpy; ``.gz`` copies are read too. torchvision is used only to download them.

- MNIST-style IDX: magic ``0x00000803`` (unsigned-byte images, 3 dims) or ``0x00000801`` (labels,
  1 dim), big-endian sizes, a payload exactly as long as the header says, as many images as labels,
  labels 0-9.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from metaerr_edge.data.arrays import DatasetArrays, ImageArrays, _few
from metaerr_edge.errors import DataError

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
