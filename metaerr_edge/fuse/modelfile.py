"""The fused model FILE: load it safely, read its contract, rewrite its threshold, write atomically.

Torch-free (needs only ``onnx`` and numpy), so a deployment box can inspect a model without the
training stack. :mod:`metaerr_edge.fuse.export` re-exports the public functions. Reading a contract
is the job of the one reader, :func:`metaerr_edge.contract.read_contract` (onnx-free).

Every write goes to a temporary file beside the target, is checked (``onnx.checker`` full check,
strict shape inference, the graph interface against the contract) and only then replaces the
target with ``os.replace``: the final path never holds a partial file, whatever fails or
interrupts in between.

Example:
    >>> set_threshold("model.onnx", ThresholdSpec(0.27, "coverage", target_coverage=0.9))
    >>> metaerr_edge.read_contract("model.onnx").threshold.value
    0.27
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from metaerr_edge.errors import ConfigError, ContractError
from metaerr_edge.contract.reader import ModelInfo, checked_contract, info_from_bytes, read_model_bytes
from metaerr_edge.contract.spec import (
    CONTRACT_KEY,
    THRESHOLD_INITIALIZER,
    Contract,
    ThresholdSpec,
    validate_contract,
)

__all__ = ["BATCH_DIM", "MAKE_ONE", "atomic_write", "check_threshold_reader", "load_checked", "load_with_contract",
           "set_contract", "set_threshold"]

BATCH_DIM = "batch"
MAKE_ONE = ("Make one with `metaerr-edge export RUN -o model.onnx` or "
            "`metaerr_edge.fuse.export.export_onnx(fused, contract, path)`.")


def load_checked(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Load a metaerr-edge ONNX file to rewrite it: the ONNX checker, and its contract checked
    against its graph, except the threshold value (the caller is about to rewrite both).

    Raises:
        ContractError: missing, empty, truncated or corrupt file; no or an invalid contract; a graph
            whose interface disagrees with the contract.
    """
    return _checked_model(path)[0]


def load_with_contract(path: str | os.PathLike[str], *, ignore_threshold: bool = False,
                       ) -> tuple[onnx.ModelProto, Contract, ModelInfo]:
    """A fused model file read once: the loaded, checked model, its contract and its info (the bytes
    checked are the ones loaded). ``ignore_threshold``: a graph threshold that differs from the
    contract's passes (for :func:`set_threshold`, which rewrites both)."""
    data = read_model_bytes(path)
    info = info_from_bytes(data, str(path))
    contract = checked_contract(info, ignore_threshold=ignore_threshold)
    return _load(data, path), contract, info


def _checked_model(path: str | os.PathLike[str]) -> tuple[onnx.ModelProto, Contract]:
    """:func:`load_checked` and the contract, the threshold left out of the check."""
    model, contract, _ = load_with_contract(path, ignore_threshold=True)
    return model, contract


def _load(data: bytes, path: str | os.PathLike[str]) -> onnx.ModelProto:
    """``data`` loaded and passed through the ONNX checker; :class:`ContractError` naming ``path`` if not."""
    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:  # DecodeError, or the checker's ValidationError on a damaged graph
        raise ContractError(f"{path}: onnx cannot load or check this model ({type(exc).__name__}: "
                            f"{str(exc).strip()[:300]}). The file may be truncated or damaged; re-export it. "
                            f"{MAKE_ONE}") from exc
    return model


