"""Load image files and folders into the layout and dtype a model's contract asks for.

Pillow is imported inside :func:`load_images`. Folders are walked recursively and their files
sorted, so the order of the returned batch is reproducible. Every file is read faithfully (the
conversion rules are in :func:`load_images`) or refused with an :class:`InputError` that names it;
every entry of a folder that is skipped is reported by one WARNING line (see :func:`find_images`).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metaerr_edge.console import warn
from metaerr_edge.errors import InputError, MetaErrError, require
from metaerr_edge.contract.spec import Contract

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm")
LOGGER_NAME = "metaerr_edge.runtime.images"

_ORIENTATION_TAG = 0x0112  # EXIF Orientation; 5-8 swap width and height
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_COLOR_MODES = ("RGB", "RGBX", "CMYK", "YCbCr")


def _skip(path: str | os.PathLike[str], why: str) -> None:
    warn(f"skipped {str(path)!r}: {why}", name=LOGGER_NAME)


def _has_image_extension(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _inside(root_real: str, target_real: str) -> bool:
    return os.path.commonpath([root_real, target_real]) == root_real


def _walk(folder: Path, root_real: str, found: list[Path]) -> int:
    """Collect the image files under ``folder`` into ``found``; return how many entries were skipped."""
    skipped = 0
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = list(it)
        except OSError as exc:
            if current == folder:
                raise InputError(
                    f"cannot read folder {str(folder)!r} ({exc.strerror or exc}); check its permissions"
                ) from exc
            _skip(current, f"cannot read this sub-folder ({exc.strerror or exc}); its images were not loaded - "
                           "fix its permissions or leave it out")
            skipped += 1
            continue
        for entry in entries:
            path = Path(entry.path)
            try:
                is_link = entry.is_symlink()
                if not is_link:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(path)
                    elif _has_image_extension(entry.name):
                        if entry.is_file(follow_symlinks=False):
                            found.append(path)
                        else:
                            _skip(path, "not a regular file (a FIFO, socket or device); images must be plain files")
                            skipped += 1
                    continue
                skipped += _follow_link(path, root_real, found)
            except OSError as exc:
                _skip(path, f"cannot inspect it ({exc.strerror or exc})")
                skipped += 1
    return skipped


def _follow_link(path: Path, root_real: str, found: list[Path]) -> int:
    """Apply the symlink rules of :func:`find_images` to one link; return 1 when it was skipped."""
    try:
        st = os.stat(path)  # follows the link
    except (FileNotFoundError, NotADirectoryError):
        _skip(path, f"dangling symlink: its target {os.readlink(path)!r} does not exist")
        return 1
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            _skip(path, "symlink loop: following it leads back to a link already followed, never to a file")
        else:
            _skip(path, f"cannot follow this symlink ({exc.strerror or exc})")
        return 1
    target = os.path.realpath(path)
    where = "inside" if _inside(root_real, target) else "outside"
    if stat.S_ISDIR(st.st_mode):
        if where == "inside":
            _skip(path, f"symlink to the folder {target!r} inside the folder given; folder links are not followed "
                        "(its images are read through their own path)")
        else:
            _skip(path, f"symlink to the folder {target!r} outside the folder given; folder links are not "
                        "followed - pass that folder explicitly to include it")
        return 1
    if not _has_image_extension(path.name):
        return 0  # not an image name: ignored silently, like any other such file
    if where == "outside":
        _skip(path, f"symlink to {target!r}, outside the folder given; pass that file explicitly to include it")
        return 1
    if not stat.S_ISREG(st.st_mode):
        _skip(path, "symlink to something that is not a regular file (a FIFO, socket or device)")
        return 1
    found.append(path)
    return 0


def _missing_reason(path: Path) -> str:
    if path.is_symlink():
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "is a symlink loop"
            return f"is a dangling symlink (its target {os.readlink(path)!r} does not exist)"
    if os.path.lexists(path):
        return "is not a regular file or folder (a FIFO, socket or device)"
    return "does not exist"


def find_images(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into image files, in the order given.

    A file named in ``paths`` is taken as is, whatever its extension (a symlink is followed). A
    folder is walked recursively and its image files (extensions :data:`IMAGE_EXTENSIONS`, any
    case) are returned sorted; files with another extension are ignored silently. These entries
    of a folder are skipped, each with one WARNING line (logger ``metaerr_edge.runtime.images``)
    naming the path and why:

    * a sub-folder that cannot be read (permission denied): its images are not loaded;
    * a dangling symlink, or a symlink loop;
    * a symlink to a folder (never followed: inside the folder its images are read through their
      own path, outside it they are not part of the folder given);
    * a symlink to an image file that resolves outside the folder given (pass it explicitly);
    * an image-named entry that is not a regular file (FIFO, socket, device).

    A symlink to an image file inside the folder is returned under the link's own path. Whether
    a returned file can be decoded is checked by :func:`load_images`.

    Raises:
        InputError: a path does not exist (or is a dangling symlink), a given folder cannot be read,
            or a folder holds no image file.

    Example:
        >>> find_images(["photos/", "extra.png"])
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found: list[Path] = []
            skipped = _walk(path, os.path.realpath(path), found)
            if not found:
                more = (f"; {skipped} {'entry was' if skipped == 1 else 'entries were'} skipped, see the warnings "
                        "above" if skipped else "")
                raise InputError(
                    f"folder {str(path)!r} holds no image file (looked for {', '.join(IMAGE_EXTENSIONS)}{more})"
                )
            files.extend(sorted(found))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"image path {str(path)!r} {_missing_reason(path)}")
    if not files:
        raise InputError("no image paths given")
    return files


def _oriented_size(img: Any) -> tuple[int, int]:
    try:
        orientation = img.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block: exif_transpose will decide (or fail and be reported)
        return img.size
    w, h = img.size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _scale_16bit(values: np.ndarray) -> np.ndarray:
    """0-65535 -> 0-255 by value, rounded (exact for 257 * k -> k)."""
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _to_8bit(img: Any, pil: Any, file: Path) -> Any:
    """Convert a decoded Pillow image to an 8-bit "L" or "RGB" image by the rules of :func:`load_images`."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(img)
        if mode == "I":
            lo, hi = int(values.min()), int(values.max())
            if lo < 0 or hi > 65535:
                raise InputError(
                    f"image file {str(file)!r} is a 32-bit integer image with values in [{lo}, {hi}]; only 16-bit "
                    "values (0-65535) are read. Save it as an 8- or 16-bit image."
                )
        return pil.fromarray(_scale_16bit(values))
    if mode == "F":
        raise InputError(
            f"image file {str(file)!r} is a 32-bit float image (mode F), whose value scale the file does not "
            "state; save it as an 8- or 16-bit image, or load it yourself and pass the array to predict()"
        )
    if mode == "P":
        mode = "RGBA" if "transparency" in img.info else "RGB"
        img = img.convert(mode)
    elif mode == "PA":
        mode, img = "RGBA", img.convert("RGBA")
    if mode in _ALPHA_MODES:
        alpha = np.asarray(img.getchannel("A"))
        clear = int(np.count_nonzero(alpha != 255))
        if clear:
            raise InputError(
                f"image file {str(file)!r} has {clear} of {alpha.size} pixels not fully opaque (alpha < 255); "
                "the colour under a transparent pixel is undefined, so it is not guessed. Flatten the image onto "
                "the background you mean (e.g. Image.alpha_composite) or drop the alpha channel, and save it again."
            )
        return img.getchannel("L") if mode in ("LA", "La") else img.convert("RGB")
    if mode in _COLOR_MODES:
        return img.convert("RGB")
    raise InputError(
        f"image file {str(file)!r} has the image mode {mode!r}, which is not read (supported: 1-bit, 8-bit gray, "
        "16-bit gray, palette, gray/RGB with opaque alpha, RGB, CMYK, YCbCr); convert it to RGB or gray first"
    )


