"""Data: sources (digits, MNIST-style IDX, ImageFolder, npz), one validation, deterministic splits.

    sources.py      the registry and load_dataset (digits, mnist, fashion-mnist, cifar10, imagefolder:, npz:)
    arrays.py       ImageArrays, DatasetArrays and validate_dataset (every loaded dataset passes it)
    idx.py          MNIST-style IDX files, read and checked with numpy
    imagefolder.py  PATH/<class>/* trees and their content-keyed cache
    npz.py          npz archives
    splits.py       seeded base-train / meta-train / calibration / test splits
    labels.py       error_labels: where the base is wrong (the meta-model's targets, every metric's truth)
    shift.py        seeded CIFAR-10-C-style corruptions (validation / test families), OOD sets, and
                    shift_views (corrupted copies for meta-training: validation families only)
    outliers.py     synthetic outliers made from in-distribution images: training families
                    (outlier_views, for meta-training) and validation families (outlier_sets, for choosing)
"""

from metaerr_edge.data.arrays import DatasetArrays, ImageArrays, validate_dataset
from metaerr_edge.data.labels import error_labels
from metaerr_edge.data.outliers import OUTLIERS, TRAIN_OUTLIERS, VALIDATION_OUTLIERS, make_outliers, outlier_sets, outlier_views
from metaerr_edge.data.shift import (CORRUPTIONS, SEVERITIES, TEST_FAMILIES, VALIDATION_FAMILIES, corrupt, families,
                                     ood_sets, shift_views, to_format)
from metaerr_edge.data.sources import available_sources, load_dataset, register_source
from metaerr_edge.data.splits import SPLIT_NAMES, SplitConfig, Splits, make_splits

__all__ = [
    "CORRUPTIONS",
    "OUTLIERS",
    "SEVERITIES",
    "SPLIT_NAMES",
    "TEST_FAMILIES",
    "TRAIN_OUTLIERS",
    "VALIDATION_FAMILIES",
    "VALIDATION_OUTLIERS",
    "DatasetArrays",
    "ImageArrays",
    "SplitConfig",
    "Splits",
    "available_sources",
    "corrupt",
    "error_labels",
    "families",
    "load_dataset",
    "make_outliers",
    "make_splits",
    "ood_sets",
    "outlier_sets",
    "outlier_views",
    "register_source",
    "shift_views",
    "to_format",
    "validate_dataset",
]
