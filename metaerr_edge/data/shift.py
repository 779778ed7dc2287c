"""Distribution shift, made deterministic: image corruptions and out-of-distribution (OOD) sets.

**Corruptions.** Eleven families in the spirit of CIFAR-10-C (Hendrycks & Dietterich, 2019,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations"), each
``f(images, severity, rng) -> images`` on uint8 N x C x H x W (C = 1 or 3), same shape out.
:func:`corrupt` is the seeded entry point: a pure function of ``(images, family, severity, seed)``.
The severity parameters are CIFAR-10-C's 32-pixel values, meant for 8-32 px images (ImageNet-C's
would erase an 8 px digit); sizes in pixels are used as such at every size, so on 8x8 digits a
blur is relatively four times stronger than on CIFAR. Intensities are on the [0, 1] scale.

==============  ===========  =====================================================  ======
family          kind         severity 1..5                                          random
==============  ===========  =====================================================  ======
gaussian_noise  noise        x + N(0, s), s = 0.04, 0.06, 0.08, 0.09, 0.10          noise
shot_noise      noise        Poisson(x * lam) / lam, lam = 500, 250, 100, 75, 50    noise
impulse_noise   noise        salt-and-pepper on 1, 2, 3, 5, 7 % of the values       noise
defocus_blur    blur         disk radius 0.3, 0.4, 0.5, 1, 1.5 px, anti-aliased by  no
                             a Gaussian s = 0.4, 0.5, 0.6, 0.2, 0.1 px
gaussian_blur   blur         Gaussian s = 0.4, 0.6, 0.7, 0.8, 1.0 px                no
motion_blur     blur         one-sided Gaussian streak of 2 r + 1 taps, (r, s) =    angle
                             (6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5) px, at an
                             angle U(-45, 45) degrees drawn per image
brightness      photometric  HSV value + 0.05, 0.1, 0.15, 0.2, 0.3                  no
contrast        photometric  (x - mean) * 0.75, 0.5, 0.4, 0.3, 0.15 + mean          no
jpeg            digital      JPEG quality 80, 65, 58, 50, 40 (PIL)                  no
pixelate        digital      box down to 0.95, 0.9, 0.85, 0.75, 0.6 of the side,    no
                             box up again
rotation        geometric    10, 15, 20, 30, 45 degrees, bilinear, black corners    no
==============  ===========  =====================================================  ======

Departures from CIFAR-10-C: rotation is not in it (its degrees are this module's choice), and
pixelate's severity 5 is 0.6 rather than 0.65, so that an 8 px image goes down to 4 px, not 5 (8 to
5 px aliases into a milder change than 8 to 6 px and would break the severity order). A higher
severity changes images at least as much on average (mean absolute difference over a batch of
natural images, 8-32 px); pixelate's whole-pixel sizes can break that order on images that were
themselves upsampled. Borders are replicated (filters) or black (rotation). The RGB brightness
shift is the exact HSV one (hue and saturation kept); on gray it is ``x + c``.

Randomness: "random" families draw from ``rng``; :func:`corrupt` seeds it from ``(seed, family)``
(CRC-32 of the name, not Python's salted ``hash``), the same draw at every severity. Another seed
gives other noise (motion blur: other angles); the other families ignore ``rng`` and the seed.
Rotation turns image ``i`` by ``(-1)**i`` times the angle: a batch is balanced, and no seed enters.

**Validation and test families**, fixed here: only :data:`VALIDATION_FAMILIES` may inform a
choice (training augmentation, model selection, thresholds, defaults); :data:`TEST_FAMILIES` are
only ever reported. Each kind with two or more families has one in each group, so a test family
is a sibling of a validation one, never the very same corruption:

- validation: gaussian_noise (the generic noise model), gaussian_blur (Hendrycks & Dietterich's own
  held-out validation blur), contrast (a global photometric change), pixelate (resampling);
- test: shot_noise and impulse_noise (other noise statistics: signal-dependent, sparse),
  defocus_blur and motion_blur, brightness (exposure), jpeg (the compression an edge camera
  pipeline really applies), and rotation: the one geometric family, kept for test so that one
  kind is wholly unseen by every choice.

**OOD sets** (:func:`ood_sets`): images of no class of the run, in its format (:func:`to_format`:
channels and size), so every prediction on them counts as a failure. An MNIST run gets
Fashion-MNIST test images and vice versa; a CIFAR-10 run gets both, resized to 32x32 and
replicated to RGB; every run gets uniform-noise images. The 8x8 digits get Fashion-MNIST (resized
to 8x8) only when a data root is given, as digits need no files; MNIST is never OOD for them (the
same ten digits: a covariate shift). Other datasets get uniform noise unless ``sources`` names
more. A dataset set whose files are missing under the root is the :class:`DataError` of
:func:`~metaerr_edge.data.load_dataset` naming the folder: a reported OOD metric never silently
loses a set.

Example:
    >>> x = load_dataset("digits").train.images[:64]
    >>> corrupt(x, "gaussian_noise", 3, seed=0).shape
    (64, 1, 8, 8)
    >>> families("validation")
    ('gaussian_noise', 'gaussian_blur', 'contrast', 'pixelate')
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from metaerr_edge.data.sources import SOURCES, available_sources, load_dataset
from metaerr_edge.errors import ConfigError, DataError, UnknownName, require
from metaerr_edge.registry import Registry

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["CORRUPTIONS", "FAMILY_GROUPS", "NOISE_SET", "OOD_SOURCES", "SEVERITIES", "TEST_FAMILIES",
           "VALIDATION_FAMILIES", "brightness", "contrast", "corrupt", "defocus_blur", "families",
           "gaussian_blur", "gaussian_noise", "impulse_noise", "jpeg", "motion_blur", "ood_sets", "pixelate",
           "rotation", "shot_noise", "to_format"]

SEVERITIES = (1, 2, 3, 4, 5)
#: ``f(images uint8 NCHW, severity 1..5, rng) -> uint8 NCHW``.
Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
#: The families, in the table's order; metadata ``kind``, ``params`` (one per severity), ``random``.
CORRUPTIONS: Registry[Corruption] = Registry("corruption family")


# ---------------------------------------------------------------- checks and conversions

def _check_images(images: object) -> np.ndarray:
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
            and images.shape[1] in (1, 3)):
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise DataError(f"images must be uint8 N x C x H x W with C = 1 (gray) or 3 (RGB), got {got}")
    if min(images.shape[2:]) < 1:
        raise DataError(f"images are {images.shape[2]}x{images.shape[3]} pixels; expected at least 1x1")
    return images


def _check_int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_severity(severity: object) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ConfigError(f"severity must be one of {list(SEVERITIES)}, got {severity!r}")
    return int(severity)


def _unit(images: np.ndarray) -> np.ndarray:
    """uint8 -> float32 on [0, 1]."""
    return images.astype(np.float32) / np.float32(255.0)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats (or uint8, returned as is) -> uint8, rounded and clipped."""
    if x.dtype == np.uint8:
        return x
    return np.clip(np.rint(np.asarray(x, np.float32) * 255.0), 0, 255).astype(np.uint8)


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator fixed by ``seed`` and ``keys``; names enter by CRC-32, never Python's salted ``hash``."""
    words = [_check_int(seed, "seed", 0)] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(words)


