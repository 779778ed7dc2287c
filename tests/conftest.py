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


#: The scores of the report tests' run (msp and temperature rank alike: a tie the report must show).
REPORT_SCORES = ["metaerr[probs]", "msp", "temperature", "margin", "doctor-gini"]
#: Every section of a report with all its inputs, in page order.
ALL_SECTIONS = ["run", "evaluation", "curves", "shift", "latency", "tradeoff", "contract"]


@pytest.fixture(scope="session")
def full_run(digits_run, tiny_model, tmp_path_factory) -> dict[str, Path]:
    """A copy of the digits run with metrics, scores, shift and trade-off; a bench JSON; a model file."""
    import shutil

    import numpy as np

    from metaerr_edge.bench import BenchResult, LatencyStats
    from metaerr_edge.bench.env import environment
    from metaerr_edge.bench.report import save_json
    from metaerr_edge.evaluate import evaluate_run, write_report
    from metaerr_edge.pipeline import load_run
    from metaerr_edge.cli import main
    from metaerr_edge.shift_eval import evaluate_shift, write_shift_report

    root = tmp_path_factory.mktemp("report")
    run_dir = root / "run"
    shutil.copytree(digits_run.path, run_dir)
    run = load_run(run_dir)
    write_report(evaluate_run(run, REPORT_SCORES, n_boot=50, progress=False), run_dir)
    write_shift_report(evaluate_shift(run, ["metaerr[probs]", "msp"], group="test", severities=(1, 5), max_n=120,
                                      progress=False), run_dir)
    assert main(["tradeoff", str(run_dir), "--device-latency-ms", "1", "--fallback-latency-ms", "40",
                 "--fallback-accuracy", "0.995", "--min-accuracy", "0.98"]) == 0
    rng = np.random.default_rng(0)
    results = [BenchResult(name, "onnxruntime", "m.onnx", batch,
                           LatencyStats.from_samples(ms * (1 + rng.gamma(2, 0.05, 300)), batch, "host", 0.3 * ms), None,
                           {"device": "cpu"})
               for name, ms0 in (("fused/onnxruntime", 0.12), ("base/onnxruntime", 0.08)) for batch, ms in ((1, ms0), (8, 4 * ms0))]
    bench = save_json(root / "bench.json", results, environment(), pairs=[("fused/onnxruntime", "base/onnxruntime")],
                      include_samples=True)
    return {"run": run_dir, "bench": bench, "model": tiny_model[0], "root": root}
