"""The image corpus: every kind of file and array a user may hand the runtime, read faithfully or refused.

One row per input. The expected outcome is either the exact pixels the model receives, or an
:class:`InputError` whose message carries the fragment given (no other exception may escape).
Images are built here with Pillow in ``tmp_path``; no model is needed (torch-free and fast).
"""

from __future__ import annotations

import logging
import os
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from metaerr_edge.errors import InputError
from metaerr_edge.contract.spec import Contract, InputSpec
from metaerr_edge.runtime import find_images, load_images, validate_images

H, W = 3, 4  # not square, so that a transposed or rotated image cannot pass unnoticed
GRAY = Contract(input=InputSpec(height=H, width=W), classes=("a", "b"))
RGB = Contract(input=InputSpec(layout="NHWC", dtype="uint8", channels=3, height=H, width=W, value_range=(0.0, 255.0),
                               channel_order="RGB", mean=(0.5,) * 3, std=(0.5,) * 3), classes=("a", "b"))
BGR = replace(RGB, input=replace(RGB.input, channel_order="BGR"))
LOGGER = "metaerr_edge.runtime.images"

K = np.array([[0, 1, 2, 3], [127, 128, 129, 200], [253, 254, 255, 64]], np.uint8)  # H x W gray levels
COLOR = np.random.default_rng(7).integers(0, 256, (H, W, 3), dtype=np.uint8)
ODD16 = np.array([[0, 128, 129, 32767], [32768, 65535, 65534, 1], [257, 258, 385, 386]], np.uint16)
PALETTE = np.array([[10, 20, 30], [200, 100, 50], [0, 255, 0], [255, 255, 255]], np.uint8)
INDEX = np.array([[0, 1, 2, 0], [1, 1, 2, 2], [0, 0, 0, 1]], np.uint8)  # index 3 is never used


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, as Pillow rounds it (the stated rule for RGB -> gray)."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def scale16(v: np.ndarray) -> np.ndarray:
    """16-bit -> 8-bit by value, rounded (independent of the implementation's integer formula)."""
    return np.vectorize(lambda x: round(int(x) * 255 / 65535))(v).astype(np.uint8)


def save(img: Image.Image, name: str, **kwargs: Any) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        img.save(d / name, **kwargs)
        return d / name
    return build


def png16(name: str, arr: np.ndarray, color_type: int) -> Callable[[Path], Path]:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB or gray+alpha)."""
    def build(d: Path) -> Path:
        h, w = arr.shape[:2]
        raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

        def chunk(tag: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
        (d / name).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                               + chunk(b"IEND", b""))
        return d / name
    return build


def raw(name: str, data: bytes) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        (d / name).write_bytes(data)
        return d / name
    return build


def palette() -> Image.Image:
    img = Image.new("P", (W, H))
    img.putdata(INDEX.ravel().tolist())
    img.putpalette(PALETTE.ravel().tolist())
    return img


def with_alpha(mode: str, base: np.ndarray, alpha: int = 255, clear_at: tuple[int, int] | None = None) -> Image.Image:
    a = np.full((H, W), alpha, np.uint8)
    if clear_at is not None:
        a[clear_at] = 0
    return Image.fromarray(np.dstack([base, a]), mode)


def oriented(stored: np.ndarray, orientation: int, ext: str = "png", **kwargs: Any) -> Callable[[Path], Path]:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(Image.fromarray(stored), f"o{orientation}.{ext}", exif=exif, **kwargs)


STORED_WIDE = K  # 3 x 4: orientations 1-4 keep it 4 wide, 3 high
STORED_TALL = np.arange(12, dtype=np.uint8).reshape(4, 3) * 21 + 3  # 4 x 3: orientations 5-8 turn it into 3 x 4
DISPLAYED = {  # what each EXIF orientation displays, written with numpy (independent of Pillow)
    1: STORED_WIDE,
    2: STORED_WIDE[:, ::-1],
    3: STORED_WIDE[::-1, ::-1],
    4: STORED_WIDE[::-1, :],
    5: STORED_TALL.T,
    6: np.rot90(STORED_TALL, -1),
    7: STORED_TALL[::-1, ::-1].T,
    8: np.rot90(STORED_TALL, 1),
}


def decoded_rotated_cw(path: Path) -> np.ndarray:
    """A JPEG's stored pixels (lossy, so read back) turned 90 degrees clockwise (EXIF orientation 6)."""
    with Image.open(path) as img:
        return np.rot90(np.asarray(img), -1)


