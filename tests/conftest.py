"""Shared fixtures: tiny models and data, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def pytest_configure(config) -> None:
    os.environ.setdefault("METAERR_EDGE_CACHE", str(Path(config.rootpath) / ".pytest_cache" / "metaerr_edge"))


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """``../shared/datasets`` (MNIST, Fashion-MNIST, CIFAR-10 copy); skips where a checkout lacks it."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"needs the shared datasets at {SHARED_DATASETS} (absent in this checkout)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A small but real run on the bundled digits: cross-fit labels, two meta modes (about 5-10 s)."""
    from metaerr_edge.pipeline import RunConfig, train_run

    config = RunConfig(dataset="digits", epochs=4, meta_epochs=10, folds=3, meta_modes=("probs", "image+probs"))
    return train_run(config, tmp_path_factory.mktemp("digits_run"), progress=False)
