"""Deterministic, seeded splits of a dataset into the four roles MetaErr needs.

- ``base_train``: the base classifier (and a mentor, if any) train here.
- ``meta_train``: held out from the base; the base's errors here label the meta-model.
  In cross-fit mode, ``base_train + meta_train`` is one pool scored out-of-fold instead.
- ``calib``: neither model trains here; thresholds (coverage, SGR risk) are chosen here.
- ``test``: the official test split when the dataset has one, else a slice of the pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metaerr_edge.data.arrays import DatasetArrays, ImageArrays
from metaerr_edge.errors import ConfigError, DataError

SPLIT_NAMES = ("base_train", "meta_train", "calib", "test")


@dataclass(frozen=True)
class SplitConfig:
    """Fractions are of the training pool (after ``max_pool`` subsampling)."""

    meta_fraction: float = 0.25
    calib_fraction: float = 0.1
    test_fraction: float = 0.2  # only used when the dataset has no official test split
    max_pool: int | None = None
    max_test: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("meta_fraction", "calib_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ConfigError(f"{name} must lie strictly between 0 and 1, got {v}")
        if self.meta_fraction + self.calib_fraction >= 1.0:
            raise ConfigError(
                f"meta_fraction + calib_fraction = {self.meta_fraction + self.calib_fraction:.2f} leaves no "
                "data for the base model; keep their sum below 1"
            )


@dataclass(frozen=True)
class Splits:
    """Index arrays. ``test`` indexes the official test split unless ``test_from_pool``."""

    base_train: np.ndarray
    meta_train: np.ndarray
    calib: np.ndarray
    test: np.ndarray
    test_from_pool: bool

    def sizes(self) -> dict[str, int]:
        return {name: int(len(getattr(self, name))) for name in SPLIT_NAMES}

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        out = {name: getattr(self, name) for name in SPLIT_NAMES}
        out["test_from_pool"] = np.array(self.test_from_pool)
        return out

    @classmethod
    def from_npz_dict(cls, z) -> "Splits":
        return cls(*(np.asarray(z[n]) for n in SPLIT_NAMES), bool(z["test_from_pool"]))

    def arrays(self, data: DatasetArrays, split: str) -> ImageArrays:
        """The images and labels of one split (``base_train``, ``meta_train``, ``calib``, ``test`` or ``pool``)."""
        if split == "pool":
            return data.train.subset(np.concatenate([self.base_train, self.meta_train]))
        if split not in SPLIT_NAMES:
            raise ConfigError(f"unknown split {split!r}; expected one of {SPLIT_NAMES + ('pool',)}")
        idx = getattr(self, split)
        if split == "test" and not self.test_from_pool:
            assert data.test is not None
            return data.test.subset(idx)
        return data.train.subset(idx)


def make_splits(data: DatasetArrays, config: SplitConfig = SplitConfig()) -> Splits:
    """Split ``data`` deterministically by ``config.seed``.

    Example:
        >>> s = make_splits(load_dataset("digits"), SplitConfig(seed=0))
        >>> s.sizes()["calib"] > 0
        True
    """
    rng = np.random.default_rng(config.seed)
    pool = rng.permutation(len(data.train))
    test_from_pool = data.test is None
    if test_from_pool:
        n_test = int(round(config.test_fraction * len(pool)))
        test, pool = pool[:n_test], pool[n_test:]
    else:
        test = rng.permutation(len(data.test))
    if config.max_pool is not None:
        pool = pool[: config.max_pool]
    if config.max_test is not None:
        test = test[: config.max_test]
    n_calib = int(round(config.calib_fraction * len(pool)))
    n_meta = int(round(config.meta_fraction * len(pool)))
    calib, meta, base = pool[:n_calib], pool[n_calib : n_calib + n_meta], pool[n_calib + n_meta :]
    splits = Splits(np.sort(base), np.sort(meta), np.sort(calib), np.sort(test), test_from_pool)
    empty = [name for name, n in splits.sizes().items() if n == 0]
    if empty:
        raise DataError(
            f"split(s) {empty} came out empty from a pool of {len(data.train)} images "
            f"(sizes {splits.sizes()}); use more data or larger fractions"
        )
    return splits
