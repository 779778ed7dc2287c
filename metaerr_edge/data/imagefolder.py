"""ImageFolder trees (``PATH/<class>/*``), decoded once and cached.

- ImageFolder: the test folder has exactly the training folder's classes; no class folder is
  empty; every image decodes; hidden folders (``.ipynb_checkpoints``) are not classes and hidden
  files (macOS ``._x.jpg``) are not images.

The ImageFolder cache (decoded arrays in :func:`metaerr_edge._fileio.cache_dir`: ``$METAERR_EDGE_CACHE``,
else ``$XDG_CACHE_HOME/metaerr-edge``, else ``~/.cache/metaerr-edge``) is keyed on the SHA-256 of every image's bytes (plus its relative path,
class and the channel count), so an image edited in place comes back with its new pixels whatever
its size or mtime. Hashing reads every file (about 1 s for the 60,000 small CIFAR-10 JPEGs, against
about 10 s to decode them). A cache file that is unreadable or does not match the folder is rebuilt
with a one-line warning; a cache location that is not a writable folder (say
``$METAERR_EDGE_CACHE`` names a file) gives a one-line warning and the images are decoded without
a cache: the cache only saves time, so it never stops a run. Cache files are written atomically.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from metaerr_edge.console import warn
from metaerr_edge.data.arrays import _READ_ERRORS, DatasetArrays, ImageArrays, _names
from metaerr_edge.errors import ConfigError, DataError, MetaErrError
from metaerr_edge._fileio import cache_dir, write_npz

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm")
_CACHE_FORMAT = "metaerr-edge imagefolder cache v2"
_CACHE_WARNED: set[str] = set()


def _warn_cache_once(where: Path, message: str) -> None:
    if str(where) not in _CACHE_WARNED:
        _CACHE_WARNED.add(str(where))
        warn(message)


def _usable_cache_dir() -> Path | None:
    """The cache folder, or None (with a one-line warning) when it exists but is not a folder."""
    d = cache_dir()
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
    try:
        write_npz(cache, {"images": arrays.images, "labels": arrays.labels})
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
    must hold at least one image; hidden folders and files are skipped. Decoded arrays are cached in
    :func:`metaerr_edge._fileio.cache_dir` (``$METAERR_EDGE_CACHE``), keyed by the bytes of every image,
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
    cache_root = _usable_cache_dir()
    cache = None
    if cache_root is not None:
        cache = cache_root / f"imagefolder-{channels}-{_content_key(folder, files, classes, channels)[:32]}.npz"
        cached = _read_cache(cache, labels, channels)
        if cached is not None:
            return cached, classes

    mode = "L" if channels == 1 else "RGB"
    arrays = [_decode(p, mode) for p, _ in files]
    shapes: dict[tuple[int, ...], Path] = {}
    for a, (p, _) in zip(arrays, files):
        shapes.setdefault(a.shape[:2], p)
    if len(shapes) != 1:
        examples = ", ".join(f"{h}x{w} ({p.relative_to(folder)})" for (h, w), p in list(shapes.items())[:4])
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
