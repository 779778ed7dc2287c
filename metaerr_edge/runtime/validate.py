"""Input validation run before any backend sees the images (as Polygraphy's runners do).

Policy, strict by design so that a wrong input fails loudly instead of scoring garbage:

* a ``numpy.ndarray`` of rank 4 (a batch); a single image is rejected with the fix (``images[None]``);
  anything else (lists of arrays, torch/cupy tensors, objects with ``__array__``) is rejected with
  the conversion to use; a subclass of ``ndarray`` (memmap, ...) is read as a plain array; a masked
  array (``np.ma.MaskedArray``) with any masked element is rejected (the values under the mask are
  not pixels), one without masked elements is read as its data;
* the contract's layout (NCHW or NHWC), channel count and height/width; channels-last given to a
  channels-first contract (or the reverse) is recognised and the transpose is named;
* float32 contracts (NCHW): float32 passes (any byte order), float64/float16 are cast to float32,
  integers, bools, complex and object arrays are rejected (for integers: ``astype(np.float32) / 255``); values
  must be finite and inside the contract's ``value_range`` (tolerance :data:`RANGE_TOL`), checked
  before the cast (so a float64 too large for float32 is reported as out of range, not as Inf),
  and 0-255 floats are recognised (hint: ``/ 255``);
* uint8 contracts (NHWC camera frames): only uint8 passes (bool, object and other dtypes are
  rejected with the conversion to use);
* no empty batch, and no batch above ``max_batch`` (a TensorRT profile's maximum).

Every failure raises :class:`~metaerr_edge.errors.InputError` naming what was expected, what came
and how to fix it. The result is a C-contiguous, aligned, plain ``ndarray`` in the contract's dtype
(non-contiguous views, negative or zero strides and unaligned buffers are copied).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from metaerr_edge.errors import InputError
from metaerr_edge.contract.spec import Contract

RANGE_TOL = 1e-3  # relative to the width of the value range


def validate_images(images: Any, contract: Contract, max_batch: int | None = None) -> np.ndarray:
    """Check a batch against the contract's input spec and return it ready for a backend.

    Args:
        images: the batch, ``[N, C, H, W]`` float32 or ``[N, H, W, C]`` uint8 per the contract.
        contract: the model's contract (its ``input`` spec is what is checked).
        max_batch: the largest batch the backend accepts (None: no limit).

    Returns:
        A C-contiguous array in the contract's dtype (the input itself when nothing had to change).

    Raises:
        InputError: with expected vs got and the fix.

    Example:
        >>> x = validate_images(np.random.rand(8, 1, 28, 28).astype(np.float32), contract)
        >>> validate_images(np.zeros((1, 28, 28), np.float32), contract)   # raises: use images[None]
    """
    spec = contract.input
    expected_shape = _shape_text(spec.layout, spec.channels, spec.height, spec.width)
    want = f"a numpy array of shape {expected_shape} ({spec.layout}), dtype {spec.dtype}"
    if not isinstance(images, np.ndarray):
        raise InputError(f"expected {want}, got {_describe(images)}. {_array_hint(images)}")
    if isinstance(images, np.ma.MaskedArray):
        _check_unmasked(images)
        images = np.ma.getdata(images)
    if type(images) is not np.ndarray:  # a subclass: its overrides (min, max, ...) are not trusted
        images = np.asarray(images)
    if images.ndim != 4:
        raise InputError(
            f"expected {want}, got rank {images.ndim} shape {images.shape}. {_rank_hint(images, spec.layout)}"
        )
    n = images.shape[0]
    if n == 0:
        raise InputError(f"empty batch: got shape {images.shape}; pass at least one image")
    if max_batch is not None and n > max_batch:
        raise InputError(
            f"batch of {n} images is above this backend's maximum of {max_batch} (its engine profile); "
            f"split it, e.g. np.array_split(images, {-(-n // max_batch)}), or rebuild with a larger max_batch"
        )
    _check_shape(images.shape, spec.layout, spec.channels, spec.height, spec.width, expected_shape)
    if spec.dtype == "uint8":
        x = _check_uint8(images)
    else:
        x = _check_float(images, spec.value_range)
    x = np.ascontiguousarray(x)
    return x if x.flags.aligned else x.copy()


def _check_unmasked(images: np.ma.MaskedArray) -> None:
    mask = np.ma.getmaskarray(images)
    masked = int(np.count_nonzero(mask))
    if not masked:
        return
    where = ""
    if mask.ndim >= 2 and mask.shape[0]:
        rows = mask.reshape(mask.shape[0], -1).any(axis=1)
        where = f" in {int(rows.sum())} of {mask.shape[0]} image(s) (first at batch index {int(np.argmax(rows))})"
    raise InputError(
        f"expected a plain array of pixels, got a masked array with {masked} of {mask.size} element(s) masked"
        f"{where}; the values under the mask are not pixels. Fill them (images.filled(value)) or drop those "
        "images, and pass a plain array (np.asarray)"
    )


def _shape_text(layout: str, c: int, h: int, w: int) -> str:
    return f"(N, {c}, {h}, {w})" if layout == "NCHW" else f"(N, {h}, {w}, {c})"


def _describe(obj: Any) -> str:
    shape = getattr(obj, "shape", None)
    name = f"{type(obj).__module__}.{type(obj).__qualname__}"
    return name + (f" of shape {tuple(shape)}" if shape is not None else "")


def _array_hint(obj: Any) -> str:
    module = type(obj).__module__.split(".")[0]
    if module == "torch":
        return "Convert the tensor with images.detach().cpu().numpy()."
    if module == "cupy":
        return "Copy the array to the host with images.get()."
    if module in ("PIL",):
        return "Load image files with metaerr_edge.runtime.load_images(paths, contract)."
    if isinstance(obj, (list, tuple)):
        return "Stack the images into one array with np.stack(images)."
    return "Convert it with np.asarray(images)."


def _rank_hint(images: np.ndarray, layout: str) -> str:
    if images.ndim == 3:
        return "A single image needs the batch axis: pass images[None]."
    if images.ndim == 2:
        fix = "images[None, None]" if layout == "NCHW" else "images[None, :, :, None]"
        return f"A single gray image without channel axis: pass {fix}."
    return "Reshape it to a batch of images."


def _check_shape(shape: tuple[int, ...], layout: str, c: int, h: int, w: int, expected: str) -> None:
    got_c, got_hw = (shape[1], shape[2:]) if layout == "NCHW" else (shape[3], shape[1:3])
    if got_c == c and got_hw == (h, w):
        return
    if layout == "NCHW" and shape[3] == c and shape[1:3] == (h, w):
        raise InputError(
            f"expected channels-first {expected}, got channels-last {shape} (NHWC); "
            "transpose it with images.transpose(0, 3, 1, 2)"
        )
    if layout == "NHWC" and shape[1] == c and shape[2:] == (h, w):
        raise InputError(
            f"expected channels-last {expected}, got channels-first {shape} (NCHW); "
            "transpose it with images.transpose(0, 2, 3, 1)"
        )
    if got_c != c:
        axis = 1 if layout == "NCHW" else 3
        fixes = {
            (3, 1): f"convert to gray, e.g. images.mean(axis={axis}, keepdims=True)",
            (4, 1): "drop alpha and convert to gray",
            (1, 3): f"repeat the gray channel: np.repeat(images, 3, axis={axis})",
            (4, 3): "drop the alpha channel",
        }
        fix = fixes.get((got_c, c), f"give {c} channel(s) on axis {axis}")
        raise InputError(
            f"expected {c} channel(s) on axis {axis} ({layout}, shape {expected}), got {got_c} in shape {shape}; "
            f"{fix} (load_images converts files for you)"
        )
    raise InputError(
        f"expected images of height x width {h} x {w} (shape {expected}), got {got_hw[0]} x {got_hw[1]} "
        f"in shape {shape}; resize them to {h} x {w} (load_images resizes files to the contract's size)"
    )


def _check_uint8(images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind == "b":
        hint = "bools are a mask, not pixels; for a binary image use images.astype(np.uint8) * 255"
    elif images.dtype.kind == "O":
        hint = ("an object array (e.g. np.array of images of different shapes) holds no pixels; build a numeric "
                "array with np.stack(images).astype(np.uint8)")
    elif images.dtype.kind == "f":
        hint = "if the values are in [0, 1], use (images * 255).round().astype(np.uint8)"
    else:
        hint = "convert with images.astype(np.uint8) after checking the values lie in 0-255"
    raise InputError(f"expected dtype uint8 (camera frames, 0-255, NHWC), got {images.dtype}; {hint}")


def _check_float(images: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    if images.dtype.kind == "b":
        raise InputError(
            f"expected dtype float32 with values in {list(value_range)}, got bool (a mask, not pixels); for a "
            "binary image use images.astype(np.float32) (True -> 1.0)"
        )
    if images.dtype.kind == "O":
        raise InputError(
            "expected dtype float32, got object (e.g. np.array of images of different shapes, or of Python "
            "objects); build a numeric array with np.stack(images).astype(np.float32)"
        )
    if images.dtype.kind in "iu":
        raise InputError(
            f"expected dtype float32 with values in {list(value_range)}, got {images.dtype}; "
            "convert pixels with images.astype(np.float32) / 255"
        )
    if images.dtype.kind != "f":
        raise InputError(f"expected dtype float32, got {images.dtype}; convert with images.astype(np.float32)")
    x = images  # checked in its own dtype, cast to float32 at the end
    lo, hi = float(value_range[0]), float(value_range[1])
    mn, mx = float(x.min()), float(x.max())
    if not (np.isfinite(mn) and np.isfinite(mx)):
        bad = ~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
        kinds = ", ".join(k for k, f in (("NaN", np.isnan), ("Inf", np.isinf)) if f(x).any())
        raise InputError(
            f"expected finite values in {[lo, hi]}, got {kinds} in {int(bad.sum())} of {x.shape[0]} image(s) "
            f"(first at batch index {int(np.argmax(bad))}); fix or drop those images"
        )
    tol = RANGE_TOL * max(hi - lo, 1e-12)
    if mn >= lo - tol and mx <= hi + tol:
        return x if x.dtype == np.float32 and x.dtype.isnative else x.astype(np.float32)
    got = f"got values in [{mn:.4g}, {mx:.4g}]"
    if hi <= 1.0 + tol and mx > hi + tol and mx <= 255.0 + tol and mn >= lo - tol:
        raise InputError(f"expected values in {[lo, hi]}, {got}: these look like 0-255 pixels; divide by 255")
    if mn < lo - tol and lo >= 0.0:
        raise InputError(
            f"expected values in {[lo, hi]}, {got}: these look already normalized (mean/std); pass raw "
            "images, the graph normalizes them itself"
        )
    raise InputError(f"expected values in {[lo, hi]}, {got}; rescale them into {[lo, hi]}")