def frames(ext: str, *values: int, **kwargs: Any) -> Callable[[Path], Path]:
    imgs = [Image.fromarray(np.full((H, W), v, np.uint8)) for v in values]
    return save(imgs[0], f"frames.{ext}", save_all=True, append_images=imgs[1:], **kwargs)


def truncated_png(d: Path) -> Path:
    full = d / "full.png"
    Image.fromarray(COLOR).save(full, compress_level=0)
    data = full.read_bytes()
    full.unlink()
    (d / "truncated.png").write_bytes(data[: len(data) - 30])  # cut inside the pixel data
    return d / "truncated.png"


def fifo(d: Path) -> Path:
    os.mkfifo(d / "pipe.png")
    return d / "pipe.png"


def dangling(d: Path) -> Path:
    (d / "gone.png").symlink_to(d / "missing.png")
    return d / "gone.png"


OK = "ok"
# id: (build(dir) -> path, contract, expected). expected: H x W (gray) or H x W x 3 uint8 pixels, a callable
# path -> pixels, or the regex fragment of the InputError.
LOAD_CASES: dict[str, tuple[Callable[[Path], Path], Contract, Any]] = {
    # --- 8-bit, 1-bit, palette
    "png 8-bit gray": (save(Image.fromarray(K), "g.png"), GRAY, K),
    "bmp 8-bit gray": (save(Image.fromarray(K), "g.bmp"), GRAY, K),
    "pgm 8-bit": (save(Image.fromarray(K), "g.pgm"), GRAY, K),
    "pgm maxval 15 (scaled by Pillow to 0-255)": (raw("m15.pgm", b"P5 4 3 15\n" + bytes([0, 15, 5, 10] * 3)), GRAY,
                                                  np.array([[0, 255, 85, 170]] * 3, np.uint8)),
    "png 1-bit": (save(Image.fromarray(K > 127), "b.png"), GRAY, np.where(K > 127, 255, 0).astype(np.uint8)),
    "bmp 1-bit": (save(Image.fromarray(K > 127), "b.bmp"), GRAY, np.where(K > 127, 255, 0).astype(np.uint8)),
    "png RGB for RGB": (save(Image.fromarray(COLOR), "c.png"), RGB, COLOR),
    "ppm RGB for RGB": (save(Image.fromarray(COLOR), "c.ppm"), RGB, COLOR),
    "png RGB for BGR": (save(Image.fromarray(COLOR), "c.png"), BGR, COLOR[..., ::-1]),
    "png RGB for gray (luma)": (save(Image.fromarray(COLOR), "c.png"), GRAY, luma(COLOR)),
    "png gray for RGB (repeated)": (save(Image.fromarray(K), "g.png"), RGB, np.dstack([K] * 3)),
    "png palette for RGB": (save(palette(), "p.png"), RGB, PALETTE[INDEX]),
    "png palette for gray": (save(palette(), "p.png"), GRAY, luma(PALETTE[INDEX])),
    "bmp palette": (save(palette(), "p.bmp"), RGB, PALETTE[INDEX]),
    "gif single frame (named explicitly)": (save(palette(), "p.gif"), RGB, PALETTE[INDEX]),
    "png palette, transparent index unused": (save(palette(), "pt.png", transparency=3), RGB, PALETTE[INDEX]),
    # --- 16-bit and 32-bit integers
    "png 16-bit gray, 257*k -> k": (save(Image.fromarray(K.astype(np.uint16) * 257), "g16.png"), GRAY, K),
    "png 16-bit gray, rounding": (save(Image.fromarray(ODD16), "odd16.png"), GRAY, scale16(ODD16)),
    "png 16-bit gray for RGB": (save(Image.fromarray(K.astype(np.uint16) * 257), "g16.png"), RGB, np.dstack([K] * 3)),
    "tiff 16-bit gray (named explicitly)": (save(Image.fromarray(ODD16), "odd16.tif"), GRAY, scale16(ODD16)),
    "pgm 16-bit (mode I)": (save(Image.fromarray(ODD16), "odd16.pgm"), GRAY, scale16(ODD16)),
    "pgm maxval 1023 (scaled by Pillow to 16 bits)": (
        raw("m1023.pgm", b"P5 4 3 1023\n" + np.array([[0, 1023, 1023, 0]] * 3, ">u2").tobytes()), GRAY,
        np.array([[0, 255, 255, 0]] * 3, np.uint8)),
    "tiff 32-bit int within 0-65535": (save(Image.fromarray(ODD16.astype(np.int32)), "i32.tif"), GRAY,
                                       scale16(ODD16)),
    "tiff 32-bit int, negative": (save(Image.fromarray(ODD16.astype(np.int32) - 5), "neg.tif"), GRAY,
                                  r"32-bit integer image with values in \[-5, 65530\]"),
    "tiff 32-bit int, above 65535": (save(Image.fromarray(ODD16.astype(np.int32) + 70000), "big.tif"), GRAY,
                                     r"32-bit integer image .*only 16-bit"),
    "png 16-bit RGB (Pillow keeps the high byte)": (
        png16("rgb48.png", np.dstack([K.astype(np.uint16) * 257, ODD16, np.full((H, W), 300, np.uint16)]), 2), RGB,
        np.dstack([K, (ODD16 >> 8).astype(np.uint8), np.full((H, W), 1, np.uint8)])),
    "png 16-bit gray+alpha, opaque": (png16("la16.png", np.dstack([K.astype(np.uint16) * 257,
                                                                   np.full((H, W), 65535, np.uint16)]), 4), GRAY, K),
    "png 16-bit gray+alpha, transparent": (png16("la16t.png", np.dstack([K.astype(np.uint16) * 257,
                                                                         np.zeros((H, W), np.uint16)]), 4), GRAY,
                                           r"12 of 12 pixels not fully opaque"),
    "tiff 32-bit float (mode F)": (save(Image.fromarray(K.astype(np.float32) / 255), "f.tif"), GRAY,
                                   r"32-bit float image \(mode F\).*8- or 16-bit"),
    # --- alpha
    "png LA opaque": (save(with_alpha("LA", K), "la.png"), GRAY, K),
    "png LA opaque for RGB": (save(with_alpha("LA", K), "la.png"), RGB, np.dstack([K] * 3)),
    "png LA with a transparent pixel": (save(with_alpha("LA", K, clear_at=(1, 2)), "lat.png"), GRAY,
                                        r"has 1 of 12 pixels not fully opaque.*Flatten"),
    "png RGBA opaque": (save(with_alpha("RGBA", COLOR), "rgba.png"), RGB, COLOR),
    "png RGBA opaque for gray": (save(with_alpha("RGBA", COLOR), "rgba.png"), GRAY, luma(COLOR)),
    "png RGBA half transparent": (save(with_alpha("RGBA", COLOR, alpha=128), "rgbah.png"), RGB,
                                  r"12 of 12 pixels not fully opaque"),
    "png palette with a transparent index used": (save(palette(), "ptu.png", transparency=1), RGB,
                                                  r"4 of 12 pixels not fully opaque"),
    "gif with a transparent index used": (save(palette(), "ptu.gif", transparency=2), GRAY,
                                          r"3 of 12 pixels not fully opaque"),
    # --- other colour spaces
    "tiff CMYK": (save(Image.fromarray(np.array([[[255, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 255], [0, 255, 0, 0]]] * 3,
                                                np.uint8), "CMYK"), "c.tif"), RGB,
                  np.array([[[0, 255, 255], [255, 255, 255], [0, 0, 0], [255, 0, 255]]] * 3, np.uint8)),
    "jpeg CMYK (lossy: read back, then converted)": (save(Image.new("CMYK", (W, H), (0, 0, 0, 0)), "c.jpg", quality=100),
                                                     RGB, np.full((H, W, 3), 255, np.uint8)),
    "tiff YCbCr": (save(Image.fromarray(np.dstack([K, np.full((H, W), 128, np.uint8), np.full((H, W), 128, np.uint8)]),
                                        "YCbCr"), "y.tif"), RGB, np.dstack([K] * 3)),
    "tiff LAB": (save(Image.new("LAB", (W, H), (50, 128, 128)), "lab.tif"), RGB, r"image mode 'LAB'.*convert it"),
    # --- EXIF orientation (applied before the size check)
    **{f"png EXIF orientation {o}": (oriented(STORED_WIDE if o <= 4 else STORED_TALL, o), GRAY, DISPLAYED[o])
       for o in range(1, 9)},
    "jpeg EXIF orientation 6": (oriented(STORED_TALL, 6, "jpg", quality=100), GRAY, decoded_rotated_cw),
    "jpeg EXIF orientation 6 turns 4x3 into 3x4": (oriented(STORED_WIDE, 6, "jpg"), GRAY,
                                                   r"1 of 1 images are not 4x3 .* is 3x4"),
    "png EXIF orientation out of range (9: ignored)": (oriented(K, 9, "png"), GRAY, K),
    "png with a garbage EXIF block (ignored)": (save(Image.fromarray(K), "bad_exif.png",
                                                      exif=b"Exif\x00\x00garbage garbage"), GRAY, K),
    # --- multi-frame
    "gif animated": (frames("gif", 10, 200), GRAY, r"holds 2 frames \(animated or multi-page\)"),
    "png animated (APNG)": (frames("png", 10, 200), GRAY, r"holds 2 frames"),
    "tiff multi-page": (frames("tif", 10, 200), GRAY, r"holds 2 frames"),
    "jpeg MPO (primary image read)": (frames("jpg", 50, 200, format="MPO", quality=100), GRAY,
                                      np.full((H, W), 50, np.uint8)),
    # --- broken and wrong files
    "empty file": (raw("empty.png", b""), GRAY, r"cannot read image file .*empty.png"),
    "text named .jpg": (raw("notes.jpg", b"hello, not a picture"), GRAY, r"cannot read image file .*notes.jpg"),
    "png signature only": (raw("sig.png", b"\x89PNG\r\n\x1a\n"), GRAY, r"cannot read image file .*sig.png"),
    "png truncated pixel data": (truncated_png, RGB, r"cannot read image file .*truncated.png"),
    "wrong size": (save(Image.fromarray(np.zeros((4, 4), np.uint8)), "sq.png"), GRAY,
                   r"1 of 1 images are not 4x3 .*sq.png' is 4x4.*--resize"),
    "missing path": (lambda d: d / "nope.png", GRAY, r"'.*nope.png' does not exist"),
    "dangling symlink named explicitly": (dangling, GRAY, r"gone.png' is a dangling symlink"),
    "FIFO named explicitly": (fifo, GRAY, r"pipe.png' is not a regular file or folder"),
}

