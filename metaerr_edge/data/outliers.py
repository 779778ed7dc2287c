"""Synthetic outliers: images of no class, made from in-distribution images, so that a failure score
can learn and be chosen out of distribution without ever touching the reported OOD sets.

A deployed camera also sees things of no training class, and every prediction there is a failure.
The reported OOD sets (:func:`metaerr_edge.data.ood_sets`: other datasets, uniform noise) are only
ever reported, like the test corruption families; these families stand in for them wherever a
choice or a training step needs out-of-distribution images. Each is ``f(images, rng) -> images``
on uint8 N x C x H x W, same shape out, and needs nothing but the images themselves:

=============  ==========  ===========================================================================
family         group       what an image becomes
=============  ==========  ===========================================================================
pixel_shuffle  train       its pixel positions permuted (channels together): its intensity histogram,
                           no shape at all
tile_shuffle   train       its 4 x 4 grid of tiles shuffled: strokes and texture kept, no global shape
smooth_noise   validation  uniform noise blurred by a Gaussian of (longer side) / 16 px, stretched to
                           0..255: blobs, no object
blend          validation  the mean of it and another image of the batch: two objects in one
=============  ==========  ===========================================================================

**A validation dataset**: with a data root, :func:`outlier_sets` adds natural images of no class
(:data:`VALIDATION_OOD_SOURCES`: CIFAR-10, in the run's format, for the gray datasets), drawn from
the source's *training* split. It is never a reported OOD set of the same run (those come from other
datasets' test splits, :data:`metaerr_edge.data.shift.OOD_SOURCES`): what synthetic outliers cannot
stand in for, an object of no class that looks like a photograph, a choice may still look at.

**Groups**, fixed here like the corruption families: :data:`TRAIN_OUTLIERS` may be learned from
(``MetaConfig.outliers``: meta-training rows labelled as failures, :func:`outlier_views`);
:data:`VALIDATION_OUTLIERS` are what a choice may look at (:func:`outlier_sets`, used by
``evaluate_shift(group="validation")``); neither is a reported OOD set. A validation family is a
sibling of a reported set (smooth noise of uniform noise; a blend, like another dataset's image,
shows an object of no class), never the same images, and never a training family.

What they are worth, measured (benchmarks/README.md, attempts 18-19): they rated the robust
preset above MSP on every set, while a reported near-OOD set (MNIST digits shown to a Fashion-MNIST
base) rated it below; treat them as a screen for gross failures out of distribution (a score that
ranks noise as safe), not as a stand-in for every kind of unknown input.

Example:
    >>> x = load_dataset("digits").train.images[:64]
    >>> sorted(outlier_sets(x, seed=0))
    ['blend', 'smooth_noise']
    >>> outlier_views(x, 0.5, seed=0).shape
    (32, 1, 8, 8)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np

from metaerr_edge.data.shift import _check_images, _filter, _gaussian_taps, _rng, to_format
from metaerr_edge.errors import ConfigError, DataError, UnknownName
from metaerr_edge.registry import Registry

__all__ = ["OUTLIERS", "OUTLIER_GROUPS", "TRAIN_OUTLIERS", "VALIDATION_OOD_SOURCES", "VALIDATION_OUTLIERS", "make_outliers",
           "outlier_sets", "outlier_views"]

#: ``f(images uint8 NCHW, rng) -> uint8 NCHW``; metadata ``group``.
Outlier = Callable[[np.ndarray, np.random.Generator], np.ndarray]
OUTLIERS: Registry[Outlier] = Registry("outlier family")
TRAIN_OUTLIERS: tuple[str, ...] = ("pixel_shuffle", "tile_shuffle")
VALIDATION_OUTLIERS: tuple[str, ...] = ("smooth_noise", "blend")
OUTLIER_GROUPS = ("train", "validation")
#: Datasets a choice may look at as out-of-distribution images (training split; never a reported OOD set).
VALIDATION_OOD_SOURCES: dict[str, tuple[str, ...]] = {"mnist": ("cifar10",), "fashion-mnist": ("cifar10",),
                                                      "digits": ("cifar10",)}


@OUTLIERS.register("pixel_shuffle", group="train")
def pixel_shuffle(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image's H x W pixel positions permuted at random (its channels move together)."""
    n, c, h, w = images.shape
    order = np.argsort(rng.random((n, h * w)), axis=1)
    flat = images.reshape(n, c, h * w)
    return np.take_along_axis(flat, order[:, None, :], axis=2).reshape(images.shape)