def _pil() -> Any:
    """PIL's Image module, imported when a corruption or a resize first needs it (not at start-up)."""
    return require("PIL.Image", "pillow", "image corruptions and OOD sets")


def _per_image(x: np.ndarray, fn: Callable[[Image.Image, int], Image.Image], size: tuple[int, int] | None = None
               ) -> np.ndarray:
    """``fn(PIL image, index)`` on each image of ``x`` (uint8 NCHW); ``size`` (H, W): of the results."""
    n, c, h, w = x.shape
    out = np.empty((n, c) + (size or (h, w)), np.uint8)
    pil = _pil()
    for i, img in enumerate(x):
        res = np.asarray(fn(pil.fromarray(img[0] if c == 1 else img.transpose(1, 2, 0)), i))
        out[i] = res[None] if res.ndim == 2 else res.transpose(2, 0, 1)
    return out


def _filter(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate each channel of ``x`` (N x C x H x W floats) with an odd-sized 2-D ``kernel``; edges replicated."""
    kh, kw = kernel.shape
    h, w = x.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)), mode="edge")
    out = np.zeros_like(x)
    for i, j in zip(*np.nonzero(kernel)):
        out += kernel[i, j] * xp[:, :, i:i + h, j:j + w]
    return out


def _gaussian_taps(sigma: float, radius: int) -> np.ndarray:
    t = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return (t / t.sum()).astype(np.float32)


# ---------------------------------------------------------------- the families

def _family(kind: str, params: tuple[Any, ...], *, random: bool = False
            ) -> Callable[[Callable[..., np.ndarray]], Corruption]:
    """Register ``fn(images, param, rng)`` (param: this severity's row) as a checked uint8 family."""

    def decorate(fn: Callable[..., np.ndarray]) -> Corruption:
        def apply(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
            x = _check_images(images)
            param = params[_check_severity(severity) - 1]
            if random and not isinstance(rng, np.random.Generator):
                raise ConfigError(f"{fn.__name__} draws random numbers: pass rng=np.random.default_rng(seed), or "
                                  f"call corrupt(images, {fn.__name__!r}, severity, seed)")
            return _to_uint8(fn(x, param, rng)) if len(x) else x.copy()

        apply.__name__ = apply.__qualname__ = fn.__name__
        apply.__doc__ = f"{fn.__doc__} Severity 1..5: {', '.join(map(str, params))}."
        CORRUPTIONS.register(fn.__name__, kind=kind, params=params, random=random)(apply)
        return apply

    return decorate


@_family("noise", (0.04, 0.06, 0.08, 0.09, 0.10), random=True)
def gaussian_noise(images: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise of standard deviation ``sigma``, per value."""
    return _unit(images) + rng.normal(0.0, sigma, images.shape).astype(np.float32)


@_family("noise", (500, 250, 100, 75, 50), random=True)
def shot_noise(images: np.ndarray, lam: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson (photon) noise: ``Poisson(x * lam) / lam``; fewer photons, more noise."""
    return rng.poisson(_unit(images) * lam) / lam


@_family("noise", (0.01, 0.02, 0.03, 0.05, 0.07), random=True)
def impulse_noise(images: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper noise: a fraction ``amount`` of the values set to 0 or 255, half each."""
    u = rng.random(images.shape)
    return np.where(u < amount / 2, 255, np.where(u < amount, 0, images)).astype(np.uint8)


@_family("blur", ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)))
def defocus_blur(images: np.ndarray, param: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """A disk kernel of radius ``r`` px, anti-aliased by a 3x3 Gaussian, as (r, sigma)."""
    radius, alias = param
    span = np.arange(-int(np.ceil(radius)) - 1, int(np.ceil(radius)) + 2)
    disk = (span[:, None] ** 2 + span[None, :] ** 2 <= radius**2).astype(np.float32)
    taps = _gaussian_taps(alias, 1)
    kernel = _filter(disk[None, None], np.outer(taps, taps))[0, 0]  # the disk has a zero rim: edges do not matter
    return _filter(_unit(images), kernel / kernel.sum())


@_family("blur", (0.4, 0.6, 0.7, 0.8, 1.0))
def gaussian_blur(images: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """A Gaussian blur of standard deviation ``sigma`` px (truncated at 4 sigma)."""
    taps = _gaussian_taps(sigma, int(4 * sigma + 0.5))
    return _filter(_filter(_unit(images), taps[:, None]), taps[None, :])


@_family("blur", ((6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5)), random=True)
def motion_blur(images: np.ndarray, param: tuple[int, float], rng: np.random.Generator) -> np.ndarray:
    """A one-sided Gaussian streak of ``2 * radius + 1`` taps, as (radius, sigma), along an angle drawn
    uniformly in [-45, 45] degrees per image; taps past the image are dropped, the rest renormalised."""
    radius, sigma = param
    x = _unit(images)
    n, _, h, w = x.shape
    angle = np.deg2rad(rng.uniform(-45.0, 45.0, n))
    steps = np.arange(2 * radius + 1)
    dy = np.rint(steps[:, None] * np.sin(angle)).astype(int)  # taps x images
    dx = np.rint(steps[:, None] * np.cos(angle)).astype(int)
    weight = np.exp(-0.5 * (steps[:, None] / sigma) ** 2) * ((np.abs(dy) < h) & (np.abs(dx) < w))
    weight = (weight / weight.sum(axis=0)).astype(np.float32)
    rows, cols, who = np.arange(h), np.arange(w), np.arange(n)[:, None, None]
    out = np.zeros_like(x)
    for t in range(len(steps)):
        r = np.clip(rows[None] - dy[t][:, None], 0, h - 1)[:, :, None]  # edge pixels replicated
        c = np.clip(cols[None] - dx[t][:, None], 0, w - 1)[:, None, :]
        out += weight[t][:, None, None, None] * x[who, :, r, c].transpose(0, 3, 1, 2)
    return out


@_family("photometric", (0.05, 0.1, 0.15, 0.2, 0.3))
def brightness(images: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """HSV value (the channel maximum) raised by ``shift``, hue and saturation kept; gray: ``x + shift``."""
    x = _unit(images)
    value = x.max(axis=1, keepdims=True)
    lifted = np.minimum(value + shift, 1.0)
    return np.where(value > 0, x * (lifted / np.maximum(value, 1e-12)), lifted)


@_family("photometric", (0.75, 0.5, 0.4, 0.3, 0.15))
def contrast(images: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Each channel pulled towards its image mean: ``(x - mean) * factor + mean``."""
    x = _unit(images)
    mean = x.mean(axis=(2, 3), keepdims=True)
    return (x - mean) * factor + mean


@_family("digital", (80, 65, 58, 50, 40))
def jpeg(images: np.ndarray, quality: int, rng: np.random.Generator) -> np.ndarray:
    """A JPEG round trip through PIL at ``quality``."""

    pil = _pil()

    def roundtrip(im: Image.Image, i: int) -> Image.Image:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        return pil.open(buf)

    return _per_image(images, roundtrip)


@_family("digital", (0.95, 0.9, 0.85, 0.75, 0.6))
def pixelate(images: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Box-downsampled to ``fraction`` of each side (at least 1 px), then box-upsampled back."""
    h, w = images.shape[2:]
    small = (max(1, int(w * fraction)), max(1, int(h * fraction)))
    box = _pil().Resampling.BOX
    return _per_image(images, lambda im, i: im.resize(small, box).resize((w, h), box))


@_family("geometric", (10, 15, 20, 30, 45))
def rotation(images: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """A rotation by ``degrees`` about the centre (image ``i``: ``(-1)**i * degrees``), bilinear, black corners."""
    bilinear = _pil().Resampling.BILINEAR
    return _per_image(images, lambda im, i: im.rotate(degrees if i % 2 == 0 else -degrees, resample=bilinear, fillcolor=0))


# ---------------------------------------------------------------- the seeded entry point and the split

def corrupt(images: np.ndarray, family: str, severity: int, seed: int = 0) -> np.ndarray:
    """``images`` (uint8 N x C x H x W) under one corruption family at ``severity`` 1..5.

    A pure function of its inputs: the random numbers come from a fresh generator fixed by
    ``(seed, family)``, so equal inputs give equal bytes, on every run and machine with the same
    numpy and PIL. Every severity starts from the same generator state (Gaussian noise: the same
    pattern, scaled; motion blur: the same angles), so severities differ in strength, not in luck,
    and comparing them is a paired comparison. An unknown family or a severity outside 1..5 is a
    one-line :class:`ConfigError` listing the choices.

    Example:
        >>> corrupt(x, "jpeg", 5).dtype
        dtype('uint8')
    """
    fn = CORRUPTIONS.get(family)
    return fn(images, _check_severity(severity), _rng(seed, family))


VALIDATION_FAMILIES: tuple[str, ...] = ("gaussian_noise", "gaussian_blur", "contrast", "pixelate")
#: Reported only: no choice (augmentation, selection, thresholds, defaults) may look at these.
TEST_FAMILIES: tuple[str, ...] = ("shot_noise", "impulse_noise", "defocus_blur", "motion_blur", "brightness", "jpeg",
                                  "rotation")
FAMILY_GROUPS = ("validation", "test")


def shift_views(images: np.ndarray, copies: int, seed: int = 0) -> np.ndarray:
    """``copies`` corrupted views of each image, for training a meta-model on failure under shift.

    View ``v`` of image ``i`` is row ``v * N + i`` of the result (copy-major, uint8, same shape per
    image). Each view takes one :data:`VALIDATION_FAMILIES` family and one severity 1..5, drawn
    uniformly from a generator fixed by ``seed``: only the validation group, because training is a
    choice, and the test families are kept for reporting (:data:`TEST_FAMILIES`).

    Example:
        >>> shift_views(x, 2, seed=0).shape == (2 * len(x), *x.shape[1:])
        True
    """
    x = _check_images(images)
    copies = _check_int(copies, "copies", 1)
    rng = _rng(seed, "shift_views")
    n = len(x)
    family_of = rng.integers(0, len(VALIDATION_FAMILIES), copies * n)
    severity_of = rng.integers(1, len(SEVERITIES) + 1, copies * n)
    out = np.empty((copies * n, *x.shape[1:]), np.uint8)
    source = np.tile(np.arange(n), copies)
    for f, family in enumerate(VALIDATION_FAMILIES):
        for severity in SEVERITIES:
            rows = np.flatnonzero((family_of == f) & (severity_of == severity))
            if len(rows):
                out[rows] = corrupt(x[source[rows]], family, severity, seed=seed + int(rows[0]))
    return out


def families(group: str) -> tuple[str, ...]:
    """The families of ``group``: ``"validation"`` (may inform choices) or ``"test"`` (reported only)."""
    if group == "validation":
        return VALIDATION_FAMILIES
    if group == "test":
        return TEST_FAMILIES
    raise UnknownName("family group", group, FAMILY_GROUPS)


# ---------------------------------------------------------------- out-of-distribution sets

#: The dataset OOD sets of each in-distribution dataset; every run also gets :data:`NOISE_SET`.
OOD_SOURCES: dict[str, tuple[str, ...]] = {
    "mnist": ("fashion-mnist",),
    "fashion-mnist": ("mnist",),
    "cifar10": ("mnist", "fashion-mnist"),
    "digits": ("fashion-mnist",),  # only with a root: digits need no files
}
NOISE_SET = "uniform_noise"


def _check_shape(shape: object) -> tuple[int, int, int]:
    ok = isinstance(shape, Sequence) and len(shape) == 3 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in shape)
    if not ok or shape[0] not in (1, 3) or min(shape[1:]) < 1:  # type: ignore[index]
        raise ConfigError(f"shape must be (C, H, W) with C = 1 or 3 and H, W >= 1, got {shape!r}")
    return int(shape[0]), int(shape[1]), int(shape[2])  # type: ignore[index]


def to_format(images: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``images`` (uint8 N x C x H x W) in another format ``(C, H, W)``: RGB to gray by ITU-R 601 luma
    (PIL's ``L``), resized with PIL's bilinear filter (anti-aliased when shrinking), gray to RGB by
    repeating the channel. An image already in the format comes back unchanged.

    Example:
        >>> to_format(mnist_images, (3, 32, 32)).shape
        (100, 3, 32, 32)
    """
    x = _check_images(images)
    c, h, w = _check_shape(shape)
    if x.shape[1] == 3 and c == 1:
        luma = x.astype(np.uint32).transpose(0, 2, 3, 1) @ np.array([299, 587, 114], np.uint32)
        x = ((luma + 500) // 1000).astype(np.uint8)[:, None]
    if x.shape[2:] != (h, w):
        bilinear = _pil().Resampling.BILINEAR
        x = _per_image(x, lambda im, i: im.resize((w, h), bilinear), (h, w))
    if x.shape[1] == 1 and c == 3:
        x = np.repeat(x, 3, axis=1)
    return np.ascontiguousarray(x)


def ood_sets(dataset: str, shape: Sequence[int], root: str | os.PathLike | None = None, n: int = 1000,
             seed: int = 0, sources: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """OOD images for a run on ``dataset`` whose images are ``shape`` = (C, H, W): ``{name: uint8 images}``.

    The dataset sets (``sources``, default :data:`OOD_SOURCES` of ``dataset``; see the module
    docstring) are up to ``n`` images drawn without replacement from each source's test split,
    in the run's format (:func:`to_format`), then :data:`NOISE_SET`: ``n`` uniform-noise images.
    Deterministic in ``seed``. A source missing under ``root`` raises the
    :class:`DataError` of :func:`~metaerr_edge.data.load_dataset`, naming the folder it expected.

    Example:
        >>> sorted(ood_sets("cifar10", (3, 32, 32), "../shared/datasets", n=500))
        ['fashion-mnist', 'mnist', 'uniform_noise']
    """
    if not isinstance(dataset, str) or (dataset not in SOURCES and f"{dataset.partition(':')[0]}:PATH" not in SOURCES):
        raise UnknownName("dataset", dataset, available_sources())
    c, h, w = _check_shape(shape)
    n = _check_int(n, "n", 1)
    if sources is None:
        sources = () if dataset == "digits" and root is None else OOD_SOURCES.get(dataset, ())
    elif isinstance(sources, str) or dataset in sources:
        raise ConfigError(f"sources must be a list of dataset names other than {dataset!r}, got {sources!r}")
    out: dict[str, np.ndarray] = {}
    for name in sources:
        ds = load_dataset(name, root)
        split = ds.test if ds.test is not None else ds.train
        pick = np.sort(_rng(seed, "ood", name).choice(len(split), size=min(n, len(split)), replace=False))
        out[name] = to_format(split.images[pick], (c, h, w))
    out[NOISE_SET] = _rng(seed, "ood", NOISE_SET).integers(0, 256, size=(n, c, h, w), dtype=np.uint8)
    return out