# rows that need the test's monkeypatch: (build(dir, monkeypatch), contract, fragment)
PATCHED_CASES: dict[str, tuple[Callable[[Path, pytest.MonkeyPatch], Path], Contract, str]] = {}


def _bomb(d: Path, mp: pytest.MonkeyPatch) -> Path:
    Image.fromarray(K).save(d / "bomb.png")
    mp.setattr(Image, "MAX_IMAGE_PIXELS", 5)  # 12 pixels: more than twice the limit
    return d / "bomb.png"


def _unreadable(d: Path, mp: pytest.MonkeyPatch) -> Path:
    Image.fromarray(K).save(d / "locked.png")
    real_open = Image.open

    def fake_open(fp: Any, *args: Any, **kwargs: Any) -> Any:  # chmod 000 does not bite when tests run as root
        if Path(fp).name == "locked.png":
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)
    mp.setattr(Image, "open", fake_open)
    return d / "locked.png"


PATCHED_CASES["decompression bomb"] = (_bomb, GRAY, r"cannot read image file .*bomb.png.*decompression bomb")
PATCHED_CASES["file not readable (permission denied)"] = (_unreadable, GRAY,
                                                          r"cannot read image file .*locked.png.*Permission denied")


def _check_pixels(x: np.ndarray, contract: Contract, expected: np.ndarray) -> None:
    spec = contract.input
    if spec.layout == "NCHW":
        assert x.shape == (1, 1, H, W) and x.dtype == np.float32 and x.flags.c_contiguous
        np.testing.assert_array_equal(x[0, 0], expected.astype(np.float32) / np.float32(255))
    else:
        assert x.shape == (1, H, W, 3) and x.dtype == np.uint8 and x.flags.c_contiguous
        np.testing.assert_array_equal(x[0], expected)


