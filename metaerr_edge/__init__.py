"""metaerr-edge: a reliable "I am probably wrong" signal for on-device image classifiers.

The pipeline, one subpackage per stage::

    data -> models (base) -> meta (MetaErr) -> scores/metrics (evaluate)
         -> fuse (one ONNX graph) -> runtime (TensorRT / ONNX Runtime / PyTorch)
         -> decide (thresholds, deferral) -> bench (latency)

The names below are the public API, one per thing a user does (train, evaluate, export, run,
decide, measure); everything else is reachable through its subpackage. Importing this package is
cheap: it imports neither torch nor onnxruntime, each name is imported on first use. The runtime
names (:func:`open_session`, :func:`read_contract`, the deferral thresholds) need only numpy,
onnxruntime and pillow.

Example:
    >>> from metaerr_edge import BaseConfig, RunConfig, export_run, open_session, train_run
    >>> run = train_run(RunConfig(base=BaseConfig(epochs=5)), "runs/api")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metaerr_edge.errors import (
    BackendUnavailable,
    ConfigError,
    ContractError,
    DataError,
    InputError,
    MetaErrError,
    MissingDependency,
    ParityError,
    UnknownName,
    UnknownParameter,
)

__version__ = "0.1.0"

if TYPE_CHECKING:  # the same names as _LAZY below (a test keeps the two equal)
    from metaerr_edge.bench import TimingConfig, measure
    from metaerr_edge.config import BaseConfig, DataConfig, MetaConfig, RunConfig
    from metaerr_edge.contract import Contract, InputSpec, read_contract
    from metaerr_edge.data import error_labels, load_dataset
    from metaerr_edge.decide import recommend, sweep_tradeoff, threshold_for_coverage, threshold_for_risk
    from metaerr_edge.evaluate import evaluate_run, write_report
    from metaerr_edge.fuse.export import export_onnx, export_run, set_threshold
    from metaerr_edge.fuse.verify import verify_run
    from metaerr_edge.meta import MetaErr, MetaFitConfig
    from metaerr_edge.metrics import failure_metrics
    from metaerr_edge.models import Preprocess, create_base
    from metaerr_edge.pipeline import Run, load_run, train_run
    from metaerr_edge.shift_eval import evaluate_shift
    from metaerr_edge.runtime import Prediction, Session, find_images, load_images, open_session

#: public name -> the module it lives in (imported on first use, so `import metaerr_edge` stays light)
_LAZY = {
    # train
    "RunConfig": "metaerr_edge.config", "DataConfig": "metaerr_edge.config", "BaseConfig": "metaerr_edge.config",
    "MetaConfig": "metaerr_edge.config", "train_run": "metaerr_edge.pipeline", "load_run": "metaerr_edge.pipeline",
    "Run": "metaerr_edge.pipeline", "load_dataset": "metaerr_edge.data", "error_labels": "metaerr_edge.data",
    "create_base": "metaerr_edge.models", "Preprocess": "metaerr_edge.models", "MetaErr": "metaerr_edge.meta",
    "MetaFitConfig": "metaerr_edge.meta",
    # evaluate
    "evaluate_run": "metaerr_edge.evaluate", "write_report": "metaerr_edge.evaluate",
    "failure_metrics": "metaerr_edge.metrics", "evaluate_shift": "metaerr_edge.shift_eval",
    # export
    "export_run": "metaerr_edge.fuse.export", "export_onnx": "metaerr_edge.fuse.export",
    "set_threshold": "metaerr_edge.fuse.export", "verify_run": "metaerr_edge.fuse.verify",
    "Contract": "metaerr_edge.contract", "InputSpec": "metaerr_edge.contract", "read_contract": "metaerr_edge.contract",
    # run
    "open_session": "metaerr_edge.runtime", "Session": "metaerr_edge.runtime", "Prediction": "metaerr_edge.runtime",
    "find_images": "metaerr_edge.runtime", "load_images": "metaerr_edge.runtime",
    # decide
    "threshold_for_coverage": "metaerr_edge.decide", "threshold_for_risk": "metaerr_edge.decide",
    "sweep_tradeoff": "metaerr_edge.decide", "recommend": "metaerr_edge.decide",
    # measure
    "measure": "metaerr_edge.bench", "TimingConfig": "metaerr_edge.bench",
}  # fmt: skip


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # resolved once
        return value
    raise AttributeError(f"module 'metaerr_edge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "ContractError",
    "DataError",
    "InputError",
    "MetaErrError",
    "MissingDependency",
    "ParityError",
    "UnknownName",
    "UnknownParameter",
    "__version__",
    *_LAZY,
]
