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
    from metaerr_edge.config import BaseConfig, MetaConfig, RunConfig
    from metaerr_edge.pipeline import train_run

    config = RunConfig(base=BaseConfig(epochs=4), meta=MetaConfig(modes=("probs", "image+probs"), epochs=10, folds=3))
    return train_run(config, tmp_path_factory.mktemp("digits_run"), progress=False)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """(path, FusedModel): a random 3-class fused model on 1x8x8 inputs, exported with the fast
    legacy exporter (a second or two), for tests of the file, the CLI and the runtimes."""
    import warnings

    import torch
    from torch import nn

    from metaerr_edge.contract.spec import Contract, InputSpec
    from metaerr_edge.fuse.export import export_onnx
    from metaerr_edge.models.fused import FusedModel
    from metaerr_edge.models.preprocess import Preprocess

    class Base(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    class Meta(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 1)

        def forward(self, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.fc(torch.sort(probs, dim=1, descending=True).values))

    torch.manual_seed(0)
    fused = FusedModel(Base(), Meta(), Preprocess([0.5], [0.5]), threshold=0.5).eval()
    contract = Contract(input=InputSpec(channels=1, height=8, width=8), classes=("a", "b", "c"))
    path = tmp_path_factory.mktemp("tiny_model") / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter, on purpose
        export_onnx(fused, contract, path, dynamo=False)
    return path, fused