@pytest.mark.parametrize("case", list(LOAD_CASES))
def test_image_file_corpus(case: str, tmp_path: Path) -> None:
    build, contract, expected = LOAD_CASES[case]
    path = build(tmp_path)
    if isinstance(expected, str):
        with pytest.raises(InputError, match=expected):
            load_images([path], contract)
        return
    x, files = load_images([path], contract)
    assert files == [path]
    _check_pixels(x, contract, expected(path) if callable(expected) else expected)


@pytest.mark.parametrize("case", list(PATCHED_CASES))
def test_image_file_corpus_patched(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build, contract, fragment = PATCHED_CASES[case]
    path = build(tmp_path, monkeypatch)
    with pytest.raises(InputError, match=fragment):
        load_images([path], contract)


def test_sixteen_bit_scaling_is_exact_at_every_level(tmp_path: Path) -> None:
    levels = np.arange(256, dtype=np.uint16).reshape(16, 16) * 257  # 257*k -> k for every k
    Image.fromarray(levels).save(tmp_path / "levels.png")
    x, _ = load_images([tmp_path / "levels.png"], Contract(input=InputSpec(height=16, width=16), classes=("a", "b")))
    np.testing.assert_array_equal(x[0, 0], np.arange(256, dtype=np.float32).reshape(16, 16) / np.float32(255))
    assert x[0, 0, 15, 15] == np.float32(1.0) and x[0, 0, 0, 0] == np.float32(0.0)


def test_sixteen_bit_image_is_resized_after_scaling(tmp_path: Path) -> None:
    big = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1300)
    Image.fromarray(big).save(tmp_path / "big16.png")
    x, _ = load_images([tmp_path / "big16.png"], GRAY, resize=True)
    want = np.asarray(Image.fromarray(scale16(big)).resize((W, H), Image.Resampling.BILINEAR))
    _check_pixels(x, GRAY, want)