@OUTLIERS.register("tile_shuffle", group="train")
def tile_shuffle(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image cut into a g x g grid of tiles (g = 4, or the side if smaller) and the tiles permuted
    at random, never left in place all together; rows and columns past the grid stay where they are."""
    n, c, h, w = images.shape
    g = min(4, h, w)
    th, tw = h // g, w // g
    out = images.copy()
    grid = images[:, :, : g * th, : g * tw].reshape(n, c, g, th, g, tw).transpose(0, 2, 4, 1, 3, 5).reshape(n, g * g, c, th, tw)
    order = np.argsort(rng.random((n, g * g)), axis=1)
    still = (order == np.arange(g * g)).all(axis=1)
    order[still] = np.roll(order[still], 1, axis=1)  # an identity draw would give back the image itself
    tiles = np.take_along_axis(grid, order[:, :, None, None, None], axis=1)
    out[:, :, : g * th, : g * tw] = tiles.reshape(n, g, g, c, th, tw).transpose(0, 3, 1, 4, 2, 5).reshape(n, c, g * th, g * tw)
    return out


@OUTLIERS.register("smooth_noise", group="validation")
def smooth_noise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniform noise per value, blurred by a Gaussian of (longer side) / 16 px, each image stretched to 0..255."""
    n, c, h, w = images.shape
    sigma = max(h, w) / 16.0
    taps = _gaussian_taps(sigma, max(1, int(math.ceil(3 * sigma))))
    x = _filter(_filter(rng.random(images.shape, dtype=np.float32), taps[:, None]), taps[None, :])
    low = x.min(axis=(1, 2, 3), keepdims=True)
    span = np.maximum(x.max(axis=(1, 2, 3), keepdims=True) - low, 1e-6)
    return np.clip(np.rint((x - low) / span * 255.0), 0, 255).astype(np.uint8)


@OUTLIERS.register("blend", group="validation")
def blend(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mean of each image and another one of the batch (a random derangement: never itself)."""
    n = len(images)
    if n < 2:
        raise DataError(f"the blend outliers mix two images of a batch; got {n} image(s), pass at least 2")
    cycle = rng.permutation(n)
    partner = np.empty(n, np.int64)
    partner[cycle] = np.roll(cycle, -1)  # one cycle through all images: no image is its own partner
    return ((images.astype(np.uint16) + images[partner] + 1) // 2).astype(np.uint8)


def make_outliers(images: np.ndarray, family: str, seed: int = 0) -> np.ndarray:
    """``images`` (uint8 N x C x H x W) turned into outliers of ``family``; a pure function of
    ``(images, family, seed)`` (the generator is fixed by the seed and the family's name)."""
    fn = OUTLIERS.get(family)
    x = _check_images(images)
    return fn(x, _rng(seed, "outlier", family)) if len(x) else x.copy()


def outlier_sets(images: np.ndarray, group: str = "validation", seed: int = 0, *, dataset: str | None = None,
                 root: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """``{family: outliers of images}`` for each family of ``group`` (``"validation"``: what a choice
    may look at; ``"train"``: what meta-training may learn from), one outlier per image; for the
    validation group with a ``root``, also ``{source: images}`` of :data:`VALIDATION_OOD_SOURCES`
    of ``dataset`` (as many, seeded, from the source's training split, in the images' format)."""
    if group not in OUTLIER_GROUPS:
        raise UnknownName("outlier group", group, OUTLIER_GROUPS)
    names = VALIDATION_OUTLIERS if group == "validation" else TRAIN_OUTLIERS
    out = {name: make_outliers(images, name, seed) for name in names}
    if group == "validation" and root is not None and len(images):
        from metaerr_edge.data.sources import load_dataset

        for source in VALIDATION_OOD_SOURCES.get(str(dataset), ()):
            train = load_dataset(source, root).train
            pick = np.sort(_rng(seed, "validation-ood", source).choice(len(train), size=min(len(images), len(train)), replace=False))
            out[source] = to_format(train.images[pick], images.shape[1:])
    return out


def outlier_views(images: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """``round(fraction * N)`` training outliers (``fraction`` in [0, 1]): each made from another of
    the images, drawn without replacement, by a :data:`TRAIN_OUTLIERS` family drawn uniformly, from a
    generator fixed by ``seed``.

    Example:
        >>> outlier_views(x, 0.05, seed=0).shape == (round(0.05 * len(x)), *x.shape[1:])
        True
    """
    x = _check_images(images)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"the outlier fraction must be a number in [0, 1] (outliers per meta-train image), got {fraction!r}")
    count = int(round(fraction * len(x)))
    out = np.empty((count, *x.shape[1:]), np.uint8)
    if count == 0:
        return out
    rng = _rng(seed, "outlier_views")
    source = rng.permutation(len(x))[:count]
    family_of = rng.integers(0, len(TRAIN_OUTLIERS), count)
    for f, family in enumerate(TRAIN_OUTLIERS):
        rows = np.flatnonzero(family_of == f)
        if len(rows):
            out[rows] = make_outliers(x[source[rows]], family, seed)
    return out
