"""metaerr-edge: a reliable "I am probably wrong" signal for on-device image classifiers.

The pipeline, one subpackage per stage::

    data -> models (base) -> meta (MetaErr) -> scores/metrics (evaluate)
         -> fuse (one ONNX graph) -> runtime (TensorRT / ONNX Runtime / PyTorch)
         -> decide (thresholds, deferral) -> bench (latency)

Importing this package is cheap: it imports neither torch nor onnxruntime. The runtime
entry points (:func:`open_session`) need only numpy, onnxruntime and pillow.
"""

from __future__ import annotations

from metaerr_edge.errors import (
    BackendUnavailable,
    ConfigError,
    ContractError,
    DataError,
    InputError,
    MetaErrError,
    MissingDependency,
    ParityError,
)

__version__ = "0.1.0"

# Heavy entry points resolve lazily so that `import metaerr_edge` stays torch-free.
_LAZY = {
    "open_session": "metaerr_edge.runtime",
    "Prediction": "metaerr_edge.runtime",
    "train_run": "metaerr_edge.pipeline",
    "load_run": "metaerr_edge.pipeline",
    "RunConfig": "metaerr_edge.pipeline",
    "MetaErr": "metaerr_edge.meta",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'metaerr_edge' has no attribute {name!r}")


__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "ContractError",
    "DataError",
    "InputError",
    "MetaErrError",
    "MissingDependency",
    "ParityError",
    "__version__",
    *_LAZY,
]