# --------------------------------------------------------------------------- folders: what is skipped, and why
def _tree(root: Path, outside: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "locked").mkdir()
    outside.mkdir()
    for p in (root / "a.png", root / "sub" / "b.png", root / "locked" / "c.png", outside / "x.png"):
        Image.fromarray(K).save(p)
    (root / "notes.txt").write_text("not an image")  # no image extension: ignored silently
    (outside / "y.txt").write_text("not an image")
    (root / "dangling.png").symlink_to(root / "missing.png")
    (root / "loop.png").symlink_to(root / "loop.png")
    (root / "out.png").symlink_to(outside / "x.png")
    (root / "in_link.png").symlink_to(root / "sub" / "b.png")
    (root / "dirlink").symlink_to(root / "sub", target_is_directory=True)
    (root / "outdir").symlink_to(outside, target_is_directory=True)
    (root / "textlink").symlink_to(outside / "y.txt")  # no image extension: ignored silently
    os.mkfifo(root / "pipe.png")


def _deny(monkeypatch: pytest.MonkeyPatch, *denied: Path) -> None:
    """os.scandir raising PermissionError for these folders (chmod does not bite when tests run as root)."""
    real_scandir = os.scandir

    def fake_scandir(path: Any = ".") -> Any:
        if Path(path) in denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)
    monkeypatch.setattr(os, "scandir", fake_scandir)


