"""``npz:PATH`` datasets: arrays ``x_train``, ``y_train`` and optionally ``x_test``, ``y_test``, ``classes``.

- ``npz:``: float images are finite and in ``[0, 1]`` (scaled to 0-255); integer images are
  0-255 levels; object, structured, string, complex and bool arrays are refused; ``classes`` is a
  1-D array of strings; the file must be an ``np.savez`` archive (a ``.npy``, a text file or a
  corrupt zip is named as such).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metaerr_edge.console import warn
from metaerr_edge.data.arrays import _READ_ERRORS, DatasetArrays, ImageArrays, _few
from metaerr_edge.errors import DataError

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
