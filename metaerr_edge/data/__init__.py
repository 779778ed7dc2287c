"""Data: sources (digits, torchvision, ImageFolder, npz) and deterministic splits."""

from metaerr_edge.data.sources import DatasetArrays, ImageArrays, available_sources, load_dataset, register_source
from metaerr_edge.data.splits import SPLIT_NAMES, SplitConfig, Splits, make_splits

__all__ = [
    "SPLIT_NAMES",
    "DatasetArrays",
    "ImageArrays",
    "SplitConfig",
    "Splits",
    "available_sources",
    "load_dataset",
    "make_splits",
    "register_source",
]