def set_threshold(path: str | os.PathLike[str], threshold: ThresholdSpec,
                  out_path: str | os.PathLike[str] | None = None, *, fitted_on_this_graph: bool = False) -> Contract:
    """Rewrite the ``defer_threshold`` initializer and the contract's threshold, atomically.

    The written file's lock (:func:`metaerr_edge._fileio.path_lock`) is held from the read to the
    write: a second writer of the same file meanwhile gets a :class:`ConfigError` at once, so
    two ``calibrate`` runs cannot silently overwrite each other's threshold.

    Args:
        path: a fused model file.
        threshold: the new threshold (``value`` in [0, 1]) and how it was chosen.
        out_path: where to write; ``None`` rewrites ``path`` in place.
        fitted_on_this_graph: the threshold was fitted on this graph's own scores (``calibrate``
            says so); recorded as ``precision["recalibrated"]`` for a reduced-precision graph.

    Returns:
        The contract now embedded.

    Example:
        >>> set_threshold("model.onnx", ThresholdSpec(0.27, "coverage", target_coverage=0.9))
    """
    from metaerr_edge._fileio import path_lock

    if not 0.0 <= threshold.value <= 1.0:
        raise ConfigError(f"threshold.value must lie in [0, 1] (failure scores do), got {threshold.value}")
    target = Path(out_path if out_path is not None else path)
    with path_lock(target):  # read, change and write under one lock: a second calibrate fails, none is lost
        model, contract = _checked_model(path)
        contract = contract.with_threshold(threshold)
        if contract.precision_name != "fp32":  # a threshold fitted on the reduced graph's own scores, or not
            contract = replace(contract, precision={**contract.precision, "recalibrated": bool(fitted_on_this_graph)})
        validate_contract(contract, f"set_threshold({path})")
        check_threshold_reader(model, str(path))
        inits = {t.name: t for t in model.graph.initializer}
        tensor = inits[THRESHOLD_INITIALIZER]
        dtype = numpy_helper.to_array(tensor).dtype  # float32 as exported; float16 after an FP16 cast
        tensor.CopyFrom(numpy_helper.from_array(np.array(threshold.value, dtype=dtype), THRESHOLD_INITIALIZER))
        set_contract(model, contract)
        atomic_write(target, lambda tmp: model)
        return contract


def check_threshold_reader(model: onnx.ModelProto, source: str) -> None:
    """The graph holds the private ``defer_threshold`` initializer and only the ``defer`` comparison reads it.

    Raises:
        ContractError: no such initializer, or other readers (rewriting it would change the model itself).
    """
    if THRESHOLD_INITIALIZER not in {t.name for t in model.graph.initializer}:
        raise ContractError(f"{source}: no initializer named {THRESHOLD_INITIALIZER!r} to rewrite; "
                            f"re-export the model with this version of metaerr-edge. {MAKE_ONE}")
    readers = [n for n in model.graph.node if THRESHOLD_INITIALIZER in n.input]
    if [(n.op_type, list(n.output)) for n in readers] != [("Greater", ["defer"])]:
        raise ContractError(f"{source}: the {THRESHOLD_INITIALIZER!r} tensor is read by {[n.op_type for n in readers]}, "
                            "not by the 'defer' comparison alone; rewriting it would change the model itself. "
                            f"Re-export the model with this version of metaerr-edge. {MAKE_ONE}")


def set_contract(model: onnx.ModelProto, contract: Contract) -> None:
    """Store ``contract`` as JSON under :data:`CONTRACT_KEY`, replacing any earlier one."""
    kept = [p for p in model.metadata_props if p.key != CONTRACT_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=CONTRACT_KEY, value=contract.to_json())


def atomic_write(path: Path, build: Callable[[Path], onnx.ModelProto]) -> tuple[str, int]:
    """Write ``build(tmp)`` to a temp file beside ``path``, check it, then ``os.replace`` it in.

    ``build`` receives the (empty) temp path and may use it as scratch space. On any failure,
    ``KeyboardInterrupt`` included, the temp file is removed and ``path`` is left as it was; an
    ``OSError`` (disk full, read-only target) names ``path``. Temporaries of ``path`` that a killed
    writer left behind are removed first, and the file gets the permissions the umask gives.

    Returns:
        (sha256 hex digest, size in bytes) of the written file.
    """
    from metaerr_edge._fileio import atomic_target

    with atomic_target(path) as tmp:
        model = build(tmp)
        data = model.SerializeToString()
        tmp.write_bytes(data)
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
            onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)  # types agree along the graph
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            raise ContractError(f"{path}: the graph to write fails the ONNX checker ({str(exc).strip()[:300]}); "
                                "nothing was written. Export with the default exporter and opset, or report this "
                                "model") from None
        # The check every reader of the file makes, on the bytes written: never write what open would refuse.
        checked_contract(info_from_bytes(data, str(path)))
    return hashlib.sha256(data).hexdigest(), len(data)
