"""The fused model FILE: load it safely, read its contract, rewrite its threshold, write atomically.

Torch-free (needs only ``onnx`` and numpy), so a deployment box can inspect a model without the
training stack. :mod:`metaerr_edge.fuse.export` re-exports the public functions.

Every write goes to a temporary file beside the target, is checked (``onnx.checker`` full check,
strict shape inference, the graph interface against the contract) and only then replaces the
target with ``os.replace``: the final path never holds a partial file, whatever fails or
interrupts in between.

Example:
    >>> set_threshold("model.onnx", ThresholdSpec(0.27, "coverage", target_coverage=0.9))
    >>> read_contract("model.onnx").threshold.value
    0.27
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from metaerr_edge.errors import ConfigError, ContractError
from metaerr_edge.fuse.contract import (
    CONTRACT_KEY,
    THRESHOLD_INITIALIZER,
    Contract,
    ThresholdSpec,
    validate_contract,
)

BATCH_DIM = "batch"
OUTPUT_TYPES = {"label": onnx.TensorProto.INT64, "probs": onnx.TensorProto.FLOAT,
                "failure_score": onnx.TensorProto.FLOAT, "defer": onnx.TensorProto.BOOL}
INPUT_TYPES = {"float32": onnx.TensorProto.FLOAT, "uint8": onnx.TensorProto.UINT8}
MAKE_ONE = ("Make one with `metaerr-edge export RUN -o model.onnx` or "
            "`metaerr_edge.fuse.export.export_onnx(fused, contract, path)`.")


def load_checked(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Load a metaerr-edge ONNX file, run the ONNX checker, and check its contract parses.

    Raises:
        ContractError: missing, empty, truncated or corrupt file; no or an invalid contract.
    """
    model = _load(Path(path))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ContractError(f"{path}: the ONNX checker rejects this model ({str(exc).strip()[:300]}). "
                            f"The file may be truncated or damaged; re-export it. {MAKE_ONE}") from exc
    _contract_of(model, str(path))
    return model


def read_contract(path: str | os.PathLike[str]) -> Contract:
    """Read the contract embedded in a fused model file.

    Example:
        >>> read_contract("model.onnx").classes[:2]
        ('T-shirt/top', 'Trouser')
    """
    return _contract_of(_load(Path(path)), str(path))


def set_threshold(path: str | os.PathLike[str], threshold: ThresholdSpec,
                  out_path: str | os.PathLike[str] | None = None) -> Contract:
    """Rewrite the ``defer_threshold`` initializer and the contract's threshold, atomically.

    Args:
        path: a fused model file.
        threshold: the new threshold (``value`` in [0, 1]) and how it was chosen.
        out_path: where to write; ``None`` rewrites ``path`` in place.

    Returns:
        The contract now embedded.

    Example:
        >>> set_threshold("model.onnx", ThresholdSpec(0.27, "coverage", target_coverage=0.9))
    """
    if not 0.0 <= threshold.value <= 1.0:
        raise ConfigError(f"threshold.value must lie in [0, 1] (failure scores do), got {threshold.value}")
    model = load_checked(path)
    contract = _contract_of(model, str(path)).with_threshold(threshold)
    validate_contract(contract, f"set_threshold({path})")
    inits = {t.name: t for t in model.graph.initializer}
    if THRESHOLD_INITIALIZER not in inits:
        raise ContractError(f"{path}: no initializer named {THRESHOLD_INITIALIZER!r} to rewrite; "
                            f"re-export the model with this version of metaerr-edge. {MAKE_ONE}")
    readers = [n for n in model.graph.node if THRESHOLD_INITIALIZER in n.input]
    if [(n.op_type, list(n.output)) for n in readers] != [("Greater", ["defer"])]:
        raise ContractError(f"{path}: the {THRESHOLD_INITIALIZER!r} tensor is read by {[n.op_type for n in readers]}, "
                            "not by the 'defer' comparison alone; rewriting it would change the model itself. "
                            f"Re-export the model with this version of metaerr-edge. {MAKE_ONE}")
    tensor = inits[THRESHOLD_INITIALIZER]
    dtype = numpy_helper.to_array(tensor).dtype  # float32 as exported; float16 after an FP16 cast
    tensor.CopyFrom(numpy_helper.from_array(np.array(threshold.value, dtype=dtype), THRESHOLD_INITIALIZER))
    set_contract(model, contract)
    atomic_write(Path(out_path if out_path is not None else path), lambda tmp: model)
    return contract


def set_contract(model: onnx.ModelProto, contract: Contract) -> None:
    """Store ``contract`` as JSON under :data:`CONTRACT_KEY`, replacing any earlier one."""
    kept = [p for p in model.metadata_props if p.key != CONTRACT_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=CONTRACT_KEY, value=contract.to_json())


def check_io(model: onnx.ModelProto, contract: Contract, source: str) -> None:
    """The graph's interface must be the contract's: names, dtypes and symbolic batch."""
    graph = model.graph
    spec = contract.input
    want = [(spec.name, INPUT_TYPES[spec.dtype], list(spec.shape))]
    want += [(n, t, [BATCH_DIM, contract.num_classes] if n == "probs" else [BATCH_DIM])
             for n, t in OUTPUT_TYPES.items()]
    got = [(v.name, v.type.tensor_type.elem_type,
            [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
           for v in [*graph.input, *graph.output]]
    if got != want:
        raise ContractError(f"{source}: graph interface {got} does not match the contract {want}")


def atomic_write(path: Path, build: Callable[[Path], onnx.ModelProto]) -> tuple[str, int]:
    """Write ``build(tmp)`` to a temp file beside ``path``, check it, then ``os.replace`` it in.

    ``build`` receives the (empty) temp path and may use it as scratch space. On any failure,
    ``KeyboardInterrupt`` included, the temp file is removed and ``path`` is left as it was.

    Returns:
        (sha256 hex digest, size in bytes) of the written file.
    """
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; pass a file path such as {path / 'model.onnx'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        model = build(tmp)
        data = model.SerializeToString()
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        onnx.checker.check_model(str(tmp), full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        check_io(inferred, _contract_of(model, str(path)), str(path))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest(), len(data)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _load(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise ContractError(f"{path}: no such file. {MAKE_ONE}")
    if path.is_dir():
        raise ContractError(f"{path} is a folder, expected a fused .onnx file")
    if path.stat().st_size == 0:
        raise ContractError(f"{path}: the file is empty (an interrupted copy or export?). {MAKE_ONE}")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # DecodeError, or onnx's own errors on malformed bytes
        raise ContractError(f"{path}: not a readable ONNX file; it is truncated or corrupt "
                            f"({type(exc).__name__}: {exc}). Copy it again or re-export it. "
                            f"{MAKE_ONE}") from exc


def _contract_of(model: onnx.ModelProto, source: str) -> Contract:
    props = {p.key: p.value for p in model.metadata_props}
    if CONTRACT_KEY not in props:
        raise ContractError(f"{source}: a valid ONNX file without the '{CONTRACT_KEY}' metadata: it "
                            "is not a metaerr-edge model (or was truncated). Fuse the classifier "
                            f"with its MetaErr meta-model first. {MAKE_ONE}")
    return Contract.from_json(props[CONTRACT_KEY], source)
