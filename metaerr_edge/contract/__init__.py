"""The deployment contract: what a fused model file promises, and the one reader that checks it.

Shared by every stage that writes or reads a model file (``fuse`` writes it; ``runtime``,
``decide``, ``bench`` and the ``inspect`` command read it), so it sits upstream of all of them and
imports neither torch nor onnx: a device install (numpy, onnxruntime, pillow) reads it.

    spec.py    Contract, InputSpec, ThresholdSpec (JSON inside the ONNX file), random_inputs
    reader.py  model_info / read_contract: the file read once, its contract checked against its graph

Example:
    >>> contract = read_contract("model.onnx")
    >>> contract.input.shape, contract.threshold.value
    (('batch', 1, 28, 28), 0.27)
"""

from metaerr_edge.contract.reader import ModelInfo, TensorInfo, checked_contract, load_model_file, model_info, read_contract
from metaerr_edge.contract.spec import (
    CONTRACT_KEY,
    OUTPUT_NAMES,
    THRESHOLD_INITIALIZER,
    Contract,
    InputSpec,
    ThresholdSpec,
    random_inputs,
    validate_contract,
)

__all__ = [
    "CONTRACT_KEY",
    "OUTPUT_NAMES",
    "THRESHOLD_INITIALIZER",
    "Contract",
    "InputSpec",
    "ModelInfo",
    "TensorInfo",
    "ThresholdSpec",
    "checked_contract",
    "load_model_file",
    "model_info",
    "random_inputs",
    "read_contract",
    "validate_contract",
]