def load_images(paths: Sequence[str | os.PathLike[str]], contract: Contract,
                resize: bool = False) -> tuple[np.ndarray, list[Path]]:
    """Read image files into a batch that :meth:`Session.predict` accepts as is.

    Each image is converted to gray or RGB (BGR when the contract's ``channel_order`` says so)
    and stacked as NCHW float32 scaled into the contract's ``value_range`` (0-255 -> [0, 1] by
    default) or NHWC uint8 (0-255). An image whose size is not the contract's height x width is
    refused, since a silently resized frame may not be what the model was trained on; with
    ``resize=True`` it is resized with bilinear filtering instead (after the conversion to 8 bits).

    Conversion rules (what Pillow decodes, to 8-bit gray "L" or "RGB"):

    * EXIF orientation (JPEG, PNG, TIFF, WebP) is applied first, so the size checked is the
      size the image is displayed at (a 16x12 frame tagged "rotate 90" is 12x16);
    * 1-bit: 0 or 255; 8-bit gray and RGB: as stored (ICC profiles are not applied);
    * 16-bit gray (modes I;16, I;16B, I;16L, and I, as 16-bit PGM opens): scaled by value,
      ``round(v * 255 / 65535)`` (65535 -> 255, 257*k -> k); a 32-bit integer image with values
      outside 0-65535 is refused. 16-bit RGB(A) PNGs are reduced to 8 bits by Pillow itself (the
      high byte; also exact for 257*k -> k);
    * 32-bit float images (mode F) are refused: the file does not state their value scale;
    * palette (P, PA): expanded through the palette (with its transparency, if any);
    * alpha (LA, RGBA, PA, P with transparency, premultiplied La/RGBa): accepted when every pixel
      is fully opaque (alpha 255) and then dropped; an image with any transparent pixel is refused,
      since the colour under it is undefined (flatten it onto the background you mean first);
    * CMYK and YCbCr: converted to RGB with Pillow's conversion (no ICC profile); LAB, HSV and other
      modes are refused;
    * to gray, RGB uses ITU-R 601-2 luma (Pillow's ``L = R*299/1000 + G*587/1000 + B*114/1000``,
      rounded); to RGB, gray is repeated over the three channels;
    * multi-frame files (animated GIF/PNG, multi-page TIFF) are refused: which frame is meant is
      not guessed; extract it first. A JPEG with extra MPF frames (MPO: previews or depth maps that
      cameras append) is read as its primary (first) image;
    * images above Pillow's ``Image.MAX_IMAGE_PIXELS`` (decompression bombs) are refused.

    Args:
        paths: image files and/or folders (walked recursively; .png .jpg .jpeg .bmp .ppm .pgm;
            see :func:`find_images` for what is skipped, each with a warning).
        contract: the model's contract (``session.contract``).
        resize: resize images of another size instead of refusing them.

    Returns:
        ``(images, files)``: the batch, and the file each row came from.

    Raises:
        InputError: a path is missing, a folder is empty, a file cannot be read as an image or is
            refused by the rules above, or (without ``resize``) an image has another size than the
            model's input.

    Example:
        >>> x, files = load_images(["camera/"], session.contract)
        >>> pred = session.predict(x)
    """
    pil = require("PIL.Image", "pillow", "loading image files")
    ops = require("PIL.ImageOps", "pillow", "loading image files")
    spec = contract.input
    mode = "L" if spec.channels == 1 else "RGB"
    bilinear = getattr(getattr(pil, "Resampling", pil), "BILINEAR")
    files = find_images(paths)
    batch = np.empty((len(files), spec.height, spec.width, spec.channels), dtype=np.uint8)
    wrong_size: list[tuple[Path, tuple[int, int]]] = []
    for i, file in enumerate(files):
        try:
            with pil.open(file) as img:
                frames = getattr(img, "n_frames", 1)
                if frames > 1 and img.format != "MPO":  # MPO: a JPEG whose extra frames are previews
                    raise InputError(
                        f"image file {str(file)!r} holds {frames} frames (animated or multi-page); which one is "
                        "meant is not guessed. Save the frame you mean as a single image."
                    )
                size = _oriented_size(img)
                if size != (spec.width, spec.height):
                    wrong_size.append((file, size))
                    if not resize:
                        continue  # refused below, without decoding it
                img = ops.exif_transpose(img)
                img = _to_8bit(img, pil, file)
                if img.mode != mode:
                    img = img.convert(mode)
                if img.size != (spec.width, spec.height):
                    img = img.resize((spec.width, spec.height), bilinear)
                pixels = np.asarray(img, dtype=np.uint8)
        except MetaErrError:
            raise
        except Exception as exc:  # Pillow raises many kinds for a broken file; all mean "cannot read it"
            kind = "" if isinstance(exc, (OSError, ValueError)) else f"{type(exc).__name__}: "
            raise InputError(f"cannot read image file {str(file)!r}: {kind}{exc}") from exc
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