SKIPPED = {  # entry -> fragment of its warning
    "locked": r"cannot read this sub-folder \(Permission denied\); its images were not loaded",
    "dangling.png": "dangling symlink",
    "loop.png": "symlink loop",
    "out.png": "outside the folder given",
    "dirlink": "symlink to the folder .* inside the folder given; folder links are not followed",
    "outdir": "symlink to the folder .* outside the folder given",
    "pipe.png": "not a regular file",
}


def test_find_images_reports_each_skipped_entry_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    import re

    root = tmp_path / "root"
    _tree(root, tmp_path / "outside")
    _deny(monkeypatch, root / "locked")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        files = find_images([root])
    assert [f.relative_to(root).as_posix() for f in files] == ["a.png", "in_link.png", "sub/b.png"]
    records = [r for r in caplog.records if r.name == LOGGER]
    assert all(r.levelno == logging.WARNING and "\n" not in r.getMessage() for r in records)
    assert len(records) == len(SKIPPED), [r.getMessage() for r in records]
    for name, why in SKIPPED.items():
        hits = [r.getMessage() for r in records if r.getMessage().startswith(f"skipped {str(root / name)!r}: ")]
        assert len(hits) == 1 and re.search(why, hits[0]), (name, hits)

    caplog.clear()  # load_images reads what remains, with the same warnings
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        x, loaded = load_images([root], GRAY)
    assert loaded == files and x.shape == (3, 1, H, W)
    assert len([r for r in caplog.records if r.name == LOGGER]) == len(SKIPPED)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads folders whatever their mode")
def test_a_really_unreadable_sub_folder_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "locked").mkdir()
    Image.fromarray(K).save(tmp_path / "a.png")
    Image.fromarray(K).save(tmp_path / "locked" / "b.png")
    (tmp_path / "locked").chmod(0)
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert find_images([tmp_path]) == [tmp_path / "a.png"]
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert [r.getMessage() for r in caplog.records if "cannot read this sub-folder" in r.getMessage()]


