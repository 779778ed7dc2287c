"""Load image files and folders into the layout and dtype a model's contract asks for.

Pillow is imported inside :func:`load_images`. Folders are walked recursively and their files
sorted, so the order of the returned batch is reproducible.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from metaerr_edge.errors import InputError, require
from metaerr_edge.fuse.contract import Contract

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm")


def find_images(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into image files, in the order given.

    Raises:
        InputError: a path does not exist, or a folder holds no image file.

    Example:
        >>> find_images(["photos/", "extra.png"])
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise InputError(f"folder {str(path)!r} holds no image file (looked for {', '.join(IMAGE_EXTENSIONS)})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"image path {str(path)!r} does not exist")
    if not files:
        raise InputError("no image paths given")
    return files


def load_images(paths: Sequence[str | os.PathLike[str]], contract: Contract,
                resize: bool = False) -> tuple[np.ndarray, list[Path]]:
    """Read image files into a batch that :meth:`Session.predict` accepts as is.

    Each image is converted to gray or RGB (BGR when the contract's ``channel_order`` says so)
    and stacked as NCHW float32 scaled into the contract's ``value_range`` (0-255 -> [0, 1] by
    default) or NHWC uint8 (0-255). An image whose size is not the contract's height x width is
    refused, since a silently resized frame may not be what the model was trained on; with
    ``resize=True`` it is resized with bilinear filtering instead.

    Args:
        paths: image files and/or folders (walked recursively; .png .jpg .jpeg .bmp .ppm .pgm).
        contract: the model's contract (``session.contract``).
        resize: resize images of another size instead of refusing them.

    Returns:
        ``(images, files)``: the batch, and the file each row came from.

    Raises:
        InputError: a path is missing, a folder is empty, a file cannot be read as an image, or
            (without ``resize``) an image has another size than the model's input.

    Example:
        >>> x, files = load_images(["camera/"], session.contract)
        >>> pred = session.predict(x)
    """
    pil = require("PIL.Image", "pillow", "loading image files")
    spec = contract.input
    mode = "L" if spec.channels == 1 else "RGB"
    bilinear = getattr(getattr(pil, "Resampling", pil), "BILINEAR")
    files = find_images(paths)
    batch = np.empty((len(files), spec.height, spec.width, spec.channels), dtype=np.uint8)
    wrong_size: list[tuple[Path, tuple[int, int]]] = []
    for i, file in enumerate(files):
        try:
            with pil.open(file) as img:
                img = img.convert(mode)
                if img.size != (spec.width, spec.height):
                    wrong_size.append((file, img.size))
                    if not resize:
                        continue
                    img = img.resize((spec.width, spec.height), bilinear)
                pixels = np.asarray(img, dtype=np.uint8)
        except (OSError, ValueError, pil.DecompressionBombError) as exc:
            raise InputError(f"cannot read image file {str(file)!r}: {exc}") from exc
        batch[i] = pixels.reshape(spec.height, spec.width, spec.channels)
    if wrong_size and not resize:
        (first, (w, h)), more = wrong_size[0], len(wrong_size) - 1
        raise InputError(
            f"{len(wrong_size)} of {len(files)} images are not {spec.width}x{spec.height} (width x height, the "
            f"model's input): {str(first)!r} is {w}x{h}" + (f" (and {more} more)" if more else "")
            + ". Resize them to the model's input, or pass --resize (load_images(..., resize=True)) to resize "
            "them bilinearly."
        )
    if spec.channels == 3 and spec.channel_order.upper() == "BGR":
        batch = batch[..., ::-1]
    if spec.layout == "NHWC":
        return np.ascontiguousarray(batch), files
    lo, hi = spec.value_range
    scaled = batch.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    if (lo, hi) != (0.0, 1.0):
        scaled = scaled * np.float32(hi - lo) + np.float32(lo)
    return np.ascontiguousarray(scaled), files