def test_order_does_not_depend_on_the_file_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for rel in ("b/2.png", "b/10.png", "a.png", "C.png", "b.png", "a/z/1.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(K).save(tmp_path / rel)
    first = find_images([tmp_path])
    real_scandir = os.scandir

    class Reversed:
        def __init__(self, path: Any) -> None:
            self._it = real_scandir(path)

        def __enter__(self) -> Any:
            return reversed(list(self._it))

        def __exit__(self, *exc: object) -> None:
            self._it.close()
    monkeypatch.setattr(os, "scandir", Reversed)
    assert find_images([tmp_path]) == first
    assert [p.relative_to(tmp_path).as_posix() for p in first] == \
        ["C.png", "a/z/1.png", "a.png", "b/10.png", "b/2.png", "b.png"]  # by path parts, as sorted(Path)


def test_given_folders_that_cannot_be_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    only_skipped = tmp_path / "only_skipped"
    only_skipped.mkdir()
    (only_skipped / "dangling.png").symlink_to(only_skipped / "missing.png")
    (only_skipped / "readme.md").write_text("no images here")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with pytest.raises(InputError, match=r"holds no image file .*1 entry was skipped, see the warnings"):
            find_images([only_skipped])
    assert len([r for r in caplog.records if r.name == LOGGER]) == 1
    denied = tmp_path / "denied"
    denied.mkdir()
    _deny(monkeypatch, denied)
    with pytest.raises(InputError, match=r"cannot read folder .*denied.*Permission denied.*permissions"):
        find_images([denied])
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(InputError, match=r"loop' is a symlink loop"):
        find_images([tmp_path / "loop"])


def test_a_symlinked_root_folder_is_read(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    Image.fromarray(K).save(real / "a.png")
    (real / "self.png").symlink_to(real / "a.png")
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    assert find_images([tmp_path / "alias"]) == [tmp_path / "alias" / "a.png", tmp_path / "alias" / "self.png"]


# --------------------------------------------------------------------------- arrays handed to predict()
X = np.random.default_rng(3).random((2, 1, H, W)).astype(np.float32)
FRAMES = np.random.default_rng(4).integers(0, 256, (2, H, W, 3), dtype=np.uint8)


def _with(a: np.ndarray, index: tuple[int, ...], value: float) -> np.ndarray:
    a = a.copy()
    a[index] = value
    return a


def _unaligned(a: np.ndarray) -> np.ndarray:
    buf = np.zeros(a.nbytes + 1, np.uint8)
    out = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


class LyingMin(np.ndarray):
    """A subclass whose min/max hide what the data holds."""

    def min(self, *args: Any, **kwargs: Any) -> Any:
        return np.float32(0.5)

    def max(self, *args: Any, **kwargs: Any) -> Any:
        return np.float32(0.5)


class ArrayLike:
    """A torch-like object that numpy could convert (``__array__``), but that is not an array."""

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return X


def _memmap(path: Path) -> np.ndarray:
    m = np.memmap(path, dtype=np.float32, mode="w+", shape=X.shape)
    m[...] = X
    return m


def _matrix(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # np.matrix is discouraged, and still met
        return np.asmatrix(a)


def _read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


# id: (make(tmp_path) -> images, contract, expected values (an array) or the InputError fragment)
ARRAY_CASES: dict[str, tuple[Callable[[Path], Any], Contract, Any]] = {
    "float32 as is": (lambda d: X, GRAY, X),
    "masked array hiding a NaN": (lambda d: np.ma.masked_invalid(_with(X, (1, 0, 2, 1), np.nan)), GRAY,
                                  r"masked array with 1 of 24 element\(s\) masked in 1 of 2 image\(s\) \(first at "
                                  r"batch index 1\).*filled"),
    "masked array, mask all False": (lambda d: np.ma.masked_array(X, mask=np.zeros(X.shape, bool)), GRAY, X),
    "masked array, no mask": (lambda d: np.ma.masked_array(X), GRAY, X),
    "masked array, unmasked NaN": (lambda d: np.ma.masked_array(_with(X, (0, 0, 0, 0), np.nan)), GRAY, r"NaN in 1 of 2"),
    "masked uint8 frames": (lambda d: np.ma.masked_equal(_with(FRAMES, (0, 1, 1, 1), 7), 7), RGB,
                            r"masked array with \d+ of 72 element\(s\) masked"),
    "masked uint8 frames, nothing masked": (lambda d: np.ma.masked_array(FRAMES), RGB, FRAMES),
    "subclass hiding a NaN from min/max": (lambda d: _with(X, (1, 0, 0, 0), np.nan).view(LyingMin), GRAY,
                                           r"NaN in 1 of 2"),
    "subclass, valid values": (lambda d: X.view(LyingMin), GRAY, X),
    "np.memmap": (lambda d: _memmap(d / "x.dat"), GRAY, X),
    "read-only array": (lambda d: _read_only(X), GRAY, X),
    "float16": (lambda d: X.astype(np.float16), GRAY, X.astype(np.float16).astype(np.float32)),
    "float64": (lambda d: X.astype(np.float64), GRAY, X),
    "longdouble": (lambda d: X.astype(np.longdouble), GRAY, X),
    "float64 too large for float32 (not reported as Inf)": (lambda d: _with(X.astype(np.float64), (0, 0, 0, 0), 1e40),
                                                            GRAY, r"got values in \[.*, 1e\+40\]; rescale"),
    "float16 NaN": (lambda d: _with(X, (1, 0, 1, 1), np.nan).astype(np.float16), GRAY, r"NaN in 1 of 2.*index 1"),
    "float64 Inf": (lambda d: _with(X.astype(np.float64), (0, 0, 1, 1), -np.inf), GRAY, r"Inf in 1 of 2.*index 0"),
    "big-endian float32": (lambda d: X.astype(">f4"), GRAY, X),
    "Fortran order": (lambda d: np.asfortranarray(X), GRAY, X),
    "negative strides": (lambda d: X[::-1, :, ::-1, ::-1], GRAY, X[::-1, :, ::-1, ::-1]),
    "odd strides (every other pixel of a larger batch)": (lambda d: np.repeat(np.repeat(X, 2, 2), 2, 3)[:, :, ::2, ::2],
                                                          GRAY, X),
    "zero strides (broadcast, read-only)": (lambda d: np.broadcast_to(X[:1], X.shape), GRAY, np.repeat(X[:1], 2, 0)),
    "unaligned buffer": (lambda d: _unaligned(X), GRAY, X),
    "uint8 frames as is": (lambda d: FRAMES, RGB, FRAMES),
    "uint8 frames, channels-last view of NCHW": (lambda d: np.ascontiguousarray(FRAMES.transpose(0, 3, 1, 2))
                                                 .transpose(0, 2, 3, 1), RGB, FRAMES),
    "bool for float32": (lambda d: X > 0.5, GRAY, r"got bool \(a mask, not pixels\).*astype\(np.float32\)"),
    "bool for uint8": (lambda d: FRAMES > 127, RGB, r"got bool; .*astype\(np.uint8\) \* 255"),
    "object array of floats": (lambda d: X.astype(object), GRAY, r"got object.*np.stack\(images\).astype\(np.float32\)"),
    "object array for uint8": (lambda d: FRAMES.astype(object), RGB, r"got object.*astype\(np.uint8\)"),
    "complex": (lambda d: X.astype(np.complex64), GRAY, r"got complex64"),
    "datetime": (lambda d: np.zeros(X.shape, "datetime64[s]"), GRAY, r"got datetime64"),
    "strings": (lambda d: X.astype(str), GRAY, r"expected dtype float32, got <U"),
    "structured dtype": (lambda d: np.zeros(X.shape, [("v", np.float32)]), GRAY, r"expected dtype float32, got"),
    "int64 within 0-255 for uint8": (lambda d: FRAMES.astype(np.int64), RGB, r"got int64.*astype\(np.uint8\)"),
    "float32 for uint8": (lambda d: FRAMES.astype(np.float32), RGB, r"expected dtype uint8.*got float32"),
    "list of arrays": (lambda d: list(X), GRAY, r"got builtins.list.*np.stack"),
    "tuple of arrays": (lambda d: tuple(X), GRAY, r"got builtins.tuple.*np.stack"),
    "object with __array__ (torch-like)": (lambda d: ArrayLike(), GRAY, r"got .*ArrayLike.*np.asarray\(images\)"),
    "None": (lambda d: None, GRAY, r"got builtins.NoneType"),
    "0-d array": (lambda d: np.array(0.5, np.float32), GRAY, r"rank 0"),
    "np.matrix": (lambda d: _matrix(X[0, 0]), GRAY, r"rank 2.*images\[None, None\]"),
    "single image": (lambda d: X[0], GRAY, r"rank 3.*images\[None\]"),
    "empty batch": (lambda d: X[:0], GRAY, r"empty batch"),
    "transposed image size": (lambda d: X.transpose(0, 1, 3, 2), GRAY, r"height x width 3 x 4.*got 4 x 3"),
}


@pytest.mark.parametrize("case", list(ARRAY_CASES))
def test_array_corpus(case: str, tmp_path: Path) -> None:
    make, contract, expected = ARRAY_CASES[case]
    images = make(tmp_path)
    if isinstance(expected, str):
        with pytest.raises(InputError, match=expected):
            validate_images(images, contract)
        return
    out = validate_images(images, contract)
    assert type(out) is np.ndarray and out.flags.c_contiguous and out.flags.aligned
    assert out.dtype == np.dtype(contract.input.dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, expected)

